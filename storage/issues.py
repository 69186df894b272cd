"""Issues, anomalies and feedback: the records detection writes and recovery acts on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.metrics import _frame, to_ms
from storage.models import AnomalyRow, DetectionState, Feedback, Issue
from storage.types import utcnow

ACTIVE = ("open", "recovering", "escalated", "silenced")


@dataclass
class IssueRecord:
    """An issue as the domain sees it (a plain dataclass, detached from the session)."""

    fingerprint: str
    component: str
    kind: str
    signature: str
    title: str
    severity: str
    status: str
    first_seen: datetime
    last_seen: datetime
    actionable_at: datetime
    anomaly_count: int = 0
    resolved_at: datetime | None = None
    inhibited_by: int | None = None
    last_notified_at: datetime | None = None
    reopen_count: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class AnomalyRecord:
    detector: str
    component: str
    kind: str
    signature: str
    ts_ms: int
    score: float
    severity: str
    value: float | None = None
    series_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # the issue it joins (set by grouping)


_ISSUE_FIELDS = [
    "fingerprint",
    "component",
    "kind",
    "signature",
    "title",
    "severity",
    "status",
    "first_seen",
    "last_seen",
    "actionable_at",
    "anomaly_count",
    "resolved_at",
    "inhibited_by",
    "last_notified_at",
    "reopen_count",
    "details",
]


def _record(row: Any) -> IssueRecord:
    return IssueRecord(**{f: getattr(row, f) for f in _ISSUE_FIELDS}, id=row.id)


def load_active_issues(conn: Connection, resolved_since: datetime) -> list[IssueRecord]:
    """Open, recovering and silenced issues, plus ones resolved recently (for flapping)."""
    stmt = select(Issue).where(
        or_(
            Issue.status.in_(ACTIVE),
            (Issue.status == "resolved") & (Issue.resolved_at >= resolved_since),
        )
    )
    return [_record(r) for r in _issue_rows(conn, stmt)]


def _issue_rows(conn: Connection, stmt: Any) -> list[Any]:
    from sqlalchemy.orm import Session

    with Session(bind=conn) as session:
        rows = list(session.execute(stmt).scalars())
        session.expunge_all()
    return rows


def get_issue(engine: Engine | Connection, issue_id: int) -> IssueRecord | None:
    stmt = select(Issue).where(Issue.id == issue_id)
    if isinstance(engine, Connection):
        rows = _issue_rows(engine, stmt)
    else:
        with engine.connect() as conn:
            rows = _issue_rows(conn, stmt)
    return _record(rows[0]) if rows else None


def save_issues(conn: Connection, issues: Iterable[IssueRecord]) -> dict[str, int]:
    """Insert new issues and update known ones; returns fingerprint → id of each."""
    ids: dict[str, int] = {}
    for issue in issues:
        values = {f: getattr(issue, f) for f in _ISSUE_FIELDS}
        if issue.id is None:
            issue.id = conn.execute(insert(Issue).values(**values).returning(Issue.id)).scalar_one()
        else:
            conn.execute(update(Issue).where(Issue.id == issue.id).values(**values))
        ids[issue.fingerprint] = issue.id
    return ids


def save_anomalies(
    conn: Connection, anomalies: Sequence[AnomalyRecord], issue_ids: dict[str, int]
) -> int:
    """Insert anomalies linked to their issues; a repeat (same detector, signature, ts) is
    ignored. Returns how many were new."""
    if not anomalies:
        return 0
    now = utcnow()
    rows = [
        {
            "detector": a.detector,
            "component": a.component,
            "kind": a.kind,
            "signature": a.signature[:300],
            "series_id": a.series_id,
            "ts": a.ts_ms,
            "value": a.value,
            "score": float(a.score),
            "severity": a.severity,
            "details": a.details,
            "issue_id": issue_ids.get(a.fingerprint),
            "created_at": now,
        }
        for a in anomalies
    ]
    ins = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = ins(AnomalyRow).on_conflict_do_nothing().returning(AnomalyRow.id)
    return len(conn.execute(stmt, rows).all())


def set_issue_status(
    conn: Connection, issue_id: int, status: str, when: datetime | None = None
) -> None:
    values: dict[str, Any] = {"status": status}
    if status == "resolved":
        values["resolved_at"] = when or utcnow()
    conn.execute(update(Issue).where(Issue.id == issue_id).values(**values))


def mark_notified(conn: Connection, issue_ids: Sequence[int], when: datetime) -> None:
    if issue_ids:
        conn.execute(
            update(Issue)
            .where(Issue.id.in_(bindparam("ids", expanding=True)))
            .values(last_notified_at=when),
            {"ids": list(issue_ids)},
        )


# -- watermarks -----------------------------------------------------------------------


def get_watermarks(conn: Connection, streams: Sequence[str]) -> dict[str, int]:
    if not streams:
        return {}
    stmt = select(DetectionState.stream, DetectionState.watermark).where(
        DetectionState.stream.in_(bindparam("s", expanding=True))
    )
    return dict(conn.execute(stmt, {"s": list(streams)}).tuples().all())


def set_watermarks(conn: Connection, marks: dict[str, int]) -> None:
    if not marks:
        return
    ins = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    for stream, mark in marks.items():
        stmt = ins(DetectionState).values(stream=stream, watermark=mark, updated_at=now)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["stream"], set_={"watermark": mark, "updated_at": now}
            )
        )


# -- frames for status, dashboards and notebooks ----------------------------------------


def issues_frame(engine: Engine | Connection, status: Sequence[str] | None = None) -> pd.DataFrame:
    """Issues as a frame; times are UTC timestamps and ``details`` a dict."""
    cols = ["id", *_ISSUE_FIELDS]
    table = Issue.table()
    stmt = select(*(table.c[c] for c in cols)).order_by(table.c.id)
    if status:
        stmt = stmt.where(table.c.status.in_(list(status)))
    df = _frame(engine, stmt, {}, cols)
    for c in ("first_seen", "last_seen", "actionable_at", "resolved_at", "last_notified_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def anomalies_frame(
    engine: Engine | Connection,
    start: pd.Timestamp | int = 0,
    end: pd.Timestamp | int | None = None,
    component: str | None = None,
) -> pd.DataFrame:
    cols = [
        "id",
        "detector",
        "component",
        "kind",
        "signature",
        "series_id",
        "ts",
        "value",
        "score",
        "severity",
        "issue_id",
    ]
    sql = f"SELECT {', '.join(cols)} FROM anomalies WHERE ts >= :start AND ts < :end"
    params: dict[str, object] = {"start": to_ms(start), "end": to_ms(end) if end else 2**62}
    if component:
        sql += " AND component = :component"
        params["component"] = component
    df = _frame(engine, text(sql + " ORDER BY ts, id"), params, cols)
    df["ts"] = pd.to_datetime(df["ts"].astype("int64"), unit="ms", utc=True)
    return df


def add_feedback(conn: Connection, issue_id: int, verdict: str, by: str, note: str = "") -> int:
    if verdict not in ("true_positive", "false_positive"):
        raise ValueError(f"verdict must be true_positive or false_positive, not {verdict!r}")
    row = conn.execute(select(Issue.id).where(Issue.id == issue_id)).first()
    if row is None:
        raise LookupError(f"no issue with id {issue_id}")
    return conn.execute(
        insert(Feedback)
        .values(issue_id=issue_id, verdict=verdict, by=by, note=note, created_at=utcnow())
        .returning(Feedback.id)
    ).scalar_one()


def recent_cutoff(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)


def open_metric_issue_starts(
    conn: Connection, components: Sequence[str]
) -> dict[str, dict[str, int]]:
    """component → {metric signature → first_seen (epoch ms)} of its active metric issues."""
    t = Issue.table()
    stmt = select(t.c.component, t.c.signature, t.c.first_seen).where(
        t.c.kind == "metric", t.c.status.in_(ACTIVE), t.c.component.in_(list(components))
    )
    out: dict[str, dict[str, int]] = {}
    for comp, sig, first in conn.execute(stmt):
        if first.tzinfo is None:
            from datetime import UTC

            first = first.replace(tzinfo=UTC)
        ms = int(first.timestamp() * 1000)
        prev = out.setdefault(comp, {}).get(sig)
        out[comp][sig] = ms if prev is None else min(prev, ms)
    return out


def feedback_frame(engine: Engine | Connection) -> pd.DataFrame:
    """Operator feedback (id, issue_id, verdict, by, note, created_at as UTC)."""
    t = Feedback.__table__
    cols = ["id", "issue_id", "verdict", "by", "note", "created_at"]
    df = _frame(engine, select(*(t.c[c] for c in cols)).order_by(t.c.id), {}, cols)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
    return df


def last_detection_at(engine: Engine | Connection) -> datetime | None:
    """When a detection cycle last moved a watermark (None before the first one)."""
    stmt = select(DetectionState.updated_at).order_by(DetectionState.updated_at.desc()).limit(1)
    if isinstance(engine, Connection):
        row = engine.execute(stmt).first()
    else:
        with engine.connect() as conn:
            row = conn.execute(stmt).first()
    if row is None or row[0] is None:
        return None
    when: datetime = row[0]
    if when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return when
