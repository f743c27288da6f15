"""The bridge between Python agents and the BEAM signal bus.

Subscribing: a Python pid cannot join a BEAM node's `:pg` scope, so the bus asks the signal
relay of one connected BEAM node, `GenServer.call({:dspex_signal_relay, beam}, {:subscribe,
pattern, pid})`; matching cluster-scoped signals then arrive as `{signal, Map}` messages. One
relay at a time (two relays would deliver each signal twice). When that node goes down, the bus
fails over to another BEAM node it is connected to or knows from `DSPEx.Clustering.members/0`,
and re-subscribes everything; when no BEAM node is reachable it keeps dialling the known ones
and re-subscribes as soon as one answers (the same node coming back included). Each time a relay
takes over, every subscriber gets `{dspex_relay_up, BeamNode}`: signals published while there
was no relay are lost, so agents that keep cluster state resync then (`Agent.on_relay_up`).

Publishing: `:erpc.call(beam, DSPEx.Clustering, :publish, [signal_map])` on the relay node,
which validates the signal and delivers it cluster-wide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from dspex_cluster import names
from dspex_cluster.dist import flags as F
from dspex_cluster.etf import Atom, Pid
from dspex_cluster.nodeconfig import Backoff
from dspex_cluster.runtime import Node
from dspex_cluster.signals import Signal, valid_pattern

log = logging.getLogger("dspex_cluster.agents.bus")

SUBSCRIBE = Atom("subscribe")
UNSUBSCRIBE = Atom("unsubscribe")
RELAY_UP = Atom("dspex_relay_up")


class ClusterBus:
    """Subscriptions of local pids through one BEAM relay, with failover; publishing by erpc."""

    def __init__(
        self,
        node: Node,
        beam_nodes: list[str] | tuple[str, ...] = (),
        *,
        call_timeout: float = 2.0,
        retry_interval: float = 0.5,
        max_retry_interval: float = 5.0,
        members_interval: float = 5.0,
    ) -> None:
        self.node = node
        self.known: list[Atom] = [Atom(n) for n in beam_nodes]  # failover candidates, in order
        self.call_timeout = call_timeout
        self.retry_interval = retry_interval
        # no relay reachable: retry after 0.5, 1, 2 ... s (logged once per step), not every 0.5 s
        self._backoff = Backoff(retry_interval, max(retry_interval, max_retry_interval))
        self.members_interval = members_interval
        self.relay: Atom | None = None  # the BEAM node whose relay holds our subscriptions
        self.subscriptions: dict[Pid, set[str]] = {}
        self.published = 0
        self.dropped = 0
        self.relays_acquired = 0
        self.publish_rtt_ms: deque[float] = deque(maxlen=2000)
        self._wake = asyncio.Event()
        self._relay_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._publishes: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start keeping a relay (a task the node owns) and follow nodeup/nodedown."""
        self.node.on_nodedown(self._nodedown)
        self.node.on_nodeup(self._nodeup)
        self._task = self.node._spawn_task(self._keep_relay(), name="cluster bus")

    async def stop(self) -> None:
        """Stop the relay keeper and any publish in flight."""
        tasks = [t for t in [self._task, *self._publishes] if t is not None]
        for _ in range(20):
            pending = [t for t in tasks if not t.done()]
            if not pending:
                return
            # cancelled again if a cancel was lost (Python 3.11's wait_for can swallow one when
            # its inner future completes at the same moment), so stop() always returns
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.5)
        log.warning("cluster bus: %d task(s) did not stop", sum(not t.done() for t in tasks))

    async def wait_relay(self, timeout: float = 10.0) -> Atom:
        """Wait until some BEAM relay holds our subscriptions; its node."""
        await asyncio.wait_for(self._relay_up.wait(), timeout)
        assert self.relay is not None
        return self.relay

    # -- subscriptions -------------------------------------------------------------------------

    async def subscribe(self, pid: Pid, pattern: str) -> None:
        """Deliver cluster signals matching `pattern` to local `pid` as {signal, Map} (through the
        relay)."""
        if not valid_pattern(pattern):
            raise ValueError(f"invalid signal pattern {pattern!r}")
        self.subscriptions.setdefault(pid, set()).add(pattern)
        relay = self.relay
        if relay is not None:
            try:
                await self._relay_call(relay, (SUBSCRIBE, pattern, pid))
            except Exception as err:  # the keeper re-subscribes on the next relay
                log.info("subscribe %s via %s failed: %s", pattern, relay, err)
                self._lose_relay(relay)

    async def unsubscribe_all(self, pid: Pid) -> None:
        """Drop every subscription of `pid`."""
        patterns = self.subscriptions.pop(pid, set())
        relay = self.relay
        if relay is not None:
            for pattern in patterns:
                try:
                    await self._relay_call(relay, (UNSUBSCRIBE, pattern, pid))
                except Exception:
                    return

    async def _relay_call(self, beam: Atom, request: Any) -> Any:
        reply = await self.node.call((names.SIGNAL_RELAY, beam), request, timeout=self.call_timeout)
        if reply != "ok":
            raise RuntimeError(f"relay on {beam} answered {reply!r}")
        return reply

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, signal: Signal) -> None:
        """Publish without waiting (errors are logged and counted as dropped)."""
        task = self.node.loop.create_task(self.publish_now(signal))
        self._publishes.add(task)
        task.add_done_callback(self._publishes.discard)

    async def publish_now(self, signal: Signal) -> int:
        """Publish and wait: how many subscribers got it (0 when no BEAM node is reachable)."""
        term = signal.to_term()
        for beam in self._publish_targets():
            started = time.perf_counter()
            try:
                reply = await self.node.rpc(
                    beam, names.CLUSTERING_MODULE, "publish", [term], timeout=self.call_timeout
                )
            except Exception as err:
                log.info("publish via %s failed: %s", beam, err)
                continue
            self.publish_rtt_ms.append((time.perf_counter() - started) * 1000.0)
            if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == "ok":
                self.published += 1
                return int(reply[1])
            log.warning("BEAM refused signal %s: %r", signal.type, reply)
            self.dropped += 1
            return 0
        self.dropped += 1
        return 0

    def _publish_targets(self) -> list[Atom]:
        first = [self.relay] if self.relay is not None else []
        return first + [n for n in self._beam_connected() if n != self.relay]

    async def call_beam(self, module: str, fun: str, args: list[Any]) -> Any:
        """`:erpc.call` on the relay node (or any connected BEAM node)."""
        for beam in self._publish_targets():
            try:
                return await self.node.rpc(beam, module, fun, args, timeout=self.call_timeout)
            except Exception as err:
                log.info("call %s:%s on %s failed: %s", module, fun, beam, err)
        raise ConnectionError("no BEAM node reachable")

    # -- keeping a relay -----------------------------------------------------------------------

    def _beam_connected(self) -> list[Atom]:
        """Connected visible nodes (BEAM nodes; Python nodes join hidden)."""
        out = []
        for n in self.node.nodes():
            conn = self.node.connection(n)
            if conn is not None and conn.peer_flags & F.PUBLISHED:
                out.append(n)
        return sorted(out, key=lambda n: (n not in self.known, self._rank(n)))

    def _rank(self, n: Atom) -> int:
        return self.known.index(n) if n in self.known else len(self.known)

    def _nodedown(self, peer: Atom, why: Any) -> None:
        if peer == self.relay:
            log.info("signal relay node %s went down (%s); failing over", peer, why)
            self._lose_relay(peer)

    def _nodeup(self, peer: Atom) -> None:
        if self.relay is None:
            self._wake.set()

    def _lose_relay(self, relay: Atom) -> None:
        if self.relay == relay:
            self.relay = None
            self._relay_up.clear()
            self._wake.set()

    async def _keep_relay(self) -> None:
        next_members = 0.0
        while True:
            wait = self.retry_interval
            if self.relay is None:
                failures = await self._acquire_relay()
                if self.relay is None:
                    wait = self._backoff.next()
                    tried = "; ".join(f"{n}: {why}" for n, why in failures)
                    log.log(
                        logging.WARNING if failures else logging.INFO,
                        "no BEAM node for the signal relay yet (%s); retrying in %.1f s",
                        tried[:500] or "none known",
                        wait,
                    )
                else:
                    self._backoff.reset()
            elif time.monotonic() >= next_members:
                next_members = time.monotonic() + self.members_interval
                await self._learn_members()
            self._wake.clear()
            try:
                # not wait_for: on 3.11 it can swallow a cancel that meets a set event (gh-86296)
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _connect(self, beam: Atom) -> str | None:
        """None once connected to `beam`, else why not (for the one log line per retry step)."""
        try:
            await self.node._join(beam)
            return None
        except (OSError, ConnectionError, TimeoutError, ValueError) as err:
            why = str(err) or type(err).__name__
            return why.removeprefix(f"cannot connect to {beam}: ")

    async def _acquire_relay(self) -> list[tuple[Atom, str]]:
        """Take the first usable relay; the candidates that failed, and why."""
        failures: list[tuple[Atom, str]] = []
        # the nodes we were told or learnt about (connected ones first), then any BEAM peer
        connected = self._beam_connected()
        known = [n for n in connected if n in self.known]
        known += [n for n in self.known if n not in known]
        candidates = known + [n for n in connected if n not in known]
        for beam in candidates:
            why = await self._connect(beam)
            if why is not None:
                failures.append((beam, why))
                continue
            try:
                # until none is left: a subscribe() while these calls wait saw no relay yet and
                # only recorded its pattern, so this loop must take it too
                sent: set[tuple[Pid, str]] = set()
                while todo := [
                    (pid, pattern)
                    for pid, patterns in list(self.subscriptions.items())
                    for pattern in sorted(patterns)
                    if (pid, pattern) not in sent
                ]:
                    for pid, pattern in todo:
                        await self._relay_call(beam, (SUBSCRIBE, pattern, pid))
                        sent.add((pid, pattern))
            except Exception as err:
                log.info("relay on %s not usable: %s", beam, err)
                failures.append((beam, f"relay not usable: {err!r:.200}"))
                continue
            if beam not in self.known:
                self.known.append(beam)
            # signals published while we had no relay are lost: tell subscribers to resync
            for pid in list(self.subscriptions):
                self.node.send(pid, (RELAY_UP, beam))
            self.relays_acquired += 1
            self.relay = beam
            self._relay_up.set()
            log.info("signals relayed by %s (%d subscribers)", beam, len(self.subscriptions))
            return failures
        return failures

    async def _learn_members(self) -> None:
        """Remember every BEAM member as a failover candidate."""
        relay = self.relay
        if relay is None:
            return
        try:
            members = await self.node.rpc(
                relay, names.CLUSTERING_MODULE, "members", [], timeout=self.call_timeout
            )
        except Exception:
            return
        for m in members if isinstance(members, list) else []:
            if isinstance(m, dict) and m.get("kind") == "beam" and m.get("status") != "down":
                node = m.get("node")
                if isinstance(node, Atom) and node not in self.known:
                    self.known.append(node)
