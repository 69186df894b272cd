"""A custom detector, loaded by dotted path in the tests (``custom_detectors``)."""

from __future__ import annotations

import pandas as pd

from tasks.detection.base import Anomaly, BaseDetector, DetectionResult
from tasks.severity import Severity


class QueueLimitDetector(BaseDetector):
    """Alarms when a ``custom.*`` metric goes above a fixed limit."""

    name = "queue_limit"
    metric_patterns = ("custom.*",)

    def __init__(self, limit: float = 100.0) -> None:
        self.limit = limit

    def fit(self, history: pd.Series) -> QueueLimitDetector:
        return self

    def score(self, window: pd.Series) -> DetectionResult:
        scores = (window > self.limit).astype(float)
        anomalies = [
            Anomaly(detector=self.name, ts=ts, score=1.0, severity=Severity.HIGH, value=float(v))
            for ts, v in window[window > self.limit].items()
        ]
        return DetectionResult(scores, anomalies)


class NotADetector:
    name = "nope"


class ShadowDefault(QueueLimitDetector):
    """Takes the built-in default's name: refused unless ``replace``."""

    name = "default"
