"""Anomalies become issues the Alertmanager way (pure logic and its storage round trip)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import Engine

from flows.detect import persist_detection
from storage.issues import AnomalyRecord, anomalies_frame, issues_frame, load_active_issues
from tasks.issues.grouping import (
    GroupingOutcome,
    GroupingPolicy,
    group,
    inhibitions,
    should_notify,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = GroupingPolicy(
    group_wait=10, resolve_after=300, flap_window=900, repeat_interval=3600, correlation_window=60
)


def anomaly(
    ts: datetime,
    component: str = "api",
    kind: str = "metric",
    signature: str = "latency:mean",
    severity: str = "medium",
    detector: str = "default",
) -> AnomalyRecord:
    return AnomalyRecord(
        detector=detector,
        component=component,
        kind=kind,
        signature=signature,
        ts_ms=int(ts.timestamp() * 1000),
        score=0.9,
        severity=severity,
    )


def test_fifty_anomalies_of_one_component_and_kind_make_one_issue(engine: Engine) -> None:
    batch = [
        anomaly(
            T0 + timedelta(seconds=i),
            severity="high" if i == 30 else "medium",
            detector="default" if i % 2 else "zscore",
        )
        for i in range(50)
    ]
    summary = persist_detection(engine, batch, {}, T0 + timedelta(seconds=60), POLICY, {})
    assert len(summary.new_issues) == 1
    df = issues_frame(engine)
    assert len(df) == 1
    issue = df.iloc[0]
    assert issue["anomaly_count"] == 50
    assert issue["severity"] == "high"
    assert issue["status"] == "open"
    # Later anomalies join the open issue rather than opening another.
    more = [anomaly(T0 + timedelta(seconds=100 + i)) for i in range(5)]
    summary = persist_detection(engine, more, {}, T0 + timedelta(seconds=120), POLICY, {})
    assert summary.new_issues == []
    df = issues_frame(engine)
    assert len(df) == 1 and df.iloc[0]["anomaly_count"] == 55


def test_group_wait_delays_action() -> None:
    out = group([anomaly(T0)], [], T0, POLICY)
    issue = next(iter(out.issues.values()))
    assert issue.actionable_at == T0 + timedelta(seconds=10)
    assert not should_notify(issue, T0 + timedelta(seconds=5), POLICY)
    assert should_notify(issue, T0 + timedelta(seconds=10), POLICY)
    issue.last_notified_at = T0 + timedelta(seconds=10)
    assert not should_notify(issue, T0 + timedelta(minutes=30), POLICY)  # throttled
    assert should_notify(issue, T0 + timedelta(minutes=61), POLICY)


def test_a_down_component_is_actionable_at_once() -> None:
    """Its remedy does not depend on what else arrives: no group wait for a dead one."""
    out = group([anomaly(T0, kind="down", signature="down", severity="critical")], [], T0, POLICY)
    issue = next(iter(out.issues.values()))
    assert issue.kind == "down" and issue.actionable_at == T0


def test_flapping_series_does_not_open_and_resolve_repeatedly(engine: Engine) -> None:
    """Anomalous every other minute for an hour: one issue, open throughout."""
    now = T0
    for minute in range(60):
        now = T0 + timedelta(minutes=minute)
        batch = [anomaly(now)] if minute % 2 == 0 else []
        persist_detection(engine, batch, {}, now, POLICY, {})
    df = issues_frame(engine)
    assert len(df) == 1
    assert df.iloc[0]["status"] == "open"
    assert df.iloc[0]["reopen_count"] == 0


def test_slow_flapping_reopens_the_same_issue(engine: Engine) -> None:
    """Quiet long enough to resolve, then back within the flap window: reopened, not new."""
    persist_detection(engine, [anomaly(T0)], {}, T0, POLICY, {})
    persist_detection(engine, [], {}, T0 + timedelta(seconds=400), POLICY, {})
    assert issues_frame(engine).iloc[0]["status"] == "resolved"
    back = T0 + timedelta(seconds=700)
    persist_detection(engine, [anomaly(back)], {}, back, POLICY, {})
    df = issues_frame(engine)
    assert len(df) == 1
    assert (df.iloc[0]["status"], df.iloc[0]["reopen_count"]) == ("open", 1)
    # Beyond the flap window a new incident is a new issue.
    later = T0 + timedelta(hours=3)
    persist_detection(engine, [], {}, later, POLICY, {})
    persist_detection(
        engine,
        [anomaly(later + timedelta(seconds=1))],
        {},
        later + timedelta(seconds=1),
        POLICY,
        {},
    )
    assert len(issues_frame(engine)) == 2


def test_down_component_inhibits_its_symptoms(engine: Engine) -> None:
    """Anomalies near a down stretch join its incident; incidents that began earlier (out
    of the correlation window) on the component or its dependants are inhibited by it."""
    deps = {"proof_engine": ["theorem_repository"], "theorem_repository": []}
    early = T0 - timedelta(seconds=120)
    persist_detection(
        engine,
        [
            anomaly(early, "theorem_repository", "metric", "latency:mean"),
            anomaly(early, "proof_engine", "metric", "errors_total:rate"),
            anomaly(early, "genetic_optimizer", "metric", "latency:mean"),
        ],
        {},
        early,
        POLICY,
        {},
    )
    batch = [
        anomaly(T0, "theorem_repository", "down", "down", "critical", "down"),
        anomaly(T0, "theorem_repository", "metric", "latency:mean"),
        anomaly(T0, "proof_engine", "metric", "errors_total:rate"),
    ]
    persist_detection(engine, batch, {}, T0 + timedelta(seconds=1), POLICY, deps)
    rows = {(r["component"], r["kind"]): r for _, r in issues_frame(engine).iterrows()}
    down_id = rows[("theorem_repository", "down")]["id"]
    assert rows[("theorem_repository", "down")]["severity"] == "critical"
    assert rows[("theorem_repository", "metric")]["inhibited_by"] == down_id
    assert rows[("proof_engine", "metric")]["inhibited_by"] == down_id  # depends on it
    assert pd.isna(rows[("genetic_optimizer", "metric")]["inhibited_by"])  # unrelated
    # Once the component is back (down issue resolved), the symptoms are no longer inhibited.
    back = T0 + timedelta(seconds=400)
    persist_detection(
        engine,
        [anomaly(back, "proof_engine", "metric", "errors_total:rate")],
        {},
        back,
        POLICY,
        deps,
    )
    rows = {(r["component"], r["kind"]): r for _, r in issues_frame(engine).iterrows()}
    assert rows[("theorem_repository", "down")]["status"] == "resolved"
    assert pd.isna(rows[("proof_engine", "metric")]["inhibited_by"])


def test_inhibition_is_pure() -> None:
    before = group([anomaly(T0 - timedelta(seconds=120), "db")], [], T0, POLICY)
    symptom = next(iter(before.issues.values()))
    symptom.id = 1
    out = group([anomaly(T0, "db", "down", "down", "critical")], [symptom], T0, POLICY)
    down = next(i for i in out.issues.values() if i.kind == "down")
    down.id = 2
    assert inhibitions([symptom, down], {}) == {symptom.id: down.id}


def test_log_errors_of_several_components_correlate_into_one_issue() -> None:
    deps = {"proof_engine": ["theorem_repository"]}
    batch = [
        anomaly(T0, "theorem_repository", "log", "storage_error", "high"),
        anomaly(T0 + timedelta(seconds=5), "proof_engine", "log", "connection_refused", "high"),
        anomaly(T0 + timedelta(minutes=30), "genetic_optimizer", "log", "timeout"),
    ]
    out = group(batch, [], T0 + timedelta(minutes=31), POLICY, deps)
    kinds = sorted((i.kind, i.component) for i in out.issues.values())
    assert kinds == [("log", "genetic_optimizer"), ("log_correlation", "theorem_repository")]
    corr = next(i for i in out.issues.values() if i.kind == "log_correlation")
    assert corr.anomaly_count == 2
    assert corr.signature == "proof_engine+theorem_repository"


def test_issues_survive_a_reload(engine: Engine) -> None:
    persist_detection(engine, [anomaly(T0)], {"metrics:api": 123}, T0, POLICY, {})
    with engine.connect() as conn:
        active = load_active_issues(conn, T0 - timedelta(hours=1))
    assert len(active) == 1
    assert active[0].first_seen == T0
    assert active[0].first_seen.tzinfo is not None


def test_side_effects_of_a_recovery_are_silenced_then_surface() -> None:
    from tasks.issues.grouping import silences_from_actions

    deps = {"proof_engine": ["theorem_repository"]}
    silences = silences_from_actions([("theorem_repository", T0)], deps, 60)
    assert set(silences) == {"theorem_repository", "proof_engine"}
    during = group(
        [anomaly(T0 + timedelta(seconds=5), "proof_engine", signature="errors")],
        [],
        T0 + timedelta(seconds=6),
        POLICY,
        deps,
        silences,
    )
    issue = next(iter(during.issues.values()))
    assert issue.status == "silenced"
    after = group(
        [anomaly(T0 + timedelta(seconds=90), "proof_engine", signature="errors")],
        [issue],
        T0 + timedelta(seconds=91),
        POLICY,
        deps,
        silences,
    )
    assert after.issues[issue.fingerprint].status == "open"


def test_a_side_effect_that_outlives_a_healed_incidents_silence_is_an_incident_of_its_own() -> None:
    """Seen in the demo: a fault injected 3 s after a restart healed its component was
    recorded as the restart's side effects, then kept firing after the silence inside the
    healed incident, which nothing acts on again."""
    from dataclasses import replace

    from tasks.issues.grouping import silences_from_actions

    deps = {"proof_engine": ["theorem_repository"]}
    opened = group([anomaly(T0, "theorem_repository", signature="oom")], [], T0, POLICY, deps)
    healed = replace(next(iter(opened.issues.values())), id=1, status="recovering")
    silences = silences_from_actions([("theorem_repository", T0 + timedelta(seconds=5))], deps, 60)
    acted = {"theorem_repository": 1, "proof_engine": 1}

    def errors_at(seconds: int, healed_ids: set[int]) -> GroupingOutcome:
        return group(
            [anomaly(T0 + timedelta(seconds=seconds), "theorem_repository", signature="errors")],
            [healed],
            T0 + timedelta(seconds=seconds + 1),
            POLICY,
            deps,
            silences,
            acted,
            healed_ids,
        )

    during = errors_at(8, {1})
    assert list(during.issues) == [healed.fingerprint] and during.opened == []
    after = errors_at(70, {1})
    assert len(after.opened) == 1
    fresh = after.issues[after.opened[0]]
    assert (fresh.signature, fresh.status) == ("errors", "open")
    # Not healed yet, the same incident would have kept it.
    assert errors_at(70, set()).opened == []


def test_context_anomalies_open_no_issue_and_join_the_one_beside_them(engine: Engine) -> None:
    """A host's resource series (context) alarm on a workload change: no issue. Beside a
    symptom's issue they are listed in it and change none of its grading."""
    host = [
        anomaly(T0 + timedelta(seconds=i), "api", "context", "node_memory_Active_bytes", "critical")
        for i in range(5)
    ]
    summary = persist_detection(engine, host, {}, T0 + timedelta(seconds=30), POLICY, {})
    assert summary.new_issues == [] and issues_frame(engine).empty
    stored = anomalies_frame(engine)
    assert len(stored) == 5 and stored["issue_id"].isna().all()

    later = T0 + timedelta(minutes=30)
    batch = [
        anomaly(later, "api", "metric", "errors_total:rate", "medium"),
        anomaly(later + timedelta(seconds=20), "api", "context", "node_filefd_allocated", "high"),
        anomaly(later + timedelta(seconds=25), "api", "context", "node_filefd_allocated", "low"),
        anomaly(later + timedelta(seconds=30), "web", "context", "node_filefd_allocated", "high"),
        anomaly(later + timedelta(minutes=5), "api", "context", "node_memory_Shmem_bytes", "low"),
    ]
    summary = persist_detection(engine, batch, {}, later + timedelta(minutes=6), POLICY, {})
    assert len(summary.new_issues) == 1
    (issue,) = load_active_issues(engine.connect(), T0)
    assert (issue.kind, issue.signature, issue.severity) == (
        "metric",
        "errors_total:rate",
        "medium",
    )
    assert issue.anomaly_count == 1 and issue.last_seen == later
    listed = issue.details["context"]
    assert list(listed) == ["api/node_filefd_allocated"]
    assert listed["api/node_filefd_allocated"]["count"] == 2
    assert listed["api/node_filefd_allocated"]["severity"] == "high"
    linked = anomalies_frame(engine, start=later)
    assert linked["issue_id"].notna().tolist() == [True, True, True, False, False]
