"""Generalized ESD (Rosner, 1983) applied to each point's trailing window.

Why: the textbook statistical outlier test, with a proper significance level and no need to
know how many outliers there are - it removes up to ``max_outliers`` extreme points one at a
time and keeps the largest count whose statistic beats Rosner's critical value, so a cluster
of outliers cannot mask itself the way it does in a single Grubbs test. Streaming use: a
point alarms when the test on the window that *ends* with it declares it an outlier, which is
causal. All windows are tested at once (one row per point), so the cost is
``O(points x window x max_outliers)`` array work with no per-point Python loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from tasks.detection.timeseries._common import (
    Scored,
    SeriesDetector,
    Span,
    refractory,
    robust_z,
    sampling_interval,
    to_points,
)


def rosner_lambda(n: np.ndarray, alpha: float) -> np.ndarray:
    """Critical value for the next removal when ``n`` points remain (two-sided test)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 1.0 - alpha / (2.0 * n)
        t = stats.t.ppf(p, n - 2.0)
        lam = (n - 1.0) * t / np.sqrt((n - 2.0 + t**2) * n)
    return np.where(n > 2, lam, np.inf)


def gesd_last(
    values: np.ndarray, window: int, max_outliers: int, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Run GESD on every full trailing window; report on its *last* point.

    Returns ``(ratio, flagged)`` per window: ``ratio`` is the last point's ESD statistic over
    Rosner's critical value at the step it was removed (or after the last step if it never
    was), and ``flagged`` whether the test counts it among the outliers.
    """
    rows = sliding_window_view(values, window).astype(float)
    m = len(rows)
    mask = np.isfinite(rows)
    rows = rows - np.nanmedian(np.where(mask, rows, np.nan), axis=1, keepdims=True)
    rows = np.where(mask, rows, 0.0)
    idx = np.arange(m)
    stat = np.zeros((m, max_outliers))
    crit = np.full((m, max_outliers), np.inf)
    removed_at = np.full(m, -1)
    last_stat = np.zeros(m)
    for step in range(max_outliers):
        cnt = mask.sum(axis=1)
        s1 = np.where(mask, rows, 0.0).sum(axis=1)
        mean = s1 / np.maximum(cnt, 1)
        centred = np.where(mask, rows - mean[:, None], 0.0)
        var = (centred**2).sum(axis=1) / np.maximum(cnt - 1, 1)
        std = np.sqrt(var)
        dev = np.where(mask, np.abs(centred), -1.0)
        j = dev.argmax(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(std > 0, dev[idx, j] / std, 0.0)
            last_stat = np.where(std > 0, np.abs(centred[:, -1]) / std, 0.0)
        stat[:, step] = r
        crit[:, step] = rosner_lambda(cnt, alpha)
        hit_last = (j == window - 1) & (removed_at < 0) & mask[:, -1]
        removed_at = np.where(hit_last, step, removed_at)
        mask[idx, j] = False
    beats = stat > crit
    n_out = np.where(beats.any(axis=1), max_outliers - np.argmax(beats[:, ::-1], axis=1), 0)
    flagged = (removed_at >= 0) & (removed_at < n_out)
    at = np.clip(removed_at, 0, max_outliers - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(
            removed_at >= 0,
            stat[idx, at] / crit[idx, at],
            last_stat / crit[:, -1],
        )
    return np.nan_to_num(ratio, nan=0.0, posinf=0.0), flagged


class GeneralizedESDDetector(SeriesDetector):
    """Rosner's generalized ESD test on each point's trailing window.

    Parameters
    ----------
    window:
        Points (or a span) in the tested window, the point itself being the last. A count
        rather than a time span by default: the test's power and its cost depend on the
        number of points, not on how long they took to arrive.
    max_outliers:
        Upper bound on outliers per window (Rosner's ``r``).
    alpha:
        Significance level of each window's test. Every point gets its own test, so this is
        far below the textbook 0.05 to keep the false-alarm rate per day reasonable.
    refractory:
        After an alarm, scores are damped for this span (one incident, one alarm).
    """

    name = "esd"

    def __init__(
        self,
        window: Span = 288,
        max_outliers: int = 10,
        alpha: float = 0.001,
        refractory: Span = "12h",
    ) -> None:
        self.window = window
        self.max_outliers = max_outliers
        self.alpha = alpha
        self.refractory = refractory

    def _history_span(self, interval: pd.Timedelta) -> int:
        return to_points(self.window, interval) + to_points(self.refractory, interval, 0)

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        interval = sampling_interval(index)
        window = to_points(self.window, interval, minimum=3)
        period = to_points(self.refractory, interval, minimum=0)
        n = len(values)
        scores = np.zeros(n)
        # Only windows that end in the scored part, or in the refractory reach before it.
        first = max(window - 1, start - period)
        if n >= window and first < n:
            k = int(min(max(self.max_outliers, 1), window - 2))
            ratio, flagged = gesd_last(values[first - window + 1 :], window, k, self.alpha)
            s = ratio / (1.0 + ratio)
            scores[first:] = np.where(flagged, np.maximum(s, 0.5), np.minimum(s, 0.4999))
        z = robust_z(values, to_points("1D", interval, minimum=2), 30)
        return Scored(refractory(scores, period), z)
