"""Cognitive Variables from Python: `DSPEx.Clustering.Variable` on the BEAM nodes, by `:erpc`.

    var = Variable(node, "lb.exploration")            # or Variable(node, name, beams=[...])
    await var.start(type="float", range=(0.0, 1.0), value=0.1)   # if nobody started it yet
    version = await var.set(0.2)
    reading = await var.get()                         # Reading(value=0.2, version=2)
    reading = await var.feedback(reward)              # the variable adapts (float / choice)
    print(await var.where())                          # the BEAM node it lives on now
    async with await var.subscribe(from_version=0) as changes:
        async for change in changes:                  # Change(value, version, resync)
            ...

Calls go to a BEAM node (the given `beams` in turn, else every connected node); an unreachable
one (`noconnection`) or one without the application is skipped. Names and values are any term the
codec encodes (a str is sent as a UTF-8 binary, so a name given as str is the Elixir string the
iex examples use; values that are strings come back as bytes). Atoms (e.g. `:choice` options) are
`Atom`.

A subscription is a Python process on this node, subscribed through one BEAM node's keeper: it
receives `{:variable, name, value, version}` for every version after `from_version`, in order,
without gaps (`Change.resync` is True when the versions asked for were no longer kept: the change
then carries the current value, and the stream goes on from there). If that BEAM node goes down,
the subscription re-subscribes through another one from the last version it delivered, so the
stream still has no gap and no repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from dspex_cluster.etf import Atom
from dspex_cluster.runtime import Exit, Node, Process
from dspex_cluster.runtime.rpc import CallTimeout, RpcError

MODULE = "Elixir.DSPEx.Clustering.Variable"
OK = Atom("ok")
ERROR = Atom("error")
VARIABLE = Atom("variable")
RESYNC = Atom("variable_resync")
DELETED = Atom("variable_deleted")


class VariableError(Exception):
    """A variable call failed; `reason` is the BEAM side's error term."""

    def __init__(self, reason: Any, message: str | None = None) -> None:
        super().__init__(message or f"variable call failed: {reason!r}")
        self.reason = reason


class VariableNotFound(VariableError):
    """No variable of that name runs (or is known) in the cluster."""


class InvalidValue(VariableError):
    """The value does not fit the variable's type (`why` says how)."""

    def __init__(self, reason: Any) -> None:
        why = reason[2].decode() if isinstance(reason[2], bytes) else str(reason[2])
        super().__init__(reason, f"invalid value {reason[1]!r}: {why}")
        self.why = why


class NoQuorum(VariableError):
    """A `:strong` variable could not commit: its node is on a side without quorum."""


class Reading(NamedTuple):
    """A variable's value and its version."""

    value: Any
    version: int


class Change(NamedTuple):
    """One delivered version; `resync` marks a jump to the current value (see the module doc)."""

    value: Any
    version: int
    resync: bool = False


class _Inbox(Process):
    """The Python process subscriptions deliver to; it only holds its mailbox."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        await self.stopped.wait()


class Subscription:
    """Ordered changes of one variable; an async iterator (and async context manager)."""

    def __init__(self, var: Variable, inbox: _Inbox, beam: Atom, last: int | None) -> None:
        self.var = var
        self.inbox = inbox
        self.beam = beam
        self.last = last
        self.closed = False
        self._down = asyncio.Event()
        var.node.on_nodedown(self._on_nodedown)

    def _on_nodedown(self, node: Atom, _reason: Any) -> None:
        if node == self.beam:
            self._down.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        change = await self.next()
        if change is None:
            raise StopAsyncIteration
        return change

    async def next(self, timeout: float | None = None) -> Change | None:
        """The next change (None once the variable was deleted or the subscription closed);
        TimeoutError after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.closed:
            if self._down.is_set() and self.inbox.mailbox_size == 0:
                await self._resubscribe()
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            wait = 0.2 if left is None else min(left, 0.2)
            try:
                message = await self.inbox.receive(timeout=wait)
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    raise
                continue
            change = self._change(message)
            if change is not None:
                return change
            if isinstance(message, tuple) and message[:1] == (DELETED,):
                await self.close()
        return None

    def _change(self, message: Any) -> Change | None:
        if not (isinstance(message, tuple) and len(message) == 4):
            return None
        tag, _name, value, version = message
        if tag not in (VARIABLE, RESYNC):
            return None
        if self.last is not None and version <= self.last:
            return None  # already delivered before a re-subscription
        self.last = version
        return Change(value, version, tag == RESYNC)

    async def _resubscribe(self) -> None:
        self._down.clear()
        self.beam = await self.var._subscribe_via(self.inbox, self.last, avoid=self.beam)

    async def close(self) -> None:
        """Unsubscribes and stops the inbox process."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.var._rpc_at(self.beam, "unsubscribe", [self.var.name, self.inbox.pid])
        except (VariableError, Exit, RpcError, CallTimeout):
            pass  # the BEAM node is gone: so is the subscription
        self.inbox.stopped.set()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Variable:
    """Client of one Cognitive Variable `name` for a started Python `node`."""

    def __init__(
        self, node: Node, name: Any, beams: Sequence[str] | None = None, timeout: float = 5.0
    ) -> None:
        """`beams`: BEAM nodes to ask, in order (default: every connected node); `timeout`:
        seconds per call."""
        self.node = node
        self.name = name
        self.beams = [Atom(b) for b in beams] if beams else None
        self.timeout = timeout

    async def start(self, *, type: str, value: Any, **opts: Any) -> Any:  # noqa: A002
        """Starts the variable (`type`: float, integer, choice, map; other options as in
        `Variable.start/2`: range, options, consistency, coordination_scope, node, ...).
        Returns its pid; VariableError if it runs already or the spec is bad."""
        kw: list[Any] = [(Atom("type"), Atom(type)), (Atom("value"), value)]
        for key, val in opts.items():
            if key in ("consistency", "coordination_scope"):
                val = Atom(val)
            elif key == "node":
                val = Atom(val)
            elif key == "range":
                val = tuple(val)
            kw.append((Atom(key), val))
        reply = await self._rpc("start", [self.name, kw])
        if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == OK:
            return reply[1]
        raise _error(reply)

    async def get(self) -> Reading:
        """The current value and version."""
        reply = await self._rpc("get", [self.name])
        if isinstance(reply, tuple) and len(reply) == 3 and reply[0] == OK:
            return Reading(reply[1], reply[2])
        raise _error(reply)

    async def set(self, value: Any) -> int:
        """Sets the value; returns the new version."""
        reply = await self._rpc("set", [self.name, value])
        if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == OK:
            return int(reply[1])
        raise _error(reply)

    async def feedback(self, reward: float) -> Reading:
        """A reward for the value being served; returns the value the variable moved to."""
        reply = await self._rpc("feedback", [self.name, float(reward)])
        if isinstance(reply, tuple) and len(reply) == 3 and reply[0] == OK:
            return Reading(reply[1], reply[2])
        raise _error(reply)

    async def where(self) -> Atom | None:
        """The BEAM node the variable lives on now (None: nowhere)."""
        reply = await self._rpc("where", [self.name])
        return None if reply == Atom("nil") or reply is None else Atom(reply)

    async def subscribe(self, from_version: int | None = None) -> Subscription:
        """Changes after `from_version` (None: from the next change on)."""
        inbox = _Inbox()
        await self.node.spawn(inbox)
        beam = await self._subscribe_via(inbox, from_version)
        return Subscription(self, inbox, beam, from_version)

    async def _subscribe_via(
        self, inbox: _Inbox, from_version: int | None, avoid: Atom | None = None
    ) -> Atom:
        opts = [] if from_version is None else [(Atom("from_version"), from_version)]
        beams = [b for b in self._beams() if b != avoid] or self._beams()
        reply, beam = await self._rpc_any(beams, "subscribe", [self.name, inbox.pid, opts])
        if reply != OK:
            raise _error(reply)
        return beam

    def _beams(self) -> list[Atom]:
        beams = self.beams if self.beams is not None else list(self.node.nodes())
        if not beams:
            raise VariableError(Atom("noconnection"), "no BEAM node to ask")
        return beams

    async def _rpc(self, fun: str, args: list[Any]) -> Any:
        reply, _beam = await self._rpc_any(self._beams(), fun, args)
        return reply

    async def _rpc_at(self, beam: Atom, fun: str, args: list[Any]) -> Any:
        return await self.node.rpc(beam, MODULE, fun, args, self.timeout + 2.0)

    async def _rpc_any(self, beams: list[Atom], fun: str, args: list[Any]) -> tuple[Any, Atom]:
        last: BaseException | None = None
        for beam in beams:
            try:
                return await self._rpc_at(beam, fun, args), beam
            except CallTimeout as exc:
                raise VariableError(Atom("timeout")) from exc
            except Exit as exc:  # noconnection: the next BEAM node
                last = exc
            except RpcError as exc:
                if exc.kind == "error" and _is_undef(exc.reason):  # not a BEAM app node
                    last = exc
                    continue
                raise VariableError(exc.reason) from exc
        raise VariableError(Atom("noconnection"), f"no BEAM node answered: {last!r}") from last


def _is_undef(reason: Any) -> bool:
    return reason == Atom("undef") or (isinstance(reason, tuple) and reason[:1] == (Atom("undef"),))


def _error(reply: Any) -> VariableError:
    reason = (
        reply[1] if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == ERROR else reply
    )
    if reason == Atom("not_found"):
        return VariableNotFound(reason, "no such variable")
    if reason == Atom("no_quorum"):
        return NoQuorum(reason)
    if isinstance(reason, tuple) and len(reason) == 3 and reason[0] == Atom("invalid_value"):
        return InvalidValue(reason)
    return VariableError(reason)
