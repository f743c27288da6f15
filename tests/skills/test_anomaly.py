"""AnomalyDetector's contract: causal, in [0, 1], deterministic, streaming == batch, explainable."""

from __future__ import annotations

import numpy as np
import pytest

from dspex_cluster.skills.anomaly import AnomalyDetector
from dspex_cluster.skills.anomaly_season import detect_period


def noisy_daily(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    return 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1.0, rows)


def test_scores_in_unit_range_and_deterministic() -> None:
    x = noisy_daily(3000)
    x[2000] = 200.0
    a = AnomalyDetector().score_series(x)
    b = AnomalyDetector().score_series(x)
    assert a.shape == (3000,)
    assert np.all((a >= 0.0) & (a <= 1.0))
    assert np.array_equal(a, b)


def test_causal_future_rows_do_not_change_past_scores() -> None:
    x = noisy_daily(1500, seed=1)
    y = x.copy()
    y[1000:] = np.random.default_rng(9).normal(500, 50, 500)  # a wildly different future
    sx = AnomalyDetector().score_series(x)
    sy = AnomalyDetector().score_series(y)
    assert np.array_equal(sx[:1000], sy[:1000])
    assert not np.array_equal(sx[1000:], sy[1000:])


def test_update_equals_score_series_and_block_splits() -> None:
    x = noisy_daily(700, seed=2)
    x[500:520] += 30.0
    batch = AnomalyDetector(history=400).score_series(x)  # small history: exercises eviction
    streaming = AnomalyDetector(history=400)
    one_by_one = np.array([streaming.update(v) for v in x])
    np.testing.assert_allclose(one_by_one, batch, rtol=0, atol=1e-12)
    blocks = AnomalyDetector(history=400)
    parts = [blocks.score_series(x[a:b]) for a, b in [(0, 3), (3, 300), (300, 301), (301, 700)]]
    np.testing.assert_allclose(np.concatenate(parts), batch, rtol=0, atol=1e-12)


def test_detects_an_injected_spike_and_level_shift() -> None:
    x = noisy_daily(4000, seed=3)
    x[2500] += 40.0  # a spike far outside the daily range
    x[3300:] += 35.0  # a level shift to a range never seen
    det = AnomalyDetector()
    s = det.score_series(x)
    assert s[2500] >= det.threshold
    assert s[3300:3310].max() >= det.threshold
    normal = np.r_[1000:2490, 2600:3290]
    assert (s[normal] >= det.threshold).mean() < 0.002  # the daily cycle and noise stay quiet


def test_repeated_alerts_are_damped() -> None:
    x = noisy_daily(3000, seed=4)
    x[2000:2100] = 150.0 + np.random.default_rng(5).normal(0, 5, 100)  # a long new plateau
    det = AnomalyDetector()
    s = det.score_series(x)
    assert s[2000:2010].max() >= det.threshold
    assert (s[2000:2100] >= det.threshold).sum() <= 5


def test_multivariate_explain_names_the_driving_feature() -> None:
    rng = np.random.default_rng(6)
    names = [f"m{i}" for i in range(8)]
    X = rng.normal(0, 1, (4000, 8)) + np.arange(8) * 10
    X[3800, 5] += 12.0  # only feature m5 misbehaves
    det = AnomalyDetector(n_features=8, feature_names=names)
    s = det.score_series(X[:3801])
    assert s[-1] >= det.threshold
    shares = det.explain()
    assert next(iter(shares)) == "m5"
    assert shares["m5"] > 0.5
    # explain(row) probes a hypothetical next row without moving the detector.
    row = X[3801].copy()
    row[2] += 15.0
    before = det._seen
    assert next(iter(det.explain(row))) == "m2"
    assert det._seen == before


def test_fit_learns_normal_and_calibrates_its_threshold() -> None:
    x = noisy_daily(8000, seed=7)
    cold = AnomalyDetector().score_series(x[4000:4100])
    assert cold[:30].max() == 0.0  # without fit: the online views' warm-up rows
    det = AnomalyDetector().fit(x[:4000])
    assert det.fitted and det.threshold == 0.5
    normal = det.score_series(x[4000:8000])
    assert (normal >= det.threshold).mean() <= 0.03  # false_alarm_rate 0.02 (calibrated)
    x_spike = x[4000:4100].copy()
    x_spike[50] += 40.0
    det = AnomalyDetector().fit(x[:4000])
    assert det.score_series(x_spike)[50] >= det.threshold
    # Too little history for a reference: fit only warms the online views up, as before.
    short = AnomalyDetector().fit(x[:200])
    assert not short.fitted and short.threshold == AnomalyDetector().threshold


def correlated_metrics(rows: int, seed: int) -> np.ndarray:
    """Eight metrics driven by two periodic load factors plus noise (CPU, network, ...)."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    load = np.stack((np.sin(2 * np.pi * t / 288), np.sin(2 * np.pi * t / 1000 + 1.0)), 1)
    mix = rng.normal(0, 1, (2, 8))
    return 5.0 + load @ mix + rng.normal(0, 0.05, (rows, 8))


def test_fitted_detector_sees_a_broken_correlation_within_every_metrics_range() -> None:
    x = correlated_metrics(6000, seed=11)
    test = x[4000:].copy()
    # Metric 3 keeps its usual range but stops following the load (it is replayed from a day
    # earlier, out of phase): only the joint view can tell.
    test[1000:1100, 3] = x[4000 + 1000 - 150 : 4000 + 1100 - 150, 3]
    lo, hi = x[:4000, 3].min(), x[:4000, 3].max()
    assert lo <= test[1000:1100, 3].min() and test[1000:1100, 3].max() <= hi
    det = AnomalyDetector(8, feature_names=[f"m{i}" for i in range(8)]).fit(x[:4000])
    s = det.score_series(test)
    flagged = s >= det.threshold
    assert flagged[1000:1100].mean() >= 0.5
    assert np.r_[flagged[:1000], flagged[1150:]].mean() <= 0.03
    top = int(np.argmax(s[1000:1100])) + 1000
    det2 = AnomalyDetector(8, feature_names=[f"m{i}" for i in range(8)]).fit(x[:4000])
    det2.score_series(test[: top + 1])
    assert next(iter(det2.explain())) == "m3"


def test_fitted_detector_blames_a_metric_leaving_its_training_range() -> None:
    x = correlated_metrics(5000, seed=12)
    det = AnomalyDetector(8, feature_names=[f"m{i}" for i in range(8)]).fit(x[:4000])
    before = det.score_series(x[4000:4500])
    row = x[4500].copy()
    row[6] = x[:4000, 6].max() + 3 * x[:4000, 6].std()
    shares = det.explain(row)  # probes a copy: the detector does not move
    assert next(iter(shares)) == "m6" and shares["m6"] > 0.5
    assert det.update(row) >= det.threshold
    assert (before >= det.threshold).mean() <= 0.03


def test_fitted_update_equals_score_series_and_is_causal() -> None:
    x = correlated_metrics(3000, seed=13)
    a = AnomalyDetector(8).fit(x[:2000])
    b = AnomalyDetector(8).fit(x[:2000])
    batch = a.score_series(x[2000:])
    one = np.array([b.update(r) for r in x[2000:2300]])
    rest = b.score_series(x[2300:])
    np.testing.assert_allclose(np.r_[one, rest], batch, rtol=0, atol=1e-12)
    c = AnomalyDetector(8).fit(x[:2000])
    y = x[2000:].copy()
    y[500:] += 100.0  # a wildly different future changes no earlier score
    np.testing.assert_array_equal(c.score_series(y)[:500], batch[:500])


def test_missing_values_and_bad_shapes() -> None:
    det = AnomalyDetector(n_features=2)
    s = det.score_series(np.array([[1.0, 2.0], [np.nan, 2.1], [1.1, np.inf]] * 20))
    assert np.all(np.isfinite(s))
    with pytest.raises(ValueError):
        det.score_series(np.zeros((5, 3)))
    with pytest.raises(ValueError):
        AnomalyDetector(n_features=0)


def test_detect_period_finds_cycles_and_ignores_trends_and_fast_oscillation() -> None:
    assert abs(detect_period(noisy_daily(3000)) - 288) <= 2
    rng = np.random.default_rng(8)
    assert detect_period(rng.normal(size=3000)) == 0
    assert detect_period(rng.normal(size=3000).cumsum()) == 0  # a random walk has no season
    saw = np.tile(np.arange(12.0), 250) + rng.normal(0, 0.1, 3000)
    assert detect_period(saw) == 0  # a 12-row oscillation is not a daily/weekly season


def test_seasonal_anomaly_inside_the_normal_range() -> None:
    x = noisy_daily(5000, seed=10)
    day = slice(4032, 4032 + 288)
    x[day] = 100 - x[day]  # the cycle runs upside down for a day, values stay within range
    det = AnomalyDetector()
    s = det.score_series(x)
    assert abs(det.periods["f0"] - 288) <= 2
    assert s[day].max() >= det.threshold
    assert (s[2000:4000] >= det.threshold).sum() <= 2
