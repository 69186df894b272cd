"""Probes against real sockets, processes and HTTP servers; thresholds; the scheduler;
and detection from probe results and exporters' conventions (``*_up``, counter resets,
the exporter's own series)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from flows.components import component_specs, probe_specs
from flows.config_load import ConfigError, build_config
from storage.probes import latest_probe_ms, save_probe_results
from tasks.detection.candidates import is_candidate, is_context, is_target_up
from tasks.detection.derive import counter_rate
from tasks.probes.run import run_probe
from tasks.probes.scheduler import ProbeScheduler
from tasks.probes.spec import ProbeResult, ProbeSpec
from tasks.probes.state import ProbeState, replay
from tasks.recovery.health import check_health
from tests.test_detection_steps import NOW_MS, plan, samples, store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Handler(BaseHTTPRequestHandler):
    status = 200
    body = b"ok"

    def do_GET(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(self.server.body)  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.status = 200  # type: ignore[attr-defined]
    server.body = b"ok"  # type: ignore[attr-defined]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server: ThreadingHTTPServer, path: str = "/") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def spec(kind: str, **kw: object) -> ProbeSpec:
    return ProbeSpec("svc", "liveness", kind, **kw)  # type: ignore[arg-type]


# -- each kind against the real thing -------------------------------------------------


def test_exec_probe_exit_codes() -> None:
    assert run_probe(spec("exec", argv=("true",))).ok
    failed = run_probe(spec("exec", argv=("false",)))
    assert not failed.ok and "exited with 1" in failed.detail
    missing = run_probe(spec("exec", argv=("/nonexistent/selfheal-probe",)))
    assert not missing.ok and "cannot run" in missing.detail


def test_exec_probe_runs_no_shell(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    r = run_probe(spec("exec", argv=("true", f"; touch {marker}")))
    assert r.ok and not marker.exists()


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # killed, waiting for its (new) parent to reap it


def test_exec_probe_hanging_past_timeout_is_killed_with_its_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    r = run_probe(spec("exec", argv=("sh", "-c", script), timeout_s=1.0))
    assert not r.ok and "timed out" in r.detail
    child = int(pidfile.read_text())
    for _ in range(100):
        if _gone(child):
            break
        time.sleep(0.05)
    assert _gone(child), "the probe's child survived the timeout"


def test_tcp_probe_accepts_and_refuses() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert run_probe(spec("tcp", host="127.0.0.1", port=port)).ok
    refused = run_probe(spec("tcp", host="127.0.0.1", port=free_port()))
    assert not refused.ok and "refused" in refused.detail.lower()


def test_http_probe_status_and_body(http_server: ThreadingHTTPServer) -> None:
    url = url_of(http_server, "/healthz")
    assert run_probe(spec("http", url=url)).ok
    assert run_probe(spec("http", url=url, body_contains="ok")).ok
    assert not run_probe(spec("http", url=url, body_contains="ready")).ok
    http_server.status = 503  # type: ignore[attr-defined]
    r = run_probe(spec("http", url=url))
    assert not r.ok and "503" in r.detail
    assert run_probe(spec("http", url=url, expect_status=503)).ok
    gone = run_probe(spec("http", url=f"http://127.0.0.1:{free_port()}/"))
    assert not gone.ok


def test_metric_probe_compares_a_scraped_series(http_server: ThreadingHTTPServer) -> None:
    url = url_of(http_server, "/metrics")
    http_server.body = b"# TYPE pg_up gauge\npg_up 1\n"  # type: ignore[attr-defined]
    assert run_probe(spec("metric", url=url, series="pg_up", op="==", value=1.0)).ok
    http_server.body = b"# TYPE pg_up gauge\npg_up 0\n"  # type: ignore[attr-defined]
    r = run_probe(spec("metric", url=url, series="pg_up", op="==", value=1.0))
    assert not r.ok and "pg_up = 0" in r.detail
    assert not run_probe(spec("metric", url=url, series="redis_up")).ok
    assert run_probe(spec("metric", url=url, series="pg_up", op="<", value=0.5)).ok


# -- thresholds --------------------------------------------------------------------------


def test_threshold_state_machine() -> None:
    s = ProbeState(failure_threshold=3, success_threshold=2)
    assert s.observe(True) == "healthy"  # from unknown, one success is enough
    assert s.observe(False) is None and s.observe(False) is None
    assert s.observe(False) == "failing"  # the third failure in a row
    assert s.observe(True) is None  # one success of the two needed
    assert s.observe(False) is None and s.status == "failing"
    assert s.observe(True) is None
    assert s.observe(True) == "healthy"
    assert replay([1, 0, 0, 1, 0, 0, 0, 0, 1], 3, 1) == [
        False, False, False, False, False, False, True, True, False,
    ]  # fmt: skip


def test_scheduler_initial_delay_period_and_transitions() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    results: list[ProbeResult] = []
    transitions: list[tuple[str, str]] = []
    failing = threading.Event()

    def on_transition(r: ProbeResult, old: str, new: str) -> None:
        transitions.append((old, new))
        if new == "failing":
            failing.set()

    p = spec(
        "tcp", host="127.0.0.1", port=port, period_s=0.1, timeout_s=0.1,
        failure_threshold=2, initial_delay_s=0.5,
    )  # fmt: skip
    scheduler = ProbeScheduler([p], on_result=results.append, on_transition=on_transition)
    started = time.time()
    with scheduler:
        assert scheduler.running
        while len(results) < 3:
            time.sleep(0.05)
        # nothing ran before the initial delay (ts_ms is truncated to the millisecond: a
        # probe that ran 0.05 ms after the delay once read 0.95 ms "early")
        assert results[0].ts_ms + 1 >= (started + 0.5) * 1000
        assert scheduler.status("svc", "liveness") == "healthy"
        listener.close()
        assert failing.wait(30), "the probe never turned failing"
    assert not scheduler.running
    assert transitions[:2] == [("unknown", "healthy"), ("healthy", "failing")]
    fails = [r.ok for r in results]
    first_fail = fails.index(False)
    # failing exactly at the second failure in a row (failure_threshold = 2)
    assert fails[first_fail : first_fail + 2] == [False, False]


def test_scheduler_never_runs_a_probe_twice_at_once(tmp_path: Path) -> None:
    log = tmp_path / "runs"
    script = f"echo start >> {log}; sleep 0.6; echo end >> {log}"
    p = spec("exec", argv=("sh", "-c", script), period_s=0.1, timeout_s=0.1)
    # timeout_s is enforced by run_probe: use a longer one through a custom runner spec
    p = ProbeSpec("svc", "liveness", "exec", argv=p.argv, period_s=0.1, timeout_s=2.0)
    done: list[ProbeResult] = []
    with ProbeScheduler([p], on_result=done.append):
        while len(done) < 2:
            time.sleep(0.05)
    lines = log.read_text().split()
    # runs strictly alternate start, end: never two at once
    assert lines[: 2 * len(done)] == ["start", "end"] * len(done)


def test_a_failing_callback_does_not_stop_probing() -> None:
    calls: list[int] = []

    def bad(_: ProbeResult) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    with ProbeScheduler([spec("exec", argv=("true",), period_s=0.05)], on_result=bad):
        while len(calls) < 3:
            time.sleep(0.05)


# -- configuration -----------------------------------------------------------------------


def test_probe_config_defaults_and_specs() -> None:
    cfg = build_config(
        {
            "components": {
                "db": {
                    "metrics_url": "http://127.0.0.1:9187/metrics",
                    "probes": {
                        "liveness": {"exec": "pg_isready -h 127.0.0.1 -p 5433"},
                        "readiness": {"metric": {"series": "pg_up"}, "period_s": 5},
                    },
                }
            }
        }
    )
    live, ready = probe_specs(cfg)
    assert live.kind == "exec" and live.argv == ("pg_isready", "-h", "127.0.0.1", "-p", "5433")
    assert (live.period_s, live.timeout_s, live.failure_threshold) == (10.0, 1.0, 3)
    assert (live.success_threshold, live.initial_delay_s) == (1, 0.0)
    assert ready.kind == "metric" and ready.url == "http://127.0.0.1:9187/metrics"
    assert component_specs(cfg)["db"].health.liveness == live


@pytest.mark.parametrize(
    ("probe", "needle"),
    [
        ({"tcp": "localhost"}, "localhost"),
        ({"tcp": "db:99999"}, "db:99999"),
        ({"exec": ["true"], "tcp": "db:5432"}, "exec, tcp"),
        ({}, "none"),
        ({"exec": "true", "period_s": 0}, "period_s"),
        ({"exec": "true", "failure_threshold": 0}, "failure_threshold"),
        ({"exec": "true", "timeout_s": 20}, "timeout_s (20)"),
        ({"exec": "true", "periodSeconds": 3}, "periodSeconds"),
    ],
)
def test_bad_probe_config_names_option_and_value(probe: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"components": {"db": {"probes": {"liveness": probe}}}})
    text = str(err.value)
    assert "components.db.probes.liveness" in text and needle in text


def test_metric_probe_needs_an_endpoint() -> None:
    with pytest.raises(ConfigError, match="metrics_url"):
        build_config({"components": {"db": {"probes": {"liveness": {"metric": {"series": "x"}}}}}})


# -- storage and detection -----------------------------------------------------------


def _probe_results(oks: list[int], probe: str = "liveness") -> list[ProbeResult]:
    n = len(oks)
    return [
        ProbeResult("db", probe, bool(ok), 0.01, NOW_MS - (n - 1 - i) * 10_000, "t")
        for i, ok in enumerate(oks)
    ]


def test_probe_results_are_series_and_liveness_failing_is_down(engine: Engine) -> None:
    from flows.detect import run_shard

    oks = [1] * 50 + [0, 0, 0, 0]
    assert save_probe_results(engine, _probe_results(oks)) == 2 * len(oks)
    assert latest_probe_ms(engine) == {("db", "liveness"): NOW_MS}
    result = run_shard(engine, plan(("db",), first_run_s=60))
    down = [a for a in result.anomalies if a.kind == "down"]
    # the 3rd and 4th failures (failure_threshold 3), no warm-up needed
    assert [a.ts_ms for a in down] == [NOW_MS - 10_000, NOW_MS]
    assert {(a.signature, a.severity, a.detector) for a in down} == {
        ("down", "critical", "probe:liveness")
    }
    # the probe's series are not themselves anomaly candidates
    assert not [a for a in result.anomalies if a.kind == "metric"]


def test_readiness_failing_is_degraded(engine: Engine) -> None:
    from flows.detect import run_shard

    save_probe_results(engine, _probe_results([1] * 20 + [0, 0, 0], "readiness"))
    result = run_shard(engine, plan(("db",), first_run_s=60))
    assert {(a.kind, a.severity) for a in result.anomalies} == {("degraded", "high")}


def test_exporter_up_gauge_zero_is_down(engine: Engine) -> None:
    from flows.detect import run_shard

    pg_up = np.ones(100)
    pg_up[-2:] = 0
    store(
        engine,
        samples("db", "up", np.ones(100)),  # the exporter answers
        samples("db", "pg_up", pg_up),  # ... and says its target does not
    )
    result = run_shard(engine, plan(("db",)))
    down = [a for a in result.anomalies if a.kind == "down"]
    assert len(down) == 2 and {a.severity for a in down} == {"critical"}
    assert {a.details["reason"] for a in down} == {"pg_up = 0"}
    assert is_target_up("redis_up") and is_target_up("up") and not is_target_up("startup")


def test_counter_reset_after_restart_is_no_anomaly(engine: Engine) -> None:
    from flows.detect import run_shard

    rng = np.random.default_rng(3)
    n = 360
    counter = np.cumsum(rng.integers(90, 110, n)).astype(float)
    counter[-5:] = np.cumsum(rng.integers(90, 110, 5))  # restarted: counting from 0 again
    untyped = counter.copy()
    store(
        engine,
        samples("db", "xact_commit_total", counter, "counter"),
        samples("db", "queries_total", untyped, "untyped"),  # *_total is a counter
        samples("db", "up", np.ones(n)),
    )
    rates = counter_rate(
        samples("db", "x", counter).set_index(
            __import__("pandas").to_datetime(samples("db", "x", counter)["ts"], unit="ms", utc=True)
        )["value"]
    )
    assert (rates >= 0).all()
    result = run_shard(engine, plan(("db",)))
    assert result.errors == []
    assert [a for a in result.anomalies if a.kind != "behaviour"] == []


def test_exporter_self_metrics_and_identity_are_not_candidates(engine: Engine) -> None:
    from flows.detect import ShardPlan, run_shard
    from tasks.detection.metrics_step import MetricDetectionSettings

    n = 360
    flat = np.full(n, 100.0)
    jump = flat.copy()
    jump[-3:] = 10_000.0  # what a restart does to these
    store(
        engine,
        samples("db", "go_goroutines", jump),
        samples("db", "process_resident_memory_bytes", jump),
        samples("db", "pg_exporter_last_scrape_duration_seconds", jump),
        samples("db", "pg_postmaster_start_time_seconds", jump),
        samples("db", "redis_process_id", jump),
        samples("db", "app_build_info", jump),
        samples("db", "up", np.ones(n)),
    )
    assert run_shard(engine, plan(("db",))).anomalies == []
    base = plan(("db",))
    included = ShardPlan(
        base.components, base.detectors, base.custom,
        MetricDetectionSettings(
            lookback_s=3600, component_filters={"db": (("go_*",), ())}
        ),
        base.logs, base.now_ms, base.first_run_ms,
    )  # fmt: skip
    sigs = {a.signature for a in run_shard(engine, included).anomalies}
    assert sigs == {"go_goroutines"}


def test_host_resource_series_are_context_and_host_errors_symptoms(engine: Engine) -> None:
    from flows.detect import ShardPlan, run_shard
    from tasks.detection.metrics_step import MetricDetectionSettings

    n = 360
    rng = np.random.default_rng(3)
    memory = 4e9 + rng.normal(0, 1e6, n)
    memory[-3:] = 9e9  # a workload started
    errors = np.cumsum(rng.integers(0, 2, n)).astype(float)
    errors[-3:] += 5_000.0  # the NIC starts failing
    store(
        engine,
        samples("host", "node_memory_Active_bytes", memory),
        samples("host", "node_network_receive_errs_total", errors, kind="counter"),
        samples("host", "up", np.ones(n)),
    )
    kinds = {a.signature: a.kind for a in run_shard(engine, plan(("host",))).anomalies}
    assert kinds == {
        "node_memory_Active_bytes": "context",
        "node_network_receive_errs_total:rate": "metric",
    }
    base = plan(("host",))
    every = ShardPlan(
        base.components, base.detectors, base.custom,
        MetricDetectionSettings(lookback_s=3600, context_metrics=()),
        base.logs, base.now_ms, base.first_run_ms,
    )  # fmt: skip
    assert {a.kind for a in run_shard(engine, every).anomalies} == {"metric"}


def test_candidate_patterns() -> None:
    assert not is_candidate("go_gc_duration_seconds:mean")
    assert not is_candidate("promhttp_metric_handler_requests_total:rate")
    assert not is_candidate("pg_up")
    assert is_candidate("pg_stat_database_xact_commit:rate")
    assert not is_candidate("pg_stat_database_xact_commit:rate", exclude=["pg_stat_*"])
    assert is_candidate("process_open_fds", include=["process_open_fds"])
    assert is_context("node_memory_Active_bytes") and is_context("node_filefd_allocated")
    assert is_context("node_netstat_Tcp_ActiveOpens:rate")
    assert not is_context("node_netstat_Udp_InErrors:rate")  # CamelCase, case ignored
    assert not is_context("node_netstat_TcpExt_ListenOverflows:rate")
    assert not is_context("node_vmstat_oom_kill:rate")
    assert not is_context("node_filesystem_readonly")
    assert is_context("node_timex_maxerror_seconds")  # wanders between synchronisations
    assert not is_context("hms_memory_bytes") and not is_context("pg_up")
    assert is_context("container_memory_working_set_bytes")  # cAdvisor
    assert is_context("container_cpu_usage_seconds_total:rate")
    assert not is_context("container_oom_events_total:rate")
    assert not is_context("container_memory_failures_total:rate")
    assert is_context("pg_stat_activity_count", ["pg_stat_*", "!*_count"]) is False


def test_detection_filters_from_config() -> None:
    with pytest.raises(ConfigError, match="include"):
        build_config({"detection": {"include": "go_*"}})
    cfg = build_config(
        {
            "detection": {"exclude": ["pg_settings_*"]},
            "components": {"db": {"detection": {"include": ["process_open_fds"]}}},
        }
    )
    assert cfg.detection.exclude == ["pg_settings_*"]
    assert cfg.components["db"].detection.include == ["process_open_fds"]


# -- recovery validation ---------------------------------------------------------------


def test_health_uses_the_liveness_probe_over_the_exporter(http_server: ThreadingHTTPServer) -> None:
    from tasks.recovery.base import HealthSpec

    http_server.body = b"# TYPE pg_up gauge\npg_up 1\n"  # type: ignore[attr-defined]
    metrics = url_of(http_server, "/metrics")
    assert check_health(HealthSpec(metrics_url=metrics)).ok
    dead = ProbeSpec("db", "liveness", "tcp", host="127.0.0.1", port=free_port())
    check = check_health(HealthSpec(metrics_url=metrics, liveness=dead))
    assert not check.ok and "liveness probe" in check.detail
    http_server.body = b"# TYPE pg_up gauge\npg_up 0\n"  # type: ignore[attr-defined]
    check = check_health(HealthSpec(metrics_url=metrics))
    assert not check.ok and "pg_up = 0" in check.detail


@pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc are Linux's")
def test_run_due_probes_skips_what_a_scheduler_ran(engine: Engine) -> None:
    from flows.probes import due_probes, run_due_probes

    cfg = build_config(
        {"components": {"db": {"probes": {"liveness": {"exec": ["true"], "period_s": 60}}}}}
    )
    first = run_due_probes(cfg, engine)
    assert [(r.component, r.probe, r.ok) for r in first] == [("db", "liveness", True)]
    assert run_due_probes(cfg, engine) == []  # probed less than a period ago
    later = int(time.time() * 1000) + 120_000
    assert due_probes(probe_specs(cfg), latest_probe_ms(engine), later) == probe_specs(cfg)
    assert os.getpgrp()  # the test process keeps its own group


# -- warm-up --------------------------------------------------------------------------


def test_status_says_how_many_series_are_learning_and_until_when(engine: Engine) -> None:
    from datetime import UTC, datetime

    from flows.api import get_status
    from flows.config import SelfHealConfig
    from flows.runtime import Runtime

    now_ms = int(time.time() * 1000) // 10_000 * 10_000
    young = samples("db", "pg_stat_activity_count", np.ones(20))
    young["ts"] = now_ms - (19 - np.arange(20)) * 10_000
    old = samples("db", "pg_locks_count", np.ones(100))
    old["ts"] = now_ms - (99 - np.arange(100)) * 10_000
    noise = samples("db", "go_goroutines", np.ones(5))  # not a candidate: not counted
    noise["ts"] = now_ms - (4 - np.arange(5)) * 10_000
    import pandas as pd

    from tasks.ingest.records import IngestReport
    from tasks.ingest.store import store_samples

    store_samples(engine, pd.concat([young, old, noise]), IngestReport("t"))
    status = get_status(rt=Runtime(SelfHealConfig.model_validate({}), engine))
    w = status["warmup"]
    assert (w["learning"], w["series"], w["min_points"]) == (1, 2, 60)
    # 40 more points, 10 s apart, after the last one
    expected = datetime.fromtimestamp((now_ms + 40 * 10_000) / 1000, tz=UTC)
    assert datetime.fromisoformat(w["until"]) == expected


def test_a_down_component_whose_liveness_passes_again_is_not_restarted(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """The end of a hang: by the time the recovery runs, the probe passes: no restart."""
    from tasks.recovery.base import (
        ComponentSpec,
        HealthSpec,
        IssueInfo,
        RecoveryContext,
        RecoverySettings,
    )
    from tasks.recovery.commands import CommandSpec
    from tasks.recovery.restart import RestartStrategy

    marker = tmp_path / "restarted"
    alive = tmp_path / "alive"
    liveness = ProbeSpec("db", "liveness", "exec", argv=("test", "-e", str(alive)))
    comp = ComponentSpec(
        "db",
        health=HealthSpec(liveness=liveness),
        restart=CommandSpec(("sh", "-c", f"touch {marker} {alive}"), timeout=10),
    )
    settings = RecoverySettings(validation_timeout=2, validation_poll=0.1)
    ctx = RecoveryContext(sqlite_engine, {"db": comp}, settings)
    issue = IssueInfo(None, "db", "down", "down", "critical")
    strategy = RestartStrategy()
    # Still down: restarted, and validated by the liveness probe.
    out = strategy.execute(strategy.plan(issue, ctx), issue, ctx)
    assert out.success and marker.exists()
    assert "liveness probe" in out.validation["detail"]
    # Healthy again before the restart: not restarted.
    marker.unlink()
    out = strategy.execute(strategy.plan(issue, ctx), issue, ctx)
    assert out.success and not marker.exists()
    assert out.details["healthy_before_restart"] is True


def test_the_detect_flow_runs_the_probes_when_nothing_schedules_them(
    prefect_server: None, tmp_path: Path
) -> None:
    """``selfheal cycle`` / ``selfheal detect`` without ``serve``: each run probes once,
    and the failure threshold counts those runs."""
    import json

    from flows.detect import detect
    from storage.engine import make_engine, sqlite_url_for
    from storage.issues import anomalies_frame

    db_url = sqlite_url_for(tmp_path / "d.db")
    cfg = tmp_path / "c.json"
    probe = {"exec": ["false"], "period_s": 0.2, "timeout_s": 0.2, "failure_threshold": 2}
    cfg.write_text(
        json.dumps(
            {
                "database_url": db_url,
                "detection": {"group_wait": 0},
                "components": {"db": {"probes": {"liveness": probe}}},
            }
        )
    )
    first = detect(str(cfg))
    assert first["new_issues"] == []  # one failure of the two needed
    time.sleep(0.4)
    second = detect(str(cfg))
    assert [(i["component"], i["kind"], i["severity"]) for i in second["new_issues"]] == [
        ("db", "down", "critical")
    ]
    engine = make_engine(db_url)
    try:
        assert set(anomalies_frame(engine)["detector"]) == {"probe:liveness"}
    finally:
        engine.dispose()
