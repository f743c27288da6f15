"""The failure-history hazard model: Weibull renewal with frailty, recalibrated on features.

Three tiers, chosen by how much history there is (positive training rows = node-intervals in which
a failure started):
- fewer than `min_positive_logistic`: the renewal model alone, P = 1 - exp(-z * dH), where z is the
  node's gamma frailty and dH its system's Weibull cumulative hazard over the horizon;
- up to `min_positive_boosted`: a ridge logistic regression on all `FEATURE_NAMES`, starting from
  the renewal model's log-odds as an offset and learning corrections to it, so that with little
  data it stays near the renewal model instead of extrapolating;
- beyond: boosted trees on the same features (interactions between recency and system scale),
  boosted from the base rate with the renewal log-odds as one feature among the others rather than
  as an offset: with thousands of positives the trees can afford to learn the whole log-odds, and
  an offset ties them to the renewal model where it is wrong (a renewal model whose frailty
  overstates a node), which a bounded number of shrunken trees cannot fully undo.

The final probability is a stack fitted on *out-of-sample* predictions (`fit_stack`): a logistic
regression on the log-odds of the learned layer at a few ensemble sizes (`BOOST_STAGES`) and of the
renewal model. It recalibrates (Platt scaling is its one-column case), picks how much of the
ensemble to trust, and blends in the renewal model, all from scores of days that no fit had seen.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from dspex_cluster.skills.failure.boost import BoostedHazard
from dspex_cluster.skills.failure.hazard import RidgeLogistic, sigmoid
from dspex_cluster.skills.failure.history import FEATURE_NAMES, FailureHistory, WeibullParams

Learner = Literal["auto", "renewal", "logistic", "boosted"]


class _Classifier(Protocol):
    def predict_proba(self, x: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray: ...


_LOG_HAZARD = FEATURE_NAMES.index("log_node_hazard")
# ensemble sizes whose log-odds the stack sees; the boosted layer grows the largest
BOOST_STAGES = (100, 200)
Stack = tuple[float, np.ndarray]  # (intercept a, weights b): P = sigmoid(a + logits @ b)


def renewal_logit(x: np.ndarray) -> np.ndarray:
    """log-odds of the renewal model's P = 1 - exp(-L) from the feature column log L:
    logit P = log(exp(L) - 1), the prior the learned layer corrects."""
    lam = np.exp(np.clip(x[:, _LOG_HAZARD], -40.0, 4.0))
    return np.log(np.expm1(lam))


class HazardModel:
    """A fitted model: Weibull parameters, an optional learned layer over the features, and an
    optional stack over its components' log-odds (fitted later, on out-of-sample scores)."""

    def __init__(
        self,
        params: WeibullParams,
        learner: _Classifier | None,
        horizon_days: float,
        stack: Stack | None = None,
    ) -> None:
        self.params = params
        self.learner = learner
        self.horizon_days = horizon_days
        self.stack = stack

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
        if self.stack is None:
            return self.predict_raw(history, node, t, base)
        return apply_stack(self.stack, self.components(history, node, t, base))

    def predict_raw(
        self,
        history: FailureHistory,
        node: np.ndarray,
        t: np.ndarray,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        """The probability of the learned layer (whole ensemble), or of the renewal model when
        there is none, before any stack."""
        return sigmoid(self.components(history, node, t, base)[:, -2])

    def components(
        self,
        history: FailureHistory,
        node: np.ndarray,
        t: np.ndarray,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        """Log-odds the stack combines, one column each: the learned layer after each of
        `BOOST_STAGES` trees (a logistic layer: its one score repeated; no learned layer: the
        renewal model's), then the renewal model. Same columns for every kind of fit, so one
        stack can be fitted on the scores of consecutive fits of different kinds."""
        if self.learner is None:
            z, ahead = history.node_hazard(self.params, node, t, self.horizon_days)
            ren = np.log(np.expm1(np.clip(z * ahead, 1e-12, 40.0)))
            return np.repeat(ren[:, None], len(BOOST_STAGES) + 1, axis=1)
        if base is None:
            base = history.base_features(node, t)
        hz = history.hazard_features(self.params, node, t, base, self.horizon_days)
        x = np.hstack([base, hz])
        ren = renewal_logit(x)
        if isinstance(self.learner, BoostedHazard):
            n = len(self.learner.trees_)
            learned = self.learner.staged_decision(x, [min(k, n) for k in BOOST_STAGES])
        else:
            assert isinstance(self.learner, RidgeLogistic)
            one = self.learner.decision(x, ren)
            learned = np.repeat(one[:, None], len(BOOST_STAGES), axis=1)
        return np.column_stack([learned, ren])


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


def fit_stack(
    logits: np.ndarray,
    label: np.ndarray,
    weight: np.ndarray | None = None,
    min_positive: int = 30,
) -> Stack | None:
    """Logistic regression of the label on component log-odds (rows x components), fitted on
    *out-of-sample* predictions (those of earlier fits on the node-intervals after their own
    cutoffs): it absorbs drift in the overall level and over-confidence of the learned layer, and
    weighs the components by how well they ranked days no fit had seen. A light ridge keeps
    near-identical columns (ensemble stages) from cancelling out. None when fewer than
    `min_positive` positives."""
    y = np.asarray(label, dtype=np.float64)
    if y.sum() < min_positive or y.sum() == y.size:
        return None
    z = np.asarray(logits, dtype=np.float64)
    model = RidgeLogistic(l2=1e-3).fit(z, y, weight)
    assert model.coef_ is not None and model.mean_ is not None and model.scale_ is not None
    b = model.coef_[:-1] / model.scale_
    a = float(model.coef_[-1] - b @ model.mean_)
    return a, b


def apply_stack(stack: Stack | None, logits: np.ndarray) -> np.ndarray:
    """The stacked probability; without a stack, the first component's probability."""
    z = np.asarray(logits, dtype=np.float64)
    if stack is None:
        return sigmoid(z[:, 0])
    a, b = stack
    return sigmoid(a + z @ b)


def fit_platt(
    raw: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None, min_positive: int = 30
) -> tuple[float, float] | None:
    """Platt scaling, P = sigmoid(a + b * logit(raw)): `fit_stack` on one score."""
    stack = fit_stack(_logit(raw)[:, None], label, weight, min_positive)
    return None if stack is None else (stack[0], float(stack[1][0]))


def apply_platt(platt: tuple[float, float] | None, raw: np.ndarray) -> np.ndarray:
    if platt is None:
        return raw
    a, b = platt
    return sigmoid(a + b * _logit(raw))


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
    n_trees: int = BOOST_STAGES[-1],
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
        model = BoostedHazard(n_trees=n_trees).fit(x, y, train_weight)
    else:
        model = RidgeLogistic(l2=1.0).fit(x, y, train_weight, renewal_logit(x))
    return HazardModel(params, model, horizon_days)
