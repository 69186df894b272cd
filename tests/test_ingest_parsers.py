"""Parsing sources: exposition text, CSV and JSON lines; bad input is counted, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from storage.metrics import count_samples, read_samples, series_frame
from tasks.ingest.files import MetricFileError
from tasks.ingest.prometheus_text import parse_exposition
from tasks.ingest.records import IngestReport
from tasks.ingest.sources import ingest_metric_file
from tasks.ingest.store import now_ms, store_samples

EXPOSITION = """\
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{method="get",code="200"} 1027
http_requests_total{method="post",code="500"} 3
# TYPE temperature gauge
temperature 21.5
# TYPE latency histogram
latency_bucket{le="0.1"} 5
latency_bucket{le="0.5"} 9
latency_bucket{le="+Inf"} 10
latency_sum 2.5
latency_count 10
# TYPE rpc summary
rpc{quantile="0.5"} 0.05
rpc{quantile="0.99"} 0.3
rpc_sum 12.0
rpc_count 200
"""


def test_exposition_flattens_every_type() -> None:
    report = IngestReport("t")
    frame = parse_exposition(EXPOSITION, "c", 1_700_000_000_000, report)
    assert report.rejected_total == 0
    assert len(frame) == 12
    kinds = dict(zip(frame["metric"], frame["kind"], strict=False))
    assert kinds["http_requests_total"] == "counter"
    assert kinds["latency_bucket"] == "histogram"
    assert kinds["rpc"] == "summary"
    assert kinds["temperature"] == "gauge"
    buckets = frame[frame["metric"] == "latency_bucket"]["labels"].tolist()
    assert '{"le":"+Inf"}' in buckets
    assert (frame["ts"] == 1_700_000_000_000).all()


def test_malformed_lines_are_counted_and_good_ones_kept() -> None:
    text = EXPOSITION + 'broken{ 1\nok_metric 4\nvalue_is_text abc\n{no_name="x"} 1\n'
    report = IngestReport("t")
    frame = parse_exposition(text, "c", 1_700_000_000_000, report)
    assert report.rejected["malformed exposition line"] == 3
    assert "ok_metric" in set(frame["metric"])
    assert len(frame) == 13
    assert any("broken{ 1" in e for e in report.examples)


def test_explicit_timestamps_are_milliseconds() -> None:
    report = IngestReport("t")
    frame = parse_exposition("m 1 1700000000123\n", "c", 5, report)
    assert frame["ts"].tolist() == [1_700_000_000_123]


def test_bad_values_and_timestamps_rejected_with_reason(engine: Engine) -> None:
    now = now_ms()
    text = f"a NaN\nb +Inf\nc -Inf\nd 1 {now + 3_600_000}\ne 2 {now}\nf 3 {946_684_000_000}\n"
    report = IngestReport("t")
    frame = parse_exposition(text, "c", now, report)
    store_samples(engine, frame, report)
    assert report.stored == 1
    assert report.rejected == {
        "value is infinite": 2,
        "timestamp too far in the future": 1,
        "timestamp before 2000": 1,
    }
    # NaN is Prometheus's "no value now" (a summary with no observations): not an error.
    assert report.notes["NaN samples skipped"] == 1


def test_same_payload_twice_stores_nothing_new(engine: Engine) -> None:
    frame = parse_exposition(EXPOSITION, "c", 1_700_000_000_000, IngestReport("t"))
    first = store_samples(engine, frame, IngestReport("t"))
    second = store_samples(engine, frame, IngestReport("t"))
    assert (first.stored, second.stored, second.duplicates) == (12, 0, 12)


CSV_GOOD = """timestamp,component,metric,value,labels
2024-01-01T00:00:00Z,db,cpu,0.5,host=a
2024-01-01T00:00:10Z,db,cpu,0.6,host=a
1704067220,db,cpu,0.7,host=a
1704067230000,db,cpu,0.8,"{""host"": ""a""}"
"""


def test_csv_and_idempotent_reingest(engine: Engine, tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text(CSV_GOOD)
    first = ingest_metric_file(engine, f)
    assert (first.stored, first.rejected_total) == (4, 0)
    assert len(series_frame(engine)) == 1  # both label syntaxes are one series
    second = ingest_metric_file(engine, f)
    assert (second.stored, second.duplicates) == (0, 4)
    assert count_samples(engine) == 4
    values = read_samples(engine, pd.Timestamp("2024-01-01", tz="UTC"))["value"].tolist()
    assert values == [0.5, 0.6, 0.7, 0.8]


def test_csv_bad_rows_counted_good_rows_kept(engine: Engine, tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text(
        "timestamp,component,metric,value,labels\n"
        "2024-01-01T00:00:00Z,db,cpu,0.5,\n"
        "yesterday,db,cpu,0.5,\n"
        "2024-01-01T00:00:20Z,db,cpu,high,\n"
        "2024-01-01T00:00:30Z,db,cpu\n"
        "2024-01-01T00:00:40Z,db,cpu,NaN,\n"
        "2024-01-01T00:00:50Z,,cpu,1,\n"
        "2024-01-01T00:01:00Z,db,cpu,1,novalue\n"
        "2999-01-01T00:00:00Z,db,cpu,1,\n"
        "2024-01-01T00:01:10Z,db,cpu,2.5,\n"
    )
    report = ingest_metric_file(engine, f)
    assert report.stored == 2
    assert report.rejected == {
        "unparseable timestamp": 1,
        "value is not a number": 1,
        "wrong number of fields": 1,
        "empty component": 1,
        "malformed labels": 1,
        "timestamp too far in the future": 1,
    }
    assert report.notes["NaN samples skipped"] == 1


def test_csv_without_required_columns_is_a_clear_error(engine: Engine, tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text("time,value\n1,2\n")
    with pytest.raises(MetricFileError, match="lacks column"):
        ingest_metric_file(engine, f)
    with pytest.raises(MetricFileError, match="not found"):
        ingest_metric_file(engine, tmp_path / "missing.csv")


def test_jsonl(engine: Engine, tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    lines = [
        {
            "ts": "2024-01-01T00:00:00Z",
            "component": "api",
            "metric": "rps",
            "value": 10,
            "labels": {"route": "/x"},
        },
        {"timestamp": 1704067210, "component": "api", "metric": "rps", "value": "11"},
        "not json at all",
        {"component": "api", "metric": "rps", "value": 1},
        [1, 2, 3],
        {"ts": 1704067220, "component": "api", "metric": "rps", "value": "x"},
    ]
    f.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines))
    report = ingest_metric_file(engine, f)
    assert report.stored == 2
    assert report.rejected == {
        "invalid JSON": 1,
        "missing field": 1,
        "not a JSON object": 1,
        "value is not a number": 1,
    }
    assert ingest_metric_file(engine, f).stored == 0
