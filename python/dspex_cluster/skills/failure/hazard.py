"""Discrete-time hazard model: ridge-penalised logistic regression on node-day features.

P(a failure starts in the next interval | features) = sigmoid(b0 + b . standardised(x)). Fitted by
Newton's method (IRLS) with step halving on the penalised weighted log-likelihood; row weights
undo negative subsampling (case-control: keep every positive and a fraction of negatives, weight
the kept negatives by 1 / fraction), so probabilities stay calibrated.
"""

from __future__ import annotations

import numpy as np


def _log1pexp(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-_log1pexp(-z))


class RidgeLogistic:
    """Weighted logistic regression with an L2 penalty on the non-intercept coefficients."""

    def __init__(self, l2: float = 1.0, max_iter: int = 30, tol: float = 1e-8) -> None:
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None  # intercept last

    def _design(self, x: np.ndarray) -> np.ndarray:
        assert self.mean_ is not None and self.scale_ is not None
        z = (x - self.mean_) / self.scale_
        return np.hstack([z, np.ones((x.shape[0], 1))])

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        weight: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> RidgeLogistic:
        """With `offset` (prior log-odds per row) the coefficients are corrections to it, and
        the penalty pulls the fit towards the prior rather than towards a constant."""
        x = np.asarray(x, dtype=np.float64)
        off = np.zeros(len(x)) if offset is None else np.asarray(offset, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64)
        wsum = w.sum()
        self.mean_ = (w @ x) / wsum
        sd = np.sqrt((w @ (x - self.mean_) ** 2) / wsum)
        self.scale_ = np.where(sd > 1e-9, sd, 1.0)
        a = self._design(x)
        p_mean = np.clip((w @ y) / wsum, 1e-9, 1 - 1e-9)
        beta = np.zeros(a.shape[1])
        beta[-1] = np.log(p_mean / (1 - p_mean)) if offset is None else 0.0
        penalty = np.full(a.shape[1], self.l2)
        penalty[-1] = 0.0

        def objective(b: np.ndarray) -> float:
            z = a @ b + off
            return float(w @ (_log1pexp(z) - y * z) + 0.5 * (penalty * b) @ b)

        f = objective(beta)
        for _ in range(self.max_iter):
            p = sigmoid(a @ beta + off)
            h = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(penalty)
            g = a.T @ (w * (y - p)) - penalty * beta
            step = np.linalg.solve(h, g)
            t = 1.0
            while True:
                f_new = objective(beta + t * step)
                if f_new <= f or t < 1e-6:
                    break
                t *= 0.5
            beta = beta + t * step
            done = f - f_new <= self.tol * max(abs(f), 1.0)
            f = min(f, f_new)
            if done:
                break
        self.coef_ = beta
        return self

    def decision(self, x: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("not fitted")
        raw = self._design(np.asarray(x, dtype=np.float64)) @ self.coef_
        return raw if offset is None else raw + offset

    def predict_proba(self, x: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        return sigmoid(self.decision(x, offset))
