"""Ingestion against real peers: node exporter, a Prometheus server, an endpoint that is down.

These run the Prefect ingest flow on the session's test server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from flows.demo.platform.launcher import free_port
from storage.engine import make_engine
from storage.metrics import count_samples, read_samples, series_frame
from tasks.ingest.records import IngestReport
from tasks.ingest.sources import ingest_prometheus_query, scrape_endpoint
from tests.realpeers import node_exporter, prometheus_server, wait_for_points

pytestmark = pytest.mark.integration


def test_node_exporter_scraped_into_database(engine: Engine, tmp_path: Path) -> None:
    with node_exporter(tmp_path) as url:
        report = scrape_endpoint(engine, "node", url, timeout=10)
    assert report.error is None
    assert report.stored > 200, report.summary()
    series = series_frame(engine, "node")
    metrics = set(series["metric"])
    assert {"node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "up"} <= metrics
    kinds = dict(zip(series["metric"], series["kind"], strict=False))
    assert kinds["node_cpu_seconds_total"] == "counter"
    cpu = series[series["metric"] == "node_cpu_seconds_total"]["labels"]
    assert any(lab.get("mode") == "idle" for lab in cpu)


def test_prometheus_query_range_read(engine: Engine, tmp_path: Path) -> None:
    with node_exporter(tmp_path) as url, prometheus_server(tmp_path, url) as prom:
        wait_for_points(prom, 4)
        report = ingest_prometheus_query(
            engine, prom, "node_load1", "node", "load1", lookback_s=60, step_s=1, timeout=10
        )
        assert report.error is None and report.stored >= 4, report.summary()
        series = series_frame(engine, "node")
        assert series["metric"].tolist() == ["load1"]
        assert series["labels"].iloc[0]["job"] == "node"
        # A PromQL error is a clear error naming the query, not a traceback.
        from tasks.ingest.http import SourceUnavailable

        with pytest.raises(SourceUnavailable, match="bad_syntax"):
            ingest_prometheus_query(engine, prom, "rate(bad_syntax[", "node", "x", 60, 1, 10)


def test_query_range_same_window_twice_adds_nothing(engine: Engine, tmp_path: Path) -> None:
    """Re-reading a window through query_range is idempotent (fixed start and end)."""
    from tasks.ingest.prometheus_api import query_range
    from tasks.ingest.store import store_samples

    with node_exporter(tmp_path) as url, prometheus_server(tmp_path, url) as prom:
        wait_for_points(prom, 4)
        end = time.time()
        counts = []
        for _ in range(2):
            report = IngestReport("q")
            frame = query_range(
                prom, "up", end - 30, end, 1, 10, component="node", metric="up", report=report
            )
            counts.append(store_samples(engine, frame, report).stored)
    assert counts[0] > 0 and counts[1] == 0


def _flow_config(tmp_path: Path, db_url: str, components: dict, **extra: object) -> Path:
    cfg = {
        "database_url": db_url,
        "components": components,
        "ingest": {"retries": 1, "retry_delay": 0.1, "scrape_timeout": 1},
        **extra,
    }
    path = tmp_path / "selfheal.json"
    path.write_text(json.dumps(cfg))
    return path


def test_ingest_flow_with_down_endpoint_records_up_zero(
    prefect_server: None, db_url: str, tmp_path: Path
) -> None:
    from flows.ingest import ingest

    dead = f"http://127.0.0.1:{free_port()}/metrics"  # nothing listens there
    log = tmp_path / "svc.log"
    log.write_text("2024-05-01T10:00:00Z ERROR boom\n")
    csv = tmp_path / "m.csv"
    csv.write_text(
        "timestamp,component,metric,value\n2024-01-01T00:00:00Z,svc,x,1\n"
        "2024-01-01T00:00:10Z,svc,x,oops\n"
    )
    with node_exporter(tmp_path) as node_url:
        cfg = _flow_config(
            tmp_path,
            db_url,
            {
                "node": {"metrics_url": node_url},
                "ghost": {"metrics_url": dead},
                "svc": {"log_paths": [str(log)]},
            },
            metric_files=[{"path": str(csv)}],
        )
        first = ingest(str(cfg))
    assert any("ghost" in e or "127.0.0.1" in e for e in first["errors"])
    assert first["rejected"] == 1
    engine = make_engine(db_url)
    try:
        ghost = series_frame(engine, "ghost")
        assert ghost["metric"].tolist() == ["up"]
        up = read_samples(engine, pd.Timestamp("2024-01-01", tz="UTC"), component="ghost")
        assert up["value"].tolist() == [0.0]
        node_up = read_samples(engine, 0, component="node", metric="up")
        assert node_up["value"].tolist() == [1.0]
        before = count_samples(engine)
    finally:
        engine.dispose()
    # The same file and log sources again: nothing new (no scrape endpoints this time).
    cfg2 = _flow_config(
        tmp_path, db_url, {"svc": {"log_paths": [str(log)]}}, metric_files=[{"path": str(csv)}]
    )
    second = ingest(str(cfg2))
    assert second["stored"] == 0
    engine = make_engine(db_url)
    try:
        assert count_samples(engine) == before
    finally:
        engine.dispose()
