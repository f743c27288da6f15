"""Phi-accrual failure detector (Hayashibara et al., 2004), the reference the BEAM side matches.

Instead of a yes/no timeout, the detector outputs a suspicion level phi that grows continuously
with the silence since the last heartbeat, scaled by how regular the heartbeats have been.

The exact computation (seconds throughout; the Elixir `FailureDetector` reproduces it):

1. History: the last `max_sample_size` inter-arrival intervals. The first heartbeat seeds it with
   two intervals, `e - e/4` and `e + e/4`, where `e = first_heartbeat_estimate_s` (so mean `e`,
   standard deviation `e/4`), and records no interval itself. Each later heartbeat at `ts` appends
   `ts - last_ts`, *unless* the node was already suspected at `ts` (`phi(ts) >= threshold`): the
   first heartbeat after a pause is not learnt, so one long outage does not stretch the model
   (Akka does the same). `last_ts` is updated in every case.
2. Statistics over the history: `mean = sum(x)/n`, population variance `var = sum(x*x)/n - mean**2`,
   `std = max(sqrt(max(var, 0)), min_std_dev_s)`, then `mean += acceptable_pause_s`.
3. With `elapsed = now - last_ts` and `y = (elapsed - mean) / std`, phi = -log10(P(X > elapsed)) for
   X ~ Normal(mean, std), where the normal CDF is the logistic approximation
   `F(y) = 1 / (1 + exp(-z))`, `z = y * (1.5976 + 0.070566 * y**2)` (max abs error about 1.4e-4).
   So `1 - F(y) = 1 / (1 + exp(z))` and

       phi = log10(1 + exp(z))

   computed without overflow as `z / ln 10 + log10(1 + exp(-z))` when `z > 0`, else
   `log10(1 + exp(z))`. This is algebraically identical to Akka's two-branch form
   `-log10(e / (1 + e))` with `e = exp(-z)`, but never overflows or reaches infinity, which
   matters on the BEAM where floats have no infinity. Before any heartbeat, phi = 0.
4. `is_available(now)` is `phi(now) < threshold`.

`cdf="normal"` swaps step 3 for the exact normal tail, the form the Elixir
`DSPEx.Clustering.PhiAccrualDetector` uses: with `x = (elapsed - mean) / (std * sqrt 2)`,
`phi = -log10(erfc(x) / 2)` for `x < 25`, and beyond, where erfc underflows, the asymptotic
`ln erfc(x) = -x**2 - ln(x * sqrt(pi)) + ln(1 - 1 / (2 x**2))`, `phi = (ln 2 - ln erfc(x)) / ln 10`.
The logistic form stays the default (Akka's). The two agree closely in the body (phi at
y = 1, 2, 3, 4, 5: logistic 0.7995, 1.6428, 2.9095, 4.7367, 7.2999; normal 0.7995, 1.6430,
2.8697, 4.4993, 6.5426) but not near the threshold: phi = 8 is reached at y = 5.226 (logistic)
against y = 5.612 (normal), so both sides must use the same `cdf` to suspect at the same moment.

Reference values (history intervals, elapsed since the last heartbeat -> phi), with
min_std_dev_s=0.1 and acceptable_pause_s=0; tests/skills/test_failure_phi.py checks them to a
relative 1e-9:

    [1.0, 1.0, 1.0, 1.0] (std 0 -> floored to 0.1)   elapsed 1.0  -> 0.30102999566398114
    same                                             elapsed 1.2  -> 1.6428278854871115
    same                                             elapsed 1.5  -> 7.299947394460206
    [0.9, 1.1] (mean 1.0, std 0.1)                   elapsed 0.5  -> 2.1768922224240094e-08
    [0.5, 1.5] (mean 1.0, std 0.5)                   elapsed 2.0  -> 1.6428278854871121
    [0.2] * 10 (std floored to 0.1)                  elapsed 0.6  -> 4.736694582705181
    same                                             elapsed 0.8  -> 10.78260085829571
    same                                             elapsed 10.0 -> 28912.16471198277
      (Akka's literal form gives log10(0) here; the stable form stays finite)

With `cdf="normal"` (same histories): elapsed 1.2 over [1.0] * 4 -> 1.6430160801409361,
elapsed 1.5 -> 6.542645672390652, and [0.2] * 10 at elapsed 10.0 (x = 69.3, the asymptotic
branch) -> 2087.8724633318075.

End to end: first_heartbeat_estimate_s=1.0 and heartbeats at t = 0, 1, 2, 3 give the history
[0.75, 1.25, 1.0, 1.0, 1.0] (mean 1.0, std 0.15811388300841870), and then
phi(3.5) = 0.00029814716143045095, phi(4.0) = 0.30102999566398114, phi(4.5) = 3.163502697438729,
phi(5.0) = 12.141159297098985.
"""

from __future__ import annotations

import math
from collections import deque

_LN10 = math.log(10.0)


def phi_from_stats(elapsed_s: float, mean_s: float, std_s: float, cdf: str = "logistic") -> float:
    """phi for a silence of `elapsed_s` given the interval mean and (already floored) std."""
    if cdf == "normal":
        return _phi_normal(elapsed_s, mean_s, std_s)
    if cdf != "logistic":
        raise ValueError(f"cdf must be 'logistic' or 'normal', not {cdf!r}")
    y = (elapsed_s - mean_s) / std_s
    z = y * (1.5976 + 0.070566 * y * y)
    if z > 0.0:
        return z / _LN10 + math.log1p(math.exp(-z)) / _LN10
    return math.log1p(math.exp(z)) / _LN10


def _phi_normal(elapsed_s: float, mean_s: float, std_s: float) -> float:
    x = (elapsed_s - mean_s) / (std_s * math.sqrt(2.0))
    if x < 25.0:
        return -math.log10(0.5 * math.erfc(x))
    ln_erfc = -x * x - math.log(x * math.sqrt(math.pi)) + math.log(1.0 - 1.0 / (2.0 * x * x))
    return (math.log(2.0) - ln_erfc) / _LN10


class PhiAccrualDetector:
    """Heartbeat arrivals -> phi; see the module docstring for the exact formula.

    Defaults aim at suspecting a frozen node within about a second when heartbeats come every
    0.1-0.2 s: threshold 8 (as Akka Cluster), std floor 0.1 s, no extra acceptable pause.
    """

    def __init__(
        self,
        threshold: float = 8.0,
        max_sample_size: int = 200,
        min_std_dev_s: float = 0.1,
        acceptable_pause_s: float = 0.0,
        first_heartbeat_estimate_s: float = 0.5,
        cdf: str = "logistic",
    ) -> None:
        if threshold <= 0 or max_sample_size < 2 or min_std_dev_s <= 0:
            raise ValueError("threshold, min_std_dev_s must be > 0 and max_sample_size >= 2")
        if acceptable_pause_s < 0 or first_heartbeat_estimate_s <= 0:
            raise ValueError("acceptable_pause_s must be >= 0, first_heartbeat_estimate_s > 0")
        self.threshold = float(threshold)
        self.max_sample_size = int(max_sample_size)
        self.min_std_dev_s = float(min_std_dev_s)
        self.acceptable_pause_s = float(acceptable_pause_s)
        self.first_heartbeat_estimate_s = float(first_heartbeat_estimate_s)
        if cdf not in ("logistic", "normal"):
            raise ValueError(f"cdf must be 'logistic' or 'normal', not {cdf!r}")
        self.cdf = cdf
        self._intervals: deque[float] = deque(maxlen=self.max_sample_size)
        self._stats: tuple[float, float] | None = None  # cached; sums recomputed, so no drift
        self._last_ts: float | None = None

    def _append(self, interval: float) -> None:
        self._intervals.append(interval)
        self._stats = None

    def heartbeat(self, ts: float) -> None:
        """Record a heartbeat that arrived at `ts` (seconds, monotonic clock)."""
        if self._last_ts is None:
            e = self.first_heartbeat_estimate_s
            self._append(e - e / 4.0)
            self._append(e + e / 4.0)
        elif self.is_available(ts):
            self._append(ts - self._last_ts)
        self._last_ts = ts

    def stats(self) -> tuple[float, float]:
        """(mean including acceptable pause, floored std) of the interval history, in seconds."""
        if self._stats is None:
            n = len(self._intervals)
            if n == 0:
                raise ValueError("no heartbeat yet")
            mean = math.fsum(self._intervals) / n
            var = math.fsum(x * x for x in self._intervals) / n - mean * mean
            std = max(math.sqrt(max(var, 0.0)), self.min_std_dev_s)
            self._stats = (mean + self.acceptable_pause_s, std)
        return self._stats

    def phi(self, now_ts: float) -> float:
        """Suspicion level at `now_ts`: 0 before any heartbeat, growing with the silence."""
        if self._last_ts is None:
            return 0.0
        mean, std = self.stats()
        return phi_from_stats(max(now_ts - self._last_ts, 0.0), mean, std, self.cdf)

    def is_available(self, now_ts: float) -> bool:
        """True while phi is below the threshold."""
        return self.phi(now_ts) < self.threshold

    @property
    def last_heartbeat(self) -> float | None:
        return self._last_ts

    @property
    def intervals(self) -> list[float]:
        """The interval history (oldest first), seeded intervals included."""
        return list(self._intervals)
