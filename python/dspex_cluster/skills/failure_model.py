"""The failure-history hazard model: Weibull renewal with frailty, recalibrated on features.

Three tiers, chosen by how much history there is (positive training rows = node-intervals in which
a failure started):
- fewer than `min_positive_logistic`: the renewal model alone, P = 1 - exp(-z * dH), where z is the
  node's gamma frailty and dH its system's Weibull cumulative hazard over the horizon;
- up to `min_positive_boosted`: a ridge logistic regression on all `FEATURE_NAMES`;
- beyond: boosted trees on the same features (interactions between recency and system scale).
Both learned layers start from the renewal model's log-odds as an offset and learn corrections to
it, so where the training data say little (a new system, a rare state) they stay near the renewal
model instead of extrapolating.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from dspex_cluster.skills.failure_boost import BoostedHazard
from dspex_cluster.skills.failure_hazard import RidgeLogistic
from dspex_cluster.skills.failure_history import FEATURE_NAMES, FailureHistory, WeibullParams

Learner = Literal["auto", "renewal", "logistic", "boosted"]


class _Classifier(Protocol):
    def predict_proba(self, x: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray: ...


_LOG_HAZARD = FEATURE_NAMES.index("log_node_hazard")


def renewal_logit(x: np.ndarray) -> np.ndarray:
    """log-odds of the renewal model's P = 1 - exp(-L) from the feature column log L:
    logit P = log(exp(L) - 1), the prior the learned layer corrects."""
    lam = np.exp(np.clip(x[:, _LOG_HAZARD], -40.0, 4.0))
    return np.log(np.expm1(lam))


class HazardModel:
    """A fitted model: Weibull parameters plus an optional learned layer over the features."""

    def __init__(
        self,
        params: WeibullParams,
        learner: _Classifier | None,
        horizon_days: float,
        platt: tuple[float, float] | None = None,
    ) -> None:
        self.params = params
        self.learner = learner
        self.horizon_days = horizon_days
        self.platt = platt  # (a, b): P = sigmoid(a + b * logit(raw)), see `fit_platt`

    @property
    def kind(self) -> str:
        if self.learner is None:
            return "renewal"
        return "boosted" if isinstance(self.learner, BoostedHazard) else "logistic"

    def predict(
        self,
        history: FailureHistory,
        node: np.ndarray,
        t: np.ndarray,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        """P(a failure starts within the horizon after t) for queries (node, t)."""
        return apply_platt(self.platt, self.predict_raw(history, node, t, base))

    def predict_raw(
        self,
        history: FailureHistory,
        node: np.ndarray,
        t: np.ndarray,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        """The probability before recalibration."""
        if self.learner is None:
            z, ahead = history.node_hazard(self.params, node, t, self.horizon_days)
            return -np.expm1(-z * ahead)
        if base is None:
            base = history.base_features(node, t)
        hz = history.hazard_features(self.params, node, t, base, self.horizon_days)
        x = np.hstack([base, hz])
        return self.learner.predict_proba(x, renewal_logit(x))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


def fit_platt(
    raw: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None, min_positive: int = 30
) -> tuple[float, float] | None:
    """Platt scaling fitted on *out-of-sample* predictions (those of the previous fit on the
    node-intervals since): it absorbs drift in the overall level and over-confidence of the
    learned layer. None when fewer than `min_positive` positives."""
    y = np.asarray(label, dtype=np.float64)
    if y.sum() < min_positive or y.sum() == y.size:
        return None
    model = RidgeLogistic(l2=1e-3).fit(_logit(raw)[:, None], y, weight)
    assert model.coef_ is not None and model.mean_ is not None and model.scale_ is not None
    b = float(model.coef_[0] / model.scale_[0])
    a = float(model.coef_[1] - b * model.mean_[0])
    return a, b


def apply_platt(platt: tuple[float, float] | None, raw: np.ndarray) -> np.ndarray:
    if platt is None:
        return raw
    a, b = platt
    return 1.0 / (1.0 + np.exp(-(a + b * _logit(raw))))


def fit_hazard_model(
    history: FailureHistory,
    cutoff_s: float,
    train_node: np.ndarray,
    train_t: np.ndarray,
    train_label: np.ndarray,
    horizon_days: float = 1.0,
    train_weight: np.ndarray | None = None,
    base: np.ndarray | None = None,
    learner: Learner = "auto",
    min_positive_logistic: int = 200,
    min_positive_boosted: int = 2000,
    n_trees: int = 100,
) -> HazardModel:
    """Fit on training rows whose horizon ends by `cutoff_s` (the caller guarantees it).

    The Weibull renewal parameters use only failures that started before `cutoff_s`, so a model
    fitted at a cutoff can score any time >= cutoff without seeing the future. `base` may pass
    precomputed `base_features` of the training rows.
    """
    params = history.fit_weibull(cutoff_s)
    y = np.asarray(train_label, dtype=np.float64)
    n_pos = int(y.sum())
    if learner == "auto":
        if n_pos < min_positive_logistic or n_pos == y.size:
            learner = "renewal"
        else:
            learner = "boosted" if n_pos >= min_positive_boosted else "logistic"
    if learner == "renewal":
        return HazardModel(params, None, horizon_days)
    if base is None:
        base = history.base_features(train_node, train_t)
    x = np.hstack([base, history.hazard_features(params, train_node, train_t, base, horizon_days)])
    model: _Classifier
    if learner == "boosted":
        model = BoostedHazard(n_trees=n_trees).fit(x, y, train_weight, renewal_logit(x))
    else:
        model = RidgeLogistic(l2=1.0).fit(x, y, train_weight, renewal_logit(x))
    return HazardModel(params, model, horizon_days)
