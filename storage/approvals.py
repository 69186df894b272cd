"""Approvals: requested, answered once (approved / rejected / expired), never rewritten."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, insert, select, update

from storage.metrics import _frame
from storage.models import Approval
from storage.signals import notify_decided
from storage.types import utcnow

DECISIONS = ("approved", "rejected", "expired")


class ApprovalNotFound(LookupError):
    pass


class ApprovalAlreadyDecided(RuntimeError):
    def __init__(self, approval: dict[str, Any]) -> None:
        self.approval = approval
        super().__init__(
            f"{approval['id']} was already {approval['decision']}"
            + (f" by {approval['decided_by']}" if approval.get("decided_by") else "")
            + (
                f" at {approval['decided_at']:%Y-%m-%d %H:%M:%S} UTC"
                if approval.get("decided_at")
                else ""
            )
        )


def new_approval_id() -> str:
    return f"approval_{secrets.token_hex(4)}"


def create_approval(conn: Connection, **values: Any) -> str:
    values.setdefault("id", new_approval_id())
    values.setdefault("requested_at", utcnow())
    values.setdefault("decision", "pending")
    conn.execute(insert(Approval).values(**values))
    return str(values["id"])


def get_approval(engine: Engine | Connection, approval_id: str) -> dict[str, Any]:
    stmt = select(Approval.table()).where(Approval.table().c.id == approval_id)
    if isinstance(engine, Connection):
        row = engine.execute(stmt).mappings().first()
    else:
        with engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
    if row is None:
        raise ApprovalNotFound(f"no approval with id {approval_id!r}")
    return dict(row)


def decide(
    conn: Connection,
    approval_id: str,
    decision: str,
    by: str,
    reason: str | None = None,
    when: datetime | None = None,
) -> dict[str, Any]:
    """Record the decision if the approval is still pending (first answer wins)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    t = Approval.table()
    result = conn.execute(
        update(t)
        .where(t.c.id == approval_id, t.c.decision == "pending")
        .values(decision=decision, decided_by=by, reason=reason, decided_at=when or utcnow())
    )
    current = get_approval(conn, approval_id)
    if result.rowcount == 0 and current["decision"] != "pending":
        raise ApprovalAlreadyDecided(current)
    if result.rowcount:
        notify_decided(conn, approval_id)  # serve wakes when this commits
    return current


def set_flow_run(conn: Connection, approval_id: str, flow_run_id: str, ui_url: str | None) -> None:
    t = Approval.table()
    conn.execute(
        update(t).where(t.c.id == approval_id).values(flow_run_id=flow_run_id, ui_url=ui_url)
    )


def approvals_frame(engine: Engine | Connection, pending_only: bool = False) -> pd.DataFrame:
    t = Approval.table()
    cols = [c.name for c in t.columns]
    stmt = select(t).order_by(t.c.requested_at)
    if pending_only:
        stmt = stmt.where(t.c.decision == "pending")
    df = _frame(engine, stmt, {}, cols)
    for c in ("requested_at", "expires_at", "decided_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df
