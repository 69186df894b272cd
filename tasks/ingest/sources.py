"""One function per kind of source: read it, store what is good, report the rest."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from storage.metrics import SeriesResolver
from tasks.ingest.files import read_metric_file
from tasks.ingest.http import fetch_text, redact_url
from tasks.ingest.logtail import TailSettings, tail_file
from tasks.ingest.prometheus_api import query_range
from tasks.ingest.prometheus_text import parse_exposition
from tasks.ingest.records import IngestReport
from tasks.ingest.store import now_ms, store_samples
from tasks.ingest.templating import TemplateAnnotator

UP_METRIC = "up"


def up_sample(component: str, value: float, ts_ms: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "component": [component],
            "metric": [UP_METRIC],
            "labels": ["{}"],
            "ts": [ts_ms],
            "value": [float(value)],
            "kind": ["gauge"],
        }
    )


def scrape_endpoint(
    engine: Engine, component: str, url: str, timeout: float, max_future_ms: int = 300_000
) -> IngestReport:
    """Scrape a /metrics endpoint and store it, with a synthetic ``up`` = 1 as Prometheus does.

    Raises ``SourceUnavailable`` when the endpoint does not answer, so the caller's retry
    policy applies; ``record_down`` stores the ``up`` = 0 sample once retries are spent.
    """
    report = IngestReport(source=f"scrape {component} {redact_url(url)}")
    scraped_at = now_ms()
    text = fetch_text(url, timeout)
    frame = parse_exposition(text, component, scraped_at, report)
    has_own_up = bool(((frame["metric"] == UP_METRIC) & (frame["labels"] == "{}")).any())
    if not has_own_up:
        frame = pd.concat([frame, up_sample(component, 1.0, scraped_at)], ignore_index=True)
    return store_samples(engine, frame, report, max_future_ms=max_future_ms)


def record_down(engine: Engine, component: str, reason: str) -> IngestReport:
    """Store ``up`` = 0 for a component whose endpoint did not answer: detection needs it."""
    report = IngestReport(source=f"scrape {component}", error=reason)
    return store_samples(engine, up_sample(component, 0.0, now_ms()), report)


def ingest_prometheus_query(
    engine: Engine,
    base_url: str,
    query: str,
    component: str,
    metric: str,
    lookback_s: float,
    step_s: float,
    timeout: float,
) -> IngestReport:
    """Read the last ``lookback_s`` of a PromQL query; points already stored are skipped."""
    report = IngestReport(source=f"prometheus {metric} ({query})")
    end = time.time()
    frame = query_range(
        base_url,
        query,
        end - lookback_s,
        end,
        step_s,
        timeout,
        component=component,
        metric=metric,
        report=report,
    )
    return store_samples(engine, frame, report)


def ingest_metric_file(
    engine: Engine, path: str | Path, fmt: str = "auto", max_future_ms: int = 300_000
) -> IngestReport:
    """Store a CSV or JSON-lines file in batches (each batch all-or-nothing)."""
    report = IngestReport(source=f"file {path}")
    resolver = SeriesResolver()
    for frame in read_metric_file(path, fmt, report):
        store_samples(engine, frame, report, resolver=resolver, max_future_ms=max_future_ms)
    return report


def tail_component_logs(
    engine: Engine, component: str, paths: list[str], settings: TailSettings
) -> IngestReport:
    """Tail every log file of a component, labelling lines with the component's templates."""
    report = IngestReport(source=f"logs of {component}")
    annotator = TemplateAnnotator.load(engine, component)
    for path in paths:
        report.merge(tail_file(engine, path, component, settings, annotator))
    return report
