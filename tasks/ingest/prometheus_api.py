"""Read series from a Prometheus server's HTTP API (``/api/v1/query_range``)."""

from __future__ import annotations

import json

import pandas as pd

from storage.metrics import labels_key
from tasks.ingest.http import SourceUnavailable, fetch_text, redact_url
from tasks.ingest.records import IngestReport, empty_samples


def query_range(
    base_url: str,
    query: str,
    start_s: float,
    end_s: float,
    step_s: float,
    timeout: float,
    *,
    component: str,
    metric: str,
    report: IngestReport,
) -> pd.DataFrame:
    """Run one range query; each returned series becomes a labelled series of ``component``.

    The series' ``__name__`` label is dropped (the stored metric name is ``metric``) and
    the other labels are kept, so ``instance`` or ``job`` still tell series apart.
    """
    url = base_url.rstrip("/") + "/api/v1/query_range"
    params = {
        "query": query,
        "start": f"{start_s:.3f}",
        "end": f"{end_s:.3f}",
        "step": f"{step_s:g}",
    }
    try:
        body = fetch_text(url, timeout, params)
    except SourceUnavailable as exc:
        raise SourceUnavailable(f"query {query!r}: {exc}") from None
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        raise SourceUnavailable(f"{redact_url(url)} did not return JSON") from None
    if payload.get("status") != "success":
        raise SourceUnavailable(
            f"{redact_url(url)} query {query!r} failed: {payload.get('error', 'unknown error')}"
        )
    data = payload.get("data", {})
    if data.get("resultType") != "matrix":
        raise SourceUnavailable(
            f"query {query!r} returned {data.get('resultType')!r}, not a matrix"
        )
    rows: list[tuple[str, str, str, int, float, str]] = []
    for series in data.get("result", []):
        labels = {k: v for k, v in series.get("metric", {}).items() if k != "__name__"}
        key = labels_key(labels)
        for point in series.get("values", []):
            try:
                ts_ms = round(float(point[0]) * 1000)
                value = float(point[1])
            except (TypeError, ValueError, IndexError):
                report.reject("malformed query_range point", 1, f"{query!r}: {point!r}")
                continue
            rows.append((component, metric, key, ts_ms, value, "gauge"))
    if not rows:
        return empty_samples()
    return pd.DataFrame.from_records(
        rows, columns=["component", "metric", "labels", "ts", "value", "kind"]
    )
