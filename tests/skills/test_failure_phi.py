"""Phi-accrual detector: the documented reference values the BEAM side must reproduce."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from dspex_cluster.skills.failure import PhiAccrualDetector, phi_from_stats


def _stats(intervals: list[float], min_std: float = 0.1) -> tuple[float, float]:
    n = len(intervals)
    mean = sum(intervals) / n
    var = sum(x * x for x in intervals) / n - mean * mean
    return mean, max(math.sqrt(max(var, 0.0)), min_std)


# (intervals, elapsed, phi) exactly as in the failure_phi module docstring
REFERENCE = [
    ([1.0] * 4, 1.0, 0.30102999566398114),
    ([1.0] * 4, 1.2, 1.6428278854871115),
    ([1.0] * 4, 1.5, 7.299947394460206),
    ([0.9, 1.1], 0.5, 2.1768922224240094e-08),
    ([0.5, 1.5], 2.0, 1.6428278854871121),
    ([0.2] * 10, 0.6, 4.736694582705181),
    ([0.2] * 10, 0.8, 10.78260085829571),
    ([0.2] * 10, 10.0, 28912.16471198277),
]


@pytest.mark.parametrize(("intervals", "elapsed", "expected"), REFERENCE)
def test_reference_values(intervals: list[float], elapsed: float, expected: float) -> None:
    mean, std = _stats(intervals)
    assert phi_from_stats(elapsed, mean, std) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(("intervals", "elapsed", "_"), REFERENCE[:-1])
def test_matches_akka_two_branch_form(intervals: list[float], elapsed: float, _: float) -> None:
    """The stable form equals the literal -log10(e/(1+e)) wherever the latter is finite."""
    mean, std = _stats(intervals)
    y = (elapsed - mean) / std
    e = math.exp(-y * (1.5976 + 0.070566 * y * y))
    literal = -math.log10(e / (1 + e)) if elapsed > mean else -math.log10(1 - 1 / (1 + e))
    assert phi_from_stats(elapsed, mean, std) == pytest.approx(literal, rel=1e-8, abs=1e-12)


def test_close_to_exact_normal_tail() -> None:
    """The logistic CDF approximation stays near the exact normal tail in the useful range."""
    for y in [-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0]:
        exact = -math.log10(norm.sf(y))
        assert phi_from_stats(1.0 + 0.1 * y, 1.0, 0.1) == pytest.approx(exact, abs=0.05)


@pytest.mark.parametrize(
    ("intervals", "elapsed", "expected"),
    [
        ([1.0] * 4, 1.2, 1.6430160801409361),
        ([1.0] * 4, 1.5, 6.542645672390652),
        ([0.2] * 10, 10.0, 2087.8724633318075),  # asymptotic branch
    ],
)
def test_normal_cdf_reference_values(
    intervals: list[float], elapsed: float, expected: float
) -> None:
    mean, std = _stats(intervals)
    got = phi_from_stats(elapsed, mean, std, cdf="normal")
    assert got == pytest.approx(expected, rel=1e-9)
    assert got == pytest.approx(-norm.logsf((elapsed - mean) / std) / math.log(10), rel=1e-8)


def test_normal_cdf_detector_is_continuous_at_the_branch() -> None:
    x_switch = 25.0 * 0.1 * math.sqrt(2)  # elapsed - mean where x = 25
    below = phi_from_stats(1.0 + x_switch - 1e-9, 1.0, 0.1, cdf="normal")
    above = phi_from_stats(1.0 + x_switch + 1e-9, 1.0, 0.1, cdf="normal")
    assert above == pytest.approx(below, rel=1e-6)
    det = PhiAccrualDetector(cdf="normal", first_heartbeat_estimate_s=1.0)
    for t in [0.0, 1.0, 2.0, 3.0]:
        det.heartbeat(t)
    mean, std = det.stats()
    assert det.phi(4.5) == phi_from_stats(1.5, mean, std, cdf="normal")


def test_end_to_end_reference() -> None:
    det = PhiAccrualDetector(first_heartbeat_estimate_s=1.0)
    assert det.phi(0.0) == 0.0
    for t in [0.0, 1.0, 2.0, 3.0]:
        det.heartbeat(t)
    assert det.intervals == [0.75, 1.25, 1.0, 1.0, 1.0]
    mean, std = det.stats()
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.15811388300841870, rel=1e-12)
    expected = {
        3.5: 0.00029814716143045095,
        4.0: 0.30102999566398114,
        4.5: 3.163502697438729,
        5.0: 12.141159297098985,
    }
    for now, phi in expected.items():
        assert det.phi(now) == pytest.approx(phi, rel=1e-9)
    assert det.is_available(4.5) and not det.is_available(5.0)


def test_phi_grows_monotonically_with_silence() -> None:
    det = PhiAccrualDetector(min_std_dev_s=0.05)
    t = 0.0
    for k in range(50):
        det.heartbeat(t)
        t += 0.2 + 0.01 * (k % 3)
    last = det.last_heartbeat
    assert last is not None
    values = [det.phi(last + 0.01 * i) for i in range(1, 2000)]
    assert all(math.isfinite(v) for v in values)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert values[-1] > 1000.0  # 20 s of silence after 0.2 s heartbeats: certainly suspected


def test_suspects_frozen_node_within_about_a_second() -> None:
    det = PhiAccrualDetector()
    for k in range(100):
        det.heartbeat(0.2 * k)
    last = 0.2 * 99
    assert det.is_available(last + 0.25)
    assert not det.is_available(last + 1.0)


def test_pause_heartbeat_not_learnt_and_window_bounded() -> None:
    det = PhiAccrualDetector(max_sample_size=10, first_heartbeat_estimate_s=0.2)
    for k in range(30):
        det.heartbeat(0.2 * k)
    before = det.stats()
    det.heartbeat(0.2 * 29 + 30.0)  # after a 30 s outage: node was suspected, interval not kept
    assert det.stats() == before
    assert len(det.intervals) == 10


def test_acceptable_pause_delays_suspicion() -> None:
    strict = PhiAccrualDetector()
    lenient = PhiAccrualDetector(acceptable_pause_s=2.0)
    for k in range(20):
        strict.heartbeat(0.2 * k)
        lenient.heartbeat(0.2 * k)
    now = 0.2 * 19 + 1.5
    assert not strict.is_available(now) and lenient.is_available(now)


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        PhiAccrualDetector(threshold=0.0)
    with pytest.raises(ValueError):
        PhiAccrualDetector(min_std_dev_s=0.0)
    with pytest.raises(ValueError):
        PhiAccrualDetector(cdf="cauchy")
