"""A component whose ``up`` series reads 0 is down: one critical anomaly per down stretch."""

from __future__ import annotations

import pandas as pd

from storage.issues import AnomalyRecord
from tasks.severity import Severity

DETECTOR = "down"


def detect_down(component: str, up: pd.Series, since_ms: int) -> list[AnomalyRecord]:
    """Anomalies for new ``up`` = 0 samples after ``since_ms``.

    Every new down sample is reported (each joins the same ``down`` issue); the issue's
    quiet period then starts only once the component answers again.
    """
    if up.empty:
        return []
    new = up[up.index > pd.Timestamp(since_ms, unit="ms", tz="UTC")]
    return [
        AnomalyRecord(
            detector=DETECTOR,
            component=component,
            kind="down",
            signature="down",
            ts_ms=int(ts.value // 1_000_000),
            score=1.0,
            severity=Severity.CRITICAL.label,
            value=float(v),
            details={"reason": "endpoint not answering or up == 0"},
        )
        for ts, v in new.items()
        if v < 0.5
    ]
