"""Failure prediction skill: phi-accrual heartbeat suspicion and a failure-history hazard model.

```python
phi = PhiAccrualDetector(threshold=8.0)       # heartbeats -> phi (formula: failure.phi docstring)
fp = FailurePredictor(horizon_s=86400)
fp.add_node("n1", system="rack-a-x86", group="rack-a", since_ts=t0)   # optional metadata
fp.observe_failure("n1", start_ts, end_ts)     # failure history
fp.observe_health("n1", ts, {"memory": 0.71, "heartbeat_interval_s": 0.21})   # optional
p = fp.predict("n1", now_ts)                   # P(a failure starts within the horizon)
ttf = fp.time_to_failure("n1", now_ts)         # expected seconds until the next failure
```

The history part (see `failure.model`, `failure.history`) is a per-system Weibull renewal hazard
with gamma frailty per node (empirical Bayes), recalibrated on recency/count/system/neighbour
features by a logistic or boosted layer once there is enough history. It is refitted on a fixed
grid of cutoffs (every `refit_interval_s`); a prediction at `now` uses the fit at the last cutoff
<= now, built only from failures that started before that cutoff, so predictions are causal and
deterministic whatever was observed later. Each learned fit then gets a stack (Platt scaling over
its ensemble stages and the renewal model, `model.fit_stack`) fitted on the out-of-sample
predictions of the previous `platt_intervals` fits (each on the interval after its own cutoff):
learned layers tend to be over-confident out of sample, and rates drift. Health signals
(`health`) add competing risks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dspex_cluster.skills.failure.health import (
    exhaustion_probability,
    jitter_probability,
    jitter_ratio,
    time_to_exhaustion,
)
from dspex_cluster.skills.failure.history import FailureHistory, NodeTable
from dspex_cluster.skills.failure.model import HazardModel, Learner, fit_hazard_model, fit_stack
from dspex_cluster.skills.failure.phi import PhiAccrualDetector, phi_from_stats

__all__ = ["FailurePredictor", "ModelNotReady", "PhiAccrualDetector", "phi_from_stats"]

DEFAULT_RESOURCES: dict[str, float] = {"memory": 1.0, "disk": 1.0, "swap": 1.0, "fd": 1.0}
HEARTBEAT_METRIC = "heartbeat_interval_s"


class ModelNotReady(LookupError):
    """No fit at or before the wanted cutoff yet, and predictions may not fit (blocking_fits)."""

    def __init__(self, cutoff: float) -> None:
        super().__init__(f"no fit ready at or before cutoff {cutoff}")
        self.cutoff = cutoff


@dataclass
class _Node:
    index: int
    system: Hashable
    group: Hashable | None
    since_ts: float
    health_ts: list[float] = field(default_factory=list)
    health: list[Mapping[str, float]] = field(default_factory=list)


class FailurePredictor:
    """P(failure within `horizon_s`) and expected time to failure, per node.

    - `refit_interval_s`: the refit grid (monthly by default; the LANL benchmark uses 90 days
      to bound its run time over 4.3 M node-days);
    - `learner`: "auto" picks renewal / logistic / boosted by the amount of history
      (`model`), or force one;
    - `resources`: health metric name -> capacity, for time to exhaustion (utilisations as
      fractions: capacity 1.0); `health_window_s`: lookback of health trends (default: horizon);
    - `max_train_rows`: above it, negatives are subsampled (seeded) and reweighted;
    - `platt_intervals`: how many earlier fits' out-of-sample scores fit a new fit's stack.
    """

    def __init__(
        self,
        horizon_s: float = 86400.0,
        refit_interval_s: float = 30 * 86400.0,
        learner: Learner = "auto",
        resources: Mapping[str, float] | None = None,
        health_window_s: float | None = None,
        max_train_rows: int = 300_000,
        platt_intervals: int = 4,
        seed: int = 0,
    ) -> None:
        if horizon_s <= 0 or refit_interval_s <= 0:
            raise ValueError("horizon_s and refit_interval_s must be > 0")
        self.horizon_s = float(horizon_s)
        self.refit_interval_s = float(refit_interval_s)
        self.learner: Learner = learner
        self.resources = dict(DEFAULT_RESOURCES if resources is None else resources)
        self.health_window_s = float(health_window_s or horizon_s)
        self.max_train_rows = int(max_train_rows)
        self.platt_intervals = int(platt_intervals)
        self.seed = int(seed)
        self._nodes: dict[Hashable, _Node] = {}
        self._failures: list[tuple[int, float, float]] = []
        self._history: FailureHistory | None = None
        self._models: dict[float, HazardModel] = {}
        self._raw_models: dict[float, HazardModel] = {}
        # (change number, date) of every observation that invalidated fits: a background refit
        # on a snapshot is installed only for cutoffs no later change reached
        self._changes = 0
        self._change_log: list[tuple[int, float]] = []
        # False: predictions never fit; they use the latest fit at a cutoff <= now and record
        # the cutoff they wanted in `wanted_cutoff` (a caller refits in the background)
        self.blocking_fits = True
        self.wanted_cutoff: float | None = None

    # ---- observations ------------------------------------------------------------------------
    def add_node(
        self,
        node: Hashable,
        system: Hashable = "default",
        group: Hashable | None = None,
        since_ts: float | None = None,
    ) -> None:
        """Declare a node: its system (nodes alike in hardware and use), group (rack), and
        when it entered production (default: its first observation)."""
        placeholder = self._placeholder_since()
        if node in self._nodes:
            n = self._nodes[node]
            if (n.system, n.group) != (system, group):
                n.system, n.group = system, group
                self._invalidate(-math.inf)  # every fit's systems and neighbourhoods change
            if since_ts is not None and float(since_ts) != n.since_ts:
                old = n.since_ts
                n.since_ts = float(since_ts)
                self._invalidate(min(old, n.since_ts, placeholder))
        else:
            ts = math.inf if since_ts is None else float(since_ts)
            known_system = any(n.system == system for n in self._nodes.values())
            self._nodes[node] = _Node(len(self._nodes), system, group, ts)
            # A node changes only fits whose cutoff is past its start (a new system: all fits,
            # whose per-system parameters do not cover it).
            start = min(ts, self._placeholder_since())
            self._invalidate(start if known_system else -math.inf)
        self._placeholder_changed(placeholder)

    def _node(self, node: Hashable, ts: float) -> _Node:
        if node not in self._nodes:
            self.add_node(node)
        n = self._nodes[node]
        if ts < n.since_ts:
            placeholder = self._placeholder_since()
            n.since_ts = ts
            self._invalidate(min(ts, placeholder))
            self._placeholder_changed(placeholder)
        return n

    def _placeholder_since(self) -> float:
        """The start given to nodes declared without one (the latest known start)."""
        finite = [n.since_ts for n in self._nodes.values() if math.isfinite(n.since_ts)]
        return max(finite, default=0.0)

    def _placeholder_changed(self, before: float) -> None:
        after = self._placeholder_since()
        if after != before and any(not math.isfinite(n.since_ts) for n in self._nodes.values()):
            self._invalidate(min(before, after))

    def observe_failure(self, node: Hashable, start_ts: float, end_ts: float | None = None) -> None:
        """A failure of `node` that started at `start_ts` and was repaired at `end_ts`."""
        start = float(start_ts)
        end = start if end_ts is None else max(float(end_ts), start)
        n = self._node(node, start)
        self._failures.append((n.index, start, end))
        self._invalidate(start)

    def observe_health(self, node: Hashable, ts: float, metrics: Mapping[str, float]) -> None:
        """Health sample: resource utilisations (fractions of capacity, names in `resources`)
        and/or `heartbeat_interval_s`, the latest interval between heartbeats."""
        n = self._node(node, float(ts))
        pos = int(np.searchsorted(n.health_ts, float(ts), side="right"))
        n.health_ts.insert(pos, float(ts))
        n.health.insert(pos, dict(metrics))

    def _invalidate(self, after: float) -> None:
        """An observation dated `after` changes only the fits at cutoffs > after.

        A fit at cutoff c uses node-intervals that end by c and failures that started before c,
        so a failure starting at t >= c (or a node entering production then) changes nothing
        it learned; features are computed at query time from the history index, which is
        rebuilt. Fits at cutoffs > after are dropped (their stacks with them).
        """
        self._history = None
        self._changes += 1
        self._change_log.append((self._changes, after))
        if len(self._change_log) > 4096:  # snapshots older than this are simply refused
            del self._change_log[:2048]
        for cache in (self._models, self._raw_models):
            for cutoff in [c for c in cache if c > after]:
                del cache[cutoff]

    # ---- the history model -------------------------------------------------------------------
    def _history_index(self) -> FailureHistory:
        if self._history is None:
            nodes = sorted(self._nodes.values(), key=lambda n: n.index)
            systems = {s: i for i, s in enumerate(dict.fromkeys(n.system for n in nodes))}
            groups = {g: i for i, g in enumerate(dict.fromkeys(n.group for n in nodes))}
            # a node declared without a start and never observed: in production from "now on"
            since = np.array([n.since_ts for n in nodes], dtype=np.float64)
            finite = since[np.isfinite(since)]
            since[~np.isfinite(since)] = finite.max() if finite.size else 0.0
            table = NodeTable(
                system=np.array([systems[n.system] for n in nodes], dtype=np.int64),
                group=np.array(
                    [-1 if n.group is None else groups[n.group] for n in nodes], dtype=np.int64
                ),
                prod_start_s=since,
            )
            f = np.array(self._failures, dtype=np.float64).reshape(-1, 3)
            self._history = FailureHistory(table, f[:, 0].astype(np.int64), f[:, 1], f[:, 2])
        return self._history

    def _training_rows(self, cutoff: float) -> tuple[np.ndarray, ...]:
        """Node-intervals [t, t + horizon) on the horizon grid, ending by `cutoff`."""
        hist = self._history_index()
        h = self.horizon_s
        first = np.ceil(hist.nodes.prod_start_s / h)
        last = np.floor(cutoff / h) - 1.0  # the interval starting here ends by the cutoff
        counts = np.maximum(last - first + 1.0, 0.0).astype(np.int64)
        node = np.repeat(np.arange(counts.size), counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        t = (np.repeat(first, counts) + offset) * h
        label = hist.by_node.count(node, t, t + h) > 0
        weight = np.ones(t.size)
        n_pos = int(label.sum())
        n_neg = t.size - n_pos
        room = self.max_train_rows - n_pos
        if n_neg > room > 0:  # keep every positive, a seeded sample of negatives, reweighted
            rate = room / n_neg
            keep = label | (np.random.default_rng(self.seed).random(t.size) < rate)
            node, t, label = node[keep], t[keep], label[keep]
            weight = np.where(label, 1.0, 1.0 / rate)
        return node, t, label, weight

    def _raw_model(self, cutoff: float) -> HazardModel:
        """The model fitted at `cutoff`, before recalibration."""
        model = self._raw_models.get(cutoff)
        if model is None:
            node, t, label, weight = self._training_rows(cutoff)
            model = fit_hazard_model(
                self._history_index(),
                cutoff,
                node,
                t,
                label,
                horizon_days=self.horizon_s / 86400.0,
                train_weight=weight,
                learner=self.learner,
            )
            self._raw_models[cutoff] = model
        return model

    def _model_at(self, now_ts: float) -> HazardModel:
        """The model of the last refit cutoff <= now, with a stack (`fit_stack`: Platt scaling
        over several component scores) fitted on out-of-sample predictions: those of each of the
        previous `platt_intervals` fits for the node-intervals between its cutoff and the next
        one."""
        cutoff = self.cutoff(now_ts)
        model = self._models.get(cutoff)
        if model is None and not self.blocking_fits:
            self.wanted_cutoff = cutoff
            ready = [c for c in self._models if c <= cutoff]
            if not ready:
                raise ModelNotReady(cutoff)
            return self._models[max(ready)]
        if model is None:
            raw = self._raw_model(cutoff)
            stack = None
            if raw.learner is not None:
                node, t, label, weight = self._training_rows(cutoff)
                hist = self._history_index()
                parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
                for j in range(1, self.platt_intervals + 1):
                    lo = cutoff - j * self.refit_interval_s
                    rows = (t >= lo) & (t < lo + self.refit_interval_s)
                    if label[rows].sum() == 0:
                        continue
                    prev = self._raw_model(lo)
                    logits = prev.components(hist, node[rows], t[rows])
                    parts.append((logits, label[rows], weight[rows]))
                if parts:
                    stack = fit_stack(*(np.concatenate(c) for c in zip(*parts, strict=True)))
            model = HazardModel(raw.params, raw.learner, raw.horizon_days, stack)
            self._models[cutoff] = model
        return model

    def cutoff(self, now_ts: float) -> float:
        """The refit grid's cutoff of a prediction at `now_ts` (the last one <= now)."""
        return math.floor(now_ts / self.refit_interval_s) * self.refit_interval_s

    def has_fit(self, now_ts: float) -> bool:
        """Whether the fit a prediction at `now_ts` uses is ready (predicting would not fit)."""
        return self.cutoff(now_ts) in self._models

    # ---- background refits -------------------------------------------------------------------
    def snapshot(self) -> FailurePredictor:
        """A copy sharing no mutable state, for fitting in another thread while this one keeps
        observing: `snapshot.fit(cutoff)` there, then `install(snapshot)` here."""
        snap = copy.copy(self)
        snap._nodes = {
            k: _Node(n.index, n.system, n.group, n.since_ts) for k, n in self._nodes.items()
        }
        snap._failures = list(self._failures)
        snap._history = None
        snap._models = dict(self._models)
        snap._raw_models = dict(self._raw_models)
        snap._change_log = []
        snap.blocking_fits = True
        return snap

    def fit(self, cutoff: float) -> HazardModel:
        """Fit (or find) the model of `cutoff`, with its stack; the expensive call."""
        blocking, self.blocking_fits = self.blocking_fits, True
        try:
            return self._model_at(cutoff)
        finally:
            self.blocking_fits = blocking

    def install(self, snapshot: FailurePredictor) -> int:
        """Adopt the fits a snapshot made, except those an observation since the snapshot
        invalidated (cutoff > its date); returns how many were adopted."""
        later = [after for n, after in self._change_log if n > snapshot._changes]
        if self._change_log and self._change_log[0][0] > snapshot._changes + 1:
            return 0  # the log no longer covers the snapshot: nothing is known valid
        limit = min(later, default=math.inf)
        adopted = 0
        for mine, theirs in (
            (self._models, snapshot._models),
            (self._raw_models, snapshot._raw_models),
        ):
            for c, model in theirs.items():
                if c <= limit and c not in mine:
                    mine[c] = model
                    adopted += 1
        return adopted

    def _index(self, node: Hashable) -> int:
        if node not in self._nodes:
            raise KeyError(f"unknown node {node!r}: observe it or add_node() first")
        return self._nodes[node].index

    def history_probability(self, nodes: Sequence[Hashable], now_ts: float) -> np.ndarray:
        """The history model's P(failure within the horizon) for several nodes at once."""
        idx = np.array([self._index(n) for n in nodes], dtype=np.int64)
        t = np.full(idx.size, float(now_ts))
        return self._model_at(float(now_ts)).predict(self._history_index(), idx, t)

    # ---- health signals ----------------------------------------------------------------------
    def health_signals(self, node: Hashable, now_ts: float) -> dict[str, float]:
        """Time to exhaustion per resource (s) and heartbeat jitter ratio, from samples in
        (now - health_window_s, now]."""
        n = self._nodes[node]
        lo = int(np.searchsorted(n.health_ts, now_ts - self.health_window_s, side="right"))
        hi = int(np.searchsorted(n.health_ts, now_ts, side="right"))
        ts = np.array(n.health_ts[lo:hi])
        rows = n.health[lo:hi]
        out: dict[str, float] = {}
        for name, capacity in self.resources.items():
            pts = [(t, r[name]) for t, r in zip(ts, rows, strict=True) if name in r]
            if pts:
                arr = np.array(pts)
                tte = time_to_exhaustion(arr[:, 0], arr[:, 1], capacity)
                # the trend is measured up to its last sample; count from now
                out[f"tte_{name}_s"] = max(tte - (now_ts - arr[-1, 0]), 0.0)
        beats = [r[HEARTBEAT_METRIC] for r in rows if HEARTBEAT_METRIC in r]
        if beats:
            out["heartbeat_jitter_ratio"] = jitter_ratio(np.array(beats))
        return out

    def _health_probability(self, signals: Mapping[str, float]) -> float:
        survive = 1.0
        for key, value in signals.items():
            if key.startswith("tte_"):
                survive *= 1.0 - exhaustion_probability(value, self.horizon_s)
            elif key == "heartbeat_jitter_ratio":
                survive *= 1.0 - jitter_probability(value)
        return 1.0 - survive

    # ---- the contract ------------------------------------------------------------------------
    def predict(self, node: Hashable, now_ts: float) -> float:
        """P(a failure of `node` starts within `horizon_s` after `now_ts`), in [0, 1]."""
        p_hist = float(self.history_probability([node], now_ts)[0])
        p_health = self._health_probability(self.health_signals(node, now_ts))
        return float(np.clip(1.0 - (1.0 - p_hist) * (1.0 - p_health), 0.0, 1.0))

    def predict_many(self, nodes: Sequence[Hashable], now_ts: float) -> np.ndarray:
        p_hist = self.history_probability(nodes, now_ts)
        p_health = np.array(
            [self._health_probability(self.health_signals(n, now_ts)) for n in nodes]
        )
        return np.clip(1.0 - (1.0 - p_hist) * (1.0 - p_health), 0.0, 1.0)

    def time_to_failure(self, node: Hashable, now_ts: float) -> float:
        """Expected seconds until the next failure of `node` starts.

        From the renewal model with the node's frailty: E[T] = integral of the survival
        S(s) = exp(-z * (H(tau + s) - H(tau))) over s >= 0 (tau = time since the last failure),
        truncated at the earliest resource exhaustion, which is then a sure failure:
        E[min(T, tte)] = integral of S over [0, tte].
        """
        idx = np.array([self._index(node)], dtype=np.int64)
        hist = self._history_index()
        model = self._model_at(float(now_ts))
        signals = self.health_signals(node, now_ts)
        tte = min([v for k, v in signals.items() if k.startswith("tte_")], default=math.inf)
        # survival on a log-spaced grid of horizons (days), trapezoid rule
        grid_days = np.concatenate([[0.0], np.logspace(-4, 5, 400)])  # up to ~270 years
        if math.isfinite(tte):
            grid_days = np.unique(np.append(grid_days[grid_days < tte / 86400.0], tte / 86400.0))
        t = np.full(grid_days.size, float(now_ts))
        z, ahead = hist.node_hazard(model.params, np.repeat(idx, grid_days.size), t, grid_days)
        surv = np.where(grid_days > 0, np.exp(-z * ahead), 1.0)
        return float(np.trapezoid(surv, grid_days) * 86400.0)
