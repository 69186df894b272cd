"""An online ensemble: several detectors' alarms, one alarm per incident, a per-series budget.

Why: detectors see different things (the default sees values and means that leave the
series' range, the relative-entropy detector sees a distribution that changed inside it),
and NAB rewards the first alarm in a window and charges every false one. The ensemble:

1. scores the series with each member (each calibrated so that 0.5 is its own alarm) and
   takes the largest score per point: an alarm when any member alarms;
2. keeps a per-series alarm budget that depends only on the past of that series: each
   alarm in the trailing ``budget_span`` raises the bar for the next one by ``budget_cost``
   (a noisy series that has alarmed often must be more surprising to alarm again; a quiet
   one alarms at the members' own level);
3. applies one refractory period across members, so the same incident seen first by one
   member and then by another is one alarm.

Everything is a function of the points up to the one scored, so it is causal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tasks.detection.timeseries._common import (
    ALARM,
    Scored,
    SeriesDetector,
    Span,
    refractory,
    sampling_interval,
    to_points,
)


def alarm_budget(scores: np.ndarray, span: int, cost: float) -> np.ndarray:
    """Raise the alarm bar by ``cost`` per alarm kept in the trailing ``span`` points.

    A score ``s`` stands for an excess ``s / (1 - s)`` over the alarm level; with ``k`` alarms
    in the trailing span it becomes ``excess / (1 + cost·k)``, mapped back the same way (so a
    score that stays below 0.5 is unchanged and the order within a level is kept). Only the
    alarm candidates are visited, in time order: the loop is short.
    """
    out = np.array(scores, dtype=float)
    if cost <= 0 or span <= 0:
        return out
    kept: list[int] = []
    for i in np.flatnonzero(out >= ALARM).tolist():
        while kept and i - kept[0] > span:
            kept.pop(0)
        s = min(out[i], 1.0 - 1e-12)
        excess = s / (1.0 - s) / (1.0 + cost * len(kept))
        out[i] = excess / (1.0 + excess)
        if out[i] >= ALARM:
            kept.append(i)
    return out


class EnsembleDetector(SeriesDetector):
    """Largest member score, a per-series alarm budget, one refractory period.

    Parameters
    ----------
    detectors:
        Member detectors (each a ``SeriesDetector`` calibrated to alarm at 0.5). ``None``:
        the default detector and a strict relative-entropy detector (``alpha=1e-12``).
    budget_span:
        Trailing span in which a series' own alarms raise the bar.
    budget_cost:
        How much each such alarm raises it (0, the default: no budget; on the NAB
        development files a budget lowered the score in sample, so it is off).
    refractory:
        After an alarm, scores are damped for this span.
    """

    name = "ensemble"

    def __init__(
        self,
        detectors: Sequence[SeriesDetector] | None = None,
        budget_span: Span = "7D",
        budget_cost: float = 0.0,
        refractory: Span = "12h",
    ) -> None:
        self.detectors = detectors
        self.budget_span = budget_span
        self.budget_cost = budget_cost
        self.refractory = refractory

    def _members(self) -> list[SeriesDetector]:
        if self.detectors is not None:
            return list(self.detectors)
        from tasks.detection.timeseries.default import DefaultDetector
        from tasks.detection.timeseries.relentropy import RelativeEntropyDetector

        return [DefaultDetector(), RelativeEntropyDetector(alpha=1e-12)]

    def _history_span(self, interval: pd.Timedelta) -> int:
        budget = to_points(self.budget_span, interval, minimum=0) if self.budget_cost > 0 else 0
        return max(m._history_span(interval) for m in self._members()) + budget

    def _score_values(self, values: np.ndarray, index: pd.Index, start: int) -> Scored:
        interval = sampling_interval(index)
        parts = [m._score_values(values, index, start) for m in self._members()]
        stacked = np.vstack([np.nan_to_num(p.scores, nan=0.0) for p in parts])
        best = stacked.max(axis=0)
        which = stacked.argmax(axis=0)
        names = np.asarray([m.name for m in self._members()], dtype=object)
        scores = alarm_budget(
            best, to_points(self.budget_span, interval, minimum=0), float(self.budget_cost)
        )
        scores = refractory(scores, to_points(self.refractory, interval, minimum=0))
        return Scored(scores, parts[0].z, {"member": names[which]})
