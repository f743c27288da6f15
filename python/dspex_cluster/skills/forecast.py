"""Next-interval load forecasting for every node at once (vectorised over nodes).

``LoadForecaster`` runs a few small forecasters side by side on each node's load series and
combines them per node with weights inversely proportional to each one's recent squared one-step
error (Bates-Granger combination, errors exponentially weighted so the mix follows a change of
regime). The members:

- last value (the naive forecast itself: the combination can only lose to it by its noise),
- exponentially weighted moving average,
- damped-trend Holt smoothing,
- additive Holt-Winters with a season, when ``season_length`` is given,
- an autoregression of order ``ar_order`` with intercept, fitted online by recursive least squares
  with a forgetting factor (one small RLS per node, batched with einsum).

Online and causal: ``update`` takes the loads observed in one interval; ``forecast`` uses only what
was updated so far. Missing values (NaN) are replaced by the forecast made for them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class LoadForecaster:
    """Per-node load forecast: ``update(loads)`` each interval, then ``forecast(steps)``."""

    def __init__(
        self,
        n_nodes: int,
        *,
        season_length: int | None = None,
        ar_order: int = 4,
        rls_forgetting: float = 0.995,
        error_decay: float = 0.97,
        ewma_alpha: float = 0.3,
        holt: tuple[float, float, float] = (0.5, 0.1, 0.9),
        holt_winters: tuple[float, float, float, float] = (0.3, 0.02, 0.2, 0.95),
    ) -> None:
        if n_nodes < 1:
            raise ValueError("n_nodes must be >= 1")
        if season_length is not None and season_length < 2:
            raise ValueError("season_length must be >= 2")
        self.n_nodes = int(n_nodes)
        self.season_length = season_length
        self.ar_order = int(ar_order)
        self.rls_forgetting = float(rls_forgetting)
        self.error_decay = float(error_decay)
        self.ewma_alpha = float(ewma_alpha)
        self.holt = holt
        self.holt_winters = holt_winters
        self.members = ["last", "ewma", "holt"]
        if season_length:
            self.members.append("holt_winters")
        if self.ar_order > 0:
            self.members.append("ar")
        n = self.n_nodes
        self.t = 0
        self._last = np.zeros(n)
        self._ewma = np.zeros(n)
        self._level = np.zeros(n)
        self._trend = np.zeros(n)
        if season_length:
            self._hw_level = np.zeros(n)
            self._hw_trend = np.zeros(n)
            self._season = np.zeros((n, season_length))
            self._first_season = np.zeros((n, season_length))
        d = self.ar_order + 1
        self._theta = np.zeros((n, d))
        self._P = np.tile(np.eye(d) * 100.0, (n, 1, 1))
        self._lags = np.zeros((n, self.ar_order))  # most recent first
        self._mse = np.zeros((len(self.members), n))
        self._pred1 = np.zeros((len(self.members), n))

    # ---- members' one-step forecasts -----------------------------------------------------------
    def _member_paths(self, steps: int) -> FloatArray:
        """Forecasts 1..steps ahead from every member: shape (members, steps, nodes)."""
        n = self.n_nodes
        h = np.arange(1, steps + 1, dtype=float)[:, None]
        out = np.empty((len(self.members), steps, n))
        m = 0
        out[m] = self._last
        m += 1
        out[m] = self._ewma
        m += 1
        _, _, phi = self.holt
        damp = np.cumsum(phi**h, axis=0)  # sum_{k=1..h} phi^k
        out[m] = self._level + damp * self._trend
        m += 1
        if self.season_length:
            if self.t < self.season_length:
                out[m] = self._last  # no full season seen yet
            else:
                phi_s = self.holt_winters[3]
                damp_s = np.cumsum(phi_s**h, axis=0)
                idx = (self.t + np.arange(steps)) % self.season_length
                out[m] = self._hw_level + damp_s * self._hw_trend + self._season[:, idx].T
            m += 1
        if self.ar_order > 0:
            lags = self._lags.copy()
            for s in range(steps):
                y = self._theta[:, 0] + np.einsum("nk,nk->n", self._theta[:, 1:], lags)
                out[m, s] = y
                lags = np.concatenate([y[:, None], lags[:, :-1]], axis=1)
        return out

    def _weights(self) -> FloatArray:
        inv = 1.0 / (self._mse + 1e-12 + 1e-9 * self._mse.max(axis=0, keepdims=True))
        return inv / inv.sum(axis=0, keepdims=True)

    # ---- public API ----------------------------------------------------------------------------
    def update(self, loads: FloatArray | list[float]) -> None:
        """Feed one interval's observed load per node (NaN = missing)."""
        y = np.asarray(loads, dtype=float).reshape(self.n_nodes)
        if self.t == 0:
            y = np.nan_to_num(y, nan=0.0)
            self._last[:] = y
            self._ewma[:] = y
            self._level[:] = y
            self._lags[:] = y[:, None]
            if self.season_length:
                self._first_season[:, 0] = y
            self.t = 1
            self._pred1 = self._member_paths(1)[:, 0, :]
            return
        missing = np.isnan(y)
        if missing.any():
            y = np.where(missing, self.forecast(1), y)
        err = y[None, :] - self._pred1
        self._mse = self.error_decay * self._mse + (1.0 - self.error_decay) * err * err

        self._last = y
        a = self.ewma_alpha
        self._ewma = a * y + (1.0 - a) * self._ewma
        alpha, beta, phi = self.holt
        prev = self._level
        self._level = alpha * y + (1.0 - alpha) * (prev + phi * self._trend)
        self._trend = beta * (self._level - prev) + (1.0 - beta) * phi * self._trend
        if self.season_length:
            self._update_holt_winters(y)
        if self.ar_order > 0:
            self._update_ar(y)
        self.t += 1
        self._pred1 = self._member_paths(1)[:, 0, :]

    def _update_holt_winters(self, y: FloatArray) -> None:
        m = self.season_length
        assert m is not None
        pos = self.t % m
        if self.t < m:
            self._first_season[:, pos] = y
            if self.t == m - 1:  # one full season: level = its mean, season = deviations
                mean = self._first_season.mean(axis=1)
                self._hw_level = mean
                self._season = self._first_season - mean[:, None]
            return
        alpha, beta, gamma, phi = self.holt_winters
        prev = self._hw_level
        s = self._season[:, pos]
        self._hw_level = alpha * (y - s) + (1.0 - alpha) * (prev + phi * self._hw_trend)
        self._hw_trend = beta * (self._hw_level - prev) + (1.0 - beta) * phi * self._hw_trend
        self._season[:, pos] = gamma * (y - self._hw_level) + (1.0 - gamma) * s

    def _update_ar(self, y: FloatArray) -> None:
        lam = self.rls_forgetting
        x = np.concatenate([np.ones((self.n_nodes, 1)), self._lags], axis=1)
        px = np.einsum("nij,nj->ni", self._P, x)
        denom = lam + np.einsum("ni,ni->n", x, px)
        gain = px / denom[:, None]
        err = y - np.einsum("ni,ni->n", self._theta, x)
        self._theta += gain * err[:, None]
        self._P = (self._P - gain[:, :, None] * px[:, None, :]) / lam
        # forgetting inflates P along directions the data stops exciting (a flat series): cap it
        tr = np.einsum("nii->n", self._P)
        big = tr > 1e6
        if big.any():
            self._P[big] *= (1e6 / tr[big])[:, None, None]
        self._lags = np.concatenate([y[:, None], self._lags[:, :-1]], axis=1)

    def forecast(self, steps: int = 1) -> FloatArray:
        """Each node's load predicted ``steps`` intervals ahead, shape (n_nodes,)."""
        return self.forecast_path(steps)[-1]

    def forecast_path(self, horizon: int) -> FloatArray:
        """Forecasts 1..horizon intervals ahead, shape (horizon, n_nodes)."""
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        if self.t == 0:
            return np.zeros((horizon, self.n_nodes))
        paths = self._member_paths(horizon)
        return np.einsum("mn,msn->sn", self._weights(), paths)

    def member_weights(self) -> dict[str, FloatArray]:
        """The current combination weight of each member per node (explains a forecast)."""
        w = self._weights()
        return {name: w[i] for i, name in enumerate(self.members)}
