"""Plumbing shared by the time-series detectors.

Every detector here follows one pattern, so the live detection cycle and the backtester get
the same numbers: ``fit`` keeps the tail of the history it is given, and ``score`` runs one
causal, vectorised pass over ``history + window`` and returns the window's part. Rolling
statistics are always *lagged* (computed on the points before the one being scored), so a
point's score never sees the future. Spans such as ``"2h"`` are converted to a number of points
with the series' median sampling interval, so the same defaults suit 30-second and 5-minute
metrics; plain integers are taken as a number of points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np
import pandas as pd
from sklearn.base import clone

from tasks.detection.base import Anomaly, BaseDetector, DetectionResult
from tasks.severity import severity_from_z

# Used when the index carries no usable time (RangeIndex, single point): the platform's
# usual scrape interval.
DEFAULT_INTERVAL = pd.Timedelta("5min")
ALARM = 0.5
# Steps of the index that define its sampling interval (then fixed: see sampling_interval).
# Few, because the points until then score 0: with 32, a series the cycle had scraped fewer
# than 33 times could not alarm (the demo's memory leak on a 3 s cycle went unseen for its
# first 100 s); the median of 8 regular scrape steps is already exact.
INTERVAL_STEPS = 8
# Robust z of a change from a constant trailing window (a step): severity "high".
STEP_Z = 6.0
Span: TypeAlias = str | int | pd.Timedelta


def sampling_interval(index: pd.Index) -> pd.Timedelta:
    """Median positive spacing of the *first* ``INTERVAL_STEPS`` steps of a DatetimeIndex.

    Only the beginning of the series is read, so the interval (and every span converted with
    it) is known after ``INTERVAL_STEPS + 1`` distinct timestamps and never changes when later
    points arrive: scores stay causal to the last row (a file truncated anywhere scores its
    prefix exactly as the full file does). Repeated timestamps are ignored. The points of this
    warm-up are scored 0 (:func:`warm_up`).
    """
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return DEFAULT_INTERVAL
    head = index[: 4 * INTERVAL_STEPS + 1].as_unit("ns").asi8
    steps = np.diff(head)
    steps = steps[steps > 0][:INTERVAL_STEPS]
    if len(steps) < INTERVAL_STEPS and len(index) > len(head):
        # Many repeated timestamps at the start: read further, still only the first steps.
        steps = np.diff(index.as_unit("ns").asi8)
        steps = steps[steps > 0][:INTERVAL_STEPS]
    if not len(steps):
        return DEFAULT_INTERVAL
    return pd.Timedelta(int(np.median(steps)), unit="ns")


def warm_up(scores: np.ndarray, index: pd.Index) -> np.ndarray:
    """Scores with the points up to the ``INTERVAL_STEPS``-th positive step set to 0.

    Until then the sampling interval is still being learned, so a score there could depend
    on later points; no detector has enough history to alarm that early anyway.
    """
    out = np.array(scores, dtype=float)
    if not isinstance(index, pd.DatetimeIndex):
        return out
    ns = index[: 4 * INTERVAL_STEPS + 1].as_unit("ns").asi8
    pos = np.flatnonzero(np.diff(ns) > 0)
    if len(pos) < INTERVAL_STEPS and len(index) > len(ns):
        pos = np.flatnonzero(np.diff(index.as_unit("ns").asi8) > 0)
    end = int(pos[INTERVAL_STEPS - 1]) + 2 if len(pos) >= INTERVAL_STEPS else len(out)
    out[:end] = 0.0
    return out


def to_points(span: Span, interval: pd.Timedelta, minimum: int = 1) -> int:
    """Number of points covering ``span`` (a time span or already a count)."""
    if isinstance(span, int | np.integer):
        return max(int(span), minimum)
    points = pd.Timedelta(span) / interval
    return max(round(points), minimum)


def lagged(values: np.ndarray, window: int, min_periods: int, stat: str, *args: Any) -> np.ndarray:
    """Rolling ``stat`` over the ``window`` points *before* each point (NaN-aware, causal)."""
    roll = pd.Series(values).rolling(window, min_periods=min(min_periods, window))
    return getattr(roll, stat)(*args).shift(1).to_numpy(dtype=float)


def robust_z(
    values: np.ndarray, window: int, min_periods: int, min_relative_spread: float = 0.0
) -> np.ndarray:
    """The robust z of :func:`robust_z_steps` (steps from a constant window at ``±STEP_Z``)."""
    return robust_z_steps(values, window, min_periods, min_relative_spread)[0]


def robust_z_steps(
    values: np.ndarray, window: int, min_periods: int, min_relative_spread: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(x - median) / (1.4826 * MAD)`` against the trailing window (NaN until warm).

    The MAD is approximated by the trailing median of absolute deviations from the trailing
    median, which pandas computes in O(n log w); the exact sliding MAD would be O(n w). When
    the MAD is zero (quantised or flat data) the trailing standard deviation stands in. When
    the trailing window was constant, a different value is a change of state (a gauge that
    flips, a config value that changes): its z is ``±STEP_Z``, not a division by zero, and
    the second array marks those steps. The scale is at least ``min_relative_spread`` times
    the median's magnitude (``DefaultDetector``'s floor): a series that is nearly flat at a
    large level is not graded critical for a move that is small against that level.
    """
    med = lagged(values, window, min_periods, "median")
    dev = np.abs(values - med)
    mad = lagged(dev, window, min_periods, "median")
    std = lagged(values, window, min_periods, "std")
    scale = np.where(mad > 0, 1.4826 * mad, np.nan_to_num(std, nan=0.0))
    magnitude = np.abs(np.nan_to_num(med))
    floor = 1e-9 * (1.0 + magnitude)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (values - med) / np.maximum(scale, np.maximum(floor, min_relative_spread * magnitude))
        # A series that was constant (a 0/1 gauge, a config value) and now moves has changed
        # state: that is a step of known size, not a division by a zero spread.
        step = (scale <= floor) & (values != med) & np.isfinite(values - med)
        return np.where(step, np.sign(values - med) * STEP_Z, z), step


def calibrate(excess: np.ndarray, alarm_at: float | np.ndarray) -> np.ndarray:
    """Map a non-negative "how anomalous" measure to [0, 1) with 0.5 exactly at ``alarm_at``.

    ``x / (x + alarm_at)`` is monotone, so NAB's threshold sweep sees the same ordering as the
    raw measure, while the fixed decision ``score >= 0.5`` equals ``excess >= alarm_at``.
    """
    x = np.maximum(np.nan_to_num(np.asarray(excess, dtype=float), nan=0.0), 0.0)
    x = np.minimum(x, 1e12)
    return x / (x + alarm_at)


def refractory(scores: np.ndarray, period: int, damping: float = 0.25) -> np.ndarray:
    """Damp scores for ``period`` points after each alarm (``score >= 0.5``).

    An incident usually stays anomalous for a while; re-alarming on each of its points adds
    noise for operators and false positives for NAB, which counts only the first detection
    in a window. Only alarm candidates are visited, so the loop is short.
    """
    out = np.array(scores, dtype=float)
    if period <= 0:
        return out
    last = -(period + 1)
    for i in np.flatnonzero(out >= ALARM).tolist():
        if i - last <= period:
            out[i] *= damping
        else:
            last = i
    return out


@dataclass(frozen=True)
class Scored:
    """Output of a detector's vectorised pass: per-point score and a z for the severity."""

    scores: np.ndarray
    z: np.ndarray
    details: dict[str, np.ndarray] | None = None


class SeriesDetector(BaseDetector):
    """Base for detectors that score ``history + window`` in one causal pass.

    Subclasses implement :meth:`_score_values` and :meth:`_history_span`. ``score`` without a
    prior ``fit`` behaves as if fitted on an empty history, which is what the backtester does.
    A subclass whose spans are plain point counts sets ``learns_interval = False``: it does not
    need the warm-up in which the sampling interval is learned.
    """

    learns_interval: ClassVar[bool] = True

    def _points(self, span: Span, interval: pd.Timedelta, minimum: int = 1) -> int:
        """Points covering ``span``, at most the detector's ``max_points`` if it has one
        (so fine-grained metrics cost no more than the spans were meant to hold)."""
        points = to_points(span, interval, minimum)
        cap = getattr(self, "max_points", None)
        return points if cap is None else min(points, max(int(cap), minimum))

    def _history_span(self, interval: pd.Timedelta) -> int:
        """How many history points the scoring pass needs (the tail kept by ``fit``)."""
        raise NotImplementedError

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        """Score all points causally; ``start`` is where the window begins in ``values``."""
        raise NotImplementedError

    def fit(self, history: pd.Series) -> SeriesDetector:
        history = _as_float_series(history)
        interval = sampling_interval(history.index)
        keep = self._history_span(interval)
        self.history_ = history.iloc[-keep:] if keep > 0 else history.iloc[:0]
        self.interval_ = interval
        return self

    def score_many(
        self, histories: Sequence[pd.Series], windows: Sequence[pd.Series]
    ) -> list[DetectionResult]:
        """Score independent series: ``[clone(self).fit(h).score(w) for h, w in pairs]``.

        This detector is left as it is. Subclasses may score the pairs together (the
        detection cycle calls this with every series of a component); the results must be
        those of the per-series path.
        """
        return [clone(self).fit(h).score(w) for h, w in zip(histories, windows, strict=True)]

    def score(self, window: pd.Series) -> DetectionResult:
        window = _as_float_series(window)
        history = _before(getattr(self, "history_", window.iloc[:0]), window)
        both = pd.concat([history, window]) if len(history) else window
        values = both.to_numpy(dtype=float, copy=True)
        start = len(both) - len(window)
        if len(window) == 0:
            return DetectionResult(pd.Series(dtype=float, index=window.index), [])
        scored = self._score_values(values, both.index, start)
        if self.learns_interval:
            scored = Scored(warm_up(scored.scores, both.index), scored.z, scored.details)
        extra = {k: np.asarray(v[start:]) for k, v in (scored.details or {}).items()}
        return self._result(window, values[start:], scored.scores[start:], scored.z[start:], extra)

    def _result(
        self,
        window: pd.Series,
        values: np.ndarray,
        scores: np.ndarray,
        z: np.ndarray,
        extra: dict[str, np.ndarray],
    ) -> DetectionResult:
        """The window's result from its part of a scoring pass (values, scores, z, details)."""
        raw = np.asarray(scores, dtype=float)
        raw = np.where(np.isnan(values), 0.0, np.clip(np.nan_to_num(raw), 0.0, 1.0))
        out = pd.Series(raw, index=window.index, name=self.name)
        z = np.nan_to_num(np.asarray(z, dtype=float), nan=0.0)
        return DetectionResult(out, self._anomalies(window, raw, z, extra))

    def _anomalies(
        self, window: pd.Series, scores: np.ndarray, z: np.ndarray, extra: dict[str, np.ndarray]
    ) -> list[Anomaly]:
        out = []
        values = window.to_numpy(dtype=float)
        for i in np.flatnonzero(scores >= ALARM).tolist():
            details: dict[str, Any] = {"z": float(z[i])}
            details.update({k: _plain(v[i]) for k, v in extra.items()})
            out.append(
                Anomaly(
                    detector=self.name,
                    ts=pd.Timestamp(window.index[i]),
                    score=float(scores[i]),
                    severity=severity_from_z(float(z[i])),
                    value=float(values[i]),
                    details=details,
                )
            )
        return out


def _before(history: pd.Series, window: pd.Series) -> pd.Series:
    """The history strictly before the window's first timestamp.

    The contract is that the window continues the history; if a caller passes an overlapping
    history anyway, the overlap is dropped so the window's points are never compared with
    copies of themselves (which would hide exactly the novel points).
    """
    if not len(history) or not len(window):
        return history
    if not isinstance(history.index, pd.DatetimeIndex) or not isinstance(
        window.index, pd.DatetimeIndex
    ):
        return history
    try:
        if history.index[-1] < window.index[0]:
            return history
        return history[history.index < window.index[0]]
    except TypeError:  # tz-aware against tz-naive: nothing sensible to compare
        return history


def _plain(value: Any) -> Any:
    """numpy scalars to plain Python, so anomaly details serialise as JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _as_float_series(series: pd.Series) -> pd.Series:
    if not isinstance(series, pd.Series):
        series = pd.Series(np.asarray(series, dtype=float))
    return pd.to_numeric(series, errors="coerce").astype(float)
