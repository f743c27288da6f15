"""`dspex_performance`: how the cluster performs, and what holds it back.

Sources: every cluster signal (subscribed to `cluster.**`: counts per type, delivery latency =
arrival - the signal's `time`, same-host clocks assumed synchronised), the load reports (CPU,
run queue per node), the local load balancer (task outcomes: throughput and latency per node,
placement decision time) and the bus (publish round trips = coordination latency).

`report` (call) and the periodic `cluster.performance.report` signal carry:

    %{window_s, throughput: %{tasks_per_s, signals_per_s, placements},
      task_latency_ms: %{p50, p90, p99, n}, per_node: %{Node => %{tasks, p50_ms, cpu, run_queue}},
      signal_latency_ms: %{p50, p99, n}, coordination_ms: %{publish_p50, publish_p99,
      decision_p50, decision_p99}, signal_types: %{Type => count},
      bottlenecks: [%{kind, node, detail}], recommendations: [binary]}
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from dspex_cluster import signals
from dspex_cluster.agents import Action, Agent, FunctionSensor, Sensor
from dspex_cluster.agents.skill import Route
from dspex_cluster.cluster.terms import as_mapping, dig, number
from dspex_cluster.etf import Atom
from dspex_cluster.names import PERFORMANCE
from dspex_cluster.runtime import Caller
from dspex_cluster.signals import Signal, parse_time

if TYPE_CHECKING:
    from dspex_cluster.cluster.load_balancer import LoadBalancer


@dataclass
class PerformanceConfig:
    report_interval_s: float = 10.0
    window_s: float = 60.0
    hot_cpu: float = 0.85
    slow_node_factor: float = 2.0  # a node whose median task is this much slower than the rest
    signal_latency_budget_ms: float = 100.0
    decision_budget_ms: float = 50.0  # the BEAM front's default placement budget


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


class PerformanceAgent(Agent):
    """The `dspex_performance` agent: signal and placement performance of the cluster (see the
    module docstring)."""

    def __init__(
        self,
        config: PerformanceConfig | None = None,
        load_balancer: LoadBalancer | Callable[[], LoadBalancer | None] | None = None,
        **kwargs: Any,
    ) -> None:
        """`load_balancer`: the agent whose placement outcomes the report includes, or a function
        returning the one running now (under a supervisor it is a new object after a restart)."""
        super().__init__(PERFORMANCE, **kwargs)
        self.config = config or PerformanceConfig()
        self._load_balancer = load_balancer

    @property
    def load_balancer(self) -> LoadBalancer | None:
        """The load balancer running now, if any."""
        lb = self._load_balancer
        return lb() if callable(lb) else lb

    def setup(self) -> None:
        """Fresh state for this agent (run at init, and again after a supervisor restart)."""
        self.arrivals: deque[tuple[float, str, float | None]] = deque(maxlen=50_000)
        self.loads: dict[Atom, dict[str, Any]] = {}
        self.reports: list[Signal] = []

    def routes(self) -> list[Route]:
        """The cluster signals this agent consumes, with their handlers."""
        return [("cluster.**", self.on_signal)]

    def sensors(self) -> list[Sensor]:
        """This agent's periodic sensors."""
        return [FunctionSensor("report", self.config.report_interval_s, self.periodic)]

    def actions(self) -> list[Action]:
        """This agent's actions ({cmd, Action, Params})."""
        return [Action("report", lambda a: a.report())]

    async def handle_request(self, request: Any, caller: Caller) -> Any:
        """The calls this agent serves (see the module docstring); a malformed one raises
        BadRequest."""
        if request == "report":
            return self.report()
        return await super().handle_request(request, caller)

    def on_signal(self, signal: Signal) -> None:
        """Every cluster signal: counted by type, with its delivery latency."""
        latency = None
        if signal.time is not None:
            try:
                sent = parse_time(signal.time)
                latency = (datetime.now(UTC) - sent).total_seconds() * 1000.0
            except ValueError:
                pass
        self.arrivals.append((time.monotonic(), signal.type, latency))
        if signal.type == "cluster.load.report":
            node = signal.get("node")
            if isinstance(node, Atom):
                self.loads[node] = as_mapping(signal.data)

    def periodic(self, _agent: Agent) -> list[Signal]:
        """The periodic cluster.performance.report signal."""
        report = self.report()
        signal = signals.performance_report(
            {str(k): v for k, v in report.items()}, origin=str(self.node.name)
        )
        self.reports.append(signal)
        return [signal]

    def report(self) -> dict[Atom, Any]:
        """`report`: signal rates and latencies, placement outcomes per node, publish and decision
        times."""
        c = self.config
        now = time.monotonic()
        since = now - c.window_s
        arrivals = [a for a in self.arrivals if a[0] >= since]
        window = min(c.window_s, max(now - arrivals[0][0], 1e-3)) if arrivals else c.window_s
        lat = [a[2] for a in arrivals if a[2] is not None and a[2] >= 0]
        types = Counter(a[1] for a in arrivals)
        lb = self.load_balancer
        outcomes = [o for o in lb.outcomes if o[0] >= since] if lb is not None else []
        durations = [o[2] for o in outcomes]
        per_node: dict[Atom, dict[Atom, Any]] = {}
        by_node: dict[Atom, list[float]] = {}
        for _, node, ms in outcomes:
            by_node.setdefault(node, []).append(ms)
        for node in set(by_node) | set(self.loads):
            load = self.loads.get(node, {})
            per_node[node] = {
                Atom("tasks"): len(by_node.get(node, [])),
                Atom("p50_ms"): _pct(by_node.get(node, []), 50),
                Atom("cpu"): number(load.get("cpu")),
                Atom("run_queue"): number(load.get("run_queue")) or dig(load, "run_queue", "total"),
            }
        publish = list(self.bus.publish_rtt_ms) if self.bus is not None else []
        decisions = list(lb.decision_ms) if lb is not None else []
        bottlenecks, advice = self._bottlenecks(per_node, by_node, lat, decisions)
        return {
            Atom("window_s"): round(window, 3),
            Atom("throughput"): {
                Atom("tasks_per_s"): round(len(outcomes) / window, 4),
                Atom("signals_per_s"): round(len(arrivals) / window, 4),
                Atom("placements"): sum(lb.placements.values()) if lb is not None else 0,
            },
            Atom("task_latency_ms"): {
                Atom("p50"): _pct(durations, 50),
                Atom("p90"): _pct(durations, 90),
                Atom("p99"): _pct(durations, 99),
                Atom("n"): len(durations),
            },
            Atom("per_node"): per_node,
            Atom("signal_latency_ms"): {
                Atom("p50"): _pct(lat, 50),
                Atom("p99"): _pct(lat, 99),
                Atom("n"): len(lat),
            },
            Atom("coordination_ms"): {
                Atom("publish_p50"): _pct(publish, 50),
                Atom("publish_p99"): _pct(publish, 99),
                Atom("decision_p50"): _pct(decisions, 50),
                Atom("decision_p99"): _pct(decisions, 99),
            },
            Atom("signal_types"): {t.encode(): n for t, n in types.most_common()},
            Atom("bottlenecks"): bottlenecks,
            Atom("recommendations"): advice,
        }

    def _bottlenecks(
        self,
        per_node: dict[Atom, dict[Atom, Any]],
        by_node: dict[Atom, list[float]],
        signal_latency: list[float],
        decisions: list[float],
    ) -> tuple[list[dict[Atom, Any]], list[str]]:
        c = self.config
        found: list[dict[Atom, Any]] = []
        advice: list[str] = []

        def add(kind: str, node: Any, detail: str, fix: str) -> None:
            found.append({Atom("kind"): Atom(kind), Atom("node"): node, Atom("detail"): detail})
            advice.append(fix)

        for node, stats in sorted(per_node.items()):
            cpu = stats[Atom("cpu")]
            if cpu is not None and cpu >= c.hot_cpu:
                add(
                    "cpu",
                    node,
                    f"CPU at {cpu:.0%}",
                    f"move agents off {node} or add capacity (CPU {cpu:.0%})",
                )
        medians = {n: float(np.median(v)) for n, v in by_node.items() if len(v) >= 3}
        for node, med in sorted(medians.items()):
            others = [m for n, m in medians.items() if n != node]
            if others and med > c.slow_node_factor * float(np.median(others)):
                add(
                    "slow_node",
                    node,
                    f"median task {med:.0f} ms vs {np.median(others):.0f} ms elsewhere",
                    f"place less work on {node}: tasks run {med / np.median(others):.1f}x slower",
                )
        p99 = _pct(signal_latency, 99)
        if p99 is not None and p99 > c.signal_latency_budget_ms:
            add(
                "signal_latency",
                None,
                f"signal delivery p99 {p99:.0f} ms",
                "signals arrive late: check for overloaded relays or busy subscribers",
            )
        d99 = _pct(decisions, 99)
        if d99 is not None and d99 > c.decision_budget_ms:
            add(
                "placement_latency",
                None,
                f"placement decision p99 {d99:.1f} ms",
                "placement decisions exceed the BEAM budget: raise placement_budget_ms",
            )
        return found, advice
