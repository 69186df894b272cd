"""The audit trail: one row per decision or action, by the system or a person."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, insert, select

from storage.metrics import _frame
from storage.models import AuditEvent
from storage.types import utcnow

EVENTS = (
    "detected",
    "planned",
    "asked",
    "approved",
    "rejected",
    "expired",
    "executed",
    "validated",
    "escalated",
    "quarantined",
    "succeeded",
    "failed",
    "recorded_only",
    "skipped",
    "notified",
    "resolved",
    "feedback",
    "config_changed",
    "interrupted",  # selfheal serve stopped while the recovery ran
    "resumed",  # ... and its next start ran it again
)


def audit(
    conn: Connection,
    event: str,
    *,
    actor: str = "selfheal",
    issue_id: int | None = None,
    recovery_id: int | None = None,
    approval_id: str | None = None,
    component: str | None = None,
    **detail: Any,
) -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    conn.execute(
        insert(AuditEvent).values(
            ts=utcnow(),
            event=event,
            actor=actor,
            issue_id=issue_id,
            recovery_id=recovery_id,
            approval_id=approval_id,
            component=component,
            detail=detail,
        )
    )


def audit_frame(engine: Engine | Connection, issue_id: int | None = None) -> pd.DataFrame:
    t = AuditEvent.table()
    cols = [c.name for c in t.columns]
    stmt = select(t).order_by(t.c.id)
    if issue_id is not None:
        stmt = stmt.where(t.c.issue_id == issue_id)
    df = _frame(engine, stmt, {}, cols)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def has_event_since(
    engine: Engine | Connection, issue_id: int, event: str, since: datetime
) -> bool:
    """Whether ``event`` was recorded for ``issue_id`` at or after ``since``."""
    t = AuditEvent.table()
    stmt = select(t.c.id).where(t.c.issue_id == issue_id, t.c.event == event, t.c.ts >= since)
    if isinstance(engine, Connection):
        return engine.execute(stmt).first() is not None
    with engine.connect() as conn:
        return conn.execute(stmt).first() is not None
