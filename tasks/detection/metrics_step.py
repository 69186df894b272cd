"""Detection over one component's metrics: bounded read, derive, score what is new.

The read covers ``lookback`` seconds before now (an index range per series, so the cost
follows the window and not the stored history). Points up to the component's watermark
are the detectors' history; points after it are scored, so each point is scored once and
each score only uses the past.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from sklearn.base import clone
from sqlalchemy import Engine

from storage.issues import AnomalyRecord
from storage.metrics import read_samples, series_frame
from tasks.detection.base import Anomaly, BaseDetector
from tasks.detection.behaviour import ProfileDetector, RelationDetector, align
from tasks.detection.derive import UP, DerivedSeries, derive
from tasks.detection.down import detect_down

KEY_METRICS = ("*request*:rate", "*latency*:mean", "*error*:rate", "*queue*", "*memory*")


@dataclass(frozen=True)
class MetricDetectionSettings:
    lookback_s: float = 3600.0
    behaviour: bool = True
    key_metrics: tuple[str, ...] = KEY_METRICS
    relation_params: dict[str, object] = field(default_factory=dict)
    profile_params: dict[str, object] = field(default_factory=dict)


@dataclass
class ComponentWindow:
    """What one read produced: derived series and the newest timestamp seen."""

    component: str
    derived: list[DerivedSeries]
    up: pd.Series
    newest_ms: int | None


def read_component(
    engine: Engine, component: str, now_ms: int, lookback_s: float
) -> ComponentWindow:
    start = now_ms - int(lookback_s * 1000)
    samples = read_samples(engine, start, now_ms + 1, component=component)
    series = series_frame(engine, component)
    if samples.empty or series.empty:
        return ComponentWindow(component, [], pd.Series(dtype=float), None)
    series["labels"] = series["labels"].map(_labels_text)
    up_ids = series[(series["metric"] == UP) & (series["labels"] == "{}")]["series_id"]
    up_rows = samples[samples["series_id"].isin(up_ids)]
    up = pd.Series(up_rows["value"].to_numpy(float), index=pd.DatetimeIndex(up_rows["ts"]))
    newest = int(samples["ts"].max().value // 1_000_000)
    return ComponentWindow(component, derive(samples, series), up.sort_index(), newest)


def _labels_text(labels: object) -> str:
    from storage.metrics import labels_key

    return labels_key(labels) if isinstance(labels, dict) else str(labels)


def _record(a: Anomaly, component: str, d: DerivedSeries | None, kind: str) -> AnomalyRecord:
    details = dict(a.details)
    if d is not None and d.labels != "{}":
        details["labels"] = d.labels
    return AnomalyRecord(
        detector=a.detector,
        component=component,
        kind=a.kind or kind,
        signature=a.signature or (d.name if d else ""),
        ts_ms=int(a.ts.value // 1_000_000),
        score=float(a.score),
        severity=a.severity.label,
        value=None if a.value is None else float(a.value),
        series_id=d.series_id if d else None,
        details=_jsonable(details),
    )


def _jsonable(details: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in details.items():
        if hasattr(v, "item"):
            v = v.item()  # numpy scalar
        elif isinstance(v, pd.Timestamp):
            v = v.isoformat()
        out[k] = v
    return out


def _split(values: pd.Series, watermark_ms: int) -> tuple[pd.Series, pd.Series]:
    cut = pd.Timestamp(watermark_ms, unit="ms", tz="UTC")
    return values[values.index <= cut], values[values.index > cut]


def detect_metrics(
    window: ComponentWindow,
    detectors: Sequence[BaseDetector],
    watermark_ms: int,
    settings: MetricDetectionSettings,
) -> list[AnomalyRecord]:
    """Score each derived series' new points with every detector whose patterns match."""
    out = detect_down(window.component, window.up, watermark_ms)
    for d in window.derived:
        history, new = _split(d.values, watermark_ms)
        if new.empty:
            continue
        for proto in detectors:
            if not proto.applies_to(d.name):
                continue
            det = clone(proto).fit(history)
            result = det.score(new)
            out.extend(_record(a, window.component, d, "metric") for a in result.anomalies)
    if settings.behaviour:
        out.extend(detect_behaviour(window, watermark_ms, settings))
    return out


def key_series(window: ComponentWindow, patterns: Sequence[str]) -> dict[str, pd.Series]:
    """The component's key series (``component/metric``), summed over label sets."""
    chosen: dict[str, list[pd.Series]] = {}
    for d in window.derived:
        if any(fnmatch.fnmatchcase(d.name, p) for p in patterns):
            chosen.setdefault(f"{window.component}/{d.name}", []).append(d.values)
    return {
        name: pd.concat(parts, axis=1).sum(axis=1, min_count=1) if len(parts) > 1 else parts[0]
        for name, parts in chosen.items()
    }


def detect_behaviour(
    window: ComponentWindow,
    watermark_ms: int,
    settings: MetricDetectionSettings,
    extra: dict[str, pd.Series] | None = None,
) -> list[AnomalyRecord]:
    """Profile of the component's key series, and relations among them (and ``extra``)."""
    series = key_series(window, settings.key_metrics)
    series.update(extra or {})
    if len(series) < 2:
        return []
    frame = align(series)
    cut = pd.Timestamp(watermark_ms, unit="ms", tz="UTC")
    history, new = frame[frame.index <= cut], frame[frame.index > cut]
    if new.empty or len(history) < 10:
        return []
    out: list[AnomalyRecord] = []
    for det in (
        RelationDetector(**settings.relation_params),  # type: ignore[arg-type]
        ProfileDetector(**settings.profile_params),
    ):  # type: ignore[arg-type]
        result = det.fit(history).score(new)
        out.extend(_record(a, window.component, None, "behaviour") for a in result.anomalies)
    return out
