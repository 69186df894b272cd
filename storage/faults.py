"""Fault injections: the demo's ground truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, insert, select, update

from storage.metrics import _frame
from storage.models import FaultInjection


def record_injection(
    conn: Connection,
    run: str,
    component: str,
    fault: str,
    expected_strategy: str | None,
    injected_at: datetime,
    detail: dict[str, Any],
) -> int:
    return conn.execute(
        insert(FaultInjection)
        .values(
            run=run,
            component=component,
            fault=fault,
            expected_strategy=expected_strategy,
            injected_at=injected_at,
            detail=detail,
        )
        .returning(FaultInjection.id)
    ).scalar_one()


def mark_cleared(conn: Connection, injection_id: int, when: datetime) -> None:
    t = FaultInjection.table()
    conn.execute(update(t).where(t.c.id == injection_id).values(cleared_at=when))


def faults_frame(engine: Engine | Connection, run: str | None = None) -> pd.DataFrame:
    t = FaultInjection.table()
    cols = [c.name for c in t.columns]
    stmt = select(t).order_by(t.c.id)
    if run is not None:
        stmt = stmt.where(t.c.run == run)
    df = _frame(engine, stmt, {}, cols)
    for c in ("injected_at", "cleared_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df
