"""Sensors: where an agent's own signals come from.

A periodic sensor (`interval_s` set) is asked `sense(agent)` every `interval_s` seconds inside
the agent's process (so it sees consistent state); an event-driven sensor (`interval_s` None) gets
the messages the agent receives but does not route (`on_event`). Both return signals (or None),
which the agent publishes on the cluster bus. `start`/`stop` hook up external event sources.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

from dspex_cluster import signals
from dspex_cluster.etf import Atom
from dspex_cluster.signals import Signal

if TYPE_CHECKING:
    from dspex_cluster.agents.agent import Agent


class Sensor:
    """Override `sense` (periodic) or `on_event` (event-driven)."""

    name: str = "sensor"
    interval_s: float | None = None

    def __init__(self, name: str | None = None, interval_s: float | None = None) -> None:
        if name is not None:
            self.name = name
        if interval_s is not None:
            if interval_s <= 0:
                raise ValueError("interval_s must be > 0")
            self.interval_s = interval_s

    def start(self, agent: Agent) -> None:
        """Called once in the agent's init."""

    def stop(self, agent: Agent) -> None:
        """Called when the agent ends."""

    async def sense(self, agent: Agent) -> list[Signal] | None:
        """Polled every interval_s: the signals to publish (override)."""
        return None

    def on_event(self, agent: Agent, message: Any) -> list[Signal] | None:
        """An event-driven sensor's view of a message: the signals to publish (override)."""
        return None


class FunctionSensor(Sensor):
    """A periodic sensor from a function `fn(agent) -> list[Signal] | None`."""

    def __init__(self, name: str, interval_s: float, fn: Callable[[Agent], Any]) -> None:
        super().__init__(name, interval_s)
        self._fn = fn

    async def sense(self, agent: Agent) -> list[Signal] | None:
        """Call the function with the agent; its signals."""
        out = self._fn(agent)
        if hasattr(out, "__await__"):
            out = await out
        return out


class NodeEventSensor(Sensor):
    """Event-driven: the Python node's own nodeup/nodedown, delivered to the agent as
    `{nodeup, Node}` / `{nodedown, Node, Reason}` messages (the agent's `handle_event` sees them).
    It publishes nothing itself: BEAM Membership already publishes `cluster.node.*`."""

    name = "node_events"

    def start(self, agent: Agent) -> None:
        """Follow the node's nodeup/nodedown events for this agent."""
        node = agent.node
        pid = agent.pid

        def up(peer: Atom) -> None:
            if agent.alive:
                node.send(pid, (Atom("nodeup"), peer))

        def down(peer: Atom, why: Any) -> None:
            if agent.alive:
                node.send(pid, (Atom("nodedown"), peer, str(why)))

        node.on_nodeup(up)
        node.on_nodedown(down)


class HostVitalsSensor(Sensor):
    """The Python host's own vitals (psutil) as `cluster.health.data` for this node:
    `cpu` (busy share 0..1), `memory` (used share 0..1), `load_avg_1m`, `process_rss_mb`,
    `process_cpu` (this process, share of one core), `threads`, `open_fds`, `kind: :python`,
    `interval_ms`."""

    name = "host_vitals"
    interval_s = 2.0

    def __init__(self, interval_s: float | None = None) -> None:
        super().__init__(None, interval_s)
        self._proc = psutil.Process(os.getpid())
        psutil.cpu_percent(None)  # the first call only sets the baseline
        self._proc.cpu_percent(None)
        self._last = time.monotonic()

    def vitals(self) -> dict[str, Any]:
        """This host's CPU, memory and load figures, as a map of atoms."""
        mem = psutil.virtual_memory()
        with self._proc.oneshot():
            rss = self._proc.memory_info().rss
            proc_cpu = self._proc.cpu_percent(None) / 100.0
            threads = self._proc.num_threads()
            fds = self._proc.num_fds() if hasattr(self._proc, "num_fds") else 0
        return {
            "cpu": round(psutil.cpu_percent(None) / 100.0, 4),
            "memory": round(mem.percent / 100.0, 4),
            "free_memory_mb": mem.available // 1_048_576,
            "load_avg_1m": round(os.getloadavg()[0], 3),
            "process_rss_mb": round(rss / 1_048_576, 2),
            "process_cpu": round(proc_cpu, 4),
            "threads": threads,
            "open_fds": fds,
            "kind": Atom("python"),
            "interval_ms": int(self.interval_s * 1000) if self.interval_s else 0,
        }

    async def sense(self, agent: Agent) -> list[Signal] | None:
        """A cluster.health.data signal with this host's vitals."""
        return [signals.health_data(self.vitals(), node=str(agent.node.name))]
