"""Relative entropy of the recent distribution against the past one (after Wang et al., 2011).

Wang, Talwar, Schwan and others ("Statistical techniques for online anomaly detection in data
centers", IM 2011) quantise a metric into bins, build the histogram of a short recent window
and test it against the histograms seen before with the relative entropy (Kullback-Leibler)
statistic, which is chi-square distributed under "same distribution". This version keeps the
idea and makes it causal and scale-free:

1. Each value becomes its rank ``u`` among the trailing ``history`` points (a probability
   integral transform against the series' own past: no range to guess, robust to outliers).
2. The ``u`` of the last ``recent`` points are binned into ``bins`` equal bins, and so are the
   ``u`` of the window before and of the same hours of the previous days (past distributions,
   with ties, quantisation and the daily cycle as the series really has them).
3. ``G = 2 Σ O log(O / E)`` (``O`` recent counts, ``E`` the reference's shares times the
   recent count, add-half smoothed) is ``2·n·KL(recent‖past)``; under "nothing changed" it is
   about chi-square with ``bins - 1`` degrees of freedom. The smallest ``G`` over the past
   windows is tested: the recent window is anomalous when it is like none of them. The score
   is ``G / crit`` calibrated so that 0.5 is ``G`` at the chi-square critical value of
   ``alpha``.

It sees what a single-point test cannot: a level shift within the usual range, a change of
variance, a distribution that drifts, a quantised gauge that changes state frequencies.
Everything is trailing, so it is causal; the refractory period keeps one alarm per change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2

from tasks.detection.timeseries._common import (
    Scored,
    SeriesDetector,
    Span,
    calibrate,
    refractory,
    robust_z,
    robust_z_steps,
    sampling_interval,
)


def rolling_counts(onehot: np.ndarray, width: int, lag: int = 0) -> np.ndarray:
    """Per row, the column sums of ``onehot`` over rows ``[t - lag - width + 1, t - lag]``."""
    csum = np.vstack([np.zeros((1, onehot.shape[1])), np.cumsum(onehot, axis=0)])
    n = len(onehot)
    end = np.arange(n) + 1 - lag
    start = end - width
    end_c = np.clip(end, 0, n)
    start_c = np.clip(start, 0, n)
    return csum[end_c] - csum[start_c]


def g_statistic(recent: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``2 Σ O log(O/E)`` per row: recent counts against the reference's (smoothed) shares."""
    n_recent = recent.sum(axis=1, keepdims=True)
    ref = reference + 0.5
    expected = n_recent * ref / ref.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(recent > 0, recent * np.log(recent / expected), 0.0)
    return 2.0 * terms.sum(axis=1)


class RelativeEntropyDetector(SeriesDetector):
    """Is the recent window's distribution one the series has had before?

    Parameters
    ----------
    history:
        Trailing span each value is ranked in (the probability integral transform).
    recent:
        Span of the recent window whose histogram is tested.
    season, seasons:
        "The past" is the window just before the recent one and the windows at the same time
        of the ``seasons`` previous seasons (days): the recent window is normal when it is
        like any of them (Wang et al. keep several past models for the same reason). A daily
        cycle is compared with the same hours of other days; a change that persists is
        normal again once the window before the recent one has seen it (one alarm per change).
    bins:
        Number of equal bins of the rank.
    alpha:
        Significance of the chi-square test: ``G`` at its critical value scores 0.5.
    refractory:
        After an alarm, scores are damped for this span (one change, one alarm).
    min_points:
        Points of history before anything can alarm.
    max_points:
        Cap on the points any span may hold (fine-grained metrics).
    """

    name = "relentropy"

    def __init__(
        self,
        history: Span = "7D",
        recent: Span = "4h",
        season: Span = "1D",
        seasons: int = 3,
        bins: int = 8,
        alpha: float = 1e-4,
        refractory: Span = "1D",
        min_points: int = 300,
        max_points: int = 4096,
    ) -> None:
        self.history = history
        self.recent = recent
        self.season = season
        self.seasons = seasons
        self.bins = bins
        self.alpha = alpha
        self.refractory = refractory
        self.min_points = min_points
        self.max_points = max_points

    def _history_span(self, interval: pd.Timedelta) -> int:
        reach = self._points(self.season, interval, 2) * max(int(self.seasons), 1)
        reach += 2 * self._points(self.recent, interval)
        return (
            max(reach, int(self.min_points))
            + self._points(self.history, interval)
            + self._points(self.refractory, interval, minimum=0)
        )

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        interval = sampling_interval(index)
        h = self._points(self.history, interval, minimum=2)
        w = self._points(self.recent, interval, minimum=2)
        period = self._points(self.season, interval, minimum=2)
        k = max(int(self.seasons), 1)
        bins = max(int(self.bins), 2)
        minp = max(int(self.min_points), 2)
        x = pd.Series(values)
        u = x.rolling(h, min_periods=min(minp, h)).rank(pct=True).to_numpy()
        valid = np.isfinite(u)
        which = np.clip((np.nan_to_num(u) * bins).astype(int), 0, bins - 1)
        which = np.where(u >= 1.0, bins - 1, which)
        onehot = np.zeros((len(values), bins))
        onehot[np.flatnonzero(valid), which[valid]] = 1.0
        recent = rolling_counts(onehot, w)
        lags = [w] + [j * period for j in range(1, k + 1)]
        g = np.min(
            [g_statistic(recent, rolling_counts(onehot, w, lag=lag)) for lag in lags], axis=0
        )
        crit = float(chi2.isf(float(self.alpha), bins - 1))
        seen = np.cumsum(valid)
        ready = (seen >= max(k * period + 2 * w, minp)) & (recent.sum(axis=1) >= w // 2) & valid
        excess = np.where(ready, g / crit, 0.0)
        # A value out of a constant window is a change of state (a gauge that flips): it
        # alarms at once instead of waiting for the histogram to fill.
        z, step = robust_z_steps(values, w, min(w, minp))
        excess = np.where(step & (seen >= minp), np.inf, excess)
        scores = refractory(calibrate(excess, 1.0), self._points(self.refractory, interval, 0))
        z = np.where(step, z, robust_z(values, self._points("1D", interval, minimum=2), minp))
        return Scored(scores, z, {"g": g})
