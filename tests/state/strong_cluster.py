"""A three- (or five-) replica strong store on app nodes, a Python client node, and a workload of
concurrent clients that records a Jepsen-style history while faults are injected."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))

from beam_app import COOKIE, start_app_node  # noqa: E402
from history import History, Op  # noqa: E402
from otp import ErlNode, unique  # noqa: E402

from dspex_cluster import Atom, Node  # noqa: E402
from dspex_cluster.state import State, StateError, VersionMismatch  # noqa: E402

# strong by default, every node a voter; members are not replaced during a test run
STRONG_ENV = {
    "consistency": "strong",
    "replication_factor": "3",
    "state_form_after_ms": "0",
    "state_check_interval_ms": "200",
    "state_member_down_after_ms": "600000",
}


@contextmanager
def strong_nodes(
    epmd_port: int, count: int = 3, env: dict[str, str] | None = None
) -> Iterator[list[ErlNode]]:
    """`count` connected app nodes that formed one strong group; all stopped on exit."""
    nodes: list[ErlNode] = []
    try:
        settings = {**STRONG_ENV, "replication_factor": str(count), **(env or {})}
        for _ in range(count):
            nodes.append(start_app_node(epmd_port, COOKIE, "st", env=settings))
        for other in nodes[1:]:
            assert nodes[0].eval(f"net_kernel:connect_node('{other.name}')") is True
        wait_formed(nodes[0], {n.name for n in nodes})
        yield nodes
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)
            node.stop()


def status(node: ErlNode, timeout: float = 30) -> dict[str, Any]:
    raw = node.eval("'Elixir.DSPEx.Clustering.State':status()", timeout)
    return {str(k): v for k, v in raw.items()}


def wait_formed(node: ErlNode, members: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = status(node)
        if s["leader"] not in (None, "nil") and {str(m) for m in s["members"]} == members:
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"no strong group of {sorted(members)}: {s}")
        time.sleep(0.2)


def leader_of(nodes: list[ErlNode], timeout: float = 15) -> ErlNode:
    """The node that the live nodes name as leader (polled: during an election there is none)."""
    names = {n.name: n for n in nodes}
    deadline = time.monotonic() + timeout
    while True:
        for n in nodes:
            if n.proc.poll() is None:
                try:
                    leader = str(status(n, timeout=5)["leader"])
                except Exception:  # noqa: BLE001 - a frozen or dying node: ask another
                    continue
                if leader in names:
                    return names[leader]
        if time.monotonic() > deadline:
            raise AssertionError("no live node knows a leader")
        time.sleep(0.1)


async def python_client(epmd_port: int) -> Node:
    node = Node(f"{unique('pyst')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd_port)
    await node.start()
    return node


@dataclass
class Workload:
    """Register clients on `keys` and counter clients on one key, all through `State`."""

    state: State
    keys: list[str]
    registers: int = 4
    counters: int = 2
    history: History = field(default_factory=History)
    acked_increments: list[int] = field(default_factory=list)
    unknown_increments: int = 0
    _values: Any = field(default_factory=lambda: iter(range(1, 10**9)))
    # keys of this workload only (a store may hold an earlier workload's keys): the checkers
    # start from an absent register and a counter at 0
    prefix: str = field(default_factory=lambda: unique("w"))

    def __post_init__(self) -> None:
        self.keys = [f"{self.prefix}-{k}" for k in self.keys]
        self.counter_key = f"{self.prefix}-counter"

    async def run(self, seconds: float) -> None:
        stop = time.monotonic() + seconds
        tasks = [self._register(p, stop) for p in range(self.registers)]
        tasks += [self._counter(stop) for _ in range(self.counters)]
        await asyncio.gather(*tasks)

    async def _register(self, process: int, stop: float) -> None:
        rng = random.Random(process)
        versions: dict[str, Any] = {}
        while time.monotonic() < stop:
            key = rng.choice(self.keys)
            f = rng.choice(["get", "get", "put", "cas", "cas"])
            if f == "get":
                op = self.history.invoke(process, "get")
                op.args = ()
                op.key = key  # type: ignore[attr-defined]
                try:
                    entry = await self.state.get(key)
                except StateError:
                    History.complete(op, "unknown")
                    continue
                if entry is None:
                    History.complete(op, "fail", "not_found")
                    versions[key] = None
                else:
                    History.complete(op, "ok", (entry.value, entry.version))
                    versions[key] = entry.version
            elif f == "put":
                value = next(self._values)
                op = self._invoke(process, key, "put", value)
                await self._write(op, self.state.put(key, value))
            else:
                value = next(self._values)
                expected = versions.get(key)
                op = self._invoke(process, key, "cas", expected, value)
                await self._write(op, self.state.cas(key, expected, value))
            await asyncio.sleep(rng.random() * 0.01)

    def _invoke(self, process: int, key: str, f: str, *args: Any) -> Op:
        op = self.history.invoke(process, f, *args)
        op.key = key  # type: ignore[attr-defined]
        return op

    @staticmethod
    async def _write(op: Op, call: Any) -> None:
        try:
            History.complete(op, "ok", await call)
        except VersionMismatch as exc:
            History.complete(op, "fail", exc.current)
        except StateError:
            History.complete(op, "unknown")

    async def _counter(self, stop: float) -> None:
        while time.monotonic() < stop:
            try:
                entry = await self.state.get(self.counter_key)
            except StateError:
                continue
            current, version = (0, None) if entry is None else entry
            try:
                await self.state.cas(self.counter_key, version, current + 1)
                self.acked_increments.append(current + 1)
            except VersionMismatch:
                pass
            except StateError:
                self.unknown_increments += 1

    def by_key(self) -> dict[str, list[Op]]:
        out: dict[str, list[Op]] = {}
        for op in self.history.ops:
            out.setdefault(op.key, []).append(op)  # type: ignore[attr-defined]
        return out


def kill(node: ErlNode, sig: signal.Signals) -> None:
    os.kill(node.proc.pid, sig)


def beam_names(nodes: list[ErlNode]) -> list[Atom]:
    return [Atom(n.name) for n in nodes]
