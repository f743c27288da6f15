"""One metric's rarity model: how rare is its latest reading, seen three ways?

- value: the reading itself against the metric's history (spikes, new floors and ceilings);
- level: the mean of the last ``level_rows`` readings against earlier such means (a sustained
  shift that single readings hide, e.g. a machine running hot for hours within its usual range);
- seasonal: the change from one season ago, x[t] - x[t - L], when the metric has a strong cycle
  of L rows (a quiet Monday that looks like a Sunday). L is re-estimated from the history at rows
  1024, 2048, 4096, ... (absolute row numbers, so any split of the input gives the same result).

Each view yields an empirical p-value: among the view's past values (up to ``history`` of them),
the share lying within ``bandwidth`` exponentially weighted standard deviations of the current one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from dspex_cluster.skills.anomaly_season import detect_period
from dspex_cluster.skills.anomaly_window import EwMoments, SortedWindow

FIRST_SEASON_CHECK = 1024
SEASON_HISTORY = 8192  # rows the period is estimated from
VIEW_NAMES = ("value", "level", "seasonal")


@dataclass(frozen=True)
class RarityConfig:
    bandwidth: float = 0.5
    halflife: float = 1000.0
    history: int = 20_000
    warmup: int = 30
    level_rows: int = 48
    season_min_lag: int = 24
    season_min_acf: float = 0.8


class RarityView:
    """Density p-values of several derived series (one per column), each against its own past."""

    def __init__(self, cfg: RarityConfig, series: int, start_row: int) -> None:
        self.cfg = cfg
        self.windows = [SortedWindow(cfg.history) for _ in range(series)]
        self.moments = EwMoments(cfg.halflife, series)
        self.start_row = start_row  # rows before start_row + warmup score p = 1

    def p_values(self, v: NDArray[np.float64], rows: NDArray[np.int64]) -> NDArray[np.float64]:
        """p-values of a (rows, series) block."""
        mean, std = self.moments.before(v)
        # A constant series has std 0: a tiny band relative to its level keeps counts meaningful.
        band = self.cfg.bandwidth * (std + 1e-9 * np.abs(mean) + 1e-12)
        lo, hi = v - band, v + band
        n_before = np.minimum(len(self.windows[0]) + np.arange(v.shape[0]), self.cfg.history)
        p = np.empty(v.shape)
        for j, win in enumerate(self.windows):
            (counts,) = win.count_within(v[:, j], [(lo[:, j], hi[:, j])])
            p[:, j] = (counts + 1.0) / (n_before + 1.0)
        p[rows < self.start_row + self.cfg.warmup] = 1.0
        return p


class FeatureBank:
    """The views of every metric; ``p_values`` returns (rows, features, 3), 1.0 = view inactive.

    The value and level views run all features together (one filter call per block); a seasonal
    view exists only for the features where a season was found, each with its own period.
    """

    def __init__(self, cfg: RarityConfig, features: int) -> None:
        self.cfg = cfg
        self.features = features
        self.value = RarityView(cfg, features, 0)
        self.level = RarityView(cfg, features, max(0, cfg.level_rows - cfg.warmup))
        self.seasonal: list[RarityView | None] = [None] * features
        self.periods = [0] * features

    @staticmethod
    def next_season_check(row: int) -> int:
        """The first season check at or after ``row``."""
        check = FIRST_SEASON_CHECK
        while check < row:
            check *= 2
        return check

    def check_season(self, row: int) -> None:
        """Re-estimate periods at a check row; a new period starts a fresh seasonal view."""
        for f in range(self.features):
            recent = self.value.windows[f].fifo[-SEASON_HISTORY:]
            period = detect_period(recent, self.cfg.season_min_lag, self.cfg.season_min_acf)
            if period != self.periods[f]:
                self.periods[f] = period
                self.seasonal[f] = RarityView(self.cfg, 1, row) if period else None

    def p_values(self, x: NDArray[np.float64], first_row: int) -> NDArray[np.float64]:
        """p-values of a (rows, features) block; the caller splits blocks at season checks."""
        b = x.shape[0]
        rows = first_row + np.arange(b, dtype=np.int64)
        out = np.ones((b, self.features, len(VIEW_NAMES)))
        # Readings before this block, oldest first (every value window has the same length).
        past = [win.fifo for win in self.value.windows]
        k = self.cfg.level_rows
        if k > 1:
            lead = np.stack([p[-(k - 1) :] for p in past], axis=1) if past[0].size else None
            have = 0 if lead is None else lead.shape[0]
            pad = np.full((k - 1 - have, self.features), np.nan)  # before row k-1: shorter means
            parts = [pad, x] if lead is None else [pad, lead, x]
            # Each mean sums the same k readings in the same order whatever the block split.
            windows = sliding_window_view(np.concatenate(parts), k, axis=0)
            level = np.nanmean(windows, axis=2)
        else:
            level = x
        for f, view in enumerate(self.seasonal):
            if view is not None:
                lag = self.periods[f]
                ago = np.concatenate((past[f][-lag:], x[:, f]))[:b]
                out[:, f, 2] = view.p_values((x[:, f] - ago)[:, None], rows)[:, 0]
        out[:, :, 0] = self.value.p_values(x, rows)
        out[:, :, 1] = self.level.p_values(level, rows)
        return out

    @property
    def active_views(self) -> int:
        return 2 * self.features + sum(v is not None for v in self.seasonal)
