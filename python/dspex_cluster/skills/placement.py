"""Workload placement: score candidate nodes, learn each node's effective speed online, choose one.

Every policy reads the same node feature matrix, one row per candidate node, columns in the order
of ``NODE_FEATURES``:

  ``load``        CPU utilisation in [0, 1] (busy cores / cores)
  ``memory``      memory utilisation in [0, 1]
  ``capacity``    parallel slots (cores) the node runs tasks on, > 0
  ``latency_s``   recent mean task latency reported by the node (s); informational
  ``queue``       tasks on the node (waiting + running) as far as the caller knows
  ``capability``  how well the node matches the task's needs, in [0, 1] (1 = full match)
  ``network``     network distance to the task's data or caller, in [0, 1]
  ``backlog``     optional 8th column: outstanding work on the node in speed-1 seconds

The task is described by a mapping (every key optional): ``work`` (estimated seconds at speed 1,
default 1), ``min_capacity``, ``min_capability``, ``max_network``, ``memory`` (fraction of a node's
memory it needs) and ``network_cost_s`` (seconds added per unit of network distance). Constraints
and an explicit ``feasible_mask`` combine: a node is a candidate only if every one holds.

``PlacementModel`` is the learned policy. It keeps one log-speed estimate per node, learned from
observed run times (``observe``: speed sample = work / run time) by a Kalman filter whose state
drifts, so it tracks a node that slows down or recovers, and chooses the node with the smallest
predicted completion time: expected wait (backlog / (capacity x speed) once every slot is busy)
plus the task's work / speed. Exploration is optimism under uncertainty: a node's speed is taken
at ``exp(mean + optimism x std)`` of its log-speed estimate, and the variance grows while the node
goes unobserved, so unknown or long-unseen nodes get tried again. Rough work estimates are
calibrated online (log work ~ a + b log estimate, ``effective_work``) before both planning and
learning, so a node fed small estimates does not come to look slow, and node estimates are pooled
toward the cluster mean in proportion to their measurement variance (empirical Bayes), so equal
nodes measured roughly do not look different.

``LearnedPlacer`` is what an agent runs: the model plus the placer's own bookkeeping of the tasks
it placed (a virtual FIFO schedule per node), which stays current between stale load reports.

The static baselines (``RoundRobinPolicy``, ``RandomPolicy``, ``LeastLoadedPolicy``,
``PowerOfTwoPolicy``, ``WeightedScorePolicy``) share the same ``choose``/``scores`` API.
``simulate`` (the discrete-event simulator in ``simulation``) is re-exported from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from heapq import heapify, heapreplace
from typing import Any

import numpy as np
from numpy.typing import NDArray

NODE_FEATURES = (
    "load",
    "memory",
    "capacity",
    "latency_s",
    "queue",
    "capability",
    "network",
    "backlog",
)
LOAD, MEMORY, CAPACITY, LATENCY, QUEUE, CAPABILITY, NETWORK, BACKLOG = range(8)

# The seed's weighted headroom score (higher is better). CPU headroom dominates, then headroom in
# hosted tasks ("agent count" per slot), memory headroom, network proximity, capability match.
SEED_WEIGHTS: dict[str, float] = {
    "cpu": 0.35,
    "agents": 0.25,
    "memory": 0.15,
    "network": 0.15,
    "capability": 0.10,
}

POLICIES = ("round_robin", "random", "least_loaded", "p2c", "weighted", "learned")

TaskFeatures = Mapping[str, float] | None
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def feasible_nodes(
    node_features: FloatArray,
    task_features: TaskFeatures = None,
    feasible_mask: BoolArray | None = None,
) -> BoolArray | None:
    """The candidate mask from the explicit mask and the task's constraints; None = all nodes."""
    mask = None if feasible_mask is None else np.asarray(feasible_mask, dtype=bool)
    if task_features:
        checks = []
        v = task_features.get("min_capacity")
        if v:
            checks.append(node_features[:, CAPACITY] >= v)
        v = task_features.get("min_capability")
        if v:
            checks.append(node_features[:, CAPABILITY] >= v)
        v = task_features.get("max_network")
        if v is not None:
            checks.append(node_features[:, NETWORK] <= v)
        v = task_features.get("memory")
        if v:
            checks.append(1.0 - node_features[:, MEMORY] >= v)
        for c in checks:
            mask = c if mask is None else mask & c
    return mask


def _argbest(values: FloatArray, mask: BoolArray | None) -> int:
    """Index of the smallest value among candidates; -1 when no node is feasible."""
    if mask is not None:
        if not mask.any():
            return -1
        values = np.where(mask, values, np.inf)
    return int(np.argmin(values))


class _RandomStream:
    """Uniform draws from a pre-generated buffer: one numpy call per 4,096 decisions."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf: list[float] = []
        self._pos = 0

    def next(self) -> float:
        if self._pos >= len(self._buf):
            self._buf = self._rng.random(4096).tolist()
            self._pos = 0
        x = self._buf[self._pos]
        self._pos += 1
        return x

    def index(self, n: int) -> int:
        return min(int(self.next() * n), n - 1)


class _StaticPolicy:
    """A policy that does not learn: ``observe`` is accepted and ignored."""

    name = "static"

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self._draw = _RandomStream(self._rng)

    def scores(
        self,
        node_features: FloatArray,
        task_features: TaskFeatures = None,
        feasible_mask: BoolArray | None = None,
    ) -> FloatArray:
        """Lower is better; +inf for infeasible nodes."""
        raise NotImplementedError  # every concrete policy overrides this

    def choose(
        self,
        node_features: FloatArray,
        task_features: TaskFeatures = None,
        feasible_mask: BoolArray | None = None,
    ) -> int:
        mask = feasible_nodes(node_features, task_features, feasible_mask)
        return _argbest(self.scores(node_features, task_features, mask), mask)

    def observe(
        self,
        node_idx: int,
        task_features: TaskFeatures,
        duration_s: float,
        node_features_at_placement: FloatArray | None = None,
    ) -> None:
        return None

    def _pick_among(self, mask: BoolArray | None, n: int) -> int:
        """A uniformly random candidate."""
        if mask is None:
            return self._draw.index(n)
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return -1
        return int(idx[self._draw.index(idx.size)])


class RoundRobinPolicy(_StaticPolicy):
    """Cycles through the nodes, skipping infeasible ones."""

    name = "round_robin"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._next = 0

    def scores(self, node_features, task_features=None, feasible_mask=None):  # type: ignore[no-untyped-def]
        n = node_features.shape[0]
        s = ((np.arange(n) - self._next) % n).astype(float)
        return s if feasible_mask is None else np.where(feasible_mask, s, np.inf)

    def choose(self, node_features, task_features=None, feasible_mask=None):  # type: ignore[no-untyped-def]
        n = node_features.shape[0]
        mask = feasible_nodes(node_features, task_features, feasible_mask)
        if mask is None:
            i = self._next % n
        else:
            i = _argbest(self.scores(node_features, None, mask), mask)
            if i < 0:
                return -1
        self._next = (i + 1) % n
        return i


class RandomPolicy(_StaticPolicy):
    """Uniform choice among feasible nodes."""

    name = "random"

    def scores(self, node_features, task_features=None, feasible_mask=None):  # type: ignore[no-untyped-def]
        s = self._rng.random(node_features.shape[0])
        return s if feasible_mask is None else np.where(feasible_mask, s, np.inf)

    def choose(self, node_features, task_features=None, feasible_mask=None):  # type: ignore[no-untyped-def]
        mask = feasible_nodes(node_features, task_features, feasible_mask)
        return self._pick_among(mask, node_features.shape[0])


def _queue_per_slot(node_features: FloatArray) -> FloatArray:
    return node_features[:, QUEUE] / node_features[:, CAPACITY]


class LeastLoadedPolicy(_StaticPolicy):
    """Fewest reported tasks per slot (join-the-shortest-queue); ties broken at random."""

    name = "least_loaded"

    def scores(self, node_features, task_features=None, feasible_mask=None):  # type: ignore[no-untyped-def]
        q = _queue_per_slot(node_features)
        # jitter below the smallest possible difference in tasks-per-slot only breaks ties
        jitter = self._rng.random(q.shape[0]) * (
            0.5 / max(float(node_features[:, CAPACITY].max()), 1.0)
        )
        s = q + jitter
        return s if feasible_mask is None else np.where(feasible_mask, s, np.inf)


class PowerOfTwoPolicy(_StaticPolicy):
    """Power of two choices: sample two feasible nodes, keep the one with fewer tasks per slot."""

    name = "p2c"

    def scores(self, node_features, task_features=None, feasible_mask=None):  # type: ignore[no-untyped-def]
        # Not a ranking policy: the two sampled nodes get their load, the rest +inf.
        s = np.full(node_features.shape[0], np.inf)
        i = self.choose(node_features, task_features, feasible_mask)
        if i >= 0:
            s[i] = _queue_per_slot(node_features)[i]
        return s

    def choose(self, node_features, task_features=None, feasible_mask=None):  # type: ignore[no-untyped-def]
        n = node_features.shape[0]
        mask = feasible_nodes(node_features, task_features, feasible_mask)
        if mask is None:
            a = self._draw.index(n)
            b = self._draw.index(n - 1) if n > 1 else 0
            if b >= a and n > 1:
                b += 1  # two distinct nodes
        else:
            idx = np.flatnonzero(mask)
            if idx.size == 0:
                return -1
            a = int(idx[self._draw.index(idx.size)])
            b = int(idx[self._draw.index(idx.size)])
        qa = node_features[a, QUEUE] / node_features[a, CAPACITY]
        qb = node_features[b, QUEUE] / node_features[b, CAPACITY]
        if qa < qb or (qa == qb and self._draw.next() < 0.5):
            return a
        return b


class WeightedScorePolicy(_StaticPolicy):
    """The seed's weighted sum of headrooms (``SEED_WEIGHTS``); the highest score wins."""

    name = "weighted"

    def __init__(self, seed: int = 0, weights: Mapping[str, float] | None = None) -> None:
        super().__init__(seed)
        self.weights = dict(SEED_WEIGHTS if weights is None else weights)

    def headroom(self, node_features: FloatArray) -> FloatArray:
        """The seed's score in [0, 1] per node (higher = more headroom)."""
        w = self.weights
        f = node_features
        return (
            w["cpu"] * (1.0 - f[:, LOAD])
            + w["agents"] / (1.0 + f[:, QUEUE] / f[:, CAPACITY])
            + w["memory"] * (1.0 - f[:, MEMORY])
            + w["network"] * (1.0 - f[:, NETWORK])
            + w["capability"] * f[:, CAPABILITY]
        )

    def scores(self, node_features, task_features=None, feasible_mask=None):  # type: ignore[no-untyped-def]
        s = -self.headroom(node_features)
        s = s + self._rng.random(s.shape[0]) * 1e-9  # tie-break only
        return s if feasible_mask is None else np.where(feasible_mask, s, np.inf)


class PlacementModel:
    """Learned placement: per-node speed learned online from run times, chosen by predicted finish.

    Each node's log-speed follows a random walk, estimated by a scalar Kalman filter per node:
    ``drift`` is the walk's variance per run observed on the node and per round of observations it
    misses (a round = as many observations as there are nodes), so an estimate follows a node that
    slows down or recovers, and a node left unobserved grows uncertain again. The observation
    noise (how far one work / run-time sample strays, e.g. from rough work estimates) is learned
    online from the innovations: with exact work one run re-estimates a node, with rough work many
    runs are averaged, and estimates are calibrated toward the typical task (``effective_work``).
    ``optimism`` scales the exploration bonus: speeds are taken at ``exp(mean + optimism * std)``.
    """

    name = "learned"

    def __init__(
        self,
        n_nodes: int | None = None,
        *,
        seed: int = 0,
        drift: float = 0.01,
        optimism: float = 0.2,
        prior_speed: float = 1.0,
        prior_var: float = 1.0,
    ) -> None:
        if drift < 0.0 or prior_var <= 0.0 or prior_speed <= 0.0:
            raise ValueError("need drift >= 0, prior_var > 0, prior_speed > 0")
        self.drift = float(drift)
        self.optimism = float(optimism)
        self.prior_speed = float(prior_speed)
        self.prior_var = float(prior_var)
        self.noise_var = 1e-3  # observation noise of one log-speed sample, learned in observe
        self._rng = np.random.default_rng(seed)
        self._mean_work = 1.0  # running mean of observed work: a stand-in backlog per queued task
        # calibration of work estimates: log(actual work) ~ a + b log(estimate), fitted from
        # running moments of (log estimate, log(run time x node speed)); a = 0, b = 1 = exact
        self._calib_n = 0
        self._mx = self._my = self._vxx = self._cxy = 0.0
        self._a, self._b = 0.0, 1.0
        self._n = 0
        self._n_seen = 0  # nodes with at least one observed run
        self._obs = 0
        self._refreshes = 0
        self._jitter = np.ones(0)
        if n_nodes is not None:
            self._resize(int(n_nodes))

    # ---- state -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything learned, as plain values and arrays (see `restore`): saved by warm agents."""
        out: dict[str, Any] = {}
        for key, value in vars(self).items():
            if isinstance(value, np.random.Generator):
                out[key] = {"bit_generator": value.bit_generator.state}
            elif isinstance(value, (bool, int, float, np.ndarray)):
                out[key] = value.copy() if isinstance(value, np.ndarray) else value
        return out

    def restore(self, state: dict[str, Any]) -> None:
        """Become the model `state()` was taken from (same estimates, same random draws next)."""
        for key, value in state.items():
            current = getattr(self, key, None)
            if isinstance(current, np.random.Generator):
                current.bit_generator.state = value["bit_generator"]
            elif isinstance(value, (bool, int, float)):
                setattr(self, key, value)
            elif isinstance(value, np.ndarray):
                setattr(self, key, np.asarray(value, dtype=np.float64).copy())
            else:
                raise ValueError(f"unexpected state entry {key!r}")

    def _resize(self, n: int) -> None:
        old = self._n
        if n <= old:
            return

        def grow(a: FloatArray | None, fill: float) -> FloatArray:
            out = np.full(n, fill)
            if a is not None and old:
                out[:old] = a
            return out

        self._log_speed = grow(getattr(self, "_log_speed", None), math.log(self.prior_speed))
        self._var = grow(getattr(self, "_var", None), self.prior_var)
        self._last_obs = grow(getattr(self, "_last_obs", None), 0.0)
        self._runs = grow(getattr(self, "_runs", None), 0.0)
        self._last_duration = grow(getattr(self, "_last_duration", None), np.nan)
        # upper bound on a node's log-speed from a task still running past its predicted end
        self._log_cap = grow(getattr(self, "_log_cap", None), math.inf)
        self._n = n
        self._dirty = True

    @property
    def speed(self) -> FloatArray:
        """Point estimate of each node's speed (work seconds done per second, per slot)."""
        if self._dirty:
            self._refresh()
        return self._speed_pt.copy()

    def _var_now(self) -> FloatArray:
        # drift per round (n observations) since the node's last run, capped at the prior
        grown = self._var + (self._obs - self._last_obs) * (self.drift / max(self._n, 1))
        return np.minimum(grown, self.prior_var, out=grown)

    def _pooled_log_speed(self, var: FloatArray) -> FloatArray:
        """Each node's log-speed shrunk toward the cluster's mean (empirical Bayes).

        The spread between nodes that is real, tau^2 = var(estimates) - mean(their variances),
        keeps a share tau^2 / (tau^2 + var_i) of a node's deviation: equal nodes measured with
        rough work estimates all get the common speed instead of noise that would herd tasks onto
        the luckiest one; nodes measured exactly (var_i ~ 0) keep their own estimate.
        """
        ls = self._log_speed
        if self._n_seen < 3:  # too few nodes to tell real spread from noise
            return ls
        if self._n_seen == self._n:  # the usual case, without boolean indexing
            mean = float(ls.sum()) / self._n
            dev = ls - mean
            spread = float(dev.dot(dev)) / self._n
            noise = float(var.sum()) / self._n
        else:
            seen = self._runs > 0
            m = ls[seen]
            mean = float(m.mean())
            spread = float(m.var())
            noise = float(var[seen].mean())
            dev = ls - mean
        tau2 = max(spread - noise, 0.0)
        if tau2 == 0.0:  # no spread beyond noise: every node gets the common speed
            return np.full(self._n, mean)
        return mean + tau2 / (tau2 + var + 1e-12) * dev

    def set_optimism(self, optimism: float) -> None:
        """Changes the exploration bonus (the next decision uses it)."""
        self.optimism = float(optimism)
        self._dirty = True

    def _refresh(self) -> None:
        """Recompute the optimistic speeds once per batch of observations, not per decision."""
        self._std = np.sqrt(self._var_now())
        # pool by measurement uncertainty (variance after the last run), not by staleness: a node
        # avoided because it is slow keeps its own estimate
        log_speed = self._pooled_log_speed(self._var)
        cap = self._log_cap
        self._speed_pt = np.exp(np.minimum(log_speed, cap))
        self._speed_opt = np.exp(np.minimum(log_speed + self.optimism * self._std, cap))
        # relative jitter far below any real difference: breaks exact ties without a bias to node 0
        self._refreshes += 1
        if self._refreshes % 32 == 1 or self._jitter.shape[0] != self._n:
            self._jitter = 1.0 + self._rng.random(self._n) * 1e-9
        self._dirty = False

    # ---- learning ----------------------------------------------------------------------------
    def observe(
        self,
        node_idx: int,
        task_features: TaskFeatures,
        duration_s: float,
        node_features_at_placement: FloatArray | None = None,
    ) -> None:
        """Learn from one finished task: it ran ``duration_s`` seconds (start to finish) there.

        The work is ``task_features["work"]`` (default 1). ``node_features_at_placement`` is
        accepted for callers that log it; the speed estimate needs only work and run time.
        """
        work = 1.0 if not task_features else float(task_features.get("work", 1.0))
        self.observe_run(int(node_idx), work, float(duration_s))

    def observe_run(self, node_idx: int, work: float, duration_s: float) -> None:
        """``observe`` without the mapping: node, work estimate (speed-1 seconds), run time (s).

        The speed sample uses the calibrated work (``effective_work``), not the raw estimate: a
        node sent mostly tasks whose estimates look small would otherwise look slow (small
        estimates are underestimates on average) and stop being chosen. The calibration is a
        regression of log(run time x node speed) on log(estimate); node choice depends on the
        estimate only, so it does not bias that regression.
        """
        if node_idx >= self._n:
            self._resize(node_idx + 1)
        if not (duration_s > 0.0 and work > 0.0):
            return
        i = node_idx
        age = (self._obs - self._last_obs[i]) / self._n
        # the walk moves once per run of this node and once per round it went unobserved
        var = min(self._var[i] + self.drift * (1.0 + age), self.prior_var)
        log_est = math.log(work)
        log_run = math.log(duration_s)
        if self._runs[i] > 0:  # the node's speed is known a little: calibrate the estimates
            self._calibrate(log_est, log_run + self._log_speed[i])
        innovation = self._a + self._b * log_est - log_run - self._log_speed[i]
        if self._runs[i] > 0:  # the prior's spread is not observation noise
            excess = innovation * innovation - var
            self.noise_var += 0.02 * (max(excess, 0.0) - self.noise_var)
        gain = var / (var + self.noise_var + 1e-12)
        self._log_speed[i] += gain * innovation
        self._var[i] = (1.0 - gain) * var
        if self._runs[i] == 0:
            self._n_seen += 1
        self._runs[i] += 1.0
        self._obs += 1
        self._last_obs[i] = self._obs
        self._last_duration[i] = duration_s
        self._log_cap[i] = math.inf  # a finished run replaces the bound
        self._mean_work += (work - self._mean_work) / min(self._obs, 1000)
        self._dirty = True

    def assume_speeds(self, speeds: Sequence[float], var: float = 1e-4) -> None:
        """Start from known speeds (e.g. declared ratings) instead of the prior; still learns.

        Each node counts as measured once, with log-speed variance ``var``.
        """
        s = np.asarray(speeds, dtype=float)
        if s.ndim != 1 or s.size == 0 or np.any(s <= 0.0) or var <= 0.0:
            raise ValueError("need one speed > 0 per node and var > 0")
        self._resize(s.size)
        n = s.size
        self._log_speed[:n] = np.log(s)
        self._var[:n] = var
        self._n_seen += int(np.count_nonzero(self._runs[:n] == 0))
        self._runs[:n] = np.maximum(self._runs[:n], 1.0)
        self._dirty = True

    def bound_speed(self, node_idx: int, work: float, running_s: float) -> None:
        """A task of ``work`` (calibrated, speed-1 seconds) has run ``running_s`` and not finished.

        So the node's speed is below work / running_s (with a margin of two noise deviations for
        rough estimates). Until the node's next finished run, its estimate, optimistic one
        included, is capped there: a slow node whose first tasks are long ones would otherwise
        keep its prior speed (and take more work) for as long as those tasks run.
        """
        if not (running_s > 0.0 and work > 0.0) or node_idx >= self._n:
            return
        cap = math.log(work / running_s) + 2.0 * math.sqrt(self.noise_var)
        if cap < self._log_cap[node_idx]:
            self._log_cap[node_idx] = cap
            self._dirty = True

    def _calibrate(self, x: float, y: float) -> None:
        self._calib_n += 1
        rate = 1.0 / min(self._calib_n, 1000)
        dx, dy = x - self._mx, y - self._my
        self._mx += dx * rate
        self._my += dy * rate
        self._vxx += (dx * dx * (1.0 - rate) - self._vxx) * rate
        self._cxy += (dx * dy * (1.0 - rate) - self._cxy) * rate
        if self._calib_n >= 30 and self._vxx > 1e-12:
            b = min(max(self._cxy / self._vxx, 0.0), 1.0)
            if b < 0.98 or abs(self._my - b * self._mx) > 0.02:
                self._a, self._b = self._my - b * self._mx, b
            else:  # estimates look exact: keep them exact
                self._a, self._b = 0.0, 1.0

    def effective_work(self, work: float) -> float:
        """The work to plan with, given an estimate: exp(a + b log estimate), calibrated online.

        Rough estimates regress toward the typical task (b < 1: an estimate far from the mean is
        mostly noise); exact ones pass through unchanged (a = 0, b = 1).
        """
        if self._b == 1.0 and self._a == 0.0:
            return work
        return math.exp(self._a + self._b * math.log(work))

    # ---- scoring -----------------------------------------------------------------------------
    def predict_completion(
        self,
        capacity: FloatArray,
        queue: FloatArray,
        backlog: FloatArray,
        work: float,
        network_cost: FloatArray | None = None,
    ) -> FloatArray:
        """Predicted seconds until a task of ``work`` placed now would finish, per node."""
        if self._dirty:
            self._refresh()
        s = self._speed_opt
        wait = np.where(queue >= capacity, backlog / (capacity * s), 0.0)
        pred = wait + work / s
        if network_cost is not None:
            pred = pred + network_cost
        return pred

    def _inputs(
        self, node_features: FloatArray, task_features: TaskFeatures
    ) -> tuple[FloatArray, FloatArray, FloatArray, float, FloatArray | None]:
        f = node_features
        if f.shape[0] > self._n:
            self._resize(f.shape[0])
        cap = f[:, CAPACITY]
        queue = f[:, QUEUE]
        backlog = f[:, BACKLOG] if f.shape[1] > BACKLOG else queue * self._mean_work
        work = 1.0
        net = None
        if task_features:
            work = self.effective_work(float(task_features.get("work", 1.0)))
            cost = task_features.get("network_cost_s")
            if cost:
                net = cost * f[:, NETWORK]
        return cap, queue, backlog, work, net

    def scores(
        self,
        node_features: FloatArray,
        task_features: TaskFeatures = None,
        feasible_mask: BoolArray | None = None,
    ) -> FloatArray:
        """Predicted completion time in seconds per node (lower is better); +inf if infeasible."""
        cap, queue, backlog, work, net = self._inputs(node_features, task_features)
        pred = self.predict_completion(cap, queue, backlog, work, net)
        mask = feasible_nodes(node_features, task_features, feasible_mask)
        return pred if mask is None else np.where(mask, pred, np.inf)

    def choose(
        self,
        node_features: FloatArray,
        task_features: TaskFeatures = None,
        feasible_mask: BoolArray | None = None,
    ) -> int:
        """The index of the node to place the task on, or -1 if no node is feasible."""
        cap, queue, backlog, work, net = self._inputs(node_features, task_features)
        pred = self.predict_completion(cap, queue, backlog, work, net)
        mask = feasible_nodes(node_features, task_features, feasible_mask)
        return _argbest(pred * self._jitter[: pred.shape[0]], mask)

    def choose_by_ready(self, ready_at: FloatArray, now: float, work: float) -> int:
        """Choose by predicted finish when the caller tracks each node's next free slot.

        ``ready_at``: per node, the time a slot is predicted to free up (the simulator keeps a
        virtual FIFO schedule per node); the task finishes at max(ready, now) + work / speed.
        """
        return int(np.argmin(self.finish_by_ready(ready_at, now, work)))

    def finish_by_ready(
        self, ready_at: FloatArray, now: float, work: float, explore: bool = True
    ) -> FloatArray:
        """Predicted finish time per node, as ``choose_by_ready`` ranks them (jitter included)."""
        return now + self.latency_by_ready(ready_at, now, work, explore)

    def latency_by_ready(
        self, ready_at: FloatArray, now: float, work: float, explore: bool = True
    ) -> FloatArray:
        """Predicted seconds from now until the task would finish, per node (jitter included).

        ``explore=False`` plans with the point speed estimates, without the optimism bonus. The
        tie-breaking jitter is relative to the latency, not to the clock (epoch times are large).
        """
        if self._dirty:
            self._refresh()
        speed = self._speed_opt if explore else self._speed_pt
        return (np.maximum(ready_at - now, 0.0) + work / speed) * self._jitter

    @property
    def mean_work(self) -> float:
        """Running mean of the work of the observed runs (speed-1 seconds)."""
        return self._mean_work

    def speed_estimate(self, node_idx: int) -> float:
        """Point estimate of one node's speed."""
        if self._dirty:
            self._refresh()
        return float(self._speed_pt[node_idx])

    def explain(
        self, node_idx: int, node_features: FloatArray, task_features: TaskFeatures = None
    ) -> dict[str, Any]:
        """Why a node scores as it does: the terms of its predicted completion time."""
        cap, queue, backlog, work, net = self._inputs(node_features, task_features)
        if self._dirty:
            self._refresh()
        i = int(node_idx)
        s_opt = float(self._speed_opt[i])
        wait = float(backlog[i] / (cap[i] * s_opt)) if queue[i] >= cap[i] else 0.0
        mask = feasible_nodes(node_features, task_features, None)
        all_scores = self.scores(node_features, task_features)
        return {
            "node": i,
            "feasible": True if mask is None else bool(mask[i]),
            "speed_estimate": float(self._speed_pt[i]),
            "speed_optimistic": s_opt,
            "log_speed_std": float(self._std[i]),
            "runs_observed": int(self._runs[i]),
            "last_run_s": float(self._last_duration[i]),
            "expected_wait_s": wait,
            "expected_run_s": work / s_opt,
            "network_cost_s": 0.0 if net is None else float(net[i]),
            "predicted_completion_s": float(all_scores[i]),
            "rank": int(np.sum(all_scores < all_scores[i])),  # 0 = the node choose() prefers
        }


class LearnedPlacer:
    """``PlacementModel`` plus the placer's own bookkeeping: a virtual FIFO schedule per node.

    This is what a load-balancing agent runs. It knows the tasks it placed and their work
    estimates, so between (stale) load reports it predicts, per node, when each slot frees up:
    running tasks finish at start + work / estimated speed, queued ones follow in FIFO order. A new
    task is predicted to finish at max(earliest free slot, now) + work / speed; the earliest wins.
    Equal predictions (nodes not yet measured) go to the node with the fewest booked tasks per
    slot, so tasks placed blind are spread rather than stacked on one node.

        placer = LearnedPlacer(cores=[4, 4, 8], seed=0)
        node = placer.place(now, task_id, work_estimate)         # decide, remember the task
        placer.finished(node, task_id, run_s)                    # a node reported a finished run
        placer.sync(now, started=lambda i: {task_id: start_s})   # with each report: start times
                                                                 # of the tasks running on node i

    Exploration is for short tasks: a task longer than ``explore_work`` x the mean observed work
    plans with the point speed estimates, without the model's optimism bonus (trying an unknown
    node costs a long task dearly if the node proves slow; short tasks find out for it).

    ``sync`` rebuilds the schedule of every node that finished something since the last sync (new
    speed estimate, freed slots), is busier than predicted (pass ``busy`` = busy slots per node) or
    has a task past its predicted end; a task running past its predicted end also caps the node's
    speed estimate (``PlacementModel.bound_speed``).

    Tail protection (off by default; ``tail_quantile=0.99`` turns it on). The placer keeps the
    predicted latencies of its recent placements (a window of ``tail_window``) and their
    ``tail_quantile`` (0.99: the p99 it protects). A task predicted
    to exceed that latency (by over 5 %: not a tie) even on its best node lands in the tail
    whatever is done; it takes the earliest finish among the slower half of the nodes (speed
    estimate at most the median, 5 % tolerance), as long as that is within ``tail_stretch`` x its
    best latency (point estimates, no exploration). The fast nodes stay
    free for the tasks they can still keep under the quantile; the tail tasks pay for it with
    their own latency (up to ``tail_stretch`` x). On a cluster of equal nodes every node is in the
    slower half and the rule changes little. ``tail_quantile=None``: earliest finish for all.
    The rule pays off only when ``tail_quantile`` is the quantile that matters and the window
    covers the period it is measured over, else misjudged tail tasks become the p99. Trace
    benchmark, heterogeneous, tuning seeds, learned / best other p99 at 70 % / 90 %: no rule
    0.79 / 0.81; 0.99 over all placements 0.67 / 0.66; 0.985 0.95 / 0.92; 0.98 1.07 / 1.07;
    0.99 over a window of 3,000 (of 7,255) 0.88 / 0.83. A rule that helps only when aimed at
    exactly the measured quantile, and hurts a little off it, is tuned to a metric rather than to
    a cluster, so it is an option, not the default.
    """

    def __init__(
        self,
        cores: Sequence[int],
        *,
        seed: int = 0,
        tail_quantile: float | None = None,
        tail_stretch: float = 3.0,
        tail_window: int = 10_000,
        explore_work: float = 1.0,
        known_speeds: Sequence[float] | None = None,
        **model_options: Any,
    ) -> None:
        n = len(cores)
        if tail_quantile is not None and not 0.0 < tail_quantile < 1.0:
            raise ValueError("tail_quantile must be in (0, 1) or None")
        if tail_stretch < 1.0 or tail_window < 1:
            raise ValueError("need tail_stretch >= 1 and tail_window >= 1")
        self.model = PlacementModel(n, seed=seed, **model_options)
        if known_speeds is not None:  # a reference for benchmarks: no cold start
            self.model.assume_speeds(known_speeds)
        self.cores = [int(c) for c in cores]
        self._cores_arr = np.asarray(self.cores, dtype=float)
        self._slots: list[list[float]] = [[0.0] * c for c in self.cores]  # heaps of free times
        self.ready_at = np.zeros(n)  # when each node's next slot is predicted to be free
        self._check_at = np.full(n, math.inf)  # earliest predicted end of a task booked there
        self._outstanding: list[dict[Any, float]] = [{} for _ in range(n)]  # placement order
        self._stale: set[int] = set()
        # 1 + 1e-6 x (tasks booked per slot, not reported finished): the tie-break of place
        self._spread = np.ones(n)
        self.tail_quantile = tail_quantile
        self.tail_stretch = float(tail_stretch)
        self.explore_work = float(explore_work)
        self._latencies = np.zeros(int(tail_window))  # ring of predicted latencies
        self._placed = 0
        self.tail_latency_s = math.inf  # the protected quantile of predicted latency
        self.tail_placements = 0  # tasks placed by the tail rule

    def place(
        self, now: float, task_id: Any, work: float, feasible_mask: BoolArray | None = None
    ) -> int:
        """Choose a node for the task and book it there; -1 if no node is feasible."""
        model = self.model
        work = model.effective_work(float(work))
        ready = self.ready_at
        if feasible_mask is not None:
            if not np.any(feasible_mask):
                return -1
            ready = np.where(feasible_mask, ready, np.inf)
        # exploring costs a task its extra run time on a node that proves slow: cheap for short
        # tasks, dear for long ones, so only tasks up to explore_work x the mean work explore
        explore = work <= self.explore_work * model.mean_work
        lat = model.latency_by_ready(ready, now, work, explore)
        # equal predictions (e.g. unknown nodes) go to the node with the fewest booked tasks per
        # slot: spread, so no node fills with tasks placed blind
        i = int(np.argmin(lat * self._spread))
        latency = float(lat[i])
        if latency > 1.05 * self.tail_latency_s:  # clearly beyond it, not a tie
            i, latency = self._tail_node(ready, now, work)
            self.tail_placements += 1
        self._record(latency)
        slots = self._slots[i]
        end = max(slots[0], now) + work / model.speed_estimate(i)
        heapreplace(slots, end)
        self.ready_at[i] = slots[0]
        if end < self._check_at[i]:
            self._check_at[i] = end
        self._outstanding[i][task_id] = work
        self._spread[i] += 1e-6 / self.cores[i]
        return i

    def _tail_node(self, ready: FloatArray, now: float, work: float) -> tuple[int, float]:
        """Earliest finish on the slower half of the nodes, within tail_stretch x the best latency.

        The slower half: speed estimate at most the median (within 5 %, so equal nodes all count).
        Point estimates, no optimism: a long task is no probe of an unknown node.
        """
        model = self.model
        speed = model._speed_pt
        lat = model.latency_by_ready(ready, now, work, explore=False)
        best = int(np.argmin(lat))
        slow = (speed <= np.median(speed) * 1.05) & (lat <= self.tail_stretch * float(lat[best]))
        i = int(np.argmin(np.where(slow, lat, np.inf))) if slow.any() else best
        return i, float(lat[i])

    def _record(self, latency: float) -> None:
        if self.tail_quantile is None:
            return
        w = self._latencies.shape[0]
        self._latencies[self._placed % w] = latency
        self._placed += 1
        # a quantile needs some history; recomputed every 64 placements (amortised O(window/64))
        if self._placed >= 200 and self._placed % 64 == 0:
            sample = self._latencies[: min(self._placed, w)]
            self.tail_latency_s = float(np.quantile(sample, self.tail_quantile))

    def finished(
        self, node_idx: int, task_id: Any, run_s: float, work: float | None = None
    ) -> None:
        """A placed task finished after running ``run_s`` seconds: learn, forget the task."""
        booked = self._outstanding[node_idx].pop(task_id, None)
        if booked is not None:
            self._spread[node_idx] -= 1e-6 / self.cores[node_idx]
        estimate = work if work is not None else booked
        if estimate is not None:
            self.model.observe_run(node_idx, float(estimate), float(run_s))
        self._stale.add(node_idx)

    def outstanding(self, node_idx: int) -> int:
        """Tasks placed on the node and not yet reported finished."""
        return len(self._outstanding[node_idx])

    def sync(
        self,
        now: float,
        started: Callable[[int], Mapping[Any, float]],
        busy: NDArray[np.float64] | None = None,
    ) -> None:
        """Re-anchor the schedules that went stale; ``started(i)``: {task: start time} on node i."""
        if busy is not None:
            late = np.flatnonzero((self.ready_at <= now) & (busy >= self._cores_arr))
            self._stale.update(late.tolist())
        overdue = np.flatnonzero(self._check_at <= now)
        if overdue.size:
            self._stale.update(overdue.tolist())
        for i in self._stale:
            self._rebuild(i, now, started(i))
        self._stale = set()

    def _rebuild(self, i: int, now: float, started: Mapping[Any, float]) -> None:
        model = self.model
        running: list[tuple[float, float]] = []
        queued: list[float] = []
        for k, w in self._outstanding[i].items():
            st = started.get(k)
            if st is None:
                queued.append(w)
            else:
                running.append((w, now - st))
        s = model.speed_estimate(i)
        for w, ran in running:
            if ran > w / s:  # past its predicted end: the node is slower than estimated
                model.bound_speed(i, w, ran)
        s = model.speed_estimate(i)
        # running longer than predicted: expect it to go on a while (a quarter of its age)
        slots = [now + max(w / s - ran, 0.25 * ran) for w, ran in running]
        check = min(slots, default=math.inf)
        slots.extend([now] * (self.cores[i] - len(slots)))
        heapify(slots)
        for w in queued:
            end = max(slots[0], now) + w / s
            heapreplace(slots, end)
            check = min(check, end)
        self._slots[i] = slots
        self.ready_at[i] = slots[0]
        self._spread[i] = 1.0 + 1e-6 * len(self._outstanding[i]) / self.cores[i]
        self._check_at[i] = check if check > now else math.inf


def make_policy(name: str, seed: int = 0, **kwargs: Any) -> Any:
    """A fresh policy by name (``POLICIES``); keyword arguments go to its constructor."""
    classes: dict[str, Any] = {
        "round_robin": RoundRobinPolicy,
        "random": RandomPolicy,
        "least_loaded": LeastLoadedPolicy,
        "p2c": PowerOfTwoPolicy,
        "weighted": WeightedScorePolicy,
        "learned": PlacementModel,
    }
    if name not in classes:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return classes[name](seed=seed, **kwargs)


def __getattr__(name: str) -> Any:
    # ``simulate`` lives in ``simulation`` (which imports this module); re-exported lazily.
    if name == "simulate":
        from .simulation import simulate

        return simulate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
