"""BEAM agents with a cluster-wide id, addressed from Python (`Agent.call/cast/send` by id).

    ref = AgentRef(node, (Atom("agent"), b"counter-1"))     # the id {:agent, "counter-1"}
    await ref.send({...})                 # the agent's handle_event/2
    await ref.cast(request)               # handle_request(request, :cast, state)
    reply = await ref.call(request)       # handle_request(request, from, state)

The agent may move between BEAM nodes (`DSPEx.Clustering.Migration`) at any time. As on the
BEAM side, every message carries this client's own sender pid and a number (per client and
agent), so the agent delivers each message once and in this client's order, even when some go
through its old instance (forwarded) and later ones straight to the new one.

Where the agent runs is asked of a BEAM node (`Migration.Registry.whereis/1` by `:erpc`, the
given `beams` in turn, else every connected node) and kept for `resolve_every_s` (0.1 s): well
inside the old instance's grace period (500 ms by default), during which it forwards what still
reaches it. A call whose agent stops normally (it moved) keeps waiting for the reply from the new
instance; one whose node died is sent again with the same number (never applied twice).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from dspex_cluster.etf import Atom, Pid
from dspex_cluster.runtime import Exit, Node, Process
from dspex_cluster.runtime.rpc import CallTimeout, RpcError

REGISTRY = "Elixir.DSPEx.Clustering.Migration.Registry"
SEQ = Atom("$dspex_seq")
NIL = Atom("nil")
DOWN = Atom("DOWN")
NORMAL = Atom("normal")


class AgentNotFound(LookupError):
    """No BEAM node knows an agent with this id (within the timeout)."""


class _Inbox(Process):
    """This client's sender pid: call replies and DOWNs arrive here."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        await self.stopped.wait()


class AgentRef:
    """A client of the BEAM agent `id` for a started Python `node`; one sender (one order)."""

    def __init__(
        self,
        node: Node,
        id: Any,  # noqa: A002 - the agent's cluster-wide id
        beams: Sequence[str] | None = None,
        resolve_every_s: float = 0.1,
    ) -> None:
        self.node = node
        self.id = id
        self.beams = [Atom(b) for b in beams] if beams else None
        self.resolve_every_s = resolve_every_s
        self._inbox: _Inbox | None = None
        self._seq = 0
        self._pid: Pid | None = None
        self._resolved_at = 0.0

    async def send(self, message: Any) -> None:
        """Sends `message` (the agent's handle_event/2)."""
        await self._deliver(Atom("send"), message)

    async def cast(self, request: Any) -> None:
        """Casts `request` (the agent's handle_request(request, :cast, state))."""
        await self._deliver(Atom("cast"), request)

    async def call(self, request: Any, timeout: float = 5.0) -> Any:
        """Calls the agent; its reply. TimeoutError after `timeout` seconds."""
        inbox = await self._sender()
        self._seq += 1
        seq, tag = self._seq, self.node.make_ref()
        deadline = time.monotonic() + timeout
        while True:
            pid = await self._where(deadline, fresh=True)
            mref = self.node.monitor(inbox.pid, pid)
            self.node.send(pid, (SEQ, inbox.pid, seq, (Atom("call"), tag), request))
            while True:
                message = await inbox.receive(
                    timeout=max(deadline - time.monotonic(), 0.0),
                    match=lambda m, r=mref: _is_reply(m, tag) or _is_down(m, r),
                )
                if _is_reply(message, tag):
                    self.node.demonitor(inbox.pid, mref)
                    return message[1]
                if message[4] != NORMAL:
                    break  # lost with its node: send again, same number
                # it moved and stopped after forwarding: the reply comes from the new instance
                pid = await self._moved_from(pid, deadline)
                mref = self.node.monitor(inbox.pid, pid)

    async def close(self) -> None:
        """Stops this client's process."""
        if self._inbox is not None:
            self._inbox.stopped.set()

    async def _deliver(self, kind: Atom, payload: Any) -> None:
        inbox = await self._sender()
        pid = await self._where(time.monotonic() + 5.0)
        self._seq += 1
        self.node.send(pid, (SEQ, inbox.pid, self._seq, kind, payload))

    async def _sender(self) -> _Inbox:
        if self._inbox is None:
            self._inbox = _Inbox()
            await self.node.spawn(self._inbox)
        return self._inbox

    async def _where(self, deadline: float, fresh: bool = False) -> Pid:
        now = time.monotonic()
        if self._pid is not None and not fresh and now - self._resolved_at < self.resolve_every_s:
            return self._pid
        while True:
            pid = await self._whereis()
            if pid is not None:
                self._pid, self._resolved_at = pid, time.monotonic()
                return pid
            if time.monotonic() >= deadline:
                raise AgentNotFound(f"no agent {self.id!r}")
            await asyncio.sleep(0.02)

    async def _moved_from(self, old: Pid, deadline: float) -> Pid:
        while True:
            pid = await self._where(deadline, fresh=True)
            if pid != old:
                return pid
            await asyncio.sleep(0.005)

    async def _whereis(self) -> Pid | None:
        beams = self.beams if self.beams is not None else list(self.node.nodes())
        for beam in beams:
            try:
                reply = await self.node.rpc(beam, REGISTRY, "whereis", [self.id], 5.0)
            except (Exit, CallTimeout):
                continue
            except RpcError:  # not a BEAM app node
                continue
            return None if reply in (None, NIL) else reply
        return None


def _is_reply(message: Any, tag: Any) -> bool:
    return isinstance(message, tuple) and len(message) == 2 and message[0] == tag


def _is_down(message: Any, mref: Any) -> bool:
    return (
        isinstance(message, tuple)
        and len(message) == 5
        and message[0] == DOWN
        and message[1] == mref
    )
