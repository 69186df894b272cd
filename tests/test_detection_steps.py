"""Detection steps over stored data: metrics, down components, logs, custom detectors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from flows.config_load import ConfigError, build_config
from flows.detect import ShardPlan, run_shard
from storage.engine import make_engine
from storage.issues import anomalies_frame, issues_frame
from storage.logs import EventRow, commit_batch, get_or_create_source
from storage.metrics import labels_key
from tasks.detection.logs_step import LogDetectionSettings, poisson_sf
from tasks.detection.metrics_step import MetricDetectionSettings
from tasks.ingest.records import IngestReport
from tasks.ingest.store import store_samples

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
CYCLE_DETECTOR = (
    "default",
    {
        "history": "1h",
        "smoothing": ["1min", "5min"],
        "season": None,
        "refractory": "10min",
        "min_points": 60,
        "severity_window": "1h",
    },
)


def samples(
    component: str,
    metric: str,
    values: np.ndarray,
    kind: str = "gauge",
    labels: dict[str, str] | None = None,
    step_s: int = 10,
) -> pd.DataFrame:
    n = len(values)
    ts = NOW_MS - (n - 1 - np.arange(n)) * step_s * 1000
    return pd.DataFrame(
        {
            "component": component,
            "metric": metric,
            "labels": labels_key(labels),
            "ts": ts.astype("int64"),
            "value": values.astype(float),
            "kind": kind,
        }
    )


def store(engine: Engine, *frames: pd.DataFrame) -> None:
    report = IngestReport("t")
    store_samples(engine, pd.concat(frames, ignore_index=True), report, clock_ms=NOW_MS + 1000)
    assert report.rejected_total == 0, report.summary()


def plan(
    components: tuple[str, ...],
    custom: tuple[str, ...] = (),
    detectors: tuple = (CYCLE_DETECTOR,),
    first_run_s: int = 120,
) -> ShardPlan:
    return ShardPlan(
        components,
        detectors,
        custom,
        MetricDetectionSettings(lookback_s=3600),
        LogDetectionSettings(lookback_s=3600),
        NOW_MS,
        first_run_s * 1000,
    )


def test_latency_spike_is_detected_and_steady_series_are_quiet(engine: Engine) -> None:
    rng = np.random.default_rng(1)
    n = 360
    latency = 0.05 + rng.normal(0, 0.002, n)
    latency[-3:] = 0.5  # the last 30 s: ten times slower
    requests = np.cumsum(rng.integers(180, 220, n)).astype(float)
    memory = 4e7 + rng.normal(0, 1e5, n)
    store(
        engine,
        samples("api", "latency_seconds", latency),
        samples("api", "requests_total", requests, "counter"),
        samples("api", "memory_bytes", memory),
        samples("api", "up", np.ones(n)),
    )
    result = run_shard(engine, plan(("api",)))
    assert result.errors == []
    sigs = {(a.signature, a.kind) for a in result.anomalies}
    assert ("latency_seconds", "metric") in sigs
    assert not any(s.startswith(("requests_total", "memory_bytes")) for s, _ in sigs)
    assert result.watermarks["metrics:api"] == NOW_MS


def test_up_zero_is_a_critical_down_anomaly(engine: Engine) -> None:
    up = np.ones(100)
    up[-2:] = 0
    store(engine, samples("db", "up", up))
    result = run_shard(engine, plan(("db",)))
    down = [a for a in result.anomalies if a.kind == "down"]
    assert len(down) == 2
    assert {a.severity for a in down} == {"critical"}


def _log(
    engine: Engine, component: str, lines: list[tuple[int, str | None, str, int | None]]
) -> None:
    with engine.begin() as conn:
        pos = get_or_create_source(conn, f"/var/log/{component}.log", component)
        rows: list[EventRow] = [
            (0, i, ts, level, tid, msg) for i, (ts, level, msg, tid) in enumerate(lines)
        ]
        commit_batch(conn, pos, component, rows)


def test_log_signatures_are_aggregated_per_cycle(engine: Engine) -> None:
    lines = [(NOW_MS - 3_000_000 + i * 1000, "INFO", f"request {i} ok", 1) for i in range(100)]
    lines += [
        (
            NOW_MS - 30_000 + i,
            "ERROR",
            f"java.lang.OutOfMemoryError: Java heap space (allocation {i})",
            2,
        )
        for i in range(40)
    ]
    _log(engine, "repo", lines)
    result = run_shard(engine, plan(("repo",)))
    logs = [a for a in result.anomalies if a.kind == "log"]
    oom = [a for a in logs if a.detector == "log_signature"]
    assert len(oom) == 1, logs
    assert oom[0].details["count"] == 40
    assert oom[0].severity in ("high", "critical")
    # Template 2 never appeared in the baseline and now comes 40 times: a burst too,
    # reported on the same anomaly (one template, one anomaly per cycle).
    assert oom[0].details.get("burst") is True
    assert len(logs) == 1, logs


def test_poisson_tail() -> None:
    assert poisson_sf(0, 3.0) == 1.0
    assert abs(poisson_sf(1, 1.0) - (1 - np.exp(-1))) < 1e-12
    assert poisson_sf(40, 0.5) < 1e-40


def test_custom_detector_path_must_import() -> None:
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        build_config({"custom_detectors": ["no_such_module.Thing"]}, environ={})
    with pytest.raises(ConfigError, match="not a subclass of BaseDetector"):
        build_config({"custom_detectors": ["tests.plugin_detectors.NotADetector"]}, environ={})


def test_custom_detector_runs_in_the_detect_flow(
    prefect_server: None, db_url: str, tmp_path: Path
) -> None:
    from flows.detect import detect

    engine = make_engine(db_url)
    try:
        from storage.migrate import ensure_schema

        ensure_schema(engine)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        n = 120
        values = np.full(n, 10.0)
        values[-1] = 500.0
        ts = now_ms - (n - 1 - np.arange(n)) * 10_000
        frame = pd.DataFrame(
            {
                "component": "worker",
                "metric": "custom.queue_depth",
                "labels": "{}",
                "ts": ts.astype("int64"),
                "value": values,
                "kind": "gauge",
            }
        )
        store_samples(engine, frame, IngestReport("t"))
    finally:
        engine.dispose()
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps(
            {
                "database_url": db_url,
                "custom_detectors": ["tests.plugin_detectors.QueueLimitDetector"],
                "detection": {"detectors": [], "behaviour": False, "group_wait": 0},
            }
        )
    )
    result = detect(str(cfg))
    assert [i["component"] for i in result["new_issues"]] == ["worker"]
    engine = make_engine(db_url)
    try:
        found = anomalies_frame(engine)
        assert found["detector"].tolist() == ["queue_limit"]
        assert found["signature"].tolist() == ["custom.queue_depth"]
        issue = issues_frame(engine).iloc[0]
        assert (issue["severity"], issue["kind"]) == ("high", "metric")
    finally:
        engine.dispose()


def test_watermark_prevents_rescoring(engine: Engine) -> None:
    up = np.ones(50)
    up[-1] = 0
    store(engine, samples("db", "up", up))
    from flows.detect import persist_detection
    from tasks.issues.grouping import GroupingPolicy

    first = run_shard(engine, plan(("db",)))
    persist_detection(engine, first.anomalies, first.watermarks, NOW, GroupingPolicy(), {})
    second = run_shard(engine, plan(("db",)))
    assert len(first.anomalies) == 1 and second.anomalies == []
    assert NOW - timedelta(seconds=1) < NOW
