"""Retention deletes everything older than the cut-off, in batches, and nothing newer.

On both backends (the ``engine`` fixture): samples of several series, log events and
anomalies (some linked to an issue) on both sides of the cut-off, including rows exactly at
it (kept: retention deletes what is *older*). Batches are made small so every table needs
several. No timings here (``bench/retention.py`` measures them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, insert, select

from storage.issues import AnomalyRecord, IssueRecord, save_anomalies, save_issues
from storage.metrics import SeriesKey, SeriesResolver, insert_samples
from storage.models import AnomalyRow, Issue, LogEvent, LogSource, Sample
from storage.retention import apply_retention

CUT = 1_800_000_000_000  # epoch ms of the cut-off
STEP = 10_000
OLD, NEW = 23, 9  # points per series before the cut-off, and at or after it
SERIES = 3
LOGS_OLD, LOGS_NEW = 17, 5
ANOMALIES_OLD, ANOMALIES_NEW = 11, 4


def seed(engine: Engine) -> None:
    keys = [SeriesKey(f"c{i % 2}", f"m{i}") for i in range(SERIES)]
    now = datetime.fromtimestamp(CUT / 1000, UTC)
    with engine.begin() as conn:
        ids = SeriesResolver().resolve(conn, keys)
        rows = [
            (ids[k], CUT + j * STEP, float(j))
            for k in keys
            for j in range(-OLD, NEW)  # j = 0 is exactly at the cut-off
        ]
        assert insert_samples(conn, rows) == SERIES * (OLD + NEW)
        source = conn.execute(
            insert(LogSource)
            .values(path="/var/log/c0.log", component="c0", updated_at=now)
            .returning(LogSource.id)
        ).scalar_one()
        conn.execute(
            insert(LogEvent),
            [
                {
                    "source_id": source,
                    "generation": 0,
                    "byte_offset": k,
                    "ts": CUT + j * 1000,
                    "component": "c0",
                    "level": "INFO",
                    "message": f"line {k}",
                }
                # Stored newest first: ids do not follow time, retention must not rely on it.
                for k, j in enumerate(range(LOGS_NEW - 1, -LOGS_OLD - 1, -1))
            ],
        )
        issue = IssueRecord(
            fingerprint="f" * 32,
            component="c0",
            kind="metric",
            signature="m0",
            title="metric anomaly on c0: m0",
            severity="medium",
            status="open",
            first_seen=now - timedelta(hours=1),
            last_seen=now,
            actionable_at=now,
        )
        issue_ids = save_issues(conn, [issue])
        anomalies = [
            AnomalyRecord(
                "default",
                "c0",
                "metric",
                "m0",
                CUT + j * 60_000,
                1.0,
                "medium",
                fingerprint="f" * 32 if j % 2 else "",
            )
            for j in range(-ANOMALIES_OLD, ANOMALIES_NEW)
        ]
        assert save_anomalies(conn, anomalies, issue_ids) == ANOMALIES_OLD + ANOMALIES_NEW


def count(engine: Engine, model: type, newer: bool | None = None) -> int:
    stmt = select(func.count()).select_from(model)
    if newer is not None:
        column = model.ts  # type: ignore[attr-defined]
        stmt = stmt.where(column >= CUT if newer else column < CUT)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


@pytest.mark.parametrize("batch_rows", [4, 5000])
def test_deletes_everything_older_and_nothing_newer(engine: Engine, batch_rows: int) -> None:
    seed(engine)
    report = apply_retention(engine, CUT, batch_rows=batch_rows)
    assert report.samples_deleted == SERIES * OLD
    assert report.log_events_deleted == LOGS_OLD
    assert report.anomalies_deleted == ANOMALIES_OLD
    for model, kept in (
        (Sample, SERIES * NEW),
        (LogEvent, LOGS_NEW),
        (AnomalyRow, ANOMALIES_NEW),
    ):
        assert count(engine, model, newer=False) == 0, model.__name__
        assert count(engine, model, newer=True) == kept, model.__name__
    assert count(engine, Issue) == 1  # issues are not retention's business
    if batch_rows == 4:
        # Every table needed several transactions: no batch deleted more than four rows.
        least = SERIES * -(-OLD // 4) + -(-LOGS_OLD // 4) + -(-ANOMALIES_OLD // 4)
        assert report.batches >= least
    assert report.longest_batch_s >= 0


def test_a_second_run_deletes_nothing(engine: Engine) -> None:
    seed(engine)
    apply_retention(engine, CUT, batch_rows=7)
    again = apply_retention(engine, CUT, batch_rows=7)
    assert (again.samples_deleted, again.log_events_deleted, again.anomalies_deleted) == (0, 0, 0)
    assert count(engine, Sample) == SERIES * NEW


def test_an_empty_database(engine: Engine) -> None:
    report = apply_retention(engine, CUT)
    assert (report.samples_deleted, report.log_events_deleted, report.anomalies_deleted) == (
        0,
        0,
        0,
    )
