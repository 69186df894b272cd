"""Forecast residuals: exponential smoothing (statsmodels) refitted on a rolling window.

The classic forecasting approach to anomaly detection: predict each point from the past,
alarm when the one-step-ahead error is far beyond the errors the model usually makes. The
model is Holt-Winters exponential smoothing (``statsmodels.tsa.holtwinters``): a level and,
when the training span shows a daily cycle, an additive daily season. It is refitted every
``refit_every`` on the trailing ``train`` span; between refits the fitted smoothing constants
are kept and the level and season are updated point by point with each new value (the
model's own recursion), so a forecast never uses the point it predicts. The error scale is
the robust spread (1.4826 MAD) of the model's in-sample one-step errors.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.detection.timeseries._chunked import ChunkedModelDetector
from tasks.detection.timeseries._common import (
    Scored,
    Span,
    calibrate,
    refractory,
    robust_z,
    sampling_interval,
    to_points,
)
from tasks.detection.timeseries.adaptive import autocorrelation


@dataclass(frozen=True)
class _Smoother:
    alpha: float  # level smoothing
    gamma: float  # season smoothing (0 without a season)
    level: float
    season: np.ndarray  # the last ``period`` seasonal states, oldest first (empty: none)
    scale: float


class ForecastResidualDetector(ChunkedModelDetector):
    """Alarm when a value is far from its exponential-smoothing forecast.

    Parameters
    ----------
    train:
        Trailing span each model is fitted on.
    refit_every:
        How often the model is refitted while replaying a long window.
    season:
        Candidate seasonal period; used when the training span holds two of them and its
        autocorrelation at that lag is at least ``season_min_autocorr``.
    threshold:
        One-step error, in robust standard deviations of the in-sample errors, that scores 0.5.
    refractory:
        After an alarm, scores are damped for this span.
    min_train:
        Points needed before the first model is fitted.
    """

    name = "forecast"
    min_train_floor = 10

    def __init__(
        self,
        train: Span = "3D",
        refit_every: Span = "1D",
        season: Span | None = "1D",
        season_min_autocorr: float = 0.5,
        threshold: float = 6.0,
        refractory: Span = "12h",
        min_train: int = 200,
    ) -> None:
        self.train = train
        self.refit_every = refit_every
        self.season = season
        self.season_min_autocorr = season_min_autocorr
        self.threshold = threshold
        self.refractory = refractory
        self.min_train = min_train

    def _history_span(self, interval: pd.Timedelta) -> int:
        return to_points(self.train, interval) + to_points(self.refractory, interval, minimum=0)

    def _period(self, index: pd.Index) -> int:
        if self.season is None:
            return 0
        return to_points(self.season, sampling_interval(index), minimum=2)

    def _train(self, values: np.ndarray, index: pd.Index) -> _Smoother | None:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        x = pd.Series(values).interpolate(limit_direction="both").to_numpy()
        if len(x) < max(int(self.min_train) // 2, 10) or not np.isfinite(x).all():
            return None
        period = self._period(index)
        seasonal = (
            period >= 2
            and len(x) >= 2 * period
            and autocorrelation(x, period) >= self.season_min_autocorr
        )
        if np.ptp(x) <= 1e-12 * (1.0 + abs(x[0])):  # constant: nothing to fit
            return _Smoother(1.0, 0.0, float(x[-1]), np.zeros(0), 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ExponentialSmoothing(
                x,
                trend=None,
                seasonal="add" if seasonal else None,
                seasonal_periods=period if seasonal else None,
                initialization_method="heuristic" if seasonal else "estimated",
            ).fit()
        resid = np.asarray(model.resid, dtype=float)
        resid = resid[np.isfinite(resid)]
        mad = float(np.median(np.abs(resid - np.median(resid)))) if len(resid) else 0.0
        scale = max(1.4826 * mad, float(np.std(resid)) if mad == 0 else 0.0)
        season = np.asarray(model.season, dtype=float)[-period:] if seasonal else np.zeros(0)
        gamma = float(model.params.get("smoothing_seasonal") or 0.0) if seasonal else 0.0
        return _Smoother(
            alpha=float(model.params["smoothing_level"]),
            gamma=gamma if np.isfinite(gamma) else 0.0,
            level=float(np.asarray(model.level)[-1]),
            season=season,
            scale=scale,
        )

    def _apply(
        self, model: _Smoother, values: np.ndarray, index: pd.Index, lo: int, hi: int
    ) -> np.ndarray:
        out = np.full(hi - lo, np.nan)
        level, alpha, gamma = model.level, model.alpha, model.gamma
        season = list(model.season)
        floor = 1e-9 * (1.0 + abs(level))
        scale = max(model.scale, floor)
        for i, x in enumerate(values[lo:hi].tolist()):
            s = season[0] if season else 0.0
            if x != x:  # NaN: no forecast error, no update (the season still moves on)
                if season:
                    season.append(season.pop(0))
                continue
            error = x - (level + s)
            if model.scale <= floor:  # constant so far: any move is a step
                out[i] = np.inf if abs(error) > floor else 0.0
            else:
                out[i] = abs(error) / (scale * self.threshold)
            new_level = alpha * (x - s) + (1.0 - alpha) * level
            if season:
                season.pop(0)
                season.append(gamma * (x - new_level) + (1.0 - gamma) * s)
            level = new_level
        return out

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        interval = sampling_interval(index)
        excess = self._excess(values, index, start, interval)
        scores = refractory(calibrate(excess, 1.0), to_points(self.refractory, interval, 0))
        z = robust_z(values, to_points("1D", interval, minimum=2), 30)
        return Scored(scores, z)
