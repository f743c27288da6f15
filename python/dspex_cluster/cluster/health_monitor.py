"""`dspex_health_monitor`: an AnomalyDetector per node over its `cluster.health.data`.

Features: the numeric leaves of the health data, flattened to dotted names (`memory.total`,
`run_queue.total`, `scheduler_utilization.total`, `os_cpu`, `process_count`, … on BEAM nodes;
`cpu`, `memory`, `process_rss_mb`, … on Python nodes), except counters that only grow
(`reductions.total`) and constants (`interval_ms`, system totals). A node's feature set is fixed
by its first report; a feature missing later counts as "no reading" (the detector carries the
last one forward).

Published:
  * `cluster.health.anomaly` — data `%{node, score, threshold, features: %{name => share of
    the evidence}, values: %{name => reading}}` for every report scoring >= `anomaly_score`
    (at most one per `anomaly_min_interval_s` per node unless the score rose).
  * `cluster.health.alert` — data `%{node, severity, message, score}` by a hysteresis policy:
    `warning` after `alert_rows` consecutive reports >= `alert_on`, `critical` when a report
    reaches `critical_on` while alerting, `info` ("recovered") after `clear_rows` consecutive
    reports < `alert_off`.

Calls: `scores` -> #{Node => %{score, alerting, rows, features}}; `{explain, Node}` -> the last
report's feature shares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dspex_cluster import signals
from dspex_cluster.agents import Action, Agent, Param
from dspex_cluster.agents.names import HEALTH_MONITOR
from dspex_cluster.agents.skill import Route, Skill
from dspex_cluster.cluster.terms import as_mapping, number
from dspex_cluster.etf import Atom
from dspex_cluster.runtime import Caller
from dspex_cluster.signals import Signal
from dspex_cluster.skills.anomaly import AnomalyDetector

SKIP = {"reductions.total", "interval_ms", "os_memory.total", "memory.atom", "memory.code"}


@dataclass
class HealthPolicy:
    anomaly_score: float = 0.3  # publish cluster.health.anomaly at or above
    anomaly_min_interval_s: float = 2.0
    alert_on: float = 0.4
    alert_off: float = 0.2
    critical_on: float = 0.8
    alert_rows: int = 2
    clear_rows: int = 3
    # detector settings for short live histories (see AnomalyDetector)
    detector: dict[str, Any] = field(
        default_factory=lambda: {
            "warmup": 10,
            "p_scale": 0.05,
            "quiet_rows": 0,  # no repeat damping: the alert policy handles persistence
            "level_rows": 5,
            "halflife": 500.0,
            "history": 5000,
        }
    )


def flatten(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested maps as dotted names (lists and non-numbers are skipped)."""
    out: dict[str, float] = {}
    for key, value in as_mapping(data).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            v = number(value)
            if v is not None and name not in SKIP:
                out[name] = v
    return out


class NodeHealth:
    """One node's detector and alert state."""

    def __init__(self, names: list[str], policy: HealthPolicy) -> None:
        self.names = names
        self.detector = AnomalyDetector(len(names), feature_names=names, **policy.detector)
        self.rows = 0
        self.score = 0.0
        self.shares: dict[str, float] = {}
        self.values: dict[str, float] = {}
        self.alerting = False
        self.critical = False
        self.above = 0
        self.below = 0
        self.last_anomaly_at = -1e9
        self.last_anomaly_score = 0.0

    def update(self, values: dict[str, float]) -> float:
        row = np.array([values.get(n, np.nan) for n in self.names])
        self.score = self.detector.update(row)
        self.shares = self.detector.explain()
        self.values = values
        self.rows += 1
        return self.score


class AnomalySkill(Skill):
    """AnomalyDetector per node + the alert policy."""

    name = "anomaly"

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self.nodes: dict[Atom, NodeHealth] = {}
        self.published: list[Signal] = []

    def routes(self) -> list[Route]:
        return [("cluster.health.data", self.on_health)]

    def actions(self) -> list[Action]:
        return [
            Action("scores", lambda agent: self.scores()),
            Action(
                "explain", lambda agent, node: self.explain(node), {"node": Param("node", True)}
            ),
        ]

    def on_health(self, signal: Signal) -> None:
        node = signal.get("node")
        if not isinstance(node, Atom):
            return
        values = flatten(signal.data)
        values.pop("node", None)
        health = self.nodes.get(node)
        if health is None:
            if not values:
                return
            health = self.nodes[node] = NodeHealth(sorted(values), self.policy)
        score = health.update(values)
        for out in self._judge(node, health, score):
            self.published.append(out)
            self.agent.publish(out)

    def _judge(self, node: Atom, h: NodeHealth, score: float) -> list[Signal]:
        p = self.policy
        origin = str(self.agent.node.name)
        out: list[Signal] = []
        now = time.monotonic()
        top = dict(list(h.shares.items())[:5])
        if score >= p.anomaly_score and (
            now - h.last_anomaly_at >= p.anomaly_min_interval_s or score > h.last_anomaly_score
        ):
            values = {k: h.values[k] for k in top if k in h.values}
            out.append(
                signals.health_anomaly(
                    node, score, top, origin=origin, threshold=p.anomaly_score, values=values
                )
            )
            h.last_anomaly_at, h.last_anomaly_score = now, score
        h.above = h.above + 1 if score >= p.alert_on else 0
        h.below = h.below + 1 if score < p.alert_off else 0
        drivers = ", ".join(k for k, v in top.items() if v > 0) or "no single feature"
        extra = {"score": float(score)}
        if not h.alerting and h.above >= p.alert_rows:
            h.alerting = True
            msg = f"anomalous health on {node} (score {score:.2f}; driven by {drivers})"
            out.append(signals.health_alert(node, "warning", msg, origin=origin, extra=extra))
        elif h.alerting and not h.critical and score >= p.critical_on:
            h.critical = True
            msg = f"critical health anomaly on {node} (score {score:.2f}; driven by {drivers})"
            out.append(signals.health_alert(node, "critical", msg, origin=origin, extra=extra))
        elif h.alerting and h.below >= p.clear_rows:
            h.alerting = h.critical = False
            msg = f"health on {node} back to normal (score {score:.2f})"
            out.append(signals.health_alert(node, "info", msg, origin=origin, extra=extra))
        return out

    def scores(self) -> dict[Atom, Any]:
        return {
            node: {
                Atom("score"): round(h.score, 4),
                Atom("alerting"): h.alerting,
                Atom("rows"): h.rows,
                Atom("features"): len(h.names),
            }
            for node, h in self.nodes.items()
        }

    def explain(self, node: Any) -> dict[Atom, float]:
        h = self.nodes.get(Atom(node))
        return {} if h is None else {Atom(k): round(v, 4) for k, v in h.shares.items()}

    def describe(self) -> dict[str, Any]:
        return {Atom("nodes"): len(self.nodes)}


class HealthMonitor(Agent):
    def __init__(self, policy: HealthPolicy | None = None, **kwargs: Any) -> None:
        self.anomaly = AnomalySkill(policy)
        super().__init__(HEALTH_MONITOR, skills=[self.anomaly], **kwargs)

    async def handle_request(self, request: Any, caller: Caller) -> Any:
        if request == "scores":
            return self.anomaly.scores()
        if isinstance(request, tuple) and len(request) == 2 and request[0] == "explain":
            return self.anomaly.explain(request[1])
        return await super().handle_request(request, caller)
