"""Circuit-breaker state rows: load and save the JSON body under a row lock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.metrics import _frame
from storage.models import BreakerRow
from storage.types import utcnow


def load_breaker(conn: Connection, name: str, for_update: bool = False) -> dict[str, Any] | None:
    t = BreakerRow.table()
    stmt = select(t.c.body).where(t.c.name == name)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return None if row is None else row[0]


def save_breaker(conn: Connection, name: str, body: dict[str, Any]) -> None:
    ins = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    stmt = ins(BreakerRow.table()).values(name=name, state=body["state"], body=body, updated_at=now)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"state": body["state"], "body": stmt.excluded.body, "updated_at": now},
        )
    )


T = TypeVar("T")


def update_breaker(
    engine: Engine, name: str, change: Callable[[dict[str, Any] | None], tuple[dict[str, Any], T]]
) -> T:
    """Load breaker ``name``, let ``change`` compute its new body, save it: one transaction
    that holds the write lock from the start (a row lock on PostgreSQL; SQLite's single
    writer lock, taken by a first write), so concurrent callers never lose an update."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # Take the write lock before reading, so no other writer slips in between.
            conn.execute(text("UPDATE breakers SET name = name WHERE name = :n"), {"n": name})
        body, result = change(load_breaker(conn, name, for_update=True))
        save_breaker(conn, name, body)
    return result


def breakers_frame(engine: Engine | Connection) -> pd.DataFrame:
    t = BreakerRow.table()
    return _frame(
        engine,
        select(t.c.name, t.c.state, t.c.updated_at).order_by(t.c.name),
        {},
        ["name", "state", "updated_at"],
    )
