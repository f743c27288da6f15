"""Causal features of a failure history, vectorised over (node, time) queries.

Every feature of a query (node, t) uses only failures that *started before t*, plus whether the
node's last failure was still unrepaired at t (known at t: the node is down). Counting is done with
one `searchsorted` over a key space that puts each node's (or system's, or group's) sorted failure
times in its own band, so millions of node-days cost a few vector passes.

The hazard part is a Weibull renewal process per system (times between a node's failures are
Weibull; shape k < 1 means a decreasing hazard: a node that just failed fails again soon), shrunk
towards the pooled fit (empirical Bayes), and a gamma frailty per node: with E the node's expected
number of failures so far under its system's renewal model and n the observed number, the node's
hazard multiplier is z = (alpha + n) / (alpha + E) (the gamma-Poisson posterior mean, shrunk
towards 1 = "like its system").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

DAY_S = 86400.0
_MIN_GAP_DAYS = 1.0 / 1440.0  # failures logged in the same minute: a one-minute gap


class KeyedTimes:
    """Sorted event times per integer key; counts and last event before t, vectorised."""

    def __init__(self, keys: np.ndarray, times: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        times = np.asarray(times, dtype=np.float64)
        self._t_lo = float(times.min()) - 1.0 if times.size else 0.0
        self._span = (float(times.max()) - self._t_lo + 2.0) if times.size else 2.0
        order = np.lexsort((times, keys))
        self.keys = keys[order]
        self.times = times[order]
        self.order = order  # position in the sorted arrays -> index in the inputs
        self._k = self.keys * self._span + (self.times - self._t_lo)

    def _q(self, keys: np.ndarray, t: np.ndarray) -> np.ndarray:
        rel = np.clip(np.asarray(t, dtype=np.float64) - self._t_lo, 0.0, self._span - 1.0)
        return np.asarray(keys, dtype=np.int64) * self._span + rel

    def index_before(self, keys: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Sorted position just after the last event of `key` strictly before t."""
        return np.searchsorted(self._k, self._q(keys, t), side="left")

    def first_index(self, keys: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._k, np.asarray(keys, dtype=np.int64) * self._span, "left")

    def count(self, keys: np.ndarray, t_from: np.ndarray, t_to: np.ndarray) -> np.ndarray:
        """Events of `key` with t_from <= time < t_to."""
        return self.index_before(keys, t_to) - self.index_before(keys, t_from)


@dataclass(frozen=True)
class WeibullParams:
    """Per-system Weibull renewal (shape k, scale in days) and the pre-first-failure daily rate."""

    shape: np.ndarray  # (n_systems,)
    scale_days: np.ndarray  # (n_systems,)
    first_rate_per_day: np.ndarray  # (n_systems,)
    frailty_alpha: float = 0.5  # gamma frailty shape (variance 1 / alpha), fitted by EB

    def cum_hazard(self, system: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Weibull cumulative hazard H(x) = (x / scale) ** shape."""
        x = np.maximum(days, 0.0)
        return (x / self.scale_days[system]) ** self.shape[system]


def weibull_mle(durations: np.ndarray, observed: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood Weibull (shape, scale) from right-censored durations.

    For a fixed shape k the scale has the closed form scale**k = sum(x**k) / n_observed, so only
    log k is searched (bounded: 0.05 <= k <= 5).
    """
    x = np.maximum(np.asarray(durations, dtype=np.float64), _MIN_GAP_DAYS)
    d = np.asarray(observed, dtype=bool)
    n_obs = int(d.sum())
    if n_obs == 0:
        raise ValueError("no observed durations")
    log_x = np.log(x)
    sum_log_obs = float(log_x[d].sum())
    x_ref = float(np.exp(log_x.mean()))  # scale x**k for numerical range
    log_xs = log_x - np.log(x_ref)

    def neg_loglik(log_k: float) -> float:
        k = float(np.exp(log_k))
        s = float(np.exp(k * log_xs).sum())  # sum((x / x_ref) ** k)
        log_scale_k = np.log(s / n_obs) + k * np.log(x_ref)  # log(scale ** k)
        return -(n_obs * np.log(k) - n_obs * log_scale_k + (k - 1.0) * sum_log_obs - n_obs)

    res = minimize_scalar(neg_loglik, bounds=(np.log(0.05), np.log(5.0)), method="bounded")
    k = float(np.exp(res.x))
    s = float(np.exp(k * log_xs).sum())
    scale = float(np.exp((np.log(s / n_obs) + k * np.log(x_ref)) / k))
    return k, scale


def fit_frailty_alpha(counts: np.ndarray, expected: np.ndarray) -> float:
    """Empirical Bayes gamma frailty: the shape alpha maximising the negative-binomial marginal
    likelihood of each node's failure count given its expected count (alpha in [0.05, 50];
    large alpha = nodes alike, small = some nodes fail far more than their peers)."""
    n = np.asarray(counts, dtype=np.float64)
    e = np.maximum(np.asarray(expected, dtype=np.float64), 1e-9)

    def neg_loglik(log_a: float) -> float:
        a = math.exp(log_a)
        ll = gammaln(a + n) - gammaln(a) + a * np.log(a / (a + e)) + n * np.log(e / (a + e))
        return -float(ll.sum())

    res = minimize_scalar(neg_loglik, bounds=(math.log(0.05), math.log(50.0)), method="bounded")
    return float(math.exp(res.x))


@dataclass(frozen=True)
class NodeTable:
    """Static facts about every node: its system, its group (rack), when production began."""

    system: np.ndarray  # (n_nodes,) int, 0..n_systems-1
    group: np.ndarray  # (n_nodes,) int, unique per group; -1 = no group
    prod_start_s: np.ndarray  # (n_nodes,)

    @property
    def n_systems(self) -> int:
        return int(self.system.max()) + 1 if self.system.size else 0

    def system_sizes(self) -> np.ndarray:
        return np.bincount(self.system, minlength=self.n_systems).astype(np.float64)


BASE_FEATURES = [
    "has_failed",
    "log_tau",
    "log_tau_sq",
    "down_now",
    "saturday",
    "sunday",
    "log_age",
    "node_1d",
    "node_7d",
    "node_30d",
    "node_90d",
    "node_365d",
    "node_lifetime_rate",
    "system_1d",
    "system_7d",
    "system_30d",
    "system_365d",
    "system_lifetime_rate",
    "log_system_tau",
    "group_7d",
    "group_30d",
    "group_365d",
    "last_event_size",
    "log_since_repair",
    "log_last_repair_h",
]
HAZARD_FEATURES = [
    "log_frailty",
    "log_renewal_hazard",
    "log_node_hazard",
    "log_tau_x_system_rate",
    "log_node_hazard_x_system_rate",
]
FEATURE_NAMES = BASE_FEATURES + HAZARD_FEATURES


class FailureHistory:
    """Failures (node, start, end) of nodes described by a `NodeTable`, indexed for queries."""

    def __init__(
        self,
        nodes: NodeTable,
        fail_node: np.ndarray,
        fail_start_s: np.ndarray,
        fail_end_s: np.ndarray,
    ) -> None:
        self.nodes = nodes
        fail_node = np.asarray(fail_node, dtype=np.int64)
        self.by_node = KeyedTimes(fail_node, fail_start_s)
        o = self.by_node.order
        self.fail_node = fail_node[o]
        self.fail_start_s = np.asarray(fail_start_s, dtype=np.float64)[o]
        self.fail_end_s = np.asarray(fail_end_s, dtype=np.float64)[o]
        self.by_system = KeyedTimes(nodes.system[self.fail_node], self.fail_start_s)
        self._starts = KeyedTimes(nodes.system, nodes.prod_start_s)
        grp = nodes.group[self.fail_node]
        self._has_group = grp >= 0
        self.by_group = KeyedTimes(grp[self._has_group], self.fail_start_s[self._has_group])
        first = self.by_node.first_index(self.fail_node)
        self._is_first = np.arange(self.fail_node.size) == first  # node's first failure
        prev_start = np.where(self._is_first, np.nan, np.roll(self.fail_start_s, 1))
        self._gap_days = (self.fail_start_s - prev_start) / DAY_S  # nan for a node's first

    def system_size_at(self, system: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Nodes of `system` in production at t (at least 1): a node known only from the
        future must not change the present."""
        after = np.asarray(t, dtype=np.float64) + 1e-6
        n = self._starts.index_before(system, after) - self._starts.first_index(system)
        return np.maximum(n, 1).astype(np.float64)

    # ---- the renewal model -------------------------------------------------------------------
    def fit_weibull(
        self, cutoff_s: float, prior_events: float = 50.0, prior_shape: float = 0.7
    ) -> WeibullParams:
        """Per-system Weibull fit on gaps between failures that started before `cutoff_s`.

        Each node's open gap (last failure -> cutoff) is right-censored; time from production
        start to a node's first failure gives the pre-first-failure rate instead. Log shape and
        log scale are shrunk (weight n / (n + prior_events), n = observed gaps): per system
        towards the pooled fit, and the pooled fit towards a prior of shape `prior_shape`
        (decreasing hazard, as published for LANL) with the mean gap 1 / (pooled first-failure
        rate), so a young cluster with a handful of failures still gets a sensible model.
        """
        ns = self.nodes.n_systems
        sys_of_fail = self.nodes.system[self.fail_node]
        before = self.fail_start_s < cutoff_s
        gaps_obs = before & ~self._is_first
        # censored open gaps: for each node whose last failure before cutoff exists
        n_nodes = self.nodes.system.size
        idx = self.by_node.index_before(np.arange(n_nodes), np.full(n_nodes, cutoff_s))
        first = self.by_node.first_index(np.arange(n_nodes))
        has = idx > first
        # indexed only where a failure exists: with no failure at all there is nothing to index
        cens_days = (cutoff_s - self.fail_start_s[idx[has] - 1]) / DAY_S
        cens_sys = self.nodes.system[has]
        durations = np.concatenate([self._gap_days[gaps_obs], cens_days])
        observed = np.concatenate(
            [np.ones(int(gaps_obs.sum()), bool), np.zeros(cens_days.size, bool)]
        )
        systems = np.concatenate([sys_of_fail[gaps_obs], cens_sys])
        # pre-first-failure exposure: production start -> first failure (or cutoff)
        in_prod = self.nodes.prod_start_s < cutoff_s
        nf = self.fail_start_s.size
        first_t = self.fail_start_s[np.minimum(first, nf - 1)] if nf else np.zeros(n_nodes)
        first_t = np.where(has, first_t, cutoff_s)
        exposure = np.maximum(np.minimum(first_t, cutoff_s) - self.nodes.prod_start_s, 0.0) / DAY_S
        first_events = np.bincount(self.nodes.system[has], minlength=ns).astype(float)
        first_expo = np.bincount(
            self.nodes.system[in_prod], weights=exposure[in_prod], minlength=ns
        )
        pooled_rate = (first_events.sum() + 1.0) / (first_expo.sum() + 365.0)
        first_rate = (first_events + 1.0) / (first_expo + 1.0 / pooled_rate)

        k_all = prior_shape
        lam_all = 1.0 / (pooled_rate * math.gamma(1.0 + 1.0 / prior_shape))
        n_all = int(observed.sum())
        if n_all >= 2:
            k_fit, lam_fit = weibull_mle(durations, observed)
            w = n_all / (n_all + prior_events)
            k_all = float(np.exp(w * np.log(k_fit) + (1 - w) * np.log(k_all)))
            lam_all = float(np.exp(w * np.log(lam_fit) + (1 - w) * np.log(lam_all)))
        shape = np.full(ns, k_all)
        scale = np.full(ns, lam_all)
        for s in range(ns):
            m = systems == s
            n_obs = int(observed[m].sum())
            if n_obs < 2:
                continue
            k_s, lam_s = weibull_mle(durations[m], observed[m])
            w = n_obs / (n_obs + prior_events)
            shape[s] = np.exp(w * np.log(k_s) + (1 - w) * np.log(k_all))
            scale[s] = np.exp(w * np.log(lam_s) + (1 - w) * np.log(lam_all))
        params = WeibullParams(shape=shape, scale_days=scale, first_rate_per_day=first_rate)
        nodes_in = np.flatnonzero(in_prod)
        if nodes_in.size >= 2:
            cut = np.full(nodes_in.size, cutoff_s)
            n_obs_node, expected, *_ = self._expected_counts(params, nodes_in, cut)
            params = WeibullParams(
                shape, scale, first_rate, fit_frailty_alpha(n_obs_node, expected)
            )
        return params

    # ---- features ----------------------------------------------------------------------------
    def _node_state(self, node: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, ...]:
        idx = self.by_node.index_before(node, t)
        first = self.by_node.first_index(node)
        n_before = idx - first
        has = n_before > 0
        prev = np.maximum(idx - 1, 0)
        return idx, first, n_before, has, prev

    def base_features(self, node: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The `BASE_FEATURES` columns for queries (node, t), t in seconds."""
        node = np.asarray(node, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        idx, _, n_before, has, prev = self._node_state(node, t)
        nf = self.fail_start_s.size
        last = self.fail_start_s[np.minimum(prev, max(nf - 1, 0))] if nf else np.zeros_like(t)
        tau = np.where(has, (t - last) / DAY_S, 0.0)
        log_tau = np.where(has, np.log(tau + 1.0 / 24.0), 0.0)
        fixed = self.fail_end_s[np.minimum(prev, max(nf - 1, 0))] if nf else np.zeros_like(t)
        age = np.maximum((t - self.nodes.prod_start_s[node]) / DAY_S, 0.0)
        dow = (np.floor(t / DAY_S).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
        sys_ = self.nodes.system[node]
        size = self.system_size_at(sys_, t)
        cols = [
            has.astype(float),
            log_tau,
            log_tau**2,
            (has & (fixed > t)).astype(float),
            (dow == 5).astype(float),
            (dow == 6).astype(float),
            np.log1p(age),
        ]
        node_counts = {}
        for w in (1, 7, 30, 90, 365):
            c = self.by_node.count(node, t - w * DAY_S, t)
            node_counts[w] = c
            cols.append(np.log1p(c))
        cols.append(np.log((n_before + 0.5) / (age + 30.0)))
        sidx = self.by_system.index_before(sys_, t)
        for w in (1, 7, 30, 365):
            c = sidx - self.by_system.index_before(sys_, t - w * DAY_S)
            cols.append(np.log((c + 0.1) / (size * w)))
        s_before = sidx - self.by_system.first_index(sys_)
        cols.append(np.log((s_before + 1.0) / (size * (age + 30.0))))
        s_has = s_before > 0
        st = self.by_system.times
        s_last = st[np.minimum(np.maximum(sidx - 1, 0), max(st.size - 1, 0))] if st.size else t
        cols.append(np.where(s_has, np.log1p(np.maximum(t - s_last, 0.0) / DAY_S), np.log(366.0)))
        grp = self.nodes.group[node]
        in_grp = grp >= 0
        for w in (7, 30, 365):
            if self.by_group.times.size:
                c = np.where(in_grp, self.by_group.count(grp, t - w * DAY_S, t), 0)
                c = np.where(in_grp, c - node_counts[w], 0)  # neighbours only
            else:
                c = np.zeros_like(t)
            cols.append(np.log1p(np.maximum(c, 0)))
        # the node's last failure: one of many at once in its system (a system-wide event, less
        # telling about this node), and how its repair went (repair ends are known once past)
        window = 300.0
        burst = self.by_system.count(sys_, last - window, np.minimum(last + window, t))
        cols.append(np.where(has, np.log1p(np.maximum(burst - 1, 0)), 0.0))
        repaired = has & (fixed <= t)
        since_fix = np.maximum(t - fixed, 0.0) / DAY_S
        cols.append(np.where(repaired, np.log(since_fix + 1.0 / 24.0), 0.0))
        repair_h = (np.minimum(fixed, t) - last) / 3600.0
        cols.append(np.where(has, np.log1p(np.maximum(repair_h, 0.0)), 0.0))
        return np.column_stack(cols)

    def node_hazard(
        self,
        params: WeibullParams,
        node: np.ndarray,
        t: np.ndarray,
        horizon_days: float | np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(frailty z, renewal cumulative hazard over [t, t + horizon]) per query.

        Renewal clock: days since the node's last failure, or, before its first failure, a
        constant rate `first_rate_per_day` since production start.
        """
        n_before, expected, has, tau, sys_ = self._expected_counts(params, node, t)
        alpha = params.frailty_alpha
        z = (alpha + n_before) / (alpha + expected)
        open_h = np.where(has, params.cum_hazard(sys_, tau), 0.0)
        ahead = np.where(
            has,
            params.cum_hazard(sys_, tau + horizon_days) - open_h,
            params.first_rate_per_day[sys_] * horizon_days,
        )
        return z, np.maximum(ahead, 1e-12)

    def _expected_counts(
        self, params: WeibullParams, node: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """(failures before t, their expected number under the system's renewal model, has
        failed, days since the last failure, system) per query."""
        node = np.asarray(node, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        idx, first, n_before, has, prev = self._node_state(node, t)
        sys_ = self.nodes.system[node]
        nf = self.fail_start_s.size
        # expected count so far: pre-first exposure, completed gaps, the open gap
        gap_h = np.where(
            self._is_first,
            0.0,
            params.cum_hazard(self.nodes.system[self.fail_node], np.nan_to_num(self._gap_days)),
        )
        cum = np.concatenate([[0.0], np.cumsum(gap_h)])
        completed = cum[idx] - cum[np.minimum(first + 1, idx)]
        t_first = self.fail_start_s[np.minimum(first, max(nf - 1, 0))] if nf else t
        pre_end = np.where(has, t_first, t)
        pre = params.first_rate_per_day[sys_] * np.maximum(
            (pre_end - self.nodes.prod_start_s[node]) / DAY_S, 0.0
        )
        last = self.fail_start_s[np.minimum(prev, max(nf - 1, 0))] if nf else t
        tau = np.where(has, (t - last) / DAY_S, 0.0)
        open_h = np.where(has, params.cum_hazard(sys_, tau), 0.0)
        return n_before, pre + completed + open_h, has, tau, sys_

    def hazard_features(
        self,
        params: WeibullParams,
        node: np.ndarray,
        t: np.ndarray,
        base: np.ndarray,
        horizon_days: float = 1.0,
    ) -> np.ndarray:
        """The `HAZARD_FEATURES` columns (they depend on the fitted `params`)."""
        z, ahead = self.node_hazard(params, node, t, horizon_days)
        log_z = np.log(z)
        log_ahead = np.log(ahead)
        sys_rate = base[:, BASE_FEATURES.index("system_lifetime_rate")]
        log_tau = base[:, BASE_FEATURES.index("log_tau")]
        return np.column_stack(
            [
                log_z,
                log_ahead,
                log_z + log_ahead,
                log_tau * sys_rate,
                (log_z + log_ahead) * sys_rate,
            ]
        )

    def features(
        self, params: WeibullParams, node: np.ndarray, t: np.ndarray, horizon_days: float = 1.0
    ) -> np.ndarray:
        """All `FEATURE_NAMES` columns for queries (node, t)."""
        base = self.base_features(node, t)
        return np.hstack([base, self.hazard_features(params, node, t, base, horizon_days)])
