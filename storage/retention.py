"""Delete what is older than the retention period, in small batches, leaving room for others.

Batches: each one is its own short transaction over an index range, oldest rows first, at
most ``batch_rows`` rows: one series' old samples (the primary key is ``(series_id, ts)``),
or one component's old log events or anomalies (both tables have an index on
``(component, ts)``). An index range also means the last batch of a table, the one that
finds nothing more to delete, costs a seek and not a scan of the whole table while holding
the write lock. Components are listed with a loose index scan (one index seek per
component), not a scan of the table.

Pauses: SQLite has one writer at a time and no queue: a writer that finds the lock taken
sleeps and retries (after 1, 2, 5, … up to 100 ms). Batches started back to back hold the
lock almost all the time, so a waiting writer loses most retries: ``bench.retention``
measured the cycle's grouping transaction waiting 0.8 s behind batches of 4 ms. After each
batch retention therefore pauses as long as the batch took (``pause_s`` None, the
default): the lock is free at least half the time, every retry of a waiting writer has
even odds or better, and retention takes at most about half a core. A daily job can
afford to take twice as long. On PostgreSQL deletes block neither readers nor writers of
other rows; the pauses only spread the I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, text


@dataclass
class RetentionReport:
    samples_deleted: int = 0
    log_events_deleted: int = 0
    anomalies_deleted: int = 0
    batches: int = 0
    longest_batch_s: float = 0.0


# Oldest first, at most :n rows of one series (an index range of the primary key).
_SAMPLES_SQL = (
    "DELETE FROM samples WHERE series_id = :key AND ts < :cut AND ts <= "
    "(SELECT COALESCE(MAX(ts), -1) FROM (SELECT ts FROM samples WHERE "
    "series_id = :key AND ts < :cut ORDER BY ts LIMIT :n) AS oldest)"
)
# Oldest first, at most :n rows of one component (an index range of (component, ts)).
_BY_COMPONENT_SQL = (
    "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
    "WHERE component = :key AND ts < :cut ORDER BY ts LIMIT :n)"
)
# The distinct components of a table, one index seek each (a "loose index scan"; the same
# statement works on SQLite and PostgreSQL).
_COMPONENTS_SQL = (
    "WITH RECURSIVE c(name) AS (SELECT MIN(component) FROM {table} UNION ALL "
    "SELECT (SELECT MIN(component) FROM {table} WHERE component > c.name) "
    "FROM c WHERE c.name IS NOT NULL) SELECT name FROM c WHERE name IS NOT NULL"
)


def apply_retention(
    engine: Engine, cutoff_ms: int, batch_rows: int = 5000, pause_s: float | None = None
) -> RetentionReport:
    """Delete every sample, log event and anomaly with ``ts < cutoff_ms``.

    ``pause_s``: the pause after each batch; None pauses as long as the batch took.
    """
    report = RetentionReport()
    with engine.connect() as conn:
        series_ids = [r[0] for r in conn.execute(text("SELECT id FROM series ORDER BY id"))]
    for sid in series_ids:
        report.samples_deleted += _drain(
            engine, _SAMPLES_SQL, sid, cutoff_ms, batch_rows, pause_s, report
        )
    for table, attr in (("log_events", "log_events_deleted"), ("anomalies", "anomalies_deleted")):
        for component in _components(engine, table):
            sql = _BY_COMPONENT_SQL.format(table=table)
            n = _drain(engine, sql, component, cutoff_ms, batch_rows, pause_s, report)
            setattr(report, attr, getattr(report, attr) + n)
    return report


def _components(engine: Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text(_COMPONENTS_SQL.format(table=table)))]


def _drain(
    engine: Engine,
    sql: str,
    key: int | str,
    cutoff_ms: int,
    batch_rows: int,
    pause_s: float | None,
    report: RetentionReport,
) -> int:
    """Run the batch statement for one key until a batch deletes fewer than ``batch_rows``."""
    deleted = 0
    for n, took in _batches(engine, sql, {"key": key, "cut": cutoff_ms, "n": batch_rows}):
        report.batches += 1
        report.longest_batch_s = max(report.longest_batch_s, took)
        deleted += n
        time.sleep(took if pause_s is None else pause_s)
        if n < batch_rows:
            break
    return deleted


def _batches(engine: Engine, sql: str, params: dict[str, object]) -> Iterator[tuple[int, float]]:
    """Each batch in its own transaction: (rows deleted, seconds it took), forever."""
    statement = text(sql)
    while True:
        t0 = time.perf_counter()
        with engine.begin() as conn:
            n = conn.execute(statement, params).rowcount or 0
        yield max(n, 0), time.perf_counter() - t0
