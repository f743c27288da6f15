"""Building blocks of the anomaly detector that carry state across calls.

Both work on blocks of rows and give the same numbers whatever the block size, so that scoring a
whole series at once and feeding it one row at a time agree exactly (counts are integers; the
exponential averages run the same recursion in the same order).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

CHUNK = 256  # rows compared pairwise inside one step; the window must be longer than this


class SortedWindow:
    """The last ``capacity`` values of a series, kept sorted, for causal rank and density counts.

    ``count_within(lo, hi)`` answers, for each row t of a block, how many values among the
    ``capacity`` rows before t lie in [lo_t, hi_t]: the sorted history before the block answers with
    a binary search, and the rows that enter or leave the window inside the block are compared
    pairwise (a block is at most CHUNK rows).
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= CHUNK:
            raise ValueError(f"capacity must exceed {CHUNK}")
        self.capacity = capacity
        self.sorted = np.empty(0, dtype=np.float64)
        self.fifo = np.empty(0, dtype=np.float64)  # the same values in time order

    def __len__(self) -> int:
        return int(self.fifo.size)

    def count_within(
        self,
        values: NDArray[np.float64],
        bands: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
    ) -> list[NDArray[np.int64]]:
        """Counts for a block of new ``values`` (<= CHUNK rows), one array per (lo, hi) band pair;
        then the block joins the window."""
        b = values.size
        if b > CHUNK:
            raise ValueError("blocks are at most CHUNK rows")
        srt = self.sorted
        # Rows of the old window that fall out before row i of the block: the oldest (m + i - W).
        m = self.fifo.size
        evict = np.maximum(0, m + np.arange(b) - self.capacity)
        old = self.fifo[: evict[-1]]
        old_mask = np.arange(old.size)[None, :] < evict[:, None]
        out = []
        for lo, hi in bands:
            counts = np.searchsorted(srt, hi, "right") - np.searchsorted(srt, lo, "left")
            if old.size:
                inside = (old[None, :] >= lo[:, None]) & (old[None, :] <= hi[:, None])
                counts -= (inside & old_mask).sum(axis=1)
            if b > 1:  # earlier rows of the same block
                inside = (values[None, :] >= lo[:, None]) & (values[None, :] <= hi[:, None])
                counts += np.tril(inside, -1).sum(axis=1)
            out.append(counts.astype(np.int64))
        self._push(values)
        return out

    def _push(self, values: NDArray[np.float64]) -> None:
        fifo = np.concatenate((self.fifo, values))
        drop = max(0, fifo.size - self.capacity)
        srt = self.sorted
        if drop:
            gone = np.sort(fifo[:drop])
            # Equal values leaving together sit at consecutive positions of the sorted array.
            rank_in_run = np.arange(drop) - np.searchsorted(gone, gone, "left")
            srt = np.delete(srt, np.searchsorted(srt, gone, "left") + rank_in_run)
            fifo = fifo[drop:]
        new = np.sort(values)
        self.sorted = np.insert(srt, np.searchsorted(srt, new, "left"), new)
        self.fifo = fifo


class EwMoments:
    """Exponentially weighted mean and variance (bias-corrected) of several series at once.

    Causal with carried state: for each row of a (rows, series) block it returns the mean and
    standard deviation *before* that row, so a row is always judged against the past only.
    """

    def __init__(self, halflife: float, series: int) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self._a = np.array([1.0, -(1.0 - self.alpha)])
        self._b = np.array([self.alpha])
        self.mean_num = np.zeros(series)  # EW sums of values
        self.var_num = np.zeros(series)  # EW sums of squared innovations
        self.weight = 0.0  # EW sum of ones (bias correction), the same for every series
        self.last_mean: NDArray[np.float64] | None = None

    def _run(self, x: NDArray[np.float64], state: NDArray[np.float64]) -> NDArray[np.float64]:
        zi = ((1.0 - self.alpha) * state)[None, :]
        y, _ = lfilter(self._b, self._a, x, axis=0, zi=zi)
        return np.asarray(y)

    def before(self, x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(mean, std) of each series just before each row of the block x; then absorbs x."""
        wts = self._run(np.ones((x.shape[0], 1)), np.array([self.weight]))
        num = self._run(x, self.mean_num)
        mean_after = num / wts
        first = x[:1] if self.last_mean is None else self.last_mean[None, :]
        mean_before = np.concatenate((first, mean_after[:-1]))
        innov = (x - mean_before) ** 2
        if self.last_mean is None:
            innov[0] = 0.0  # the first row has nothing to deviate from
        vnum = self._run(innov, self.var_num)
        var_after = vnum / wts
        prev_var = self.var_num / self.weight if self.weight > 0 else np.zeros_like(self.var_num)
        var_before = np.concatenate((prev_var[None, :], var_after[:-1]))
        self.mean_num, self.var_num = num[-1].copy(), vnum[-1].copy()
        self.weight = float(wts[-1, 0])
        self.last_mean = mean_after[-1].copy()
        return mean_before, np.sqrt(var_before)
