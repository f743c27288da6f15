"""Finding a metric's season (daily, weekly cycle) from its own history, by autocorrelation."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def autocorrelation(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unbiased autocorrelation of x at lags 0..len(x)-1 (via FFT, O(n log n))."""
    h = np.asarray(x, dtype=np.float64) - float(np.mean(x))
    n = h.size
    spec = np.fft.rfft(h, 2 * n)
    acf = np.fft.irfft(spec * np.conj(spec), 2 * n)[:n]
    if acf[0] <= 0:
        return np.zeros(n)
    return (acf / acf[0]) * n / (n - np.arange(n))


def detect_period(
    x: NDArray[np.float64],
    min_lag: int = 24,
    min_acf: float = 0.8,
    dip: float = 0.2,
    tie: float = 0.05,
) -> int:
    """The lag of a strong seasonal cycle in x, or 0 when there is none.

    A candidate is a local peak of the autocorrelation of at least ``min_acf`` that the curve dipped
    ``dip`` below on the way (so a slow trend, whose autocorrelation only decays, has none). The
    shortest candidate is the cycle's fundamental; when it is shorter than ``min_lag`` rows the
    metric merely oscillates fast (a sawtooth, a polling artefact) and is not seasonal. Otherwise
    the shortest candidate within ``tie`` of the best correlation wins: a weekly lag beats a daily
    one when weekdays differ, while the multiples of a clean daily cycle do not beat the day itself.
    """
    n = int(np.asarray(x).size)
    if n < 4 * min_lag or float(np.var(x)) == 0.0:
        return 0
    acf = autocorrelation(x)
    lags = np.arange(2, n // 3)
    if lags.size == 0:
        return 0
    is_peak = (acf[lags] >= acf[lags - 1]) & (acf[lags] >= acf[lags + 1]) & (acf[lags] >= min_acf)
    running_min = np.minimum.accumulate(acf[1:])  # running_min[L - 1] = min(acf[1..L])
    is_peak &= running_min[lags - 1] < acf[lags] - dip
    peaks = lags[is_peak]
    if peaks.size == 0 or peaks[0] < min_lag:
        return 0
    best = float(acf[peaks].max())
    return int(peaks[np.flatnonzero(acf[peaks] >= best - tie)[0]])
