"""Online anomaly detection for node metrics: how rare is what we just saw, given the history?

Each feature (metric) is watched three ways (see ``anomaly_feature``): its reading, the mean of its
recent readings, and — when the metric has a strong daily/weekly cycle, found by autocorrelation —
its change from one season ago. For each view the detector asks: among the view's past values, how
many lay within a small band around the current one (``bandwidth`` times the view's exponentially
weighted standard deviation)? A reading in a range the metric has rarely or never visited — a spike
above every earlier one, a new plateau or floor, hours spent at an unusual level, a weekday that
looks like a holiday — gets a small empirical p-value ``(count + 1) / (seen + 1)``. Values seen
many times (steady noise, the usual cycle) are normal by construction, and a new level stops being
rare once it has been seen for a while.

A row takes the smallest p-value of all its features and views, times 1 + ln(number of views): a
mild correction for looking many ways at correlated metrics; the smallest also names the feature
to blame. Alerts are not repeated: a row keeps its full strength only if its p-value is clearly
smaller (by ``repeat_factor``) than every p-value of the previous ``quiet_rows`` rows; otherwise
it is damped. This rule needs no threshold, so it holds for any threshold an operator picks. The
score is ``1 / (1 + p / p_scale)`` in [0, 1].

Everything is causal (row t sees rows <= t only), deterministic, and vectorised over blocks of rows;
``update(row)`` runs the same code on a block of one row, so it equals ``score_series``.

``fit(train)`` switches to a second mode, for many correlated metrics with a block of normal history
(see ``anomaly_reference``): the training rows become the reference of what normal looks like —
per-metric rarity against them and the metrics' joint structure, in five views — and the threshold
is calibrated on the training block's own cross-fitted scores at ``false_alarm_rate``. Scores are
then raw / (raw + calibrated raw threshold), so ``threshold`` is 0.5. The reference is fixed: call
``fit`` again on newer normal history to move it. Without ``fit`` (e.g. a stream with no history
yet) the online rarity views above are used, with ``threshold`` as given.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dspex_cluster.skills.anomaly_feature import VIEW_NAMES, FeatureBank, RarityConfig
from dspex_cluster.skills.anomaly_reference import (
    CALIBRATED_MIN_ROWS,
    ReferenceConfig,
    ReferenceModel,
    calibrate,
)
from dspex_cluster.skills.anomaly_window import CHUNK

# The default alert threshold: the score NAB's standard profile favours for this detector on the
# realKnownCause + realAWSCloudwatch files (see bench/bench_anomaly.py for the cross-validated use).
DEFAULT_THRESHOLD = 0.27


class AnomalyDetector:
    """Causal multivariate anomaly scores in [0, 1], one per row; see the module docstring."""

    def __init__(
        self,
        n_features: int = 1,
        *,
        feature_names: Sequence[str] | None = None,
        bandwidth: float = 0.5,
        halflife: float = 1000.0,
        history: int = 20_000,
        warmup: int = 30,
        level_rows: int = 48,
        season_min_lag: int = 24,
        season_min_acf: float = 0.8,
        p_scale: float = 1e-3,
        quiet_rows: int = 200,
        repeat_factor: float = 0.5,
        damping: float = 10.0,
        threshold: float = DEFAULT_THRESHOLD,
        reference: ReferenceConfig | None = None,
    ) -> None:
        if n_features < 1:
            raise ValueError("n_features must be >= 1")
        names = list(feature_names) if feature_names is not None else None
        if names is not None and len(names) != n_features:
            raise ValueError("feature_names must have n_features entries")
        self.n_features = n_features
        self.feature_names = names or [f"f{i}" for i in range(n_features)]
        self.config = RarityConfig(
            bandwidth=bandwidth,
            halflife=halflife,
            history=history,
            warmup=warmup,
            level_rows=level_rows,
            season_min_lag=season_min_lag,
            season_min_acf=season_min_acf,
        )
        self.warmup = warmup
        self.p_scale = p_scale
        self.quiet_rows = quiet_rows
        self.repeat_factor = repeat_factor
        self.damping = damping
        self.threshold = threshold
        self._bank = FeatureBank(self.config, n_features)
        self._last = np.zeros(n_features)  # last finite value per feature (fills NaN)
        self._seen = 0  # rows processed so far
        self._recent_p = np.ones(0)  # combined p-values of the last quiet_rows rows
        self._last_view_p = np.ones((n_features, len(VIEW_NAMES)))
        self._last_score = 0.0
        self.reference_config = reference or ReferenceConfig()
        self._reference: ReferenceModel | None = None
        self.raw_threshold = 0.0  # the calibrated raw score (fitted mode)
        self._last_blame = np.zeros(n_features)

    # --- public API -------------------------------------------------------------------------

    def fit(self, history: ArrayLike) -> AnomalyDetector:
        """Learn what normal looks like from ``history`` (rows x features, time order).

        With at least ``CALIBRATED_MIN_ROWS`` rows (256) this builds the training reference and
        calibrates the threshold (module docstring); with fewer, the rows only warm up the online
        views (their scores are dropped). Missing readings are carried forward first.
        """
        data = self._as_matrix(history)
        if data.shape[0] < CALIBRATED_MIN_ROWS:
            self.score_series(data)
            return self
        cfg = self.reference_config
        self.raw_threshold = max(calibrate(data, cfg), 1e-12)
        self._reference = ReferenceModel(cfg).fit(data)
        self.threshold = 0.5
        self._last = data[-1].copy()
        return self

    @property
    def fitted(self) -> bool:
        """True once ``fit`` has built a training reference (the second mode)."""
        return self._reference is not None

    def score_series(self, X: ArrayLike) -> NDArray[np.float64]:
        """One score in [0, 1] per row of X (rows in time order); the state moves past X."""
        data = self._as_matrix(X)
        out = np.empty(data.shape[0])
        if self._reference is not None:
            for start in range(0, data.shape[0], 4096):  # bounded temporary arrays
                out[start : start + 4096] = self._score_reference(data[start : start + 4096])
            return out
        for start in range(0, data.shape[0], CHUNK):
            out[start : start + CHUNK] = self._score_block(data[start : start + CHUNK])
        return out

    def update(self, row: ArrayLike) -> float:
        """Score one new row (n_features values); same result as score_series row by row."""
        r = self._as_matrix(np.asarray(row, dtype=np.float64).reshape(1, -1))
        if self._reference is not None:
            return float(self._score_reference(r)[0])
        return float(self._score_block(r)[0])

    def explain(self, row: ArrayLike | None = None) -> dict[str, float]:
        """Each feature's share of the evidence, largest first.

        Without ``row``: the last scored row. With ``row``: that row scored as the next one, on a
        copy of the detector, leaving this one unchanged. A share is the feature's surprise beyond
        the ordinary, max(0, -log10(p) - 1) (p-values above 0.1 add nothing), over the row's total.
        Fitted: each view's evidence is split over the metrics by their rarity and their terms of
        the Mahalanobis distance, summed over views.
        """
        if self._reference is not None:
            blame = self._last_blame
            if row is not None:
                probe = copy.deepcopy(self)
                probe.update(row)
                blame = probe._last_blame
            total = float(blame.sum())
            shares = blame / total if total > 0 else np.zeros_like(blame)
            order = np.argsort(-shares, kind="stable")
            return {self.feature_names[i]: float(shares[i]) for i in order}
        if row is None:
            feature_p = self._last_view_p.min(axis=1)
        else:
            probe = copy.deepcopy(self)
            probe.update(row)
            feature_p = probe._last_view_p.min(axis=1)
        surprise = np.maximum(0.0, -np.log10(np.clip(feature_p, 1e-300, 1.0)) - 1.0)
        total = float(surprise.sum())
        shares = surprise / total if total > 0 else np.zeros_like(surprise)
        order = np.argsort(-shares, kind="stable")
        return {self.feature_names[i]: float(shares[i]) for i in order}

    def view_p_values(self) -> dict[str, dict[str, float]]:
        """p-values of the last scored row per feature and view (value, level, seasonal)."""
        return {
            name: dict(zip(VIEW_NAMES, map(float, ps), strict=True))
            for name, ps in zip(self.feature_names, self._last_view_p, strict=True)
        }

    @property
    def periods(self) -> dict[str, int]:
        """The seasonal period (rows) found for each feature; 0 = none."""
        return dict(zip(self.feature_names, self._bank.periods, strict=True))

    @property
    def last_score(self) -> float:
        return self._last_score

    # --- internals ----------------------------------------------------------------------------

    def _as_matrix(self, X: ArrayLike) -> NDArray[np.float64]:
        data = np.asarray(X, dtype=np.float64)
        if data.ndim == 1:
            data = data.reshape(-1, 1) if self.n_features == 1 else data.reshape(1, -1)
        if data.ndim != 2 or data.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got {data.shape}")
        return self._fill_missing(data)

    def _fill_missing(self, data: NDArray[np.float64]) -> NDArray[np.float64]:
        """NaN/inf carry the feature's previous finite value forward (the metric did not report)."""
        if np.isfinite(data).all():
            return data
        data = data.copy()
        prev = self._last.copy()
        for i in range(data.shape[0]):
            bad = ~np.isfinite(data[i])
            data[i, bad] = prev[bad]
            prev = data[i]
        return data

    def _score_reference(self, block: NDArray[np.float64]) -> NDArray[np.float64]:
        assert self._reference is not None
        raw = self._reference.evidence(block)
        scores = raw / (raw + self.raw_threshold)
        self._seen += block.shape[0]
        self._last = block[-1].copy()
        self._last_blame = self._reference.last_blame
        self._last_score = float(scores[-1])
        return scores

    def _score_block(self, block: NDArray[np.float64]) -> NDArray[np.float64]:
        # Season checks happen at fixed absolute rows: split the block there.
        check = self._bank.next_season_check(self._seen)
        if self._seen < check < self._seen + block.shape[0]:
            cut = check - self._seen
            return np.concatenate((self._score_block(block[:cut]), self._score_block(block[cut:])))
        if self._seen == check:
            self._bank.check_season(self._seen)
        b = block.shape[0]
        view_p = self._bank.p_values(block, self._seen)  # rows x features x views
        views = self._bank.active_views
        p = np.minimum(1.0, view_p.min(axis=(1, 2)) * (1.0 + np.log(views)))
        p_eff = self._damp_repeats(p)
        scores = 1.0 / (1.0 + p_eff / self.p_scale)
        row_index = self._seen + np.arange(b)
        scores[row_index < self.warmup] = 0.0
        self._seen += b
        self._last = block[-1].copy()
        self._last_view_p = view_p[-1].copy()
        self._last_score = float(scores[-1])
        return scores

    def _damp_repeats(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        """Full strength only for a p clearly below every p of the previous quiet_rows rows."""
        q = self.quiet_rows
        if q <= 0:
            return p
        past = np.concatenate((np.full(q - self._recent_p.size, np.inf), self._recent_p, p))
        # prev_min[i] = min of the q p-values before row i of the block.
        windows = np.lib.stride_tricks.sliding_window_view(past[:-1], q)
        prev_min = windows.min(axis=1)
        fresh = p < self.repeat_factor * prev_min
        self._recent_p = past[-q:].copy()
        return np.where(fresh, p, np.minimum(1.0, p * self.damping))
