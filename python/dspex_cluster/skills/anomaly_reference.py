"""What normal looks like, learned from a block of many metrics, and how far a row is from it.

A training block (rows x metrics, e.g. a month of a server's metrics) is taken as normal. Each row
is then seen five ways (``VIEWS``), each a vector with one entry per metric:

- ``value``: the readings themselves;
- ``change``: x[t] - x[t-1] (a sudden jump, a metric that stops moving);
- ``seasonal``: x[t] - x[t-L] for the training block's daily/weekly period L, when it has one;
- ``level``: the mean of the last ``level_rows`` readings (a sustained shift that noise hides);
- ``volatility``: the mean |change| over the last ``level_rows`` rows (a metric gone erratic).

For every view, two statistics against the same view of the training rows:

- rarity per metric: the two-sided empirical tail of each metric's entry among its training values,
  -log(2 (count beyond + 1) / (n + 1)), plus (distance beyond the training range) / (training std)
  — so a metric doing something it never did in training is strong evidence whichever metric it is;
  the row statistic is the largest over metrics;
- joint: the Mahalanobis distance of the (standardised) vector under the training correlation,
  shrunk towards the identity (``shrinkage``) — metrics that normally move together but now do not.

Each statistic is turned into evidence e = -log p, p its empirical tail among the training rows' own
values of that statistic (beyond the largest, extrapolated exponentially in training std units), so
the ten statistics are on one scale. A row's raw score is sum(min(e, cap) ** power): between the sum
(every view votes) and the max (the loudest view decides).

Everything is causal: a row's views use rows <= t only (the training block's tail gives context to
the first rows scored). Scoring uses sorted arrays and one matrix product per view: no state but
the last rows, so a whole series and one row at a time give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dspex_cluster.skills.anomaly_season import detect_period

VIEWS = ("value", "change", "seasonal", "level", "volatility")
MIN_TRAIN_ROWS = 64
CALIBRATED_MIN_ROWS = 4 * MIN_TRAIN_ROWS  # calibration fits on 3/4 of the rows
SCALE_FLOOR = 1e-3  # std floor (metric units): a metric constant in training moving 0.001 is 1 std


@dataclass(frozen=True)
class ReferenceConfig:
    """Settings of a ReferenceModel (defaults chosen on ASD machines omi-1..omi-8)."""

    level_rows: int = 12
    season: int | None = None  # rows; None = found in the training block (0 = no seasonal view)
    season_min_lag: int = 24
    shrinkage: float = 0.01
    power: float = 2.0
    cap: float = 30.0
    false_alarm_rate: float = 0.02  # share of unseen normal rows expected above the threshold
    calibration_folds: int = 4


class _Statistic:
    """The empirical tail of one scalar statistic among its training values, as evidence -log p."""

    def __init__(self, train_values: NDArray[np.float64]) -> None:
        self.sorted = np.sort(train_values)
        self.n = self.sorted.size
        self.top = float(self.sorted[-1])
        self.scale = max(float(np.std(train_values)), 1e-12)

    def evidence(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        beyond = self.n - np.searchsorted(self.sorted, values, "left")
        e = -np.log((beyond + 1.0) / (self.n + 1.0))
        return e + np.maximum(values - self.top, 0.0) / self.scale


class _View:
    """One view's training reference: per-metric sorted values and a shrunk correlation."""

    def __init__(self, train: NDArray[np.float64], shrinkage: float) -> None:
        n, m = train.shape
        self.n, self.m = n, m
        self.lo = train.min(axis=0)
        self.hi = train.max(axis=0)
        self.scale = np.maximum(train.std(axis=0), SCALE_FLOOR)
        self.span = np.maximum(self.hi - self.lo, 1e-300)
        # All metrics' sorted values in one array, metric j mapped into [2j, 2j + 1]: one
        # searchsorted call ranks every metric of a block at once.
        self.offsets = 2.0 * np.arange(m)
        self.flat = np.sort(self._shift(train), axis=0).T.ravel()
        # run_end[i]: one past the last value equal to flat[i] (ties: counts "at or below").
        self.run_end = np.append(np.searchsorted(self.flat, self.flat, "right"), self.flat.size)
        self.base = np.arange(m) * n
        self.mean = train.mean(axis=0)
        # Covariance of the standardised views (a metric below the std floor has variance < 1).
        z = (train - self.mean) / self.scale
        cov = np.atleast_2d(z.T @ z / n)
        self.precision = np.linalg.inv((1.0 - shrinkage) * cov + shrinkage * np.eye(m))
        self.tail_stat = _Statistic(self.tail(train).max(axis=1))
        self.joint_stat = _Statistic(self.joint(train)[0])

    def _shift(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return (np.clip(x, self.lo, self.hi) - self.lo) / self.span + self.offsets

    def tail(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per-metric rarity against training, (rows, metrics), >= 0."""
        q = self._shift(x).ravel()
        # Sorted needles make searchsorted walk the array once (several times faster here).
        if q.size > 256:
            # Sorted needles make searchsorted walk the array once (several times faster here).
            order = np.argsort(q)
            below = np.empty(q.size, dtype=np.int64)
            below[order] = np.searchsorted(self.flat, q[order], "left")
        else:
            below = np.searchsorted(self.flat, q, "left")
        at = np.minimum(below, self.flat.size - 1)
        below_or_at = np.where(self.flat[at] == q, self.run_end[at], below)
        below_or_at = below_or_at.reshape(x.shape) - self.base
        below = below.reshape(x.shape) - self.base
        count = np.minimum(self.n - below, below_or_at)
        e = np.maximum(0.0, -np.log(2.0 * (count + 1.0) / (self.n + 1.0)))
        outside = np.maximum(x - self.hi, 0.0) + np.maximum(self.lo - x, 0.0)
        return e + outside / self.scale

    def joint(self, x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mahalanobis distance per row, and each metric's term z_i (P z)_i of it."""
        z = (x - self.mean) / self.scale
        terms = z * (z @ self.precision)
        return terms.sum(axis=1), terms


class ReferenceModel:
    """Scores rows against a training block taken as normal; see the module docstring."""

    def __init__(self, config: ReferenceConfig | None = None) -> None:
        self.config = config or ReferenceConfig()
        self.period = 0
        self.views: dict[str, _View] = {}
        self.context = np.empty((0, 0))  # the last rows seen, for the views of the next rows
        self.last_blame = np.zeros(0)

    @property
    def context_rows(self) -> int:
        return max(self.period, self.config.level_rows) + 1

    def fit(self, train: NDArray[np.float64]) -> ReferenceModel:
        """Learn the reference from ``train`` (rows x metrics, time order, finite)."""
        x = np.asarray(train, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < MIN_TRAIN_ROWS:
            raise ValueError(f"a reference needs a 2-D block of >= {MIN_TRAIN_ROWS} rows")
        if not np.isfinite(x).all():
            raise ValueError("training rows must be finite")
        cfg = self.config
        self.period = cfg.season if cfg.season is not None else self._find_period(x)
        if (self.period + cfg.level_rows) * 3 > x.shape[0]:
            self.period = 0  # too little training to learn what a season-ago change looks like
        # Only rows with their full context (a season ago, a level window) define normal.
        views = self._views(x, x.shape[0] - self.context_rows)
        self.views = {name: _View(v, cfg.shrinkage) for name, v in views.items()}
        self.context = x[-self.context_rows :].copy()
        return self

    def _find_period(self, x: NDArray[np.float64]) -> int:
        """The most common seasonal period among the metrics (0 if fewer than a third have one)."""
        recent = x[-8192:]
        periods = [
            detect_period(recent[:, j], self.config.season_min_lag) for j in range(x.shape[1])
        ]
        found = [p for p in periods if p]
        if len(found) * 3 < x.shape[1]:
            return 0
        values, counts = np.unique(np.round(np.array(found) / 4) * 4, return_counts=True)
        common = values[np.argmax(counts)]
        return int(np.median([p for p in found if abs(p - common) <= 4]))

    def _views(self, full: NDArray[np.float64], rows: int) -> dict[str, NDArray[np.float64]]:
        """The views of the last ``rows`` rows of ``full`` (earlier rows are context only).

        Where the context is too short (the training block's own first rows) the missing past
        is the first row repeated: its change is zero, its level is that row.
        """
        w, lag = self.config.level_rows, self.period
        need = max(lag, w) + 1
        if full.shape[0] < rows + need:
            pad = np.repeat(full[:1], rows + need - full.shape[0], axis=0)
            full = np.concatenate((pad, full))
        change = np.diff(full, axis=0)
        out = {"value": full[-rows:], "change": change[-rows:]}
        if lag:
            out["seasonal"] = full[-rows:] - full[-rows - lag : full.shape[0] - lag]
        if w > 1:
            c = np.cumsum(full[-rows - w :], axis=0)
            out["level"] = (c[-rows:] - c[:rows]) / w
            a = np.cumsum(np.abs(change[-rows - w :]), axis=0)
            out["volatility"] = (a[-rows:] - a[:rows]) / w
        return out

    def evidence(self, block: NDArray[np.float64]) -> NDArray[np.float64]:
        """The raw score of each row of a block following the context; then the block is context.

        ``last_blame`` holds each metric's share of the last row's score (for explanations).
        """
        if not self.views:
            raise RuntimeError("fit() the reference first")
        b = block.shape[0]
        full = np.concatenate((self.context, block))
        cfg = self.config
        score = np.zeros(b)
        blame = np.zeros(block.shape[1])
        for name, v in self._views(full, b).items():
            ref = self.views[name]
            tails = ref.tail(v)
            e_tail = np.minimum(ref.tail_stat.evidence(tails.max(axis=1)), cfg.cap) ** cfg.power
            dist, terms = ref.joint(v)
            e_joint = np.minimum(ref.joint_stat.evidence(dist), cfg.cap) ** cfg.power
            score += e_tail + e_joint
            # The last row's evidence of each statistic, split over the metrics by their parts.
            for e, parts in ((e_tail[-1], tails[-1]), (e_joint[-1], np.maximum(terms[-1], 0.0))):
                total = float(parts.sum())
                if total > 0:
                    blame += e * parts / total
        self.context = full[-self.context_rows :]
        self.last_blame = blame
        return score


def calibrate(train: NDArray[np.float64], config: ReferenceConfig) -> float:
    """The raw score that unseen normal rows exceed with probability ``false_alarm_rate``.

    Cross-fitted on the training block itself: it is cut into ``calibration_folds`` contiguous
    parts, each scored by a reference fitted on the others (with its own preceding rows as context
    when it has them), and the threshold is the (1 - false_alarm_rate) quantile of those
    out-of-sample scores. In-sample scores would be too low: every training row is part of its own
    reference. Where the remaining parts join, the views of the joined rows see a seam; a few rows.
    """
    n = train.shape[0]
    edges = np.linspace(0, n, config.calibration_folds + 1).astype(int)
    scores = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        rest = np.concatenate((train[:a], train[b:]))
        if rest.shape[0] < MIN_TRAIN_ROWS or b <= a:
            continue
        model = ReferenceModel(config).fit(rest)
        if a >= model.context_rows:
            model.context = train[a - model.context_rows : a]
        scores.append(model.evidence(train[a:b]))
    if not scores:
        raise ValueError("too few training rows to calibrate a threshold")
    return float(np.quantile(np.concatenate(scores), 1.0 - config.false_alarm_rate))
