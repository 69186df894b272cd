"""A realistic small database: an hour of metrics for three components, the anomalies a
latency spike, an outage and a memory leak left, the issues and recoveries they caused
(open, inhibited, resolved; succeeded, failed, running, awaiting approval) and a few hours
of healing history. Shared by the dashboard and notebook tests.

Times are relative to ``now`` so a dashboard reading "the last hour" finds them.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, insert

from storage.approvals import create_approval, decide, set_flow_run
from storage.issues import AnomalyRecord, IssueRecord, save_anomalies, save_issues
from storage.metrics import SeriesKey, SeriesResolver, insert_samples, labels_key
from storage.models import FaultInjection
from storage.recoveries import create_recovery

COMPONENTS = ("proof_engine", "theorem_repository", "genetic_optimizer")
STEP_S = 15
WINDOW_S = 3600
LATENCY = "hms_request_latency_seconds"


@dataclass
class FixtureInfo:
    now: datetime
    components: tuple[str, ...] = COMPONENTS
    issue_ids: dict[str, int] = field(default_factory=dict)
    recovery_ids: dict[str, int] = field(default_factory=dict)
    pending_approval: str = ""
    ui_url: str = ""
    anomalies_by_component: dict[str, int] = field(default_factory=dict)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _rows(comp: str, now_s: float) -> list[tuple[float, dict[str, float]]]:
    """(time, values) per scrape over the hour: counters accumulate per-step increments
    (so derived rates and means are what the fault made them), gauges are read as is."""
    noise = random.Random(f"{comp}-fixture")
    base_rate = {"proof_engine": 20.0, "theorem_repository": 35.0, "genetic_optimizer": 8.0}
    totals = {"requests": 0.0, "errors": 0.0, "lat_sum": 0.0, "lat_count": 0.0, "bucket": 0.0}
    out = []
    for i in range(WINDOW_S // STEP_S + 1):
        t_s = now_s - WINDOW_S + i * STEP_S
        ago = now_s - t_s
        down = comp == "theorem_repository" and 480 <= ago <= 600  # down 8-10 min ago
        served = 0.0 if down else base_rate[comp] * STEP_S * noise.uniform(0.85, 1.15)
        latency = 0.05 * noise.uniform(0.8, 1.25)
        if comp == "proof_engine" and 1080 <= ago <= 1320:  # a spike 18-22 min ago
            latency = 0.9 * noise.uniform(0.9, 1.1)
        error_share = 0.02 * noise.uniform(0.5, 1.5)
        if comp == "proof_engine" and 480 <= ago <= 660:  # its dependency is down
            error_share = 0.3
        totals["requests"] += served
        totals["errors"] += served * error_share
        totals["lat_sum"] += served * latency
        totals["lat_count"] += served
        totals["bucket"] += served * (latency <= 0.5)
        memory = 300e6 * noise.uniform(0.98, 1.02)
        if comp == "genetic_optimizer":  # a leak over the hour
            memory += 3e6 * i
        gauges = {
            "memory": memory,
            "queue": max(0.0, round(3 + noise.gauss(0, 1.2))),
            "up": 0.0 if down else 1.0,
        }
        out.append((t_s, {**totals, **gauges}))
    return out


SERIES = {
    "requests": ("hms_requests_total", "counter"),
    "errors": ("hms_errors_total", "counter"),
    "lat_sum": (f"{LATENCY}_sum", "histogram"),
    "lat_count": (f"{LATENCY}_count", "histogram"),
    "bucket": (f"{LATENCY}_bucket", "histogram"),
    "memory": ("hms_memory_bytes", "gauge"),
    "queue": ("hms_queue_depth", "gauge"),
    "up": ("up", "gauge"),
}


def _keys(comp: str) -> dict[str, SeriesKey]:
    return {
        k: SeriesKey(comp, metric, labels_key({"le": "0.5"}) if k == "bucket" else "{}")
        for k, (metric, _) in SERIES.items()
    }


def write_samples(conn: Connection, now: datetime) -> dict[str, dict[str, int]]:
    """An hour of samples per component; returns component → series role → id."""
    resolver = SeriesResolver()
    keys = {comp: _keys(comp) for comp in COMPONENTS}
    kinds = {key: SERIES[role][1] for comp in COMPONENTS for role, key in keys[comp].items()}
    ids = resolver.resolve(conn, list(kinds), kinds)
    now_s = now.timestamp()
    rows = []
    for comp in COMPONENTS:
        for t_s, values in _rows(comp, now_s):
            for role, value in values.items():
                rows.append((ids[keys[comp][role]], int(t_s * 1000), value))
    insert_samples(conn, rows)
    return {comp: {role: ids[key] for role, key in keys[comp].items()} for comp in COMPONENTS}


def _issue(
    fp: str,
    comp: str,
    kind: str,
    title: str,
    severity: str,
    status: str,
    *,
    first_seen: datetime,
    last_seen: datetime | None = None,
    resolved_at: datetime | None = None,
    signature: str | None = None,
    anomaly_count: int = 0,
) -> IssueRecord:
    return IssueRecord(
        fingerprint=fp,
        component=comp,
        kind=kind,
        signature=signature or kind,
        title=title,
        severity=severity,
        status=status,
        first_seen=first_seen,
        last_seen=last_seen or first_seen,
        actionable_at=first_seen,
        resolved_at=resolved_at,
        anomaly_count=anomaly_count,
    )


def _history(conn: Connection, now: datetime) -> None:
    """Ten resolved issues over the past six hours, healed or not, one after a human's yes."""
    for n in range(10):
        comp = COMPONENTS[n % 3]
        seen = now - timedelta(hours=6) + timedelta(minutes=33 * n)
        fixed = seen + timedelta(seconds=40 + 25 * n)
        status = "failed" if n in (2, 7) else "succeeded"
        ids = save_issues(
            conn,
            [
                _issue(
                    f"hist{n}",
                    comp,
                    "metric",
                    f"past issue {n} on {comp}",
                    "medium",
                    "resolved",
                    first_seen=seen,
                    resolved_at=fixed,
                    anomaly_count=3,
                )
            ],
        )
        rid = create_recovery(
            conn,
            issue_id=ids[f"hist{n}"],
            component=comp,
            issue_kind="metric",
            strategy=("restart", "reconfigure", "circuit_breaker")[n % 3],
            mode="automated",
            status=status,
            created_at=seen,
            started_at=seen + timedelta(seconds=10),
            finished_at=fixed,
            error="validation failed: up still 0 after 30 s" if status == "failed" else None,
        )
        if n == 4:
            aid = create_approval(
                conn,
                recovery_id=rid,
                issue_id=ids[f"hist{n}"],
                component=comp,
                severity="medium",
                proposed_action="restart",
                requested_at=seen,
                expires_at=seen + timedelta(hours=1),
            )
            decide(conn, aid, "approved", "alice", "go", seen + timedelta(seconds=20))


def build_outcomes(engine: Engine, now: datetime | None = None) -> FixtureInfo:
    """Fill an empty, migrated database; returns ids and the pending approval's link."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    info = FixtureInfo(now=now)
    with engine.begin() as conn:
        sids = write_samples(conn, now)
        _history(conn, now)
        issues = [
            _issue(
                "latency",
                "proof_engine",
                "metric",
                "proof_engine: mean latency 18x its usual",
                "high",
                "recovering",
                signature=f"{LATENCY}:mean",
                first_seen=now - timedelta(minutes=22),
                last_seen=now - timedelta(minutes=18),
                anomaly_count=4,
            ),
            _issue(
                "down",
                "theorem_repository",
                "down",
                "theorem_repository is down",
                "critical",
                "resolved",
                first_seen=now - timedelta(minutes=10),
                last_seen=now - timedelta(minutes=8),
                resolved_at=now - timedelta(minutes=7),
                anomaly_count=3,
            ),
            _issue(
                "errors",
                "proof_engine",
                "metric",
                "proof_engine: error rate up (theorem_repository down)",
                "medium",
                "open",
                signature="hms_errors_total:rate",
                first_seen=now - timedelta(minutes=9),
                anomaly_count=2,
            ),
            _issue(
                "leak",
                "genetic_optimizer",
                "metric",
                "genetic_optimizer: memory keeps growing",
                "critical",
                "open",
                signature="hms_memory_bytes",
                first_seen=now - timedelta(minutes=30),
                last_seen=now - timedelta(minutes=2),
                anomaly_count=5,
            ),
        ]
        ids = save_issues(conn, issues)
        issues[2].inhibited_by = ids["down"]
        save_issues(conn, [issues[2]])
        info.issue_ids = dict(ids)
        info.anomalies_by_component = _anomalies(conn, now, sids, ids)
        info.recovery_ids = {
            "running": create_recovery(
                conn,
                issue_id=ids["latency"],
                component="proof_engine",
                issue_kind="metric",
                strategy="restart",
                mode="automated",
                status="running",
                created_at=now - timedelta(minutes=3),
                started_at=now - timedelta(minutes=2),
            ),
            "succeeded": create_recovery(
                conn,
                issue_id=ids["down"],
                component="theorem_repository",
                issue_kind="down",
                strategy="restart",
                mode="automated",
                status="succeeded",
                created_at=now - timedelta(minutes=9, seconds=40),
                started_at=now - timedelta(minutes=9, seconds=30),
                finished_at=now - timedelta(minutes=7),
            ),
            "failed": create_recovery(
                conn,
                issue_id=ids["leak"],
                component="genetic_optimizer",
                issue_kind="metric",
                strategy="reconfigure",
                mode="supervised",
                status="failed",
                created_at=now - timedelta(minutes=25),
                started_at=now - timedelta(minutes=24),
                finished_at=now - timedelta(minutes=20),
                error="memory still above threshold after reconfigure (pool_size 8 -> 4)",
            ),
            "awaiting": create_recovery(
                conn,
                issue_id=ids["leak"],
                component="genetic_optimizer",
                issue_kind="metric",
                strategy="restart",
                rung=1,
                mode="supervised",
                status="awaiting_approval",
                created_at=now - timedelta(minutes=4),
            ),
        }
        info.pending_approval = create_approval(
            conn,
            recovery_id=info.recovery_ids["awaiting"],
            issue_id=ids["leak"],
            component="genetic_optimizer",
            severity="critical",
            proposed_action="restart genetic_optimizer",
            requested_at=now - timedelta(minutes=4),
            expires_at=now + timedelta(minutes=56),
        )
        run_id = str(uuid.uuid4())
        info.ui_url = f"http://127.0.0.1:4200/runs/flow-run/{run_id}"
        set_flow_run(conn, info.pending_approval, run_id, info.ui_url)
        conn.execute(
            insert(FaultInjection),
            [
                {
                    "run": "fixture",
                    "component": comp,
                    "fault": fault,
                    "expected_strategy": strategy,
                    "injected_at": now - timedelta(minutes=m),
                    "cleared_at": None,
                    "detail": {},
                }
                for comp, fault, strategy, m in (
                    ("proof_engine", "latency", "restart", 23),
                    ("theorem_repository", "crash", "restart", 11),
                    ("genetic_optimizer", "memory_leak", "reconfigure", 31),
                )
            ],
        )
    return info


def _anomalies(
    conn: Connection, now: datetime, sids: dict[str, dict[str, int]], ids: dict[str, int]
) -> dict[str, int]:
    """The anomalies the faults left, linked to their issues; returns counts per component."""
    recs = [
        AnomalyRecord(
            "default",
            "proof_engine",
            "metric",
            f"{LATENCY}:mean",
            _ms(now - timedelta(minutes=m)),
            8.0,
            "high",
            value=0.9,
            series_id=sids["proof_engine"]["lat_sum"],
            fingerprint="latency",
        )
        for m in (22, 21, 20, 19)
    ]
    recs += [
        AnomalyRecord(
            "down",
            "theorem_repository",
            "down",
            "down",
            _ms(now - timedelta(seconds=s)),
            1.0,
            "critical",
            value=0.0,
            fingerprint="down",
        )
        for s in (600, 585, 570)
    ]
    recs += [
        AnomalyRecord(
            "default",
            "genetic_optimizer",
            "metric",
            "hms_memory_bytes",
            _ms(now - timedelta(minutes=m)),
            5.0,
            "critical",
            value=None,  # no stored value: the marker sits on the curve
            series_id=sids["genetic_optimizer"]["memory"],
            fingerprint="leak",
        )
        for m in (30, 20, 10, 5, 2)
    ]
    recs.append(  # a log anomaly: no series to mark
        AnomalyRecord(
            "log_signature",
            "proof_engine",
            "log",
            "ERROR upstream theorem_repository refused",
            _ms(now - timedelta(minutes=9)),
            3.0,
            "medium",
            fingerprint="errors",
        )
    )
    save_anomalies(conn, recs, ids)
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.component] = counts.get(r.component, 0) + 1
    return counts
