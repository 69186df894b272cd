"""Robust z-score detector: distance from the trailing median in units of the trailing MAD.

The simplest detector worth running: median and MAD ignore the outliers they are meant to
find (a mean/std band is widened by the very spike it should flag), and a trailing window
keeps it adaptive. It suits metrics that hover around a level; bursty or seasonal metrics are
better served by ``default`` or ``adaptive``.
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
    robust_z_steps,
    sampling_interval,
    to_points,
)


class RobustZScoreDetector(SeriesDetector):
    """Alarm when ``|x - median| / (1.4826 MAD)`` over the trailing window reaches ``threshold``.

    Parameters
    ----------
    window:
        Trailing span for the median and MAD (a day covers one daily cycle).
    threshold:
        Robust z at which a point alarms (score 0.5). Above the 3-sigma habit because real
        metrics have heavy tails; severity grading starts at 4 (``severity_from_z``).
    min_points:
        History points needed before anything can alarm.
    refractory:
        After an alarm, scores are damped for this span (one incident, one alarm).
    """

    name = "zscore"

    def __init__(
        self,
        window: Span = "1D",
        threshold: float = 8.0,
        min_points: int = 30,
        refractory: Span = "12h",
    ) -> None:
        self.window = window
        self.threshold = threshold
        self.min_points = min_points
        self.refractory = refractory

    def _history_span(self, interval: pd.Timedelta) -> int:
        return to_points(self.window, interval) * 2 + to_points(self.refractory, interval, 0)

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        interval = sampling_interval(index)
        z, step = robust_z_steps(
            values, to_points(self.window, interval, minimum=2), max(self.min_points, 2)
        )
        # A step out of a constant window is a change of state: it alarms whatever threshold.
        scores = calibrate(np.where(step, np.inf, np.abs(z)), self.threshold)
        return Scored(refractory(scores, to_points(self.refractory, interval, minimum=0)), z)
