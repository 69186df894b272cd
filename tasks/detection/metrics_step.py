"""Detection over one component's metrics: bounded read, derive, score what is new.

The read covers ``lookback`` seconds before now (an index range per series, so the cost
follows the window and not the stored history). Points up to the component's watermark
are the detectors' history; points after it are scored, so each point is scored once and
each score only uses the past.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from sklearn.base import clone
from sqlalchemy import Engine

from storage.issues import AnomalyRecord
from storage.metrics import read_arrays
from tasks.detection.base import Anomaly, BaseDetector
from tasks.detection.behaviour import ProfileDetector, RelationDetector, align
from tasks.detection.candidates import (
    CONTEXT_KIND,
    HOST_CONTEXT,
    is_candidate,
    is_context,
    is_target_up,
)
from tasks.detection.derive import UNTYPED_COUNTERS, UP, DerivedSeries, derive_arrays
from tasks.detection.down import detect_down, detect_probe
from tasks.detection.saturation import NODE_RULES, SaturationRule, detect_saturation
from tasks.probes.spec import PROBE_OK_METRIC

KEY_METRICS = ("*request*:rate", "*latency*:mean", "*error*:rate", "*queue*", "*memory*")


@dataclass(frozen=True)
class MetricDetectionSettings:
    lookback_s: float = 3600.0
    behaviour: bool = True
    key_metrics: tuple[str, ...] = KEY_METRICS
    relation_params: dict[str, object] = field(default_factory=dict)
    profile_params: dict[str, object] = field(default_factory=dict)
    freeze_max_s: float = 1800.0
    untyped_counters: tuple[str, ...] = UNTYPED_COUNTERS
    context_metrics: tuple[str, ...] = HOST_CONTEXT
    saturation_rules: tuple[SaturationRule, ...] = NODE_RULES
    # Series name globs (tasks.detection.candidates): global, then per component.
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    component_filters: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=dict
    )
    # component → probe name → (failure_threshold, success_threshold)
    probe_thresholds: Mapping[str, Mapping[str, tuple[int, int]]] = field(default_factory=dict)

    def filters_for(self, component: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        inc, exc = self.component_filters.get(component, ((), ()))
        return self.include + inc, self.exclude + exc


@dataclass
class ComponentWindow:
    """What one read produced: derived series and the newest timestamp seen."""

    component: str
    derived: list[DerivedSeries]
    up: pd.Series
    newest_ms: int | None
    # Exporters' own "target up" gauges (pg_up, redis_up), by metric name.
    targets: dict[str, pd.Series] = field(default_factory=dict)
    # Probe results (probe_ok{probe=NAME}: 1 passed, 0 failed), by probe name.
    probes: dict[str, pd.Series] = field(default_factory=dict)


def read_component(
    engine: Engine,
    component: str,
    now_ms: int,
    lookback_s: float,
    untyped_counters: Sequence[str] = UNTYPED_COUNTERS,
) -> ComponentWindow:
    """The component's series over ``lookback_s`` before ``now_ms``, derived."""
    start = now_ms - int(lookback_s * 1000)
    meta, table = read_arrays(engine, component, start, now_ms + 1)
    if not len(table) or not meta:
        return ComponentWindow(component, [], pd.Series(dtype=float), None)
    sids, ts_ms, values = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2]
    order = np.lexsort((ts_ms, sids))  # as read_samples sorts: by series, then time
    sids, ts_ms, values = sids[order], ts_ms[order], values[order]
    index = pd.DatetimeIndex(pd.to_datetime(pd.Series(ts_ms), unit="ms", utc=True), name="ts")
    up_ids = [sid for sid, (metric, _, labels) in meta.items() if metric == UP and labels == "{}"]
    is_up = np.isin(sids, up_ids)
    up = pd.Series(values[is_up], index=index[is_up])
    newest = int(ts_ms.max())
    targets: dict[str, pd.Series] = {}
    probes: dict[str, pd.Series] = {}
    for sid, (metric, kind, labels) in meta.items():
        if metric == PROBE_OK_METRIC:
            name = json.loads(labels).get("probe", "liveness")
            mask = sids == sid
            probes[name] = pd.Series(values[mask], index=index[mask]).sort_index()
        elif metric != UP and is_target_up(metric) and kind in ("gauge", "untyped"):
            if labels != "{}":
                continue  # a labelled *_up is one of several targets: left to the detectors
            mask = sids == sid
            targets[metric] = pd.Series(values[mask], index=index[mask]).sort_index()
    return ComponentWindow(
        component,
        derive_arrays(sids, index, values, meta, untyped_counters),
        up.sort_index(),
        newest,
        {k: v for k, v in targets.items() if len(v)},
        {k: v for k, v in probes.items() if len(v)},
    )


def _record(
    a: Anomaly, component: str, d: DerivedSeries | None, kind: str, context: bool = False
) -> AnomalyRecord:
    """``kind`` unless the detector named its own; ``context`` overrides both."""
    details = dict(a.details)
    if d is not None and d.labels != "{}":
        details["labels"] = d.labels
    return AnomalyRecord(
        detector=a.detector,
        component=component,
        kind=CONTEXT_KIND if context else (a.kind or kind),
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
    index = values.index
    if isinstance(index, pd.DatetimeIndex) and index.is_monotonic_increasing:
        at = int(index.searchsorted(cut, side="right"))
        return values.iloc[:at], values.iloc[at:]
    return values[index <= cut], values[index > cut]


def detect_metrics(
    window: ComponentWindow,
    detectors: Sequence[BaseDetector],
    watermark_ms: int,
    settings: MetricDetectionSettings,
    frozen: Mapping[str, int] | None = None,
) -> list[AnomalyRecord]:
    """Score each derived series' new points with every detector whose patterns match.

    ``frozen`` maps a metric with an open issue to the issue's first anomaly (epoch ms):
    while the issue lasts (at most ``freeze_max_s``), that series' history stops there.
    Otherwise the anomalous points become the detector's new normal within minutes, and a
    fault that keeps growing (a leak) stops alarming while it is still there.
    """
    out = detect_down(window.component, window.up, watermark_ms)
    for metric, series in window.targets.items():
        out += detect_down(window.component, series, watermark_ms, f"{metric} = 0")
    thresholds = settings.probe_thresholds.get(window.component, {})
    for probe, series in window.probes.items():
        failure, success = thresholds.get(probe, (3, 1))
        out += detect_probe(window.component, probe, series, watermark_ms, failure, success)
    out += saturation(window, watermark_ms, settings.saturation_rules)
    include, exclude = settings.filters_for(window.component)
    derived = [d for d in window.derived if is_candidate(d.name, include, exclude)]
    if len(derived) != len(window.derived):
        window = replace(window, derived=derived)
    todo = []
    for d in window.derived:
        history, new = _split(d.values, watermark_ms)
        since = (frozen or {}).get(d.name)
        if since is not None and watermark_ms - since < settings.freeze_max_s * 1000:
            history, _ = _split(history, since - 1)
        if not new.empty:
            todo.append((d, history, new))
    # Each detector scores all its series at once when it can (``score_many``); the
    # anomalies are listed as the per-series loop lists them: by series, then detector.
    found: dict[tuple[int, int], list[Anomaly]] = {}
    for j, proto in enumerate(detectors):
        mine = [k for k, (d, _, _) in enumerate(todo) if proto.applies_to(d.name)]
        if not mine:
            continue
        histories = [todo[k][1] for k in mine]
        news = [todo[k][2] for k in mine]
        many = getattr(proto, "score_many", None)
        if callable(many):
            results = many(histories, news)
        else:
            results = [clone(proto).fit(h).score(n) for h, n in zip(histories, news, strict=True)]
        for k, result in zip(mine, results, strict=True):
            found[(k, j)] = result.anomalies
    for k, (d, _, _) in enumerate(todo):
        context = is_context(d.name, settings.context_metrics)
        for j in range(len(detectors)):
            anomalies = found.get((k, j), [])
            out.extend(_record(a, window.component, d, "metric", context) for a in anomalies)
    if settings.behaviour:
        out.extend(detect_behaviour(window, watermark_ms, settings))
    return out


def saturation(
    window: ComponentWindow, watermark_ms: int, rules: Sequence[SaturationRule]
) -> list[AnomalyRecord]:
    """Saturation rules over the window's gauges (every series, candidate or not)."""
    wanted = {name for r in rules for name in (r.left, r.capacity, r.unless) if name}
    gauges = {(d.name, d.labels): d.values for d in window.derived if d.name in wanted}
    return detect_saturation(window.component, gauges, watermark_ms, rules) if gauges else []


def key_series(
    window: ComponentWindow, patterns: Sequence[str], context: Sequence[str] = ()
) -> dict[str, pd.Series]:
    """The component's key series (``component/metric``), summed over label sets; context
    series (``context`` globs) are not key series: a broken relation between two of them
    is a workload change, not a fault."""
    chosen: dict[str, list[pd.Series]] = {}
    for d in window.derived:
        if any(fnmatch.fnmatchcase(d.name, p) for p in patterns) and not (
            context and is_context(d.name, context)
        ):
            chosen.setdefault(f"{window.component}/{d.name}", []).append(d.values)
    return {name: _sum_series(parts) for name, parts in chosen.items()}


def _sum_series(parts: list[pd.Series]) -> pd.Series:
    """Sum over label sets, NaN where no part has a value (the parts' time union)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0].index
    if all(p.index.equals(first) for p in parts[1:]):  # scraped together: no alignment
        stacked = np.vstack([p.to_numpy(dtype=float) for p in parts])
        present = ~np.isnan(stacked)
        total = np.where(present, stacked, 0.0).sum(axis=0)
        return pd.Series(np.where(present.any(axis=0), total, np.nan), index=first)
    return pd.concat(parts, axis=1).sum(axis=1, min_count=1)


def detect_behaviour(
    window: ComponentWindow,
    watermark_ms: int,
    settings: MetricDetectionSettings,
    extra: dict[str, pd.Series] | None = None,
) -> list[AnomalyRecord]:
    """Profile of the component's key series, and relations among them (and ``extra``)."""
    series = key_series(window, settings.key_metrics, settings.context_metrics)
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
        ProfileDetector(**settings.profile_params),  # type: ignore[arg-type]
    ):
        result = det.fit(history).score(new)
        out.extend(_record(a, window.component, None, "behaviour") for a in result.anomalies)
    return out
