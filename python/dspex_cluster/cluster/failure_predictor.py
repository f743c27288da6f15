"""`dspex_failure_predictor`: the probability that a node fails within `horizon_s`.

Evidence per node, each turned into a probability of failing within the horizon, combined as
independent risks, P = 1 - prod(1 - p_i):

  * **silence** — health reports are heartbeats: a `PhiAccrualDetector` per node scores the
    silence since the last one (the BEAM detector's phi from `cluster.node.suspect` counts the
    same way). phi is -log10 of the chance that a live node stays this silent, so with the
    history's prior q (below) Bayes gives p = q / (q + (1 - q) 10^-phi): about 0.5 at
    phi = -log10 q (4-5 for a node that never failed), near 1 at the suspicion threshold 8.
  * **memory exhaustion** — the memory share (`os_memory.used_fraction`, else VM
    `memory.total` / `memory_limit_mb`, else a Python node's `memory`) extrapolated to 1 at its
    growth rate: the median of the per-report rates (one step or GC noise is no trend, a steady
    climb is), with the standard error of a median; p = P(the limit is reached within the
    horizon) for a normal rate estimate; expected time to failure = headroom / rate.
  * **leak** — the node's own footprint (VM `memory.total`, a Python node's RSS, in MB) the
    same way: p = P(it grows by max(itself, `leak_min_mb`) within the horizon); a steady leak
    kills a node long before the host's memory share moves.
  * **saturation** — work queued for the node's schedulers (run queue >= 2; not the host's CPU,
    which nodes on one host share), a Python node's own process at one full core:
    p = share of recent reports saturated x `saturation_risk`.
  * **anomalies** — the health monitor's latest `cluster.health.anomaly` score s:
    p = s x `anomaly_risk`.
  * **history** — the failure-history hazard model of `dspex_cluster.skills.failure`
    (`FailurePredictor`: Weibull renewal with per-node frailty, refitted every
    `history_refit_s`) on all the history the agent has seen, up to a memory cap: at most
    `history_max_failures` down periods and `history_max_intervals` node-intervals of one horizon
    (nodes x history / horizon; the training rows a refit enumerates, about 40 bytes each, so the
    default 1,000,000 bounds a refit's arrays to some 40-80 MB). Past the cap the oldest half of
    the history is dropped. Refits never run on the agent's event loop: a prediction uses the
    latest fit that is ready (the prior q below until the first one is), and a refit of the
    wanted cutoff runs on a snapshot in a worker thread, one at a time; its fits are adopted
    unless a failure observed meanwhile changed them (`FailurePredictor.install`). Each down period
    (`cluster.node.down` until the node is back: `up`, or reporting again) is recorded with
    `observe_failure(node, down_ts, back_ts)` on the wall clock, and p = its
    `history_probability` of a failure starting within the horizon. A node
    just back from a failure, or one that failed often, scores higher (decreasing hazard).
    Until the cluster has seen a first failure the model has nothing to fit, and p is the
    prior q below.

The silence reason's prior q is a gamma-Poisson rate of the downs we watched (prior
`prior_failures` per `prior_window_s`), q = 1 - exp(-rate x horizon): a short-horizon base rate
that makes phi = 8 mean "down" in a young cluster.

Health metrics are fed to the skill too (`observe_health`: the memory share, at most every
`health_sample_s`, its samples kept for `health_window_s`), so its own reading — its
`predict` (history and health as competing risks) and `tte_memory_s` from a Theil-Sen trend — is
in the `predict`/`predictions` answers under `history_model`. Only its history part enters P:
its health part measures causes P already has (memory, with a stricter trend test that does
not fire on a busy host's allocation noise) and counting one cause twice would break the
independence the product assumes.

Confidence grows with the number of reports seen (n / (n + 10)). Published when a node's P
reaches `publish_probability` (again when it moves by 0.1 or every `republish_s`), and once more
when it falls back below `clear_probability`:

  `cluster.failure.predicted` %{node, probability, horizon_s, time_to_failure_s (nil when no
  trend says when), confidence, reasons: %{silence, memory, leak, saturation, anomaly, history}}

Calls: `predictions` -> #{Node => the same map, plus `history_model`: the skill's own
`probability`, `tte_memory_s` and expected `time_to_failure_s` (empty until a first failure)};
`{predict, Node}` -> that map for one node.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from dspex_cluster import signals
from dspex_cluster.agents import Action, Agent, FunctionSensor, Param, Sensor
from dspex_cluster.agents.skill import Route
from dspex_cluster.cluster.terms import as_mapping, dig, number
from dspex_cluster.cluster.warm import WarmAgent
from dspex_cluster.etf import Atom
from dspex_cluster.names import CLUSTERING_MODULE, FAILURE_PREDICTOR
from dspex_cluster.runtime import Caller
from dspex_cluster.signals import Signal
from dspex_cluster.skills.failure import FailurePredictor as HazardPredictor
from dspex_cluster.skills.failure import PhiAccrualDetector
from dspex_cluster.skills.failure.predictor import ModelNotReady

log = logging.getLogger(__name__)


@dataclass
class FailureConfig:
    horizon_s: float = 30.0
    check_interval_s: float = 0.5
    trend_window: int = 9  # memory readings in the trend (8 rates: a median ignores a step)
    min_trend_points: int = 6
    saturation_risk: float = 0.1  # busy is not failing: saturation alone never drains
    leak_min_mb: float = 100.0  # a leak must add at least this much (or double) in the horizon
    anomaly_risk: float = 0.5
    prior_failures: float = 0.1
    prior_window_s: float = 86_400.0
    publish_probability: float = 0.3
    clear_probability: float = 0.15
    republish_s: float = 5.0
    phi_threshold: float = 8.0
    forget_after_s: float = 120.0  # a node silent this long (and never reported down) is gone
    history_refit_s: float = 600.0  # the hazard model's refit grid
    # the memory cap on the history the hazard model keeps (see the module docstring)
    history_max_failures: int = 10_000
    history_max_intervals: int = 1_000_000
    health_sample_s: float = 1.0  # health fed to the hazard model at most this often per node
    health_window_s: float = 60.0  # and kept this long (its trend window)


class NodeRisk:
    def __init__(self, config: FailureConfig) -> None:
        self.phi = PhiAccrualDetector(threshold=config.phi_threshold, min_std_dev_s=0.2)
        self.memory: deque[tuple[float, float]] = deque(maxlen=config.trend_window)
        self.footprint: deque[tuple[float, float]] = deque(maxlen=config.trend_window)
        self.saturated: deque[bool] = deque(maxlen=10)
        self.reports = 0
        self.anomaly = 0.0
        self.beam_phi = 0.0
        self.downs: list[float] = []
        self.first_seen = time.monotonic()
        self.down = False
        self.down_since: float | None = None  # wall clock time of the current down
        self.health_fed = -math.inf  # wall clock time of the last sample fed to the skill
        self.last_published: tuple[float, float] | None = None  # (time, probability)
        self.prediction: dict[str, Any] = {}


MIN_TREND_T = 3.0  # a growth rate this many standard errors above 0 is a trend


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def memory_share(data: dict[str, Any]) -> float | None:
    """Used memory as a share of its limit: the OS's on BEAM nodes, `memory` on Python nodes."""
    used = dig(data, "os_memory", "used_fraction")
    if used is not None:
        return used
    limit = number(data.get("memory_limit_mb"))
    total = dig(data, "memory", "total")
    if limit and total is not None:
        return total / (limit * 1_048_576)
    mem = data.get("memory")
    return number(mem) if not isinstance(mem, dict) else None


def exhaustion(
    points: deque[tuple[float, float]], horizon: float, limit: float = 1.0
) -> tuple[float, float | None]:
    """(P(reach `limit` within horizon), expected seconds to reach it) from the growth rate.

    The rate is the median of the per-report rates of change, so one step (a node joining, a
    cache filling) or GC noise is not a trend while a steady climb is; its standard error is
    1.2533 x the rates' robust spread / sqrt(n) (that of a median), the rate taken as normal.
    A rate below MIN_TREND_T standard errors is no established climb: probability 0."""
    t = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    dt = np.diff(t)
    keep = dt > 1e-6
    if keep.sum() < 3:
        return 0.0, None
    rates = np.diff(y)[keep] / dt[keep]
    rate = float(np.median(rates))
    spread = 1.4826 * float(np.median(np.abs(rates - rate)))
    se = max(1.2533 * spread / math.sqrt(rates.size), 1e-12)
    if rate < MIN_TREND_T * se:
        return 0.0, None  # no established climb: noise or a busy spell, not a trend
    headroom = max(limit - float(y[-1]), 0.0)
    needed = headroom / horizon  # the rate that reaches the limit right at the horizon
    p = _normal_sf((needed - rate) / se)
    ttf = headroom / rate if rate > 0 else None
    return p, ttf


def growth(
    points: deque[tuple[float, float]], horizon: float, min_growth: float
) -> tuple[float, float | None]:
    """A leak: (P(the footprint grows by max(itself, min_growth) within horizon), seconds
    until it has). Footprints in MB."""
    last = points[-1][1]
    if last <= 0:
        return 0.0, None
    return exhaustion(points, horizon, limit=last + max(last, min_growth))


class FailurePredictor(WarmAgent, Agent):
    """The `dspex_failure_predictor` agent: predicts node failures from health, anomalies and
    membership (see the module docstring)."""

    def __init__(self, config: FailureConfig | None = None, **kwargs: Any) -> None:
        super().__init__(FAILURE_PREDICTOR, **kwargs)
        self.config = config or FailureConfig()

    def setup(self) -> None:
        """Fresh state for this agent (run at init, and again after a supervisor restart)."""
        self.nodes: dict[Atom, NodeRisk] = {}
        self.published: list[Signal] = []
        self.first_seen: dict[Atom, float] = {}  # wall clock
        self.failure_log: list[tuple[Atom, float, float]] = []  # (node, down, back), wall
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hazard-refit")
        self._refit: asyncio.Future[Any] | None = None
        self.refits = 0  # background refits finished
        self.refit_seconds = 0.0  # the last one's duration
        self._new_hazard(-math.inf)
        self._warm_start()

    # -- warm restarts (cluster/warm.py): the failure history ------------------------------------

    def warm_version(self) -> Any:
        """Changes whenever the learned state does (a checkpoint is due when it moved)."""
        return (len(self.failure_log), len(self.first_seen), self.hazard_since)

    def warm_state(self) -> dict[str, Any]:
        """The learned state to checkpoint (plain data)."""
        return {
            "since": self.hazard_since,
            "first_seen": {str(n): t for n, t in self.first_seen.items()},
            "failures": [[str(n), down, back] for n, down, back in self.failure_log],
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Resume from a checkpoint made by warm_state."""
        first = {Atom(n): float(t) for n, t in state["first_seen"].items()}
        failures = [(Atom(n), float(d), float(b)) for n, d, b in state["failures"]]
        self.first_seen, self.failure_log = first, failures
        self._new_hazard(float(state["since"]))
        for node, t in first.items():  # nodes that never failed are not in the failure log
            if node not in self.first_seen:
                self.first_seen[node] = t
                self.hazard.add_node(node, since_ts=max(t, self.hazard_since))

    async def _main(self) -> None:
        try:
            await super()._main()
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _new_hazard(self, lo: float) -> None:
        """A hazard model from the history since `lo` (wall clock): nodes in production since
        they were first seen (or `lo`), the failures that started since."""
        c = self.config
        self.hazard = HazardPredictor(
            horizon_s=c.horizon_s,
            refit_interval_s=c.history_refit_s,
            resources={"memory": 1.0},
            health_window_s=c.health_window_s,
        )
        self.hazard.blocking_fits = False
        self.hazard_since = lo
        self.failure_log = [f for f in self.failure_log if f[1] >= lo]
        keep = set(self.nodes) | {f[0] for f in self.failure_log}  # forgotten nodes go
        self.first_seen = {n: t for n, t in self.first_seen.items() if n in keep}
        for node, first in self.first_seen.items():
            self.hazard.add_node(node, since_ts=max(first, lo))
        for node, down, back in self.failure_log:
            self.hazard.observe_failure(node, down, back)

    @property
    def failures(self) -> int:
        """Down periods in the hazard model."""
        return len(self.failure_log)

    def routes(self) -> list[Route]:
        """The cluster signals this agent consumes, with their handlers."""
        return [
            ("cluster.health.data", self.on_health),
            ("cluster.health.anomaly", self.on_anomaly),
            ("cluster.node.*", self.on_membership),
        ]

    def sensors(self) -> list[Sensor]:
        """This agent's periodic sensors (and the checkpoint sensor, when warm)."""
        return [
            FunctionSensor("predict", self.config.check_interval_s, self.check),
            *self._checkpoint_sensor(),
        ]

    def actions(self) -> list[Action]:
        """This agent's actions ({cmd, Action, Params})."""
        return [
            Action("predictions", lambda a: a.predictions()),
            Action("predict", lambda a, node: a.predict_one(node), {"node": Param("node", True)}),
        ]

    async def handle_request(self, request: Any, caller: Caller) -> Any:
        """The calls this agent serves (see the module docstring); a malformed one raises
        BadRequest."""
        if request == "predictions":
            return self.predictions()
        if isinstance(request, tuple) and len(request) == 2 and request[0] == "predict":
            return self.predict_one(request[1])
        return await super().handle_request(request, caller)

    def _risk(self, node: Atom) -> NodeRisk:
        risk = self.nodes.get(node)
        if risk is None:
            risk = self.nodes[node] = NodeRisk(self.config)
            first = self.first_seen.setdefault(node, time.time())
            self.hazard.add_node(node, since_ts=first)
        return risk

    def _went_down(self, r: NodeRisk) -> None:
        if not r.down:
            r.down = True
            r.downs.append(time.monotonic())
            r.down_since = time.time()

    def _came_back(self, node: Atom, r: NodeRisk) -> None:
        """The down period is over: one failure for the hazard model."""
        r.down = False
        if r.down_since is not None:
            back = time.time()
            self.failure_log.append((node, r.down_since, back))
            self.hazard.observe_failure(node, r.down_since, back)
            r.down_since = None

    def _feed_health(self, node: Atom, r: NodeRisk, memory: float | None) -> None:
        wall = time.time()
        if memory is None or wall - r.health_fed < self.config.health_sample_s:
            return
        r.health_fed = wall
        self.hazard.observe_health(node, wall, {"memory": memory})
        # the skill keeps every sample and has no call to forget: keep only its trend window
        kept = self.hazard._nodes[node]
        cut = int(np.searchsorted(kept.health_ts, wall - self.config.health_window_s))
        if cut:
            del kept.health_ts[:cut], kept.health[:cut]

    # -- evidence ------------------------------------------------------------------------------

    def on_health(self, signal: Signal) -> None:
        """A cluster.health.data signal: one row of a node's vitals."""
        node = signal.get("node")
        if not isinstance(node, Atom):
            return
        data = as_mapping(signal.data)
        r = self._risk(node)
        now = time.monotonic()
        interval = (number(data.get("interval_ms"), 1000.0) or 1000.0) / 1000.0
        if r.reports == 0:
            r.phi.first_heartbeat_estimate_s = interval
        r.phi.heartbeat(now)
        r.reports += 1
        if r.down:
            self._came_back(node, r)  # reporting again: back, even if the up signal was missed
        mem = memory_share(data)
        if mem is not None:
            r.memory.append((now, mem))
        self._feed_health(node, r, mem)
        vm = dig(data, "memory", "total")
        own = vm / 1_048_576 if vm is not None else number(data.get("process_rss_mb"))
        if own is not None:
            r.footprint.append((now, own))
        # saturation: work waiting for a scheduler on a BEAM node (the host's CPU is shared
        # by every node on it); a Python node's own process pinned at one core
        rq = dig(data, "run_queue", "cpu")
        if rq is None:
            rq = dig(data, "run_queue", "total")
        if rq is not None:
            r.saturated.append(rq >= 2)
        else:
            cpu = number(data.get("process_cpu"))
            r.saturated.append(cpu is not None and cpu >= 0.9)

    def on_anomaly(self, signal: Signal) -> None:
        """A cluster.health.anomaly signal: evidence for the node's failure model."""
        node, score = signal.get("node"), number(signal.get("score"))
        if isinstance(node, Atom) and score is not None:
            self._risk(node).anomaly = score

    def on_membership(self, signal: Signal) -> None:
        """cluster.node.* signals: up, suspect and down change what is predicted."""
        node = signal.get("node")
        if not isinstance(node, Atom):
            return
        r = self._risk(node)
        event = signal.type.rsplit(".", 1)[-1]
        if event == "suspect":
            r.beam_phi = max(r.beam_phi, number(signal.get("phi"), 0.0) or 0.0)
        elif event == "up":
            r.beam_phi = 0.0
            if r.down:
                self._came_back(node, r)
        elif event == "down":
            self._went_down(r)

    async def on_relay_up(self, beam: Atom) -> None:
        """Downs published while no relay held our subscriptions: ask membership."""
        if self.bus is None:
            return
        try:
            members = await self.bus.call_beam(CLUSTERING_MODULE, "members", [])
        except ConnectionError:
            return
        for m in members if isinstance(members, list) else []:
            m = as_mapping(m)
            node = m.get("node")
            if isinstance(node, Atom) and m.get("status") == "down" and node in self.nodes:
                self._went_down(self.nodes[node])

    # -- prediction ----------------------------------------------------------------------------

    def _enforce_memory_cap(self, wall: float) -> None:
        """Past `history_max_failures` or `history_max_intervals`, drop the oldest half."""
        c = self.config
        start = max(min(self.first_seen.values(), default=wall), self.hazard_since)
        intervals = len(self.first_seen) * max(wall - start, 0.0) / c.horizon_s
        if len(self.failure_log) > c.history_max_failures:
            self._new_hazard(self.failure_log[len(self.failure_log) // 2][1])
        elif intervals > c.history_max_intervals:
            self._new_hazard(start + (wall - start) / 2)

    def history_probabilities(self, nodes: list[Atom], wall: float) -> dict[Atom, float]:
        """The hazard model's P(a failure starts within the horizon), all nodes in one pass,
        from the latest fit that is ready; empty until there is one (and until a first failure
        was recorded: nothing to fit yet). Starts a background refit when the fit of `wall`'s
        cutoff is not ready."""
        self._enforce_memory_cap(wall)
        if not self.failures or not nodes:
            return {}
        if not self.hazard.has_fit(wall):
            self._start_refit(wall)
        try:
            p = self.hazard.history_probability(nodes, wall)
        except ModelNotReady:
            return {}
        return {n: float(v) for n, v in zip(nodes, p, strict=True)}

    def _start_refit(self, wall: float) -> None:
        """Fit the cutoff of `wall` on a snapshot in the worker thread (one refit at a time)."""
        if self._refit is not None:
            return
        hazard, snap = self.hazard, self.hazard.snapshot()
        cutoff = hazard.cutoff(wall)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside an event loop (offline): fit here
            snap.fit(cutoff)
            hazard.install(snap)
            return

        def fit() -> float:
            t0 = time.perf_counter()
            snap.fit(cutoff)
            return time.perf_counter() - t0

        def done(future: asyncio.Future[Any]) -> None:
            self._refit = None
            if future.cancelled():
                return
            err = future.exception()
            if err is not None:
                log.warning("%s: hazard refit failed: %r", self.name, err)
                return
            self.refits += 1
            self.refit_seconds = float(future.result())
            if hazard is self.hazard:  # not replaced meanwhile (memory cap)
                hazard.install(snap)

        self._refit = loop.run_in_executor(self._executor, fit)
        self._refit.add_done_callback(done)

    def predict(
        self, node: Atom, r: NodeRisk, now: float, history: float | None = None
    ) -> dict[str, Any]:
        """`history`: the hazard model's probability for the node when the caller computed
        it for many nodes at once (else computed here)."""
        c = self.config
        watched = max(now - r.first_seen, 1.0)
        rate = (c.prior_failures + len(r.downs)) / (c.prior_window_s + watched)
        prior = 1.0 - math.exp(-rate * c.horizon_s)
        if history is None:
            history = self.history_probabilities([node], time.time()).get(node, prior)
        phi = max(r.phi.phi(now) if r.reports else 0.0, r.beam_phi)
        # Bayes: a live node stays this silent with probability 10^-phi, a dead one always
        late = 10.0 ** (-min(phi, 300.0))
        reasons = {"silence": prior / (prior + (1.0 - prior) * late)}
        ttf: float | None = None
        if len(r.memory) >= c.min_trend_points:
            reasons["memory"], ttf = exhaustion(r.memory, c.horizon_s)
        else:
            reasons["memory"] = 0.0
        if len(r.footprint) >= c.min_trend_points:
            reasons["leak"], doubling = growth(r.footprint, c.horizon_s, c.leak_min_mb)
            if doubling is not None and (ttf is None or doubling < ttf):
                ttf = doubling
        else:
            reasons["leak"] = 0.0
        sat = sum(r.saturated) / len(r.saturated) if r.saturated else 0.0
        reasons["saturation"] = sat * c.saturation_risk
        reasons["anomaly"] = r.anomaly * c.anomaly_risk
        reasons["history"] = history
        survive = math.prod(1.0 - min(max(p, 0.0), 1.0) for p in reasons.values())
        probability = 1.0 - survive
        if phi >= c.phi_threshold:
            ttf = 0.0  # already silent past the threshold
        return {
            "node": node,
            "probability": probability,
            "time_to_failure_s": ttf,
            "confidence": r.reports / (r.reports + 10.0),
            "reasons": reasons,
        }

    def check(self, _agent: Agent) -> list[Signal]:
        """The periodic check: predict every node; cluster.failure.predicted for those at risk."""
        c = self.config
        now = time.monotonic()
        out: list[Signal] = []
        live: list[Atom] = []
        for node, r in list(self.nodes.items()):
            if r.down:
                continue  # already failed: nothing left to predict until it is back
            last = r.phi.last_heartbeat
            if last is not None and now - last > c.forget_after_s:
                del self.nodes[node]  # left without a down signal (or was never a member)
                continue
            live.append(node)
        history = self.history_probabilities(live, time.time())
        for node in live:
            r = self.nodes[node]
            pred = r.prediction = self.predict(node, r, now, history.get(node))
            p = pred["probability"]
            last = r.last_published
            publish = p >= c.publish_probability and (
                last is None
                or last[1] < c.publish_probability
                or abs(p - last[1]) >= 0.1
                or now - last[0] >= c.republish_s
            )
            cleared = last is not None and last[1] >= c.publish_probability
            if publish or (p < c.clear_probability and cleared):
                signal = signals.failure_predicted(
                    str(node),
                    p,
                    pred["time_to_failure_s"],
                    pred["confidence"],
                    origin=str(self.node.name),
                    horizon_s=c.horizon_s,
                    reasons=pred["reasons"],
                )
                r.last_published = (now, p)
                self.published.append(signal)
                out.append(signal)
        return out

    def _term(self, pred: dict[str, Any]) -> dict[Atom, Any]:
        return {
            Atom("node"): pred["node"],
            Atom("probability"): round(pred["probability"], 6),
            Atom("horizon_s"): self.config.horizon_s,
            Atom("time_to_failure_s"): pred["time_to_failure_s"],
            Atom("confidence"): round(pred["confidence"], 4),
            Atom("reasons"): {Atom(k): round(v, 6) for k, v in pred["reasons"].items()},
        }

    def _model_term(self, node: Atom, wall: float) -> dict[Atom, Any]:
        """The hazard model's own reading: P with its health risks, memory trend."""
        if not self.failures:
            return {}
        tte = self.hazard.health_signals(node, wall).get("tte_memory_s")
        try:
            probability = self.hazard.predict(node, wall)
            ttf = self.hazard.time_to_failure(node, wall)
        except ModelNotReady:
            return {}  # the first fit is still running
        return {
            Atom("probability"): round(probability, 6),
            # no trend: nil (an Erlang float cannot be infinite)
            Atom("tte_memory_s"): round(tte, 3) if tte is not None and math.isfinite(tte) else None,
            Atom("time_to_failure_s"): round(ttf, 3),
        }

    def predictions(self) -> dict[Atom, Any]:
        """The latest prediction of every node (probability, horizon, reasons)."""
        now, wall = time.monotonic(), time.time()
        history = self.history_probabilities(list(self.nodes), wall)
        return {
            n: {
                **self._term(self.predict(n, r, now, history.get(n))),
                Atom("history_model"): self._model_term(n, wall),
            }
            for n, r in self.nodes.items()
        }

    def predict_one(self, node: Any) -> Any:
        """A fresh prediction for one node."""
        r = self.nodes.get(Atom(node))
        if r is None:
            return (Atom("error"), Atom("unknown_node"))
        wall = time.time()
        return {
            **self._term(self.predict(Atom(node), r, time.monotonic())),
            Atom("history_model"): self._model_term(Atom(node), wall),
        }
