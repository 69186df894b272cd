"""Log sources (tail positions), log events and templates."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Connection, Engine, Executable, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.metrics import _frame, to_ms
from storage.models import LogMiner, LogSource, LogTemplate
from storage.types import utcnow

# (generation, byte_offset, ts_ms, level, template_id, message)
EventRow = tuple[int, int, int, str | None, int | None, str]
# (source_id, generation, byte_offset, ts_ms, component, level, template_id, message): a
# log_events row in column order
EventInsert = tuple[int, int, int, int, str, str | None, int | None, str]


@dataclass
class TailPosition:
    """Where reading a file resumes; see storage.models.LogSource."""

    source_id: int
    path: str
    component: str
    inode: int | None
    generation: int
    byte_offset: int
    head_hash: str | None
    head_len: int
    lines: int


def get_or_create_source(conn: Connection, path: str, component: str) -> TailPosition:
    table = LogSource.table()
    query = select(table).where(table.c.path == path)
    row = conn.execute(query).mappings().first()
    if row is None:
        ins = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(
            ins(LogSource.table())
            .values(
                path=path,
                component=component,
                inode=None,
                generation=0,
                byte_offset=0,
                head_hash=None,
                head_len=0,
                lines=0,
                updated_at=utcnow(),
            )
            .on_conflict_do_nothing()
        )
        row = conn.execute(query).mappings().one()
    return TailPosition(
        row["id"],
        row["path"],
        row["component"],
        row["inode"],
        row["generation"],
        row["byte_offset"],
        row["head_hash"],
        row["head_len"],
        row["lines"],
    )


def commit_batch(
    conn: Connection, pos: TailPosition, component: str, events: Sequence[EventRow]
) -> int:
    """Insert a batch of lines and move the source's position, in the caller's transaction.

    The position and the lines it covers commit together, so a crash leaves either both
    or neither; a line seen twice (same generation and offset) is ignored.
    """
    sid = pos.source_id
    rows = [(sid, g, off, ts, component, level, tid, msg) for g, off, ts, level, tid, msg in events]
    return commit_rows(conn, pos, rows)


def commit_rows(conn: Connection, pos: TailPosition, rows: Sequence[EventInsert]) -> int:
    """:func:`commit_batch` for rows that already hold their source id and component (the
    tail path builds them so, which saves a copy of every row)."""
    inserted = 0
    if rows and conn.dialect.name == "sqlite":
        # The driver's executemany is several times faster than a compiled insert per row;
        # total_changes counts what was really inserted (ignored rows do not count).
        raw = conn.connection.driver_connection
        before = raw.total_changes  # type: ignore[union-attr]
        conn.exec_driver_sql(
            "INSERT OR IGNORE INTO log_events (source_id, generation, byte_offset, ts, "
            "component, level, template_id, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows if isinstance(rows, list) else list(rows),
        )
        inserted = raw.total_changes - before  # type: ignore[union-attr]
    elif rows:
        # PostgreSQL (the other backend, see storage.engine): the batch as one array per
        # column, in one INSERT ... SELECT FROM unnest. A multi-row VALUES insert spends
        # most of its time in the driver, which rewrites a statement of 8 parameters per
        # row for every 1,000 rows. RETURNING counts the rows really inserted (ids are
        # drawn in row order either way).
        columns = {f"c{i}": list(col) for i, col in enumerate(zip(*rows, strict=True))}
        inserted = len(conn.execute(_PG_INSERT_EVENTS, columns).all())
    conn.execute(
        _ADVANCE,
        {
            "sid": pos.source_id,
            "inode": pos.inode,
            "generation": pos.generation,
            "byte_offset": pos.byte_offset,
            "head_hash": pos.head_hash,
            "head_len": pos.head_len,
            "added": len(rows),
            "now": utcnow(),
        },
    )
    return inserted


_PG_INSERT_EVENTS = text(
    "INSERT INTO log_events (source_id, generation, byte_offset, ts, component, level, "
    "template_id, message) SELECT * FROM unnest(CAST(:c0 AS integer[]), "
    "CAST(:c1 AS integer[]), CAST(:c2 AS bigint[]), CAST(:c3 AS bigint[]), "
    "CAST(:c4 AS text[]), CAST(:c5 AS text[]), CAST(:c6 AS integer[]), CAST(:c7 AS text[])) "
    "ON CONFLICT DO NOTHING RETURNING id"
)

# Statements run once per committed batch are built once: building and keying a statement
# costs more than executing it (~0.5 ms each), and a tail run commits many batches.
_sources = LogSource.table()
_ADVANCE = (
    update(_sources)
    .where(_sources.c.id == bindparam("sid"))
    .values(
        inode=bindparam("inode"),
        generation=bindparam("generation"),
        byte_offset=bindparam("byte_offset"),
        head_hash=bindparam("head_hash"),
        head_len=bindparam("head_len"),
        lines=_sources.c.lines + bindparam("added"),
        updated_at=bindparam("now"),
    )
)


def read_log_events(
    engine: Engine | Connection,
    start: pd.Timestamp | int,
    end: pd.Timestamp | int | None = None,
    component: str | None = None,
) -> pd.DataFrame:
    """Events with ``start <= ts < end`` (index on component, ts)."""
    sql = (
        "SELECT id, source_id, generation, byte_offset, ts, component, level, template_id, "
        "message FROM log_events WHERE ts >= :start AND ts < :end"
    )
    params: dict[str, object] = {"start": to_ms(start), "end": to_ms(end) if end else 2**62}
    if component is not None:
        sql += " AND component = :component"
        params["component"] = component
    sql += " ORDER BY ts, id"
    cols = [
        "id",
        "source_id",
        "generation",
        "byte_offset",
        "ts",
        "component",
        "level",
        "template_id",
        "message",
    ]
    df = _frame(engine, text(sql), params, cols)
    df["ts"] = pd.to_datetime(df["ts"].astype("int64"), unit="ms", utc=True)
    return df


def log_sources_frame(engine: Engine | Connection) -> pd.DataFrame:
    cols = ["id", "path", "component", "inode", "generation", "byte_offset", "lines"]
    return _frame(engine, text(f"SELECT {', '.join(cols)} FROM log_sources ORDER BY id"), {}, cols)


def count_log_events(engine: Engine | Connection, source_path: str | None = None) -> int:
    sql = "SELECT COUNT(*) FROM log_events e"
    params: dict[str, object] = {}
    if source_path is not None:
        sql += " JOIN log_sources s ON s.id = e.source_id WHERE s.path = :p"
        params["p"] = source_path
    df = _frame(engine, text(sql), params, ["n"])
    return int(df["n"].iloc[0])


# -- template mining state ----------------------------------------------------------------


@dataclass
class TemplateUpdate:
    key: int
    template: str
    count: int  # occurrences to add
    first_seen: int  # epoch ms
    last_seen: int


def load_miner_state(conn: Connection, component: str) -> dict[str, object] | None:
    table = LogMiner.table()
    row = conn.execute(select(table.c.state).where(table.c.component == component)).first()
    return None if row is None else row[0]


def save_miner_state(
    conn: Connection, component: str, state: dict[str, object], updates: Sequence[TemplateUpdate]
) -> None:
    """Store the miner and its templates' counts, in the caller's transaction."""
    miner_upsert, template_upsert = _miner_statements(conn.dialect.name)
    conn.execute(miner_upsert, {"component": component, "state": state, "updated_at": utcnow()})
    if not updates:
        return
    # One statement for the batch's templates (executemany), not one per template.
    conn.execute(
        template_upsert,
        [
            {
                "component": component,
                "template_key": u.key,
                "template": u.template,
                "count": u.count,
                "first_seen": u.first_seen,
                "last_seen": u.last_seen,
            }
            for u in updates
        ],
    )


@functools.cache
def _miner_statements(dialect: str) -> tuple[Executable, Executable]:
    """The miner-state and template-count upserts of a dialect, built once.

    On conflict they set what the inserted row holds (``excluded``): the state and its
    time; the template's text and last time, and its count plus the batch's count.
    """
    ins = pg_insert if dialect == "postgresql" else sqlite_insert
    miner = ins(LogMiner.table())
    miner = miner.on_conflict_do_update(
        index_elements=["component"],
        set_={"state": miner.excluded.state, "updated_at": miner.excluded.updated_at},
    )
    table = LogTemplate.table()
    template = ins(table)
    template = template.on_conflict_do_update(
        index_elements=["component", "template_key"],
        set_={
            "template": template.excluded.template,
            "count": table.c.count + template.excluded.count,
            "last_seen": template.excluded.last_seen,
        },
    )
    return miner, template


def template_first_seen(
    engine: Engine | Connection, component: str, keys: Sequence[int]
) -> dict[int, int]:
    """First-seen time (epoch ms) of the given templates of a component."""
    if not keys:
        return {}
    stmt = text(
        "SELECT template_key, first_seen FROM log_templates "
        "WHERE component = :c AND template_key IN :keys"
    ).bindparams(bindparam("keys", expanding=True))
    df = _frame(
        engine,
        stmt,
        {"c": component, "keys": [int(k) for k in keys]},
        ["template_key", "first_seen"],
    )
    return {int(k): int(v) for k, v in zip(df["template_key"], df["first_seen"], strict=True)}


def templates_frame(engine: Engine | Connection, component: str | None = None) -> pd.DataFrame:
    cols = ["component", "template_key", "template", "count", "first_seen", "last_seen"]
    sql = f"SELECT {', '.join(cols)} FROM log_templates"
    params: dict[str, object] = {}
    if component:
        sql += " WHERE component = :c"
        params["c"] = component
    return _frame(engine, text(sql + " ORDER BY component, template_key"), params, cols)


def event_times(engine: Engine | Connection, component: str) -> list[int]:
    """Every event time (epoch ms) of a component, ascending."""
    df = _frame(
        engine,
        text("SELECT ts FROM log_events WHERE component = :c ORDER BY ts"),
        {"c": component},
        ["ts"],
    )
    return [int(t) for t in df["ts"]]


def template_history(
    engine: Engine | Connection, component: str, keys: Sequence[int], before_ms: int
) -> dict[int, tuple[int, int]]:
    """(lines, first time in epoch ms) of the given templates in events up to ``before_ms``."""
    if not keys:
        return {}
    stmt = text(
        "SELECT template_id, COUNT(*), MIN(ts) FROM log_events "
        "WHERE component = :c AND ts <= :t AND template_id IN :keys GROUP BY template_id"
    ).bindparams(bindparam("keys", expanding=True))
    df = _frame(
        engine,
        stmt,
        {"c": component, "t": int(before_ms), "keys": [int(k) for k in keys]},
        ["template_id", "n", "first"],
    )
    return {
        int(k): (int(n), int(f))
        for k, n, f in zip(df["template_id"], df["n"], df["first"], strict=True)
    }
