"""Online anomaly detection for node metrics: how rare is the value just seen, given the history?

For each feature the detector asks one question per row: among the last ``history`` values, how
many lay within a small band around the current one (the band is ``bandwidth`` times the feature's
exponentially weighted standard deviation)? A value in a range the metric has rarely or never
visited — a spike above every earlier one, a level shift to a new plateau, a drop to an unseen
floor — gets a small empirical p-value ``p = (count + 1) / (seen + 1)``. This is a density estimate
of the value against all of its own history, so daily/weekly cycles and steady noise (values seen
many times) are normal by construction, and a new level stops being rare once it has been seen for
a while.

Rows combine their features by the smallest p-value (times 1 + ln(features), a mild correction
for looking at many correlated metrics), which also names the feature to blame. Alerts are not
repeated: a row is reported at full strength only if its p-value is clearly smaller (by
``repeat_factor``) than every p-value of the previous ``quiet_rows`` rows; otherwise it is damped.
This rule needs no threshold, so it is the same for every threshold an operator may pick. The score
is ``1 / (1 + p / p_scale)`` in [0, 1].

Everything is causal (row t sees rows <= t only), deterministic, and vectorised over blocks of rows;
``update(row)`` runs the same code on a block of one row, so it equals ``score_series``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dspex_cluster.skills.anomaly_window import CHUNK, EwMoments, SortedWindow

# The default alert threshold: the score NAB's standard profile favours for this detector on the
# realKnownCause + realAWSCloudwatch files (see bench/bench_anomaly.py for the cross-validated use).
DEFAULT_THRESHOLD = 0.43


class AnomalyDetector:
    """Causal multivariate anomaly scores in [0, 1], one per row; see the module docstring."""

    def __init__(
        self,
        n_features: int = 1,
        *,
        feature_names: Sequence[str] | None = None,
        bandwidth: float = 0.5,
        scales: Sequence[float] = (1.0,),
        halflife: float = 1000.0,
        history: int = 20_000,
        warmup: int = 30,
        p_scale: float = 1e-3,
        quiet_rows: int = 200,
        repeat_factor: float = 0.5,
        damping: float = 10.0,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if n_features < 1:
            raise ValueError("n_features must be >= 1")
        names = list(feature_names) if feature_names is not None else None
        if names is not None and len(names) != n_features:
            raise ValueError("feature_names must have n_features entries")
        self.n_features = n_features
        self.feature_names = names or [f"f{i}" for i in range(n_features)]
        self.bandwidth = bandwidth
        self.scales = tuple(float(k) for k in scales)
        self.warmup = warmup
        self.p_scale = p_scale
        self.quiet_rows = quiet_rows
        self.repeat_factor = repeat_factor
        self.damping = damping
        self.threshold = threshold
        # Node metrics move together (CPU, load, latency), so n features are far fewer than n
        # independent tests: a logarithmic correction instead of Bonferroni's factor n.
        self._multiplicity = 1.0 + float(np.log(n_features))
        self._moments = [EwMoments(halflife) for _ in range(n_features)]
        self._windows = [SortedWindow(history) for _ in range(n_features)]
        self._last = np.zeros(n_features)  # last finite value per feature (fills NaN)
        self._seen = 0  # rows processed so far
        self._recent_p = np.ones(0)  # combined p-values of the last quiet_rows rows
        self._last_feature_p = np.ones(n_features)
        self._last_score = 0.0

    # --- public API -------------------------------------------------------------------------

    def fit(self, history: ArrayLike) -> AnomalyDetector:
        """Warm up on normal history (rows x features); the scores of those rows are dropped."""
        self.score_series(history)
        return self

    def score_series(self, X: ArrayLike) -> NDArray[np.float64]:
        """One score in [0, 1] per row of X (rows in time order); the state moves past X."""
        data = self._as_matrix(X)
        out = np.empty(data.shape[0])
        for start in range(0, data.shape[0], CHUNK):
            out[start : start + CHUNK] = self._score_block(data[start : start + CHUNK])
        return out

    def update(self, row: ArrayLike) -> float:
        """Score one new row (n_features values); same result as score_series row by row."""
        r = np.asarray(row, dtype=np.float64).reshape(1, -1)
        return float(self._score_block(self._as_matrix(r))[0])

    def explain(self, row: ArrayLike | None = None) -> dict[str, float]:
        """Each feature's share of the evidence, largest first.

        Without ``row``: the last scored row. With ``row``: that row scored as the next one, on a
        copy of the detector, leaving this one unchanged. A share is the feature's surprise beyond
        the ordinary, max(0, -log10(p) - 1) (p-values above 0.1 add nothing), over the row's total.
        """
        if row is None:
            feature_p = self._last_feature_p
        else:
            probe = copy.deepcopy(self)
            probe.update(row)
            feature_p = probe._last_feature_p
        surprise = np.maximum(0.0, -np.log10(np.clip(feature_p, 1e-300, 1.0)) - 1.0)
        total = float(surprise.sum())
        shares = surprise / total if total > 0 else np.zeros_like(surprise)
        order = np.argsort(-shares, kind="stable")
        return {self.feature_names[i]: float(shares[i]) for i in order}

    def feature_p_values(self) -> dict[str, float]:
        """Per-feature p-values of the last scored row (how rare each value was)."""
        return dict(zip(self.feature_names, map(float, self._last_feature_p), strict=True))

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

    def _feature_p(self, f: int, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Empirical p-value of each value of feature f against that feature's history."""
        mean, std = self._moments[f].before(x)
        # A constant metric has std 0: a tiny band relative to its level keeps counts meaningful.
        band = self.bandwidth * (std + 1e-9 * np.abs(mean) + 1e-12)
        win = self._windows[f]
        n_before = np.minimum(len(win) + np.arange(x.size), win.capacity)
        counts = win.count_within(x, [(x - k * band, x + k * band) for k in self.scales])
        # Density at several band widths; the rarest reading wins (a value far beyond all history
        # is rarer than one just past its edge).
        p = np.ones(x.size)
        for k, c in zip(self.scales, counts, strict=True):
            p = np.minimum(p, (c + 1.0) / ((n_before + 1.0) * k))
        return p

    def _score_block(self, block: NDArray[np.float64]) -> NDArray[np.float64]:
        b = block.shape[0]
        feature_p = np.empty((b, self.n_features))
        for f in range(self.n_features):
            feature_p[:, f] = self._feature_p(f, block[:, f])
        row_index = self._seen + np.arange(b)
        feature_p[row_index < self.warmup] = 1.0
        p = np.minimum(1.0, feature_p.min(axis=1) * self._multiplicity)
        p_eff = self._damp_repeats(p)
        scores = 1.0 / (1.0 + p_eff / self.p_scale)
        scores[row_index < self.warmup] = 0.0
        self._seen += b
        self._last = block[-1].copy()
        self._last_feature_p = feature_p[-1].copy()
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
