"""`dspex_health_monitor`: an AnomalyDetector per node over its `cluster.health.data`.

Features: on BEAM nodes `scheduler_utilization.total`, `run_queue.total`, `memory.total`,
`memory.processes`, `memory.binary`, `memory.ets`, `process_count`,
`longest_message_queue.length`, `reductions.since_last_call`, `os_cpu`,
`os_memory.used_fraction`; on Python nodes `cpu`, `memory`, `process_rss_mb`, `process_cpu`,
`threads`, `load_avg_1m`; for other shapes every numeric leaf (dotted names). A node's feature set
is fixed by its first report; a missing reading is carried forward by the detector.

Score: the detector scores rarity (how seldom the node has been anywhere near this reading); a
new extreme of ordinary noise is rare too. So the policy also weighs size: each
feature's deviation from its recent median in robust standard deviations (MAD, floored at 1% of
the median and at the smallest change that matters for the feature, `FLOORS`); the published
score is rarity x min(1, deviation of the driving features / `min_deviation`).

Published:
  * `cluster.health.anomaly` — data `%{node, score, rarity, deviation, threshold, features:
    %{name => share of the evidence}, values: %{name => reading}}` for every report scoring >=
    `anomaly_score` (at most one per `anomaly_min_interval_s` per node unless the score rose).
  * `cluster.health.alert` — data `%{node, severity, message, score}` by a hysteresis policy:
    `warning` after `alert_rows` consecutive reports >= `alert_on`, `critical` when a report
    reaches `critical_on` while alerting, `info` ("recovered") after `clear_rows` consecutive
    reports < `alert_off`.

The alert threshold `alert_on` is a knob (cluster/knobs.py): when the Cognitive Variable
`health.alert_threshold` exists, every health monitor uses its value (`alert_off` stays at most
half of it) and feeds it rewards from outcomes: +1 when a node that went down had been alerted
on within `outcome_horizon_s`, -1 when it went down unannounced, -0.25 for an alert that cleared
with the node still up (a false alarm).

Calls: `scores` -> #{Node => %{score, rarity, deviation, alerting, rows, features}};
`{explain, Node}` -> the last report's feature shares.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dspex_cluster import signals
from dspex_cluster.agents import Action, Agent, Param
from dspex_cluster.agents.sensor import Sensor
from dspex_cluster.agents.skill import Route, Skill
from dspex_cluster.cluster.knobs import Knob, KnobSensor
from dspex_cluster.cluster.terms import as_mapping, number
from dspex_cluster.cluster.warm import WarmAgent
from dspex_cluster.etf import Atom
from dspex_cluster.names import HEALTH_MONITOR
from dspex_cluster.runtime import Caller
from dspex_cluster.signals import Signal
from dspex_cluster.skills.anomaly import AnomalyDetector

SKIP = {"reductions.total", "interval_ms", "os_memory.total", "memory.atom", "memory.code"}
KNOWN = (
    "scheduler_utilization.total",
    "run_queue.total",
    "memory.total",
    "memory.processes",
    "memory.binary",
    "memory.ets",
    "process_count",
    "longest_message_queue.length",
    "reductions.since_last_call",
    "os_cpu",
    "os_memory.used_fraction",
    "cpu",
    "memory",
    "process_rss_mb",
    "process_cpu",
    "threads",
    "load_avg_1m",
)


# The smallest change that can matter, per feature (a run queue of one is nothing).
FLOORS = {
    "scheduler_utilization.total": 0.05,
    "run_queue.total": 2.0,
    "process_count": 10.0,
    "longest_message_queue.length": 20.0,
    "os_cpu": 0.05,
    "os_memory.used_fraction": 0.01,
    "cpu": 0.05,
    "memory": 0.01,
    "process_cpu": 0.05,
    "threads": 2.0,
    "load_avg_1m": 0.25,
}


@dataclass
class HealthPolicy:
    anomaly_score: float = 0.25  # publish cluster.health.anomaly at or above
    anomaly_min_interval_s: float = 2.0
    alert_on: float = 0.3
    alert_off: float = 0.15
    critical_on: float = 0.8
    alert_rows: int = 2
    clear_rows: int = 3
    min_deviation: float = 4.0  # robust std devs for a full-strength score
    threshold_variable: str | None = "health.alert_threshold"  # the knob of `alert_on`
    outcome_horizon_s: float = 600.0  # an alert this recent "announced" a node's going down
    knob_retry_s: float = 2.0
    knob_feedback_interval_s: float = 5.0
    baseline_rows: int = 120
    # reports per node saved for a warm restart (replayed on restore in one vectorised call)
    warm_rows: int = 1000
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
        self.policy = policy
        self.detector = AnomalyDetector(len(names), feature_names=names, **policy.detector)
        self.window: deque[np.ndarray] = deque(maxlen=policy.baseline_rows)
        self.recent: deque[np.ndarray] = deque(maxlen=policy.warm_rows)  # for warm restarts
        self.floors = np.array([FLOORS.get(n, 1e-9) for n in names])
        self.rows = 0
        self.score = 0.0
        self.rarity = 0.0
        self.deviation = 0.0
        self.z: dict[str, float] = {}
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
        self.recent.append(row)
        self.rarity = self.detector.update(row)
        self.shares = self.detector.explain()
        self.values = values
        self.rows += 1
        self.z = self._deviations(row)
        self.window.append(row)
        drivers = [self.z.get(k, 0.0) for k, share in list(self.shares.items())[:3] if share > 0]
        self.deviation = max(drivers, default=0.0)
        self.score = self.rarity * min(1.0, self.deviation / self.policy.min_deviation)
        return self.score

    def replay(self, rows: np.ndarray) -> None:
        """Feed saved reports (rows x names, NaN = missing) as `update` would, all but the last
        in one vectorised detector call (the detector scores a block as it scores row by row)."""
        if rows.shape[0] > 1:
            self.detector.score_series(rows[:-1])
            self.recent.extend(rows[:-1])
            self.window.extend(rows[:-1])
            self.rows += rows.shape[0] - 1
        if rows.shape[0]:
            last = rows[-1]
            self.update(
                {n: float(v) for n, v in zip(self.names, last, strict=True) if np.isfinite(v)}
            )

    def _deviations(self, row: np.ndarray) -> dict[str, float]:
        """|reading - median| / robust std of the recent window, per feature."""
        if len(self.window) < 5:
            return {}
        past = np.array(self.window)
        with np.errstate(all="ignore"):
            med = np.nanmedian(past, axis=0)
            mad = np.nanmedian(np.abs(past - med), axis=0) * 1.4826
        floor = np.maximum(0.01 * np.abs(np.nan_to_num(med)), self.floors)
        scale = np.maximum(np.nan_to_num(mad), floor)
        z = np.abs(np.nan_to_num(row - med)) / scale
        return {n: float(v) for n, v in zip(self.names, z, strict=True)}


class AnomalySkill(Skill):
    """AnomalyDetector per node + the alert policy."""

    name = "anomaly"

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self.nodes: dict[Atom, NodeHealth] = {}
        self.published: list[Signal] = []
        p = self.policy
        self._alert_off = p.alert_off
        self.threshold = Knob(p.threshold_variable or "", p.alert_on, self._use_threshold)
        self.last_alert: dict[Atom, float] = {}  # node -> monotonic time of its last warning

    def _use_threshold(self, value: float) -> None:
        self.policy.alert_on = value
        self.policy.alert_off = min(self._alert_off, value / 2)

    def routes(self) -> list[Route]:
        return [("cluster.health.data", self.on_health), ("cluster.node.down", self.on_down)]

    def sensors(self) -> list[Sensor]:
        p = self.policy
        if not p.threshold_variable:
            return []
        return [KnobSensor([self.threshold], p.knob_retry_s, p.knob_feedback_interval_s)]

    def on_down(self, signal: Signal) -> None:
        """Rewards the threshold: was this node's going down announced by an alert?"""
        node = signal.get("node")
        if not isinstance(node, Atom):
            return
        at = self.last_alert.pop(node, None)
        announced = at is not None and time.monotonic() - at <= self.policy.outcome_horizon_s
        self.threshold.reward(1.0 if announced else -1.0)

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
            names = [n for n in KNOWN if n in values] or sorted(values)
            health = self.nodes[node] = NodeHealth(names, self.policy)
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
            extra = {"rarity": float(h.rarity), "deviation": float(min(h.deviation, 1e6))}
            out.append(
                signals.health_anomaly(
                    node,
                    score,
                    top,
                    origin=origin,
                    threshold=p.anomaly_score,
                    values=values,
                    extra=extra,
                )
            )
            h.last_anomaly_at, h.last_anomaly_score = now, score
        h.above = h.above + 1 if score >= p.alert_on else 0
        h.below = h.below + 1 if score < p.alert_off else 0
        drivers = ", ".join(k for k, v in top.items() if v > 0) or "no single feature"
        extra = {"score": float(score)}
        if not h.alerting and h.above >= p.alert_rows:
            h.alerting = True
            self.last_alert[node] = now
            msg = f"anomalous health on {node} (score {score:.2f}; driven by {drivers})"
            out.append(signals.health_alert(node, "warning", msg, origin=origin, extra=extra))
        elif h.alerting and not h.critical and score >= p.critical_on:
            h.critical = True
            msg = f"critical health anomaly on {node} (score {score:.2f}; driven by {drivers})"
            out.append(signals.health_alert(node, "critical", msg, origin=origin, extra=extra))
        elif h.alerting and h.below >= p.clear_rows:
            h.alerting = h.critical = False
            self.threshold.reward(-0.25)  # alerted, and the node stayed up: a false alarm
            msg = f"health on {node} back to normal (score {score:.2f})"
            out.append(signals.health_alert(node, "info", msg, origin=origin, extra=extra))
        return out

    def scores(self) -> dict[Atom, Any]:
        return {
            node: {
                Atom("score"): round(h.score, 4),
                Atom("rarity"): round(h.rarity, 4),
                Atom("deviation"): round(min(h.deviation, 1e6), 3),
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


class HealthMonitor(WarmAgent, Agent):
    """The health monitor agent; its warm state is each node's last `warm_rows` reports,
    replayed through a fresh detector on restore (the same baselines when a node has sent no
    more than `warm_rows` reports, the most recent ones otherwise)."""

    def __init__(self, policy: HealthPolicy | None = None, **kwargs: Any) -> None:
        self.anomaly = AnomalySkill(policy)
        super().__init__(HEALTH_MONITOR, skills=[self.anomaly], **kwargs)

    def setup(self) -> None:
        """Fresh state for this agent (run at init, and again after a supervisor restart)."""
        self._warm_start()

    def sensors(self) -> list[Sensor]:
        """This agent's sensors (and the checkpoint sensor, when warm)."""
        return self._checkpoint_sensor()

    def warm_version(self) -> Any:
        """Changes whenever the learned state does (a checkpoint is due when it moved)."""
        return sum(h.rows for h in self.anomaly.nodes.values())

    def warm_state(self) -> dict[str, Any]:
        """The learned state to checkpoint (plain data)."""
        return {
            str(node): {"names": h.names, "rows": np.array(h.recent).reshape(-1, len(h.names))}
            for node, h in self.anomaly.nodes.items()
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Resume from a checkpoint made by warm_state."""
        nodes: dict[Atom, NodeHealth] = {}
        for node, saved in state.items():
            names = [str(n) for n in saved["names"]]
            h = NodeHealth(names, self.anomaly.policy)
            h.replay(np.asarray(saved["rows"], dtype=np.float64).reshape(-1, len(names)))
            nodes[Atom(node)] = h
        self.anomaly.nodes = nodes

    async def handle_request(self, request: Any, caller: Caller) -> Any:
        """`scores` and `{explain, Node}` (see the module docstring)."""
        if request == "scores":
            return self.anomaly.scores()
        if isinstance(request, tuple) and len(request) == 2 and request[0] == "explain":
            return self.anomaly.explain(request[1])
        return await super().handle_request(request, caller)
