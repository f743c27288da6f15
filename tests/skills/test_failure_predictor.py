"""FailurePredictor contract: ranges, decreasing hazard, causality, determinism, health signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dspex_cluster.skills.failure import FailurePredictor
from dspex_cluster.skills.failure.health import jitter_ratio, theil_sen, time_to_exhaustion
from dspex_cluster.skills.failure.history import weibull_mle
from dspex_cluster.skills.failure.predictor import ModelNotReady

DAY = 86400.0
T0 = 1_600_000_000.0  # 2020-09-13


def _weibull_history(
    fp: FailurePredictor, n_nodes: int, days: float, seed: int = 1, shape: float = 0.5
) -> dict[str, list[float]]:
    """Nodes failing as a Weibull renewal process (shape < 1: decreasing hazard)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {}
    for k in range(n_nodes):
        node = f"n{k}"
        fp.add_node(node, system="sys", group=f"rack{k // 4}", since_ts=T0)
        t = T0
        out[node] = []
        while True:
            t += 20.0 * DAY * rng.weibull(shape)
            if t >= T0 + days * DAY:
                break
            fp.observe_failure(node, t, t + 3600.0)
            out[node].append(t)
    return out


def test_weibull_mle_recovers_shape_with_censoring() -> None:
    rng = np.random.default_rng(0)
    x = 10.0 * rng.weibull(0.6, 4000)
    cens = np.minimum(x, 40.0)
    k, scale = weibull_mle(cens, x < 40.0)
    assert k == pytest.approx(0.6, rel=0.06) and scale == pytest.approx(10.0, rel=0.1)


@pytest.mark.parametrize("learner", ["renewal", "auto"])
def test_probability_range_and_decreasing_hazard(learner: str) -> None:
    fp = FailurePredictor(horizon_s=DAY, refit_interval_s=30 * DAY, learner=learner)  # type: ignore[arg-type]
    failures = _weibull_history(fp, n_nodes=24, days=720)
    node = max(failures, key=lambda n: len(failures[n]))
    last = failures[node][-1]
    soon = fp.predict(node, last + 600.0)
    later = fp.predict(node, last + 60 * DAY)
    assert 0.0 <= later < soon <= 1.0
    # the failure itself raises the risk: just before it vs just after it
    assert fp.predict(node, last - 600.0) < soon
    ps = fp.predict_many(list(failures), T0 + 700 * DAY)
    assert np.all((ps >= 0) & (ps <= 1))
    # mean residual life grows with the time since the last failure when the hazard decreases
    assert fp.time_to_failure(node, last + 600.0) < fp.time_to_failure(node, last + 60 * DAY)


def test_weibull_fit_sees_decreasing_hazard() -> None:
    fp = FailurePredictor(learner="renewal")
    _weibull_history(fp, n_nodes=30, days=900, shape=0.5)
    params = fp._model_at(T0 + 900 * DAY).params
    assert float(params.shape[0]) < 0.8


def test_causal_future_failures_are_ignored() -> None:
    now = T0 + 400 * DAY
    past = FailurePredictor(refit_interval_s=30 * DAY)
    full = FailurePredictor(refit_interval_s=30 * DAY)
    hist = _weibull_history(past, n_nodes=16, days=400, seed=3)
    _weibull_history(full, n_nodes=16, days=400, seed=3)
    rng = np.random.default_rng(9)
    for node in hist:  # the future: a burst of failures after `now`
        for t in now + rng.uniform(0, 50 * DAY, 5):
            full.observe_failure(node, t, t + 60.0)
    nodes = list(hist)
    # equal up to float rounding (the key space of the time index spans different ranges)
    np.testing.assert_allclose(past.predict_many(nodes, now), full.predict_many(nodes, now), 1e-9)
    ttf_past, ttf_full = past.time_to_failure("n0", now), full.time_to_failure("n0", now)
    assert ttf_past == pytest.approx(ttf_full, rel=1e-9)
    assert not np.array_equal(
        past.predict_many(nodes, now + 60 * DAY), full.predict_many(nodes, now + 60 * DAY)
    )


def test_deterministic() -> None:
    a, b = FailurePredictor(), FailurePredictor()
    _weibull_history(a, n_nodes=12, days=300, seed=5)
    _weibull_history(b, n_nodes=12, days=300, seed=5)
    now = T0 + 250 * DAY
    first = a.predict_many([f"n{k}" for k in range(12)], now)
    assert np.array_equal(first, b.predict_many([f"n{k}" for k in range(12)], now))
    assert np.array_equal(first, a.predict_many([f"n{k}" for k in range(12)], now))


def test_unknown_node_is_an_error() -> None:
    fp = FailurePredictor()
    fp.observe_failure("a", T0, T0 + 60)
    with pytest.raises(KeyError):
        fp.predict("nope", T0 + DAY)


# ---- health signals ---------------------------------------------------------------------------


def test_theil_sen_ignores_outliers_and_exhaustion_time() -> None:
    t = np.arange(20) * 600.0
    v = 0.5 + 1e-5 * t
    v[7] = 0.99  # one spike does not bend a robust trend
    slope, _ = theil_sen(t, v)
    assert slope == pytest.approx(1e-5, rel=1e-6)
    tte = time_to_exhaustion(t, v, capacity=1.0)
    level_now = 0.5 + 1e-5 * t[-1]
    assert tte == pytest.approx((1.0 - level_now) / 1e-5, rel=1e-6)
    assert math.isinf(time_to_exhaustion(t, np.full(20, 0.6)))
    assert time_to_exhaustion(t, np.full(20, 1.0)) == 0.0


def test_jitter_ratio() -> None:
    rng = np.random.default_rng(0)
    steady = 0.2 + 0.002 * rng.standard_normal(60)
    struggling = np.concatenate([steady[:30], 0.2 + 0.05 * np.abs(rng.standard_normal(30))])
    assert jitter_ratio(steady) == pytest.approx(1.0, abs=0.5)
    assert jitter_ratio(struggling) > 5.0


def _two_node_predictor() -> FailurePredictor:
    fp = FailurePredictor(learner="renewal")
    for node in ("leaky", "healthy"):
        fp.add_node(node, since_ts=T0)
        fp.observe_failure(node, T0 + 10 * DAY, T0 + 10 * DAY + 600)
    return fp


def test_memory_leak_raises_risk_and_shortens_time_to_failure() -> None:
    fp = _two_node_predictor()
    now = T0 + 100 * DAY
    rng = np.random.default_rng(1)
    for i in range(60):  # the last 10 hours, one sample every 10 minutes
        ts = now - 36000.0 + 600.0 * i
        noise = 0.01 * rng.standard_normal()
        fp.observe_health("leaky", ts, {"memory": 0.50 + 0.04 * (i / 6.0) + noise, "disk": 0.4})
        fp.observe_health("healthy", ts, {"memory": 0.50 + noise, "disk": 0.4})
    signals = fp.health_signals("leaky", now)
    # +4 %/hour from ~0.89 used: exhausted in about 2.7 hours
    assert signals["tte_memory_s"] == pytest.approx(0.11 / 0.04 * 3600.0, rel=0.25)
    assert math.isinf(fp.health_signals("healthy", now)["tte_memory_s"])
    p_leaky, p_healthy = fp.predict("leaky", now), fp.predict("healthy", now)
    assert p_leaky > 0.9 and p_healthy < 0.2
    assert fp.time_to_failure("leaky", now) <= signals["tte_memory_s"] + 1.0
    assert fp.time_to_failure("leaky", now) < fp.time_to_failure("healthy", now)
    # health is causal too: a sample from the future is not used
    fp.observe_health("healthy", now + 3600.0, {"memory": 0.99})
    assert fp.predict("healthy", now) == p_healthy


def test_heartbeat_jitter_growth_raises_risk() -> None:
    fp = _two_node_predictor()
    now = T0 + 100 * DAY
    rng = np.random.default_rng(2)
    for i in range(100):
        ts = now - 100.0 + i
        jitter = 0.002 if i < 50 else 0.08
        fp.observe_health("leaky", ts, {"heartbeat_interval_s": 0.2 + jitter * abs(rng.normal())})
        fp.observe_health("healthy", ts, {"heartbeat_interval_s": 0.2 + 0.002 * abs(rng.normal())})
    assert fp.predict("leaky", now) > fp.predict("healthy", now) + 0.3


def test_no_failure_seen_yet_gives_a_small_prior_not_an_error() -> None:
    # A live cluster starts with no failure history: the model must still answer.
    fp = FailurePredictor(horizon_s=86400)
    fp.observe_health("a", 100.0, {"memory": 0.5})
    p = fp.predict("a", 1000.0)
    assert 0.0 < p < 0.05
    assert fp.time_to_failure("a", 1000.0) > 86400
    fp.observe_failure("b", 10.0, 20.0)
    assert fp.predict("b", 2000.0) > fp.predict("a", 2000.0)


def test_boosted_predictor_is_stacked_on_out_of_sample_scores_and_causal() -> None:
    now = T0 + 600 * DAY
    kw = {"refit_interval_s": 60 * DAY, "learner": "boosted", "platt_intervals": 1}
    past = FailurePredictor(**kw)  # type: ignore[arg-type]
    full = FailurePredictor(**kw)  # type: ignore[arg-type]
    hist = _weibull_history(past, n_nodes=30, days=600, seed=7)
    _weibull_history(full, n_nodes=30, days=600, seed=7)
    for node in list(hist)[:10]:  # the future: failures after `now` change no prediction at now
        full.observe_failure(node, now + 2 * DAY, now + 2 * DAY + 60.0)
    model = past._model_at(now)
    assert model.kind == "boosted" and model.stack is not None
    assert model.stack[1].shape == (3,)  # trees at two ensemble sizes, the renewal model
    nodes = list(hist)
    p = past.predict_many(nodes, now)
    assert np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(p, full.predict_many(nodes, now), 1e-9)
    # the stack keeps the mean near the observed rate of recent node-days
    recent = sum(sum(now - 60 * DAY <= t < now for t in ts) for ts in hist.values())
    assert p.mean() == pytest.approx(recent / (60 * len(nodes)), rel=0.6)


def _history_in_time_order(fp: FailurePredictor, n_nodes: int, days: float, seed: int) -> list:
    """The same Weibull history, returned as (start, node) events sorted by time, nodes declared."""
    events: list[tuple[float, str]] = []
    probe = FailurePredictor()
    for node, times in _weibull_history(probe, n_nodes, days, seed=seed).items():
        fp.add_node(node, system="sys", group=f"rack{int(node[1:]) // 4}", since_ts=T0)
        events += [(t, node) for t in times]
    return sorted(events)


def test_a_failure_invalidates_only_fits_at_later_cutoffs() -> None:
    fp = FailurePredictor(refit_interval_s=30 * DAY, learner="renewal")
    events = _history_in_time_order(fp, n_nodes=12, days=300, seed=21)
    t_obs = T0 + 200 * DAY
    for t, node in events:
        if t < t_obs:
            fp.observe_failure(node, t, t + 3600.0)
    nodes = [f"n{k}" for k in range(12)]
    # the refit grid (30 d from the epoch) has cutoffs at T0 + 21.5 d + 30 k days
    early, late = T0 + 150 * DAY, T0 + 235 * DAY  # cutoffs before and after the next failure
    p_early = fp.predict_many(nodes, early)
    fp.predict_many(nodes, late)
    kept = fp._models[fp.cutoff(early)]
    fp.observe_failure("n3", t_obs + 5 * DAY, t_obs + 5 * DAY + 60.0)
    assert fp.cutoff(early) <= t_obs + 5 * DAY < fp.cutoff(late)
    assert fp._models.get(fp.cutoff(early)) is kept  # not refitted
    assert fp.cutoff(late) not in fp._models  # refitted on the next prediction
    np.testing.assert_array_equal(fp.predict_many(nodes, early), p_early)
    # the kept fit is what a fit from scratch on the same observations gives
    fresh = FailurePredictor(refit_interval_s=30 * DAY, learner="renewal")
    _history_in_time_order(fresh, n_nodes=12, days=300, seed=21)
    for t, node in events:
        if t < t_obs:
            fresh.observe_failure(node, t, t + 3600.0)
    fresh.observe_failure("n3", t_obs + 5 * DAY, t_obs + 5 * DAY + 60.0)
    np.testing.assert_allclose(fresh.predict_many(nodes, late), fp.predict_many(nodes, late), 1e-9)
    np.testing.assert_allclose(fresh.predict_many(nodes, early), p_early, 1e-9)


def test_non_blocking_predictions_use_the_latest_ready_fit_and_refit_on_a_snapshot() -> None:
    fp = FailurePredictor(refit_interval_s=30 * DAY, learner="renewal")
    for t, node in _history_in_time_order(fp, n_nodes=12, days=300, seed=22):
        fp.observe_failure(node, t, t + 3600.0)
    nodes = [f"n{k}" for k in range(12)]
    fp.blocking_fits = False
    with pytest.raises(ModelNotReady):
        fp.predict_many(nodes, T0 + 100 * DAY)  # nothing fitted yet, and no fitting here
    assert fp.wanted_cutoff == fp.cutoff(T0 + 100 * DAY)
    snap = fp.snapshot()
    snap.fit(fp.wanted_cutoff)  # in another thread in the agent
    assert fp.install(snap) >= 1
    p100 = fp.predict_many(nodes, T0 + 100 * DAY)
    # a later prediction runs on the latest ready fit (cutoff 81.5 d) until its own is there
    assert not fp.has_fit(T0 + 130 * DAY)
    p130_old = fp.predict_many(nodes, T0 + 130 * DAY)
    assert fp.wanted_cutoff == fp.cutoff(T0 + 130 * DAY)
    snap = fp.snapshot()
    snap.fit(fp.wanted_cutoff)
    # meanwhile a failure of day 105 is reported: the snapshot's fit at cutoff 111.5 d is stale
    fp.observe_failure("n1", T0 + 105 * DAY, T0 + 105 * DAY + 60.0)
    fp.install(snap)
    assert not fp.has_fit(T0 + 130 * DAY) and fp.has_fit(T0 + 100 * DAY)
    snap = fp.snapshot()
    snap.fit(fp.cutoff(T0 + 130 * DAY))
    fp.install(snap)
    p130 = fp.predict_many(nodes, T0 + 130 * DAY)
    fp.blocking_fits = True
    np.testing.assert_array_equal(fp.predict_many(nodes, T0 + 130 * DAY), p130)
    np.testing.assert_array_equal(fp.predict_many(nodes, T0 + 100 * DAY), p100)
    assert not np.array_equal(p130_old, p130)
