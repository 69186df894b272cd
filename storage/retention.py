"""Delete what is older than the retention period, in small batches.

Each batch is its own short transaction (one series' old samples, or a few thousand log
events), so a running cycle is never blocked for long by retention on SQLite's single
writer lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, text


@dataclass
class RetentionReport:
    samples_deleted: int = 0
    log_events_deleted: int = 0
    anomalies_deleted: int = 0
    batches: int = 0
    longest_batch_s: float = 0.0


def _timed(engine: Engine, sql: str, params: dict[str, object], report: RetentionReport) -> int:
    t0 = time.perf_counter()
    with engine.begin() as conn:
        n = conn.execute(text(sql), params).rowcount or 0
    report.batches += 1
    report.longest_batch_s = max(report.longest_batch_s, time.perf_counter() - t0)
    return max(n, 0)


def apply_retention(
    engine: Engine, cutoff_ms: int, batch_rows: int = 5000, pause_s: float = 0.0
) -> RetentionReport:
    report = RetentionReport()
    with engine.connect() as conn:
        series_ids = [r[0] for r in conn.execute(text("SELECT id FROM series ORDER BY id"))]
    for sid in series_ids:
        while True:
            # Oldest first, at most batch_rows per transaction (the PK is (series_id, ts)).
            n = _timed(
                engine,
                "DELETE FROM samples WHERE series_id = :s AND ts < :cut AND ts <= "
                "(SELECT COALESCE(MAX(ts), -1) FROM (SELECT ts FROM samples WHERE "
                "series_id = :s AND ts < :cut ORDER BY ts LIMIT :n) AS oldest)",
                {"s": sid, "cut": cutoff_ms, "n": batch_rows},
                report,
            )
            report.samples_deleted += n
            if n < batch_rows:
                break
            time.sleep(pause_s)
    for table, attr in (("log_events", "log_events_deleted"), ("anomalies", "anomalies_deleted")):
        while True:
            n = _timed(
                engine,
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
                "WHERE ts < :cut ORDER BY id LIMIT :n)",
                {"cut": cutoff_ms, "n": batch_rows},
                report,
            )
            setattr(report, attr, getattr(report, attr) + n)
            if n < batch_rows:
                break
            time.sleep(pause_s)
    return report
