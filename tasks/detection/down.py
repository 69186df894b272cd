"""A component is down when its ``up`` series reads 0 (the scrape failed or the target
said so), when an exporter's ``*_up`` gauge reads 0, or when its liveness probe fails
``failure_threshold`` times in a row: critical ``down`` anomalies, one issue per stretch.
A failing readiness probe makes it degraded (high severity), not down."""

from __future__ import annotations

import pandas as pd

from storage.issues import AnomalyRecord
from tasks.probes.state import replay
from tasks.severity import Severity

DETECTOR = "down"


def detect_down(
    component: str,
    up: pd.Series,
    since_ms: int,
    reason: str = "endpoint not answering or up == 0",
) -> list[AnomalyRecord]:
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
            details={"reason": reason},
        )
        for ts, v in new.items()
        if v < 0.5
    ]


def detect_probe(
    component: str,
    probe: str,
    results: pd.Series,
    since_ms: int,
    failure_threshold: int,
    success_threshold: int,
) -> list[AnomalyRecord]:
    """Anomalies for new probe results (1 passed, 0 failed) that leave the probe failing.

    The whole window is replayed through the threshold state machine, so the anomaly
    starts at the result that reaches ``failure_threshold`` (no warm-up) and lasts until
    ``success_threshold`` passes in a row.
    """
    if results.empty:
        return []
    failing = replay((v >= 0.5 for v in results.to_numpy()), failure_threshold, success_threshold)
    cut = pd.Timestamp(since_ms, unit="ms", tz="UTC")
    live = probe == "liveness"
    return [
        AnomalyRecord(
            detector=f"probe:{probe}",
            component=component,
            kind="down" if live else "degraded",
            signature="down" if live else probe,
            ts_ms=int(ts.value // 1_000_000),
            score=1.0,
            severity=(Severity.CRITICAL if live else Severity.HIGH).label,
            value=float(v),
            details={
                "reason": f"{probe} probe failed {failure_threshold} times in a row",
                "probe": probe,
            },
        )
        for (ts, v), bad in zip(results.items(), failing, strict=True)
        if bad and ts > cut
    ]
