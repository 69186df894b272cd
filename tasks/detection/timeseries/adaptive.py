"""Adaptive thresholds learnt from history, seasonal when the history shows a season.

Why: a fixed threshold is wrong twice a day for anything with a daily rhythm (night traffic
below the day's floor, day traffic above the night's ceiling). When the trailing history has a
season (autocorrelation at one of the candidate periods, e.g. one day of 5-minute points,
at least ``min_autocorr``), it is decomposed with STL (MSTL for several periods) and the
thresholds are learnt on the residual: the seasonal profile is carried forward, the level
follows a short trailing median of the de-seasonalised series, and the band is the
residuals' ``quantile`` range. Without a season the band is simply the trailing rolling
quantile range of the values. Either way the model is re-learnt every ``refit_every`` on the
trailing ``train`` span only, so scores are causal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.tsa.seasonal import MSTL, STL

from tasks.detection.timeseries._chunked import ChunkedModelDetector
from tasks.detection.timeseries._common import (
    Scored,
    Span,
    calibrate,
    lagged,
    refractory,
    robust_z,
    sampling_interval,
    to_points,
)


def band_excess(x: np.ndarray, high: np.ndarray, median: np.ndarray, low: np.ndarray) -> np.ndarray:
    """How far ``x`` is outside ``[low, high]`` in units of the band's half-width on that side."""
    eps = 1e-9 * (1.0 + np.abs(np.nan_to_num(median)))
    with np.errstate(invalid="ignore"):
        up = (x - high) / np.maximum(high - median, eps)
        down = (low - x) / np.maximum(median - low, eps)
        return np.fmax(up, down)


def stl_jumps(period: int, seasonal: int = 7) -> dict[str, int]:
    """R's ``stl`` defaults: evaluate each LOESS smoother every ~10% of its window.

    statsmodels evaluates at every point by default, which is ~30x slower on a few thousand
    5-minute points and changes the decomposition very little (Cleveland et al., 1990).
    """

    def next_odd(v: float) -> int:
        k = int(np.ceil(v))
        return k if k % 2 else k + 1

    trend = next_odd(1.5 * period / (1.0 - 1.5 / seasonal))
    low_pass = next_odd(period)
    return {
        "seasonal_jump": int(np.ceil(seasonal / 10)),
        "trend_jump": int(np.ceil(trend / 10)),
        "low_pass_jump": int(np.ceil(low_pass / 10)),
    }


def autocorrelation(x: np.ndarray, lag: int) -> float:
    if lag <= 0 or len(x) <= lag + 2:
        return 0.0
    a, b = x[lag:], x[:-lag]
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@dataclass(frozen=True)
class _Seasonal:
    """Seasonal profiles (the last cycle of each component) and the residual band."""

    profiles: tuple[np.ndarray, ...]
    level_points: int
    high: float
    median: float
    low: float

    def seasonal(self, offsets: np.ndarray) -> np.ndarray:
        """Seasonal component at ``offsets`` points after the end of the training span."""
        out = np.zeros(len(offsets))
        for prof in self.profiles:
            out += prof[offsets % len(prof)]
        return out


@dataclass(frozen=True)
class _Rolling:
    """No season: thresholds are the trailing rolling quantiles."""

    window: int
    min_points: int


class AdaptiveThresholdDetector(ChunkedModelDetector):
    """Seasonal (STL/MSTL) or rolling-quantile thresholds, re-learnt on trailing history.

    Parameters
    ----------
    seasons:
        Candidate periods, tried in order; each needs two full cycles of history.
    min_autocorr:
        Autocorrelation at a period for it to count as a season.
    train:
        Trailing span a model is learnt from.
    refit_every:
        How often the model is re-learnt while replaying a long window.
    min_train:
        Points needed before anything can alarm.
    quantile:
        Band = residual (or value) quantiles ``1 - quantile`` .. ``quantile``.
    margin:
        Alarm when a point is outside the band by this fraction of its half-width.
    level_window:
        Span of the trailing median that tracks the de-seasonalised level.
    refractory:
        After an alarm, scores are damped for this span (one incident, one alarm).
    """

    name = "adaptive"

    def __init__(
        self,
        seasons: tuple[Span, ...] = ("1D", "7D"),
        min_autocorr: float = 0.5,
        train: Span = "14D",
        refit_every: Span = "1D",
        min_train: int = 200,
        quantile: float = 0.999,
        margin: float = 0.2,
        level_window: Span = "1h",
        refractory: Span = "12h",
    ) -> None:
        self.seasons = seasons
        self.min_autocorr = min_autocorr
        self.train = train
        self.refit_every = refit_every
        self.min_train = min_train
        self.quantile = quantile
        self.margin = margin
        self.level_window = level_window
        self.refractory = refractory

    def _history_span(self, interval: pd.Timedelta) -> int:
        return to_points(self.train, interval) + to_points(self.refractory, interval, minimum=0)

    def _train(self, values: np.ndarray, index: pd.Index) -> _Seasonal | _Rolling | None:
        interval = sampling_interval(index)
        train = to_points(self.train, interval, minimum=2)
        x = pd.Series(values).interpolate(limit_direction="both").to_numpy()
        if len(x) < max(int(self.min_train), 2) or np.isnan(x).all():
            return None
        periods = sorted(
            p
            for p in {to_points(s, interval, minimum=2) for s in self.seasons}
            if len(x) >= 2 * p + 1 and autocorrelation(x, p) >= self.min_autocorr
        )
        if not periods:
            return _Rolling(train, max(int(self.min_train), 2))
        jumps = stl_jumps(periods[0])
        if len(periods) == 1:
            stl = STL(x, period=periods[0], robust=True, **jumps)
            seasonal = np.asarray(stl.fit().seasonal)[:, None]
        else:
            fitted = MSTL(x, periods=periods, stl_kwargs=dict(jumps)).fit().seasonal
            seasonal = np.asarray(fitted).reshape(len(x), -1)
        profiles = tuple(
            seasonal[len(x) - p :, j].copy() for j, p in enumerate(periods[: seasonal.shape[1]])
        )
        level_points = to_points(self.level_window, interval)
        deseason = x - seasonal.sum(axis=1)
        level = lagged(deseason, level_points, 1, "median")
        resid = (deseason - level)[np.isfinite(level)]
        if len(resid) < 2:
            return None
        return _Seasonal(
            profiles,
            level_points,
            float(np.quantile(resid, self.quantile)),
            float(np.median(resid)),
            float(np.quantile(resid, 1.0 - self.quantile)),
        )

    def _apply(
        self, model: _Seasonal | _Rolling, values: np.ndarray, index: pd.Index, lo: int, hi: int
    ) -> np.ndarray:
        if isinstance(model, _Rolling):
            first = max(0, lo - model.window)
            x = values[first:hi]
            q = self.quantile
            high = lagged(x, model.window, model.min_points, "quantile", q)
            low = lagged(x, model.window, model.min_points, "quantile", 1.0 - q)
            median = lagged(x, model.window, model.min_points, "median")
            return band_excess(x, high, median, low)[lo - first :]
        first = max(0, lo - model.level_points)
        offsets = np.arange(first, hi) - lo
        deseason = values[first:hi] - model.seasonal(offsets)
        level = lagged(deseason, model.level_points, 1, "median")
        resid = (deseason - level)[lo - first :]
        n = hi - lo
        return band_excess(
            resid, np.full(n, model.high), np.full(n, model.median), np.full(n, model.low)
        )

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        interval = sampling_interval(index)
        excess = self._excess(values, index, start, interval)
        scores = refractory(
            calibrate(excess, self.margin), to_points(self.refractory, interval, minimum=0)
        )
        z = robust_z(values, to_points("1D", interval, minimum=2), 30)
        return Scored(scores, z)
