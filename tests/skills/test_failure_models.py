"""The learned layers of the failure model: ridge logistic, boosted trees, Platt scaling."""

from __future__ import annotations

import numpy as np
import pytest

from dspex_cluster.skills.failure.boost import BoostedHazard
from dspex_cluster.skills.failure.hazard import RidgeLogistic, sigmoid
from dspex_cluster.skills.failure.model import apply_platt, apply_stack, fit_platt, fit_stack


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    order = np.argsort(score)
    ranks = np.empty(score.size)
    ranks[order] = np.arange(1, score.size + 1)
    n_pos = int(label.sum())
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (label.size - n_pos)))


def test_ridge_logistic_recovers_coefficients_with_weights_and_offset() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 2))
    offset = rng.uniform(-1, 1, x.shape[0])
    y = rng.random(x.shape[0]) < sigmoid(-1.0 + 1.5 * x[:, 0] - 0.5 * x[:, 1] + offset)
    m = RidgeLogistic(l2=1e-6).fit(x, y, offset=offset)
    assert m.coef_ is not None and m.scale_ is not None
    slopes = m.coef_[:2] / m.scale_
    assert slopes == pytest.approx([1.5, -0.5], abs=0.1)
    # subsampled negatives with weights 1 / rate give the same slopes and calibration
    keep = y | (rng.random(y.size) < 0.3)
    w = np.where(y[keep], 1.0, 1 / 0.3)
    mw = RidgeLogistic(l2=1e-6).fit(x[keep], y[keep], w, offset[keep])
    assert mw.coef_ is not None and mw.scale_ is not None
    assert mw.coef_[:2] / mw.scale_ == pytest.approx([1.5, -0.5], abs=0.15)
    assert mw.predict_proba(x, offset).mean() == pytest.approx(y.mean(), rel=0.05)


def test_boosted_trees_learn_an_interaction_a_linear_logit_cannot() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (20000, 3))
    p = np.where(x[:, 0] * x[:, 1] > 0, 0.3, 0.02)  # XOR-like: no linear signal at all
    y = rng.random(p.size) < p
    test = slice(15000, None)
    train = slice(0, 15000)
    boosted = BoostedHazard(n_trees=60, max_depth=3).fit(x[train], y[train])
    linear = RidgeLogistic().fit(x[train], y[train])
    auc_boosted = _auc(boosted.predict_proba(x[test]), y[test])
    auc_linear = _auc(linear.predict_proba(x[test]), y[test])
    assert auc_boosted > 0.73 and auc_linear < 0.6  # the best possible AUC here is 0.76
    again = BoostedHazard(n_trees=60, max_depth=3).fit(x[train], y[train])
    assert np.array_equal(again.predict_proba(x[test]), boosted.predict_proba(x[test]))


def test_platt_fixes_overconfident_scores() -> None:
    rng = np.random.default_rng(2)
    true_p = rng.uniform(0.001, 0.05, 50000)
    y = rng.random(true_p.size) < true_p
    overconfident = np.clip(3.0 * true_p, 0, 0.99)
    platt = fit_platt(overconfident, y)
    assert platt is not None
    fixed = apply_platt(platt, overconfident)
    brier_before = np.mean((overconfident - y) ** 2)
    assert np.mean((fixed - y) ** 2) < brier_before
    assert fixed.mean() == pytest.approx(y.mean(), rel=0.05)
    assert fit_platt(overconfident[:100], y[:100]) is None  # too few positives to fit


def test_staged_decision_is_the_smaller_ensemble() -> None:
    """Log-odds after the first n trees equal those of an ensemble grown to n trees."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (6000, 3))
    y = rng.random(x.shape[0]) < sigmoid(2.0 * x[:, 0] - 1.0)
    full = BoostedHazard(n_trees=30, max_depth=3).fit(x, y)
    small = BoostedHazard(n_trees=10, max_depth=3).fit(x, y)
    staged = full.staged_decision(x, [0, 10, 30])
    assert np.allclose(staged[:, 0], full.base_)
    assert np.allclose(staged[:, 1], small.decision(x))
    assert np.allclose(staged[:, 2], full.decision(x))
    with pytest.raises(ValueError):
        full.staged_decision(x, [30, 10])
    with pytest.raises(ValueError):
        full.staged_decision(x, [31])


def test_stack_weighs_the_informative_score_and_calibrates() -> None:
    rng = np.random.default_rng(4)
    signal = rng.standard_normal(60000)
    y = rng.random(signal.size) < sigmoid(-4.0 + signal)
    informative = 2.5 * signal - 3.0  # over-confident log-odds
    noise = rng.standard_normal(signal.size) - 4.0
    z = np.column_stack([noise, informative])
    stack = fit_stack(z, y)
    assert stack is not None
    a, b = stack
    assert b[1] == pytest.approx(0.4, abs=0.08) and abs(b[0]) < 0.1
    p = apply_stack(stack, z)
    assert p.mean() == pytest.approx(y.mean(), rel=0.05)
    assert np.mean((p - y) ** 2) < np.mean((apply_stack(None, z) - y) ** 2)
    # the one-column case is Platt scaling
    platt = fit_platt(sigmoid(informative), y)
    one = fit_stack(z[:, 1:], y)
    assert platt is not None and one is not None
    assert platt == pytest.approx((one[0], float(one[1][0])))
    assert fit_stack(z[:100], y[:100]) is None  # too few positives
