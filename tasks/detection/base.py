"""The detector interface, shaped like a scikit-learn estimator.

A detector takes constructor parameters only (so ``get_params``/``set_params``,
``sklearn.base.clone`` and Optuna tuning work), learns from ``fit(history)`` and
then scores a ``window`` that continues that history in time. Scores are causal:
the score of a point only uses the history and the points of the window before it,
so the same object can be replayed point by point by the backtester or run on the
newest window by the detection cycle.

Time series come in as a ``pd.Series`` of floats indexed by a monotonically
increasing ``DatetimeIndex`` (UTC).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from tasks.severity import Severity


@dataclass(frozen=True)
class Anomaly:
    """One anomalous observation, as a detector reports it."""

    detector: str
    ts: pd.Timestamp
    score: float
    severity: Severity
    value: float | None = None
    kind: str = "metric"
    component: str = ""
    signature: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    series_id: int | None = None


@dataclass
class DetectionResult:
    """Per-point scores in [0, 1] (``score >= 0.5`` means the detector alarms) and the alarms."""

    scores: pd.Series
    anomalies: list[Anomaly]


class BaseDetector(BaseEstimator):
    """Base class for every detector, built in or custom.

    Subclasses set ``name`` and ``metric_patterns`` (shell-style patterns such as
    ``"custom.*"`` matched against the metric name) and implement ``fit`` and
    ``score``. The constructor must only store its parameters, as in scikit-learn.
    """

    name: ClassVar[str] = "base"
    metric_patterns: ClassVar[tuple[str, ...]] = ("*",)

    def applies_to(self, metric: str) -> bool:
        return any(fnmatch.fnmatchcase(metric, p) for p in self.metric_patterns)

    def fit(self, history: pd.Series) -> BaseDetector:
        raise NotImplementedError

    def score(self, window: pd.Series) -> DetectionResult:
        raise NotImplementedError


def as_series(values: pd.Series | np.ndarray | list[float], index: Any = None) -> pd.Series:
    """Coerce input into a float Series with a DatetimeIndex (a RangeIndex is kept for arrays)."""
    if isinstance(values, pd.Series):
        s = values.astype(float)
    else:
        s = pd.Series(np.asarray(values, dtype=float), index=index)
    return s
