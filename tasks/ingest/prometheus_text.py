"""Prometheus text exposition → a batch of samples, tolerant of bad lines.

prometheus-client parses the text. A malformed line makes it reject the whole payload, so
on failure we parse sample lines one by one, keep the good ones and count the bad ones.
Counters, gauges, histograms and summaries are flattened into labelled series the way
Prometheus stores them (``x_bucket{le=...}``, ``x_sum``, ``x_count``, ``x{quantile=...}``).
"""

from __future__ import annotations

import math

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from storage.metrics import labels_key
from tasks.ingest.records import IngestReport, empty_samples

_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_gcount", "_gsum")


def _declared_types(text: str) -> dict[str, str]:
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
    return types


def _kind(sample_name: str, types: dict[str, str]) -> str:
    if sample_name in types:
        return types[sample_name]
    for suffix in _SUFFIXES:
        if sample_name.endswith(suffix) and sample_name[: -len(suffix)] in types:
            return types[sample_name[: -len(suffix)]]
    return "untyped"


def parse_exposition(
    text: str, component: str, scrape_ms: int, report: IngestReport
) -> pd.DataFrame:
    """Parse an exposition payload; samples without a timestamp get ``scrape_ms``."""
    types = _declared_types(text)
    rows: list[tuple[str, str, str, int, float, str]] = []

    def add(name: str, labels: dict[str, str], value: float, ts: object) -> None:
        if name.endswith("_created"):
            # Creation timestamps (OpenMetrics) are metadata, not observations; Prometheus
            # drops them from the text format too.
            report.notes["_created samples skipped"] += 1
            return
        ts_ms = scrape_ms if ts is None else round(float(ts) * 1000)  # type: ignore[arg-type]
        rows.append((component, name, labels_key(labels), ts_ms, float(value), _kind(name, types)))

    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                add(s.name, s.labels, s.value, s.timestamp)
    except Exception:  # noqa: BLE001 - the parser raises several types; fall back line by line
        rows.clear()
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                for family in text_string_to_metric_families(stripped + "\n"):
                    for s in family.samples:
                        add(s.name, s.labels, s.value, s.timestamp)
            except Exception as exc:  # noqa: BLE001
                shown = stripped if len(stripped) <= 80 else stripped[:77] + "..."
                report.reject("malformed exposition line", 1, f"line {lineno}: {shown!r} ({exc})")
    if not rows:
        return empty_samples()
    frame = pd.DataFrame.from_records(
        rows, columns=["component", "metric", "labels", "ts", "value", "kind"]
    )
    frame["ts"] = frame["ts"].astype("int64")
    frame["value"] = frame["value"].astype(float)
    return frame


def is_finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
