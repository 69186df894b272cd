"""Contextual anomaly detection: is this value one the recent values have led to before?

The idea of Smirnov's Contextual Anomaly Detector (CAD OSE, one of the best detectors on
NAB), written here from its description: a series becomes a stream of discrete *facts*
(each value's level), the detector learns which facts follow which *contexts* (the facts
just before), and a point is anomalous when the contexts it comes from did not predict it.
What that sees beyond a range test: a value inside the usual range that arrives in an
unusual order (an oscillation that changed its rhythm, a daily shape that broke, a level
the series visits only by other paths), and, as a range test does, a value at a level never
seen. It learns from one example, so a pattern seen once is normal afterwards (fast
adaptation), and after an alarm a rest period keeps one alarm per incident.

This version:

1. **Levels.** The range is fixed from the first ``min_points`` points (their min and max;
   CAD takes the whole series' range, which is not causal). A value's level is its
   position in that range in ``levels`` equal steps; outside the range the steps go on
   (up to ``levels`` more on either side), so a new extreme is a new level.
2. **Contexts.** For each order ``j`` in ``0..order``, the context is the ``j`` levels
   before the point (order 0: "anything", i.e. has this level been seen at all). A table per
   order keeps which levels have followed each context.
3. **Score.** The share of orders whose context did not predict the point's level (a context
   never seen predicts nothing). ``threshold`` of it is the alarm (0.5 after calibration).
   Every point is learned after it is scored; nothing is forgotten within the history.

Everything is a function of the points before the scored one, so it is causal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.detection.timeseries._common import (
    Scored,
    SeriesDetector,
    Span,
    calibrate,
    refractory,
    robust_z,
    sampling_interval,
)


def levels_of(values: np.ndarray, lo: float, width: float, levels: int, far: float) -> np.ndarray:
    """Level of each value in ``[lo, lo + width]`` cut into ``levels`` steps (ints).

    A value beyond the range by less than ``far`` times its width is put in the end level
    (the tails of the noise the range was learned on); one further out is a level of its
    own, ``-1`` below and ``levels`` above. NaN stays NaN.
    """
    with np.errstate(invalid="ignore"):
        rel = (values - lo) / width
        pos = np.clip(np.floor(rel * levels), 0, levels - 1)
        pos = np.where(rel > 1.0 + far, levels, np.where(rel < -far, -1, pos))
    return np.where(np.isnan(values), np.nan, pos)


def surprise(symbols: np.ndarray, start: int, order: int, support: int) -> np.ndarray:
    """Share of the voting contexts (orders ``0..order``) that had never been followed by the
    point's level (0 before ``start`` and at missing points; learning starts at 0).

    A context votes once it has been seen ``support`` times: that a context seen twice has
    not yet been followed by every level says nothing. The empty context (order 0: has this
    level ever been seen) always votes.
    """
    out = np.zeros(len(symbols))
    tables: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(order + 1)]
    counts: list[dict[tuple[int, ...], int]] = [{} for _ in range(order + 1)]
    recent: list[int] = []
    for t, s in enumerate(symbols.tolist()):
        if s != s:  # NaN: a missing point neither scores nor breaks the context
            continue
        level = int(s)
        missed = voted = 0
        for j in range(min(order, len(recent)) + 1):
            ctx = tuple(recent[len(recent) - j :])
            seen = tables[j].setdefault(ctx, set())
            n = counts[j].get(ctx, 0)
            if j == 0 or n >= support:
                voted += 1
                missed += level not in seen
            seen.add(level)
            counts[j][ctx] = n + 1
        if t >= start:
            out[t] = missed / voted
        recent.append(level)
        if len(recent) > order:
            recent.pop(0)
    return out


class ContextualDetector(SeriesDetector):
    """Which levels have followed the recent levels before (after CAD OSE).

    Parameters
    ----------
    levels:
        Steps the learned range is cut into (CAD uses 3 bits: 8).
    order:
        Longest context, in points (the contexts of length 0 to ``order`` vote).
    threshold:
        Share of the contexts that did not predict a point at which it alarms (CAD: 0.75).
    support:
        Times a context must have been seen before its failure to predict counts.
    min_points:
        Points that fix the range and start the learning before anything can alarm.
    history:
        Span of the history the detection cycle keeps for it (what it learns from).
    refractory:
        After an alarm, scores are damped for this span (CAD's rest period).
    max_points:
        Cap on the points any span may hold.
    """

    name = "contextual"

    def __init__(
        self,
        levels: int = 8,
        order: int = 3,
        threshold: float = 0.75,
        support: int = 10,
        far: float = 0.5,
        min_points: int = 300,
        history: Span = "14D",
        refractory: Span = "12h",
        max_points: int = 8192,
    ) -> None:
        self.levels = levels
        self.order = order
        self.threshold = threshold
        self.support = support
        self.far = far
        self.min_points = min_points
        self.history = history
        self.refractory = refractory
        self.max_points = max_points

    def _history_span(self, interval: pd.Timedelta) -> int:
        return max(self._points(self.history, interval), int(self.min_points)) + self._points(
            self.refractory, interval, minimum=0
        )

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        interval = sampling_interval(index)
        minp = max(int(self.min_points), 2)
        levels = max(int(self.levels), 2)
        finite = np.flatnonzero(np.isfinite(values))
        if len(finite) <= minp:
            return Scored(np.zeros(len(values)), np.zeros(len(values)))
        learn = values[finite[:minp]]
        lo, hi = float(learn.min()), float(learn.max())
        # A range of (almost) nothing - a flat gauge - still has a width: any change of it
        # is a new level.
        width = max(hi - lo, 1e-9 * (1.0 + abs(lo)))
        symbols = levels_of(values, lo, width, levels, float(self.far))
        excess = surprise(
            symbols, int(finite[minp]), max(int(self.order), 0), max(int(self.support), 1)
        )
        scores = calibrate(excess, float(self.threshold))
        scores = refractory(scores, self._points(self.refractory, interval, minimum=0))
        z = robust_z(values, self._points("1D", interval, minimum=2), minp)
        return Scored(scores, z, {"surprise": excess})
