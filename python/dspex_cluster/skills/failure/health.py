"""Health signals that precede a failure: resources running out, heartbeats turning irregular.

- Time to exhaustion: a robust (Theil-Sen: median of pairwise slopes) linear trend of a resource's
  utilisation over a recent window, extrapolated to its capacity. A memory leak at +2 %/hour with
  70 % used exhausts memory in 15 hours. No upward trend -> infinity.
- Heartbeat jitter growth: the spread (median absolute deviation) of recent heartbeat intervals
  against the spread in the earlier part of the window; a ratio well above 1 is a node struggling
  (GC pauses, swapping, a saturated link) before it stops answering.

Both turn into an extra probability of failure within the horizon, treated as a competing risk
independent of the history model: P = 1 - (1 - P_history) * prod(1 - P_signal). The mappings
below are heuristics (there is no labelled health data to fit them on), chosen to be monotone and
conservative:
- exhaustion: P = 1 - exp(-2 * horizon / tte) (tte = horizon -> 0.86; tte = 4 horizons -> 0.39);
- jitter: P = 1 - ratio ** -0.5 for ratio > 1 (ratio 4 -> 0.5), else 0.
"""

from __future__ import annotations

import math

import numpy as np


def theil_sen(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) by the median of pairwise slopes; intercept = median(v - slope * t)."""
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    i, j = np.triu_indices(t.size, k=1)
    dt = t[j] - t[i]
    ok = dt > 0
    if not ok.any():
        return 0.0, float(np.median(v)) if v.size else 0.0
    slope = float(np.median((v[j] - v[i])[ok] / dt[ok]))
    return slope, float(np.median(v - slope * t))


def time_to_exhaustion(
    t: np.ndarray, v: np.ndarray, capacity: float = 1.0, min_points: int = 5
) -> float:
    """Seconds from the last sample until the robust trend of `v` reaches `capacity`.

    Infinity when there are too few points or no upward trend; 0 when already at capacity.
    """
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if t.size < min_points:
        return math.inf
    if t.size > 64:  # the pairwise median is O(n^2): thin evenly, keep the newest point
        keep = np.unique(np.linspace(0, t.size - 1, 64).round().astype(int))
        t, v = t[keep], v[keep]
    slope, intercept = theil_sen(t - t[-1], v)  # intercept = level now
    level = max(intercept, float(np.median(v[-3:])))
    if level >= capacity:
        return 0.0
    if slope <= 0:
        return math.inf
    return (capacity - level) / slope


def jitter_ratio(intervals: np.ndarray, min_points: int = 8) -> float:
    """MAD of the newer half of the intervals over the MAD of the older half (1 = steady)."""
    x = np.asarray(intervals, dtype=np.float64)
    if x.size < min_points:
        return 1.0
    half = x.size // 2
    old, new = x[:half], x[half:]
    mad_old = float(np.median(np.abs(old - np.median(old))))
    mad_new = float(np.median(np.abs(new - np.median(new))))
    floor = 1e-3 * max(float(np.median(x)), 1e-9)  # perfectly regular beats: no 0/0
    return max(mad_new, floor) / max(mad_old, floor)


def exhaustion_probability(tte_s: float, horizon_s: float) -> float:
    if not math.isfinite(tte_s):
        return 0.0
    if tte_s <= 0:
        return 1.0
    return 1.0 - math.exp(-2.0 * horizon_s / tte_s)


def jitter_probability(ratio: float) -> float:
    return 0.0 if ratio <= 1.0 else 1.0 - ratio**-0.5
