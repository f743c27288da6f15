"""LoadForecaster: beats the naive forecast on a seasonal series, causal, shapes, missing data."""

from __future__ import annotations

import numpy as np
import pytest

from dspex_cluster.skills.forecast import LoadForecaster


def seasonal_loads(t_len: int, n: int, period: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(t_len)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n)
    return (
        50 + 20 * np.sin(2 * np.pi * t / period + phase) + 0.005 * t + rng.normal(0, 3, (t_len, n))
    )


def one_step(y: np.ndarray, **kw: object) -> np.ndarray:
    f = LoadForecaster(y.shape[1], **kw)  # type: ignore[arg-type]
    out = np.empty((len(y) - 1, y.shape[1]))
    for i in range(len(y) - 1):
        f.update(y[i])
        out[i] = f.forecast(1)
    return out


def test_beats_naive_on_a_seasonal_series() -> None:
    y = seasonal_loads(1200, 12, 24, seed=0)
    pred = one_step(y, season_length=24)
    burn = 200
    mae = np.abs(pred[burn:] - y[1:][burn:]).mean()
    naive = np.abs(y[:-1][burn:] - y[1:][burn:]).mean()
    assert mae < 0.8 * naive


def test_forecast_is_causal() -> None:
    y = seasonal_loads(300, 3, 24, seed=1)
    a = one_step(y, season_length=24)
    y2 = y.copy()
    y2[200:] += 1000.0  # the future changes; forecasts made before t=200 must not
    b = one_step(y2, season_length=24)
    np.testing.assert_array_equal(a[:199], b[:199])
    assert not np.allclose(a[199:], b[199:])


def test_shapes_and_missing_values() -> None:
    f = LoadForecaster(4, season_length=6)
    assert f.forecast(1).shape == (4,)
    for i in range(30):
        f.update(np.array([1.0, 2.0, np.nan if i % 5 == 0 else 3.0, 4.0]))
    assert f.forecast(3).shape == (4,)
    assert f.forecast_path(5).shape == (5, 4)
    assert np.all(np.isfinite(f.forecast_path(5)))
    assert f.forecast(1) == pytest.approx([1.0, 2.0, 3.0, 4.0], abs=0.1)  # constant loads
    w = f.member_weights()
    assert set(w) == {"last", "ewma", "holt", "holt_winters", "ar"}
    assert np.allclose(sum(w.values()), 1.0)


def test_follows_a_trend_better_than_naive() -> None:
    t = np.arange(400, dtype=float)[:, None]
    y = 10 + 0.5 * t + np.zeros((1, 2))
    pred = one_step(y)
    assert np.abs(pred[200:] - y[1:][200:]).mean() < 0.1 * 0.5  # naive is off by 0.5 every step


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        LoadForecaster(0)
    with pytest.raises(ValueError):
        LoadForecaster(3, season_length=1)
    with pytest.raises(ValueError):
        LoadForecaster(3).forecast_path(0)
