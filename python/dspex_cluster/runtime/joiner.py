"""Staying joined: keep a node connected to the nodes it was told to join, retrying with back-off.

    keeper = JoinKeeper(node, ["beam1@127.0.0.1"], epmd_hosts=["127.0.0.1"])
    await keeper.first_round()          # one attempt at each (a failure is logged, not raised)
    task = asyncio.create_task(keeper.run())

`join` nodes are dialled until connected and again whenever their connection drops. With
`epmd_hosts` every node that the epmd of those hosts lists is a target too (looked up every
`discovery_interval` seconds). A target that stays away is retried after 0.5, 1, 2 ... up to
`max_delay` seconds, and each failed step is logged once (WARNING for a `join` node, INFO for a
discovered one, whose epmd entry may be stale).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dspex_cluster.etf import Atom
from dspex_cluster.nodeconfig import Backoff
from dspex_cluster.runtime import epmd_client

if TYPE_CHECKING:
    from dspex_cluster.runtime.node import Node

log = logging.getLogger("dspex_cluster.runtime.joiner")


class _Target:
    __slots__ = ("backoff", "next_at")

    def __init__(self, initial: float, maximum: float) -> None:
        self.backoff = Backoff(initial, maximum)
        self.next_at = 0.0


class JoinKeeper:
    """Keeps `node` connected to `join` (and to what epmd lists on `epmd_hosts`)."""

    def __init__(
        self,
        node: Node,
        join: Iterable[str],
        *,
        epmd_hosts: Iterable[str] = (),
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        discovery_interval: float = 5.0,
    ) -> None:
        self.node = node
        self.join = [Atom(n) for n in join if Atom(n) != node.name]
        self.epmd_hosts = list(epmd_hosts)
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.discovery_interval = discovery_interval
        self.discovered: list[Atom] = []
        self._targets: dict[Atom, _Target] = {}
        self._next_discovery = 0.0
        self._wake = asyncio.Event()
        node.on_nodedown(lambda peer, why: self._wake.set())

    async def first_round(self) -> dict[Atom, str]:
        """One attempt at every target now; {target: why} for those that failed."""
        await self._discover()
        return await self._attempt(self._all(), force=True)

    async def run(self) -> None:
        """Retry until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            if self.epmd_hosts and loop.time() >= self._next_discovery:
                await self._discover()
            await self._attempt(self._all(), force=False)
            waits = [t.next_at for n, t in self._targets.items() if n not in self._connected()]
            if self.epmd_hosts:
                waits.append(self._next_discovery)
            wait = (min(waits) - loop.time()) if waits else self.max_delay
            self._wake.clear()
            try:
                # not wait_for: on 3.11 it can swallow a cancel that meets a set event (gh-86296),
                # and this loop then outlives the node's stop
                async with asyncio.timeout(max(0.05, wait)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _all(self) -> list[Atom]:
        return self.join + [n for n in self.discovered if n not in self.join]

    def _connected(self) -> set[Atom]:
        return set(self.node.nodes())

    async def _attempt(self, targets: list[Atom], force: bool) -> dict[Atom, str]:
        loop = asyncio.get_running_loop()
        connected = self._connected()
        due: list[Atom] = []
        for name in targets:
            target = self._targets.setdefault(name, _Target(self.initial_delay, self.max_delay))
            if name in connected:
                target.backoff.reset()
                target.next_at = 0.0
            elif force or loop.time() >= target.next_at:
                due.append(name)
        results = await asyncio.gather(*(self._connect(n) for n in due))
        failed: dict[Atom, str] = {}
        for name, why in zip(due, results, strict=True):
            target = self._targets[name]
            if why is None:
                target.backoff.reset()
                log.info("joined %s", name)
                continue
            failed[name] = why
            delay = target.backoff.next()
            target.next_at = loop.time() + delay
            level = logging.WARNING if name in self.join else logging.INFO
            log.log(level, "cannot join %s: %s; retrying in %.1f s", name, why[:300], delay)
        return failed

    async def _connect(self, name: Atom) -> str | None:
        try:
            await self.node._join(name)
            return None
        except (OSError, ConnectionError, TimeoutError, ValueError) as err:
            why = str(err) or type(err).__name__
            return why.removeprefix(f"cannot connect to {name}: ")

    async def _discover(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_discovery = loop.time() + self.discovery_interval
        found: list[Atom] = []
        for host in self.epmd_hosts:
            try:
                names = await epmd_client.names(host, self.node.epmd_port)
            except Exception as err:  # epmd down or unreachable on that host: try again later
                log.info("epmd discovery on %s failed: %s", host, err)
                continue
            found += [Atom(f"{n}@{host}") for n in sorted(names)]
        self.discovered = [n for n in found if n != self.node.name]


__all__ = ["JoinKeeper"]
