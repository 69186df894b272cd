"""One incident per root cause, and actions that follow evidence (storage round trips on
both backends; the planner against a real HTTP health endpoint)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from flows.demo.platform.launcher import free_port
from flows.detect import persist_detection
from storage.approvals import approvals_frame
from storage.issues import AnomalyRecord, issues_frame, set_issue_status
from storage.metrics import labels_key
from storage.recoveries import create_recovery, record_action, recoveries_frame
from tasks.coordination.planner import plan_cycle
from tasks.ingest.records import IngestReport
from tasks.ingest.store import store_samples
from tasks.issues.grouping import GroupingPolicy, symptom_list
from tasks.recovery.base import ComponentSpec, HealthSpec, RecoveryContext
from tasks.recovery.commands import CommandSpec
from tasks.recovery.evidence import is_leak
from tasks.recovery.manager import RecoveryManager
from tasks.recovery.registry import default_strategies

POLICY = GroupingPolicy(
    group_wait=0,
    resolve_after=300,
    flap_window=900,
    repeat_interval=3600,
    correlation_window=60,
    action_grace=60,
)
# What a restarted server's metrics do (the issue's 18 alarms on one component).
RESTART_SIDE_EFFECTS = [
    "commands_total:rate",
    "connections_total:rate",
    "keyspace_hits_total:rate",
    "keyspace_misses_total:rate",
    "expired_keys_total:rate",
    "evicted_keys_total:rate",
    "net_input_bytes_total:rate",
    "net_output_bytes_total:rate",
    "memory_used_bytes",
    "memory_used_rss_bytes",
    "memory_used_peak_bytes",
    "connected_clients",
    "blocked_clients",
    "db_keys",
    "uptime_in_seconds",
    "start_time_seconds",
    "process_id",
    "cpu_sys_seconds_total:rate",
]


def anomaly(
    ts: datetime,
    component: str = "cache",
    kind: str = "metric",
    signature: str = "latency:mean",
    severity: str = "medium",
) -> AnomalyRecord:
    return AnomalyRecord(
        detector="default" if kind == "metric" else kind,
        component=component,
        kind=kind,
        signature=signature,
        ts_ms=int(ts.timestamp() * 1000),
        score=0.9,
        severity=severity,
    )


def _learning_plan(
    engine: Engine, ctx: RecoveryContext, at: datetime, **options: Any
) -> list[int | None]:
    """Issue ids a learning-mode cycle at ``at`` plans (decides and records, acts on none)."""
    plan = plan_cycle(
        engine,
        RecoveryManager(default_strategies(), ctx),
        "learning",
        at,
        max_concurrent=3,
        approval_timeout_s=600,
        cooldown_s=0,
        quarantine_s=600,
        **options,
    )
    return [p.issue.id for p in plan.planned]


def test_eighteen_metric_anomalies_on_one_component_are_one_incident(engine: Engine) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch = [
        anomaly(
            t0 + timedelta(seconds=2 * i), signature=sig, severity="critical" if i else "medium"
        )
        for i, sig in enumerate(RESTART_SIDE_EFFECTS)
    ]
    summary = persist_detection(engine, batch, {}, t0 + timedelta(seconds=40), POLICY, {})
    assert len(summary.new_issues) == 1
    df = issues_frame(engine)
    assert len(df) == 1
    incident = df.iloc[0]
    assert incident["anomaly_count"] == 18
    assert incident["severity"] == "critical"
    # Named after the first symptom; the other 17 are listed as its symptoms.
    assert incident["signature"] == RESTART_SIDE_EFFECTS[0]
    assert incident["title"].startswith(f"metric anomaly on cache: {RESTART_SIDE_EFFECTS[0]}")
    assert "+17 symptoms" in incident["title"]
    symptoms = incident["details"]["symptoms"]
    assert set(s["signature"] for s in symptoms.values()) == set(RESTART_SIDE_EFFECTS)
    # Beyond the correlation window the same component's next anomaly is a new incident.
    later = t0 + timedelta(minutes=10)
    persist_detection(engine, [anomaly(later, signature="other")], {}, later, POLICY, {})
    assert len(issues_frame(engine)) == 2


def test_down_stretch_and_its_dependants_are_one_incident_named_after_it(
    engine: Engine,
) -> None:
    deps = {"api": ["db"], "worker": ["db"], "db": [], "mail": []}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = [
        # The dependant notices first: the root is still the component that went down.
        anomaly(t0, "api", "metric", "errors_total:rate", "high"),
        anomaly(t0 + timedelta(seconds=3), "db", "down", "down", "critical"),
        anomaly(t0 + timedelta(seconds=4), "worker", "log", "connection_refused", "high"),
        anomaly(t0 + timedelta(seconds=5), "mail", "metric", "latency:mean"),  # unrelated
    ]
    persist_detection(engine, first, {}, t0 + timedelta(seconds=6), POLICY, deps)
    # The outage goes on for minutes (longer than the correlation window): still one.
    more = [
        anomaly(t0 + timedelta(seconds=200), "db", "down", "down", "critical"),
        anomaly(t0 + timedelta(seconds=201), "api", "metric", "latency:mean", "medium"),
    ]
    persist_detection(engine, more, {}, t0 + timedelta(seconds=202), POLICY, deps)
    df = issues_frame(engine)
    assert sorted(df["component"]) == ["db", "mail"]
    incident = df[df["component"] == "db"].iloc[0]
    assert incident["kind"] == "down"
    assert incident["title"].startswith("db is down")
    assert incident["severity"] == "critical"
    assert incident["anomaly_count"] == 5
    from storage.issues import get_issue

    record = get_issue(engine, int(incident["id"]))
    assert record is not None
    listed = {(s["component"], s["signature"]) for s in symptom_list(record)}
    assert listed == {
        ("api", "errors_total:rate"),
        ("worker", "connection_refused"),
        ("api", "latency:mean"),
    }


def test_a_low_wobble_on_a_dependency_does_not_swallow_a_critical_dependant(
    engine: Engine,
) -> None:
    """Seen in the demo: theorem_repository's request rate dipped (low), then proof_engine
    (which depends on it) began to leak memory (critical). Joined, the leak became the
    repository's incident and the breaker opened on it instead of a restart of the leaker."""
    deps = {"proof_engine": ["theorem_repository"], "theorem_repository": []}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch = [
        anomaly(t0, "theorem_repository", "metric", "requests_total:rate", "low"),
        # A dependant's symptom no more severe than the dependency's incident joins it.
        anomaly(t0 + timedelta(seconds=2), "proof_engine", "metric", "requests_total:rate", "low"),
        anomaly(t0 + timedelta(seconds=5), "proof_engine", "metric", "memory_bytes", "critical"),
    ]
    persist_detection(engine, batch, {}, t0 + timedelta(seconds=7), POLICY, deps)
    df = issues_frame(engine).set_index("signature")
    assert sorted(df.index) == ["memory_bytes", "requests_total:rate"]
    leak = df.loc["memory_bytes"]
    assert (leak["component"], leak["severity"]) == ("proof_engine", "critical")
    wobble = df.loc["requests_total:rate"]
    assert (wobble["component"], wobble["severity"]) == ("theorem_repository", "low")
    assert wobble["anomaly_count"] == 2


def test_a_dependants_errors_join_the_dependencys_milder_error_incident(engine: Engine) -> None:
    """Seen in the demo's failing dependency without correlated logs: the repository's
    error rate rose (high) and the proof engine's, which counts every failed call, rose
    more (critical). Errors travel along calls: one incident, named after the repository,
    so that the breaker (not a restart of the proof engine) is what gets planned."""
    deps = {"proof_engine": ["theorem_repository"], "theorem_repository": []}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch = [
        anomaly(t0, "theorem_repository", "metric", "errors_total:rate", "high"),
        anomaly(
            t0 + timedelta(seconds=3), "proof_engine", "metric", "errors_total:rate", "critical"
        ),
        # A resource symptom of the dependant is its own business, errors or not.
        anomaly(t0 + timedelta(seconds=4), "proof_engine", "metric", "memory_bytes", "critical"),
    ]
    persist_detection(engine, batch, {}, t0 + timedelta(seconds=5), POLICY, deps)
    df = issues_frame(engine).set_index("signature")
    assert sorted(df.index) == ["errors_total:rate", "memory_bytes"]
    errors = df.loc["errors_total:rate"]
    assert (errors["component"], errors["severity"]) == ("theorem_repository", "critical")
    assert errors["anomaly_count"] == 2
    assert df.loc["memory_bytes"]["component"] == "proof_engine"


def test_a_dependencys_low_wobble_does_not_take_over_a_dependants_critical_incident(
    engine: Engine,
) -> None:
    """Seen in the demo: proof_engine leaked memory (critical); 6 s later
    theorem_repository's memory wobbled (low) and joined the incident, which was then
    named after the repository (the component the other depends on), so the breaker
    opened on the repository instead of a restart of the leaker."""
    deps = {"proof_engine": ["theorem_repository"], "theorem_repository": []}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch = [
        anomaly(t0, "proof_engine", "metric", "memory_bytes", "critical"),
        anomaly(t0 + timedelta(seconds=6), "theorem_repository", "metric", "memory_bytes", "low"),
    ]
    persist_detection(engine, batch, {}, t0 + timedelta(seconds=7), POLICY, deps)
    df = issues_frame(engine)
    assert len(df) == 1
    incident = df.iloc[0]
    assert (incident["component"], incident["signature"]) == ("proof_engine", "memory_bytes")
    assert incident["severity"] == "critical"


def test_a_dependants_errors_join_the_dependencys_incident_once_their_logs_correlate(
    engine: Engine,
) -> None:
    """Seen in the demo's failing dependency: the repository's backend failed, both
    components logged errors together (one correlated incident, high), and the proof
    engine's error rate (critical) opened an incident of its own, whose restart of the
    proof engine could not help. The correlated logs are the evidence that it is one
    failure: the dependant's metric symptom joins, whatever its severity."""
    deps = {"proof_engine": ["theorem_repository"], "theorem_repository": []}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch = [
        anomaly(t0, "theorem_repository", "log", "storage_unavailable", "high"),
        anomaly(t0 + timedelta(seconds=1), "proof_engine", "log", "upstream_error", "high"),
        anomaly(
            t0 + timedelta(seconds=3), "proof_engine", "metric", "errors_total:rate", "critical"
        ),
    ]
    persist_detection(engine, batch, {}, t0 + timedelta(seconds=5), POLICY, deps)
    df = issues_frame(engine)
    assert len(df) == 1, df[["component", "kind", "signature", "severity"]]
    incident = df.iloc[0]
    assert (incident["component"], incident["kind"]) == ("theorem_repository", "log_correlation")
    assert incident["severity"] == "critical"
    from storage.issues import get_issue

    record = get_issue(engine, int(incident["id"]))
    assert record is not None
    listed = {(s["component"], s["signature"]) for s in symptom_list(record)}
    assert ("proof_engine", "errors_total:rate") in listed


def test_restart_side_effects_open_no_new_issue_and_ask_nobody(engine: Engine) -> None:
    """A down incident, its restart, then the restart's side effects (counter resets,
    gauges jumping) within the window: no new issue, no approval, nothing re-planned."""
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(seconds=40)
    persist_detection(
        engine,
        [anomaly(t0, kind="down", signature="down", severity="critical")],
        {},
        t0,
        POLICY,
        {},
    )
    incident_id = int(issues_frame(engine).iloc[0]["id"])
    with engine.begin() as conn:
        rid = create_recovery(
            conn,
            issue_id=incident_id,
            component="cache",
            issue_kind="down",
            issue_signature="down",
            strategy="restart",
            rung=0,
            action="restart cache",
            mode="supervised",
            status="succeeded",
            finished_at=now - timedelta(seconds=5),
        )
        record_action(conn, rid, "cache", "restart", now - timedelta(seconds=10), True, {})
    side = [
        anomaly(
            now - timedelta(seconds=4) + timedelta(milliseconds=100 * i),
            signature=sig,
            severity="critical",
        )
        for i, sig in enumerate(RESTART_SIDE_EFFECTS)
    ]
    summary = persist_detection(engine, side, {}, now, POLICY, {})
    assert summary.new_issues == []
    df = issues_frame(engine)
    assert len(df) == 1
    incident = df.iloc[0]
    assert incident["kind"] == "down" and incident["title"] == "cache is down"
    assert incident["anomaly_count"] == 19
    # Side effects are recorded as such, and keep the incident from looking active again.
    side_effects = [s for s in incident["details"]["symptoms"].values() if s["side_effect"]]
    assert len(side_effects) == 18
    assert incident["last_seen"] == pd.Timestamp(t0)
    # Supervised mode would ask a person about a critical incident: nothing is asked.
    ctx = RecoveryContext(
        engine, {"cache": ComponentSpec("cache", restart=CommandSpec(("true",), timeout=5))}
    )
    plan = plan_cycle(
        engine,
        RecoveryManager(default_strategies(), ctx),
        "supervised",
        now,
        max_concurrent=3,
        approval_timeout_s=600,
        cooldown_s=60,
        quarantine_s=600,
    )
    assert plan.planned == []
    assert approvals_frame(engine).empty
    assert len(recoveries_frame(engine)) == 1


def test_after_a_fix_a_new_fault_is_a_new_incident_and_a_lasting_symptom_acts_again(
    engine: Engine,
) -> None:
    """Seen in the demo once healing got fast: the next fault on a component came while the
    healed incident waited for its quiet period, joined it, and nothing ever acted on it."""
    policy = replace(POLICY, action_grace=5, correlation_window=5)
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(seconds=60)
    persist_detection(
        engine, [anomaly(t0, signature="memory_bytes", severity="critical")], {}, t0, policy, {}
    )
    incident_id = int(issues_frame(engine).iloc[0]["id"])
    fixed_at = t0 + timedelta(seconds=5)
    with engine.begin() as conn:
        # (No action row: its finish time would be the wall clock's, silencing these.)
        create_recovery(
            conn,
            issue_id=incident_id,
            component="cache",
            issue_kind="metric",
            issue_signature="memory_bytes",
            strategy="restart",
            rung=0,
            action="restart cache",
            mode="automated",
            status="succeeded",
            finished_at=fixed_at,
        )
        set_issue_status(conn, incident_id, "recovering")
    ctx = RecoveryContext(
        engine, {"cache": ComponentSpec("cache", restart=CommandSpec(("true",), timeout=5))}
    )

    def plan(at: datetime) -> list[int | None]:
        return _learning_plan(engine, ctx, at, recheck_after_s=45)

    # Healed and quiet since: nothing to do while it waits for its quiet period.
    assert plan(t0 + timedelta(seconds=20)) == []
    # A different fault on the same component after the fix (past the silence): a new
    # incident of its own, not a symptom of the healed one.
    later = t0 + timedelta(seconds=30)
    persist_detection(
        engine, [anomaly(later, signature="latency:mean", severity="high")], {}, later, policy, {}
    )
    df = issues_frame(engine).set_index("signature")
    assert sorted(df.index) == ["latency:mean", "memory_bytes"]
    assert int(df.loc["memory_bytes", "anomaly_count"]) == 1
    new_id = int(df.loc["latency:mean", "id"])
    assert plan(later) == [new_id]
    # The healed incident's own symptom still fires after the silence, but within the
    # recheck window (a smoothed gauge still spans the time before the restart): it
    # rejoins its incident, which is not planned again for it.
    for seconds in (40, 50):
        again = t0 + timedelta(seconds=seconds)
        persist_detection(
            engine,
            [anomaly(again, signature="memory_bytes", severity="critical")],
            {},
            again,
            policy,
            {},
        )
        assert incident_id not in plan(again)
    # Still firing past the recheck window (45 s after the fix at t0 + 5 s): the fix did
    # not hold (or the symptom has a new cause), so the incident is planned again.
    late = t0 + timedelta(seconds=55)
    persist_detection(
        engine, [anomaly(late, signature="memory_bytes", severity="critical")], {}, late, policy, {}
    )
    df = issues_frame(engine).set_index("signature")
    assert int(df.loc["memory_bytes", "anomaly_count"]) == 4
    assert plan(late) == [incident_id]


def test_side_effects_of_an_unattributed_restart_make_one_silenced_incident(
    engine: Engine,
) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        record_action(conn, None, "cache", "restart", now - timedelta(seconds=10), True, {})
    side = [
        anomaly(now - timedelta(seconds=4) + timedelta(milliseconds=100 * i), signature=sig)
        for i, sig in enumerate(RESTART_SIDE_EFFECTS)
    ]
    persist_detection(engine, side, {}, now, POLICY, {})
    df = issues_frame(engine)
    assert len(df) == 1
    assert df.iloc[0]["status"] == "silenced"
    assert df.iloc[0]["anomaly_count"] == 18


# -- actions follow evidence ------------------------------------------------------------


@pytest.fixture
def health_url() -> Iterator[str]:
    """A real HTTP health endpoint answering 200 (the component is healthy)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/health"
    finally:
        server.shutdown()
        server.server_close()


def _store(engine: Engine, component: str, metric: str, values: list[float], **labels: str) -> None:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    n = len(values)
    frame = pd.DataFrame(
        {
            "component": component,
            "metric": metric,
            "labels": labels_key(labels or None),
            "ts": [now_ms - (n - 1 - i) * 5000 for i in range(n)],
            "value": [float(v) for v in values],
            "kind": "gauge",
        }
    )
    report = IngestReport("test")
    store_samples(engine, frame, report, clock_ms=now_ms + 1000)
    assert report.rejected_total == 0, report.summary()


def _plan(engine: Engine, mode: str, specs: dict[str, ComponentSpec]) -> Any:
    ctx = RecoveryContext(engine, specs)
    return plan_cycle(
        engine,
        RecoveryManager(default_strategies(), ctx),
        mode,
        datetime.now(UTC) + timedelta(seconds=1),
        max_concurrent=3,
        approval_timeout_s=600,
        cooldown_s=60,
        quarantine_s=600,
    )


@pytest.mark.parametrize("mode", ["manual", "supervised", "automated", "learning"])
@pytest.mark.parametrize("signature", ["latency_seconds:p99", "memory_bytes"])
def test_a_metric_anomaly_never_restarts_a_live_component(
    engine: Engine, health_url: str, mode: str, signature: str
) -> None:
    spec = ComponentSpec(
        "cache",
        health=HealthSpec(url=health_url),
        restart=CommandSpec(("true",), timeout=5),
    )
    # The liveness probe passes (the series the probes store) and memory is steady.
    _store(engine, "cache", "probe_ok", [1, 1, 1], probe="liveness")
    _store(engine, "cache", "memory_bytes", [100e6, 101e6, 99e6, 140e6, 141e6, 140e6, 139e6])
    now = datetime.now(UTC)
    persist_detection(engine, [anomaly(now, signature=signature)], {}, now, POLICY, {})
    plan = _plan(engine, mode, {"cache": spec})
    assert [p.action for p in plan.planned] == ["skip"]
    assert "no evidence a restart helps: its liveness probe passes" in plan.planned[0].reason
    assert recoveries_frame(engine).empty and approvals_frame(engine).empty


def test_evidence_makes_the_restart_the_remedy(engine: Engine, health_url: str) -> None:
    spec = ComponentSpec(
        "cache", health=HealthSpec(url=health_url), restart=CommandSpec(("true",), timeout=5)
    )
    now = datetime.now(UTC)
    # A failing liveness probe, a down stretch, an error log, an error rate, a leak.
    _store(engine, "cache", "probe_ok", [1, 0, 0], probe="liveness")
    persist_detection(engine, [anomaly(now, signature="latency_seconds:p99")], {}, now, POLICY, {})
    plan = _plan(engine, "automated", {"cache": spec})
    assert [p.action for p in plan.planned] == ["launch"]
    assert "liveness probe of cache fails" in plan.planned[0].proposal


def test_a_leak_is_evidence_and_a_step_is_not(engine: Engine, health_url: str) -> None:
    ramp = [100e6 + i * 30e6 for i in range(12)]
    step = [100e6] * 6 + [160e6] * 6
    noisy = list(100e6 + np.random.default_rng(1).normal(0, 2e6, 12))
    assert is_leak(np.array(ramp))
    assert not is_leak(np.array(step))
    assert not is_leak(np.array(noisy))
    spec = ComponentSpec(
        "svc", health=HealthSpec(url=health_url), restart=CommandSpec(("true",), timeout=5)
    )
    _store(engine, "svc", "memory_bytes", ramp)
    now = datetime.now(UTC)
    persist_detection(engine, [anomaly(now, "svc", signature="memory_bytes")], {}, now, POLICY, {})
    plan = _plan(engine, "automated", {"svc": spec})
    assert [p.action for p in plan.planned] == ["launch"]
    assert "grows steadily" in plan.planned[0].proposal


def test_a_rising_resource_waits_for_its_evidence_instead_of_acting_lower_down(
    engine: Engine, health_url: str, tmp_path: Any
) -> None:
    """Memory has risen twice: too early to tell a leak from a step. The restart waits for
    its evidence; the reconfiguration further down the ladder is not launched meanwhile."""
    from tasks.recovery.base import ParameterSpec, ReconfigureSpec

    cfg = tmp_path / "svc.json"
    cfg.write_text('{"cache_size": 256}')
    spec = ComponentSpec(
        "svc",
        health=HealthSpec(url=health_url),
        restart=CommandSpec(("true",), timeout=5),
        parameters={"cache_size": ParameterSpec(16, 4096, 256, "int")},
        reconfigure=ReconfigureSpec(json_file=str(cfg)),
    )
    _store(engine, "svc", "memory_bytes", [100e6, 101e6, 102e6, 99e6, 140e6, 180e6])
    now = datetime.now(UTC)
    persist_detection(engine, [anomaly(now, "svc", signature="memory_bytes")], {}, now, POLICY, {})
    plan = _plan(engine, "automated", {"svc": spec})
    assert [p.action for p in plan.planned] == ["skip"]
    assert "waiting for evidence" in plan.planned[0].reason
    assert recoveries_frame(engine).empty


def test_selfheal_issues_lists_an_incident_with_its_symptoms(tmp_path: Any) -> None:
    import json
    import os
    import subprocess
    import sys

    from storage.engine import make_engine, sqlite_url_for
    from storage.migrate import ensure_schema

    url = sqlite_url_for(tmp_path / "s.db")
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"database_url": url}))
    engine = make_engine(url)
    ensure_schema(engine)
    deps = {"api": ["db"]}
    t0 = datetime.now(UTC) - timedelta(seconds=10)
    batch = [
        anomaly(t0, "db", "down", "down", "critical"),
        anomaly(t0 + timedelta(seconds=1), "api", "metric", "errors_total:rate", "high"),
    ] + [
        anomaly(t0 + timedelta(seconds=1), "db", "context", f"node_memory_{i}_bytes", "low")
        for i in range(7)
    ]
    persist_detection(engine, batch, {}, t0 + timedelta(seconds=2), POLICY, deps)
    engine.dispose()
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "issues", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SELFHEAL_HOME": str(tmp_path / "home")},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 8, out.stdout
    assert "db is down (+1 symptom)" in lines[0]
    assert "symptom: api metric errors_total:rate" in lines[1]
    # the host's resource series beside it: listed as context, the busiest five
    assert "context: db node_memory_0_bytes (1 anomalies, up to low)" in lines[2]
    assert lines[7].strip() == "context: and 2 more series"


def test_recorded_successes_for_the_same_incident_are_evidence(
    engine: Engine, health_url: str
) -> None:
    spec = ComponentSpec(
        "cache", health=HealthSpec(url=health_url), restart=CommandSpec(("true",), timeout=5)
    )
    _store(engine, "cache", "probe_ok", [1, 1, 1], probe="liveness")
    past = datetime.now(UTC) - timedelta(days=1)
    with engine.begin() as conn:
        for signature in ["queue_depth"] * 3 + ["latency_seconds:p99"]:
            create_recovery(
                conn,
                component="cache",
                issue_kind="metric",
                issue_signature=signature,
                strategy="restart",
                mode="automated",
                status="succeeded",
                finished_at=past,
            )
    now = datetime.now(UTC)
    # One past success of this signature is not enough; three of another say nothing.
    persist_detection(engine, [anomaly(now, signature="latency_seconds:p99")], {}, now, POLICY, {})
    assert [p.action for p in _plan(engine, "automated", {"cache": spec}).planned] == ["skip"]
    later = now + timedelta(minutes=30)
    persist_detection(engine, [anomaly(later, signature="queue_depth")], {}, later, POLICY, {})
    ctx = RecoveryContext(engine, {"cache": spec})
    plan = plan_cycle(
        engine,
        RecoveryManager(default_strategies(), ctx),
        "automated",
        later + timedelta(seconds=1),
        max_concurrent=3,
        approval_timeout_s=600,
        cooldown_s=60,
        quarantine_s=600,
    )
    launched = [p for p in plan.planned if p.action == "launch"]
    assert len(launched) == 1 and launched[0].issue.signature == "queue_depth"
    assert "restarts fixed 3 of 3 incidents like this one" in launched[0].proposal


def test_a_one_sample_blip_below_confirm_below_starts_nothing(engine: Engine) -> None:
    """``recovery.confirm_below`` is a Prometheus ``for``: a medium incident seen in one
    sample is not acted on; seen again, it is; a high one is acted on at once."""
    policy = replace(POLICY, group_wait=0)
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(seconds=20)
    ctx = RecoveryContext(
        engine, {"cache": ComponentSpec("cache", restart=CommandSpec(("true",), timeout=5))}
    )

    def planned(at: datetime) -> list[int | None]:
        return _learning_plan(engine, ctx, at, confirm_below="high")

    blip = anomaly(t0, "cache", "metric", "latency:mean", "medium")
    loud = anomaly(t0, "queue", "metric", "latency:mean", "high")
    persist_detection(engine, [blip, loud], {}, t0, policy, {})
    ids = issues_frame(engine).set_index("component")["id"]
    first = planned(now)
    assert int(ids["queue"]) in first  # high: at once
    assert int(ids["cache"]) not in first  # medium, one sample: not yet
    again = anomaly(t0 + timedelta(seconds=3), "cache", "metric", "latency:mean", "medium")
    persist_detection(engine, [again], {}, t0 + timedelta(seconds=3), policy, {})
    assert int(ids["cache"]) in planned(now)  # fired twice


def test_confirm_below_defaults_to_acting_at_once(engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(seconds=20)
    persist_detection(
        engine, [anomaly(t0, "cache", "metric", "latency:mean", "medium")], {}, t0, POLICY, {}
    )
    ctx = RecoveryContext(
        engine, {"cache": ComponentSpec("cache", restart=CommandSpec(("true",), timeout=5))}
    )
    assert len(_learning_plan(engine, ctx, now + timedelta(seconds=POLICY.group_wait))) == 1
