"""Versions of the tunable configuration: one is active; rollback returns to the previous.

A version's body is an overlay on the configuration file (for example the detectors'
parameters and the recovery thresholds); flows apply the active one when they start.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, insert, select, update

from storage.metrics import _frame
from storage.models import ConfigVersion
from storage.types import utcnow


def _row(row: Any) -> dict[str, Any]:
    return dict(row._mapping) if row is not None else {}


def active_version(conn: Connection) -> dict[str, Any] | None:
    t = ConfigVersion.table()
    row = conn.execute(select(t).where(t.c.active.is_(True))).first()
    return _row(row) or None


def get_version(conn: Connection, version_id: int) -> dict[str, Any]:
    t = ConfigVersion.table()
    row = conn.execute(select(t).where(t.c.id == version_id)).first()
    if row is None:
        raise LookupError(f"no configuration version {version_id}")
    return _row(row)


def activate(conn: Connection, version_id: int, when: datetime | None = None) -> None:
    t = ConfigVersion.table()
    get_version(conn, version_id)  # raises for an unknown id
    conn.execute(update(t).where(t.c.active.is_(True)).values(active=False))
    conn.execute(
        update(t).where(t.c.id == version_id).values(active=True, activated_at=when or utcnow())
    )


def create_version(
    conn: Connection,
    body: dict[str, Any],
    source: str,
    *,
    metrics: dict[str, Any] | None = None,
    note: str = "",
    make_active: bool = False,
) -> int:
    if source not in ("manual", "tuning", "rollback", "baseline"):
        raise ValueError(f"unknown configuration source {source!r}")
    vid = conn.execute(
        insert(ConfigVersion)
        .values(
            created_at=utcnow(),
            source=source,
            body=body,
            metrics=metrics or {},
            active=False,
            note=note,
        )
        .returning(ConfigVersion.id)
    ).scalar_one()
    if make_active:
        activate(conn, vid)
    return int(vid)


def previous_active(conn: Connection) -> dict[str, Any] | None:
    """The version that was active before the current one (latest earlier activation)."""
    t = ConfigVersion.table()
    current = active_version(conn)
    stmt = select(t).where(t.c.activated_at.is_not(None), t.c.active.is_(False))
    if current is not None and current.get("activated_at") is not None:
        stmt = stmt.where(t.c.activated_at < current["activated_at"])
    row = conn.execute(stmt.order_by(t.c.activated_at.desc()).limit(1)).first()
    return _row(row) or None


def versions_frame(engine: Engine | Connection) -> pd.DataFrame:
    t = ConfigVersion.table()
    cols = ["id", "created_at", "source", "active", "activated_at", "note", "metrics"]
    df = _frame(engine, select(*(t.c[c] for c in cols)).order_by(t.c.id), {}, cols)
    for c in ("created_at", "activated_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df
