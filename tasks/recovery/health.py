"""Is a component healthy, and how healthy? Used to validate recoveries and as fitness.

``check_health`` answers yes or no: the liveness probe passes when there is one, else
the health URL answers the expected status, else the
metrics endpoint answers (and its ``up`` and ``*_up`` gauges, if any, are 1), else the latest stored
``up`` sample is 1.

``measure`` gives a number in [0, 1] comparable across changes of the same component: the
component's own ``score_metric`` gauge when it reports one, otherwise built from what it
served during the measurement window: ``(1 - error ratio) / (1 + mean latency / 100 ms)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pandas as pd
from sqlalchemy import Engine

from storage.metrics import read_samples
from tasks.detection.candidates import is_target_up
from tasks.ingest.http import redact_url
from tasks.ingest.prometheus_text import parse_exposition
from tasks.ingest.records import IngestReport
from tasks.probes.run import run_probe
from tasks.recovery.base import HealthSpec

LATENCY_REF_S = 0.1


@dataclass(frozen=True)
class HealthCheck:
    ok: bool
    detail: str


def check_health(
    spec: HealthSpec, component: str = "", engine: Engine | None = None
) -> HealthCheck:
    if spec.liveness is not None:
        # The liveness probe decides: "the exporter answered" says nothing of its target.
        result = run_probe(spec.liveness)
        return HealthCheck(result.ok, f"liveness probe: {result.detail}")
    if spec.url:
        try:
            resp = httpx.get(spec.url, timeout=spec.timeout)
        except httpx.HTTPError as exc:
            return HealthCheck(False, f"{redact_url(spec.url)}: {type(exc).__name__}")
        ok = resp.status_code == spec.expect_status
        return HealthCheck(ok, f"{redact_url(spec.url)} answered {resp.status_code}")
    if spec.metrics_url:
        try:
            text = _scrape(spec.metrics_url, spec.timeout)
        except httpx.HTTPError as exc:
            return HealthCheck(False, f"{redact_url(spec.metrics_url)}: {type(exc).__name__}")
        frame = parse_exposition(text, component, 0, IngestReport("health"))
        up = frame[(frame["metric"] == "up") & (frame["labels"] == "{}")]["value"]
        ok = up.empty or float(up.iloc[-1]) >= 0.5
        if not ok:
            return HealthCheck(False, "metrics endpoint answers, up = 0")
        # An exporter says its target is down with a gauge named *_up (pg_up, redis_up).
        target = frame[frame["metric"].map(is_target_up) & (frame["value"] < 0.5)]
        if not target.empty:
            return HealthCheck(False, f"metrics endpoint answers, {target['metric'].iloc[0]} = 0")
        return HealthCheck(True, "metrics endpoint answers")
    if spec.use_up_metric and engine is not None:
        recent = read_samples(
            engine,
            pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=5),
            component=component,
            metric="up",
        )
        if recent.empty:
            return HealthCheck(False, "no recent up samples")
        last = float(recent.sort_values("ts")["value"].iloc[-1])
        return HealthCheck(last >= 0.5, f"latest up sample = {last:g}")
    return HealthCheck(False, "no health URL, metrics URL or up metric configured")


def wait_healthy(
    spec: HealthSpec,
    timeout: float,
    poll: float,
    component: str = "",
    engine: Engine | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> tuple[HealthCheck, float]:
    """Poll until healthy or ``timeout``; returns the last check and the time waited."""
    start = monotonic()
    while True:
        check = check_health(spec, component, engine)
        waited = monotonic() - start
        if check.ok or waited >= timeout:
            return check, waited
        sleep(min(poll, max(timeout - waited, 0.0)))


def _scrape(url: str, timeout: float) -> str:
    resp = httpx.get(url, timeout=timeout)
    resp.raise_for_status()
    return resp.text


@dataclass(frozen=True)
class HealthMeasure:
    score: float
    error_ratio: float | None = None
    mean_latency_s: float | None = None
    requests: float | None = None
    detail: str = ""


def _sum_of(frame: pd.DataFrame, predicate: Callable[[str], bool]) -> float:
    mask = frame["metric"].map(predicate)
    return float(frame.loc[mask, "value"].sum())


def measure(
    spec: HealthSpec,
    duration: float,
    component: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> HealthMeasure:
    """Measure health over ``duration`` seconds (0 when the component does not answer).

    A component that reports its own score gauge (``score_metric``) is read once, at once:
    the gauge is already the component's own judgement, a second read ``duration`` later
    would not average it, only make every trial of a search wait longer."""
    if not check_health(spec, component).ok:
        return HealthMeasure(0.0, detail="health check failed")
    if not spec.metrics_url:
        return HealthMeasure(1.0, detail="healthy (no metrics to measure)")
    try:
        first = parse_exposition(
            _scrape(spec.metrics_url, spec.timeout), component, 0, IngestReport("m")
        )
        if not spec.score_metric:
            sleep(duration)
            second = parse_exposition(
                _scrape(spec.metrics_url, spec.timeout), component, 0, IngestReport("m")
            )
    except httpx.HTTPError as exc:
        return HealthMeasure(0.0, detail=f"metrics unreachable: {type(exc).__name__}")
    if spec.score_metric:
        values = first[first["metric"] == spec.score_metric]["value"]
        if values.empty:
            return HealthMeasure(0.0, detail=f"{spec.score_metric} not reported")
        score = float(values.iloc[-1])
        return HealthMeasure(min(max(score, 0.0), 1.0), detail=f"{spec.score_metric} = {score:g}")

    def delta(pred: Callable[[str], bool]) -> float:
        return max(_sum_of(second, pred) - _sum_of(first, pred), 0.0)

    requests = delta(lambda m: "request" in m and m.endswith("_total"))
    errors = delta(lambda m: "error" in m and m.endswith("_total"))
    lat_sum = delta(lambda m: "latency" in m and m.endswith("_sum"))
    lat_count = delta(lambda m: "latency" in m and m.endswith("_count"))
    if requests <= 0 and lat_count <= 0:
        return HealthMeasure(0.5, detail="no traffic during the measurement")
    error_ratio = min(errors / requests, 1.0) if requests > 0 else 0.0
    mean_latency = lat_sum / lat_count if lat_count > 0 else 0.0
    score = (1.0 - error_ratio) / (1.0 + mean_latency / LATENCY_REF_S)
    if not math.isfinite(score):
        score = 0.0
    return HealthMeasure(
        score,
        error_ratio,
        mean_latency,
        requests,
        f"errors {error_ratio:.1%}, mean latency {mean_latency * 1000:.0f} ms",
    )
