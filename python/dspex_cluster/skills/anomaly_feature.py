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
    """Density p-value of one derived series against its own past."""

    def __init__(self, cfg: RarityConfig, start_row: int) -> None:
        self.cfg = cfg
        self.window = SortedWindow(cfg.history)
        self.moments = EwMoments(cfg.halflife)
        self.start_row = start_row  # rows before start_row + warmup score p = 1

    def p_values(self, v: NDArray[np.float64], rows: NDArray[np.int64]) -> NDArray[np.float64]:
        mean, std = self.moments.before(v)
        # A constant series has std 0: a tiny band relative to its level keeps counts meaningful.
        band = self.cfg.bandwidth * (std + 1e-9 * np.abs(mean) + 1e-12)
        n_before = np.minimum(len(self.window) + np.arange(v.size), self.window.capacity)
        (counts,) = self.window.count_within(v, [(v - band, v + band)])
        p = (counts + 1.0) / (n_before + 1.0)
        p[rows < self.start_row + self.cfg.warmup] = 1.0
        return p


class FeatureModel:
    """The three views of one metric; ``p_values`` returns a (rows, 3) array, 1.0 = not active."""

    def __init__(self, cfg: RarityConfig) -> None:
        self.cfg = cfg
        self.value = RarityView(cfg, 0)
        self.level = RarityView(cfg, max(0, cfg.level_rows - cfg.warmup))
        self.seasonal: RarityView | None = None
        self.period = 0

    def next_season_check(self, row: int) -> int:
        """The first season check at or after ``row``."""
        check = FIRST_SEASON_CHECK
        while check < row:
            check *= 2
        return check

    def check_season(self, row: int) -> None:
        """Re-estimate the period at a check row; a new period starts a fresh seasonal view."""
        recent = self.value.window.fifo[-SEASON_HISTORY:]
        period = detect_period(recent, self.cfg.season_min_lag, self.cfg.season_min_acf)
        if period != self.period:
            self.period = period
            self.seasonal = RarityView(self.cfg, row) if period else None

    def p_values(self, x: NDArray[np.float64], first_row: int) -> NDArray[np.float64]:
        """p-values of a block of readings; the caller splits blocks at season checks."""
        b = x.size
        rows = first_row + np.arange(b, dtype=np.int64)
        past = self.value.window.fifo  # readings before this block, oldest first
        out = np.ones((b, len(VIEW_NAMES)))
        k = self.cfg.level_rows
        if k > 1:
            # Each mean sums the same k readings in the same order whatever the block split.
            lead = past[-(k - 1) :]
            pad = np.full(k - 1 - lead.size, np.nan)  # rows before the first: a shorter mean
            level = np.nanmean(sliding_window_view(np.concatenate((pad, lead, x)), k), axis=1)
        else:
            level = x
        if self.seasonal is not None:
            L = self.period
            ago = np.concatenate((past[-L:], x))[:b]
            out[:, 2] = self.seasonal.p_values(x - ago, rows)
        out[:, 0] = self.value.p_values(x, rows)
        out[:, 1] = self.level.p_values(level, rows)
        return out

    @property
    def active_views(self) -> int:
        return 2 + (self.seasonal is not None)
