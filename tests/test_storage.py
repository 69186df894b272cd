"""Storage on both backends: migrations, duplicate-skipping inserts, window reads."""

from __future__ import annotations

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from storage.engine import DatabaseURLError, make_engine, normalise_url
from storage.logs import TemplateUpdate, load_miner_state, save_miner_state, templates_frame
from storage.metrics import (
    SeriesKey,
    SeriesResolver,
    count_samples,
    insert_samples,
    labels_key,
    read_samples,
    series_frame,
)
from storage.migrate import VERSION_TABLE, current_revision, head_revision
from storage.models import Base


def test_migrations_reach_head_and_match_models(engine: Engine) -> None:
    assert current_revision(engine) == head_revision(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(ctx, Base.metadata)
    # Type-only differences from TypeDecorators are not schema drift.
    real = [d for d in diff if not (isinstance(d, list) and d and d[0][0] == "modify_type")]
    assert real == []


def test_sqlite_pragmas(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_url_normalisation_and_errors() -> None:
    assert normalise_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert normalise_url("postgres://u@h/db").startswith("postgresql+psycopg://")
    with pytest.raises(DatabaseURLError, match="unsupported database"):
        make_engine("mysql://u@h/db")
    with pytest.raises(DatabaseURLError, match="not a database URL"):
        make_engine("::::")


def _series(engine: Engine, n: int = 3) -> dict[SeriesKey, int]:
    keys = [SeriesKey("c1", "m", labels_key({"i": str(i)})) for i in range(n)]
    with engine.begin() as conn:
        return dict(SeriesResolver().resolve(conn, keys))


def test_resolver_is_idempotent(engine: Engine) -> None:
    first = _series(engine)
    second = _series(engine)
    assert first == second
    frame = series_frame(engine)
    assert len(frame) == 3
    assert sorted(d["i"] for d in frame["labels"]) == ["0", "1", "2"]


def test_new_series_get_ids_in_key_order_whatever_the_input_order(engine: Engine) -> None:
    """Ids must not follow a set's iteration order (it changes with the process's hash
    seed): the same scrapes replayed twice made different ids, and so different anomalies
    where a tie was broken by id."""
    keys = [SeriesKey(c, m, labels_key({"i": i})) for c in "ba" for m in "yx" for i in "21"]
    with engine.begin() as conn:
        ids = SeriesResolver().resolve(conn, reversed(keys))
    in_id_order = sorted(ids, key=ids.__getitem__)
    assert in_id_order == sorted(keys, key=lambda k: (k.component, k.metric, k.labels))


def test_insert_skips_duplicates_on_both_backends(engine: Engine) -> None:
    ids = list(_series(engine).values())
    rows = [(sid, 1_700_000_000_000 + i * 1000, float(i)) for sid in ids for i in range(100)]
    with engine.begin() as conn:
        assert insert_samples(conn, rows) == 300
    with engine.begin() as conn:
        assert insert_samples(conn, rows) == 0
    # Duplicates inside one batch are skipped too (first one wins).
    dup = [(ids[0], 1_800_000_000_000, 1.0), (ids[0], 1_800_000_000_000, 2.0)]
    with engine.begin() as conn:
        assert insert_samples(conn, dup) == 1
    assert count_samples(engine) == 301


def test_window_read(engine: Engine) -> None:
    ids = list(_series(engine, 2).values())
    t0 = 1_700_000_000_000
    rows = [(sid, t0 + i * 10_000, float(i)) for sid in ids for i in range(360)]
    with engine.begin() as conn:
        insert_samples(conn, rows)
    start = pd.Timestamp(t0 + 100 * 10_000, unit="ms", tz="UTC")
    end = pd.Timestamp(t0 + 200 * 10_000, unit="ms", tz="UTC")
    df = read_samples(engine, start, end, component="c1")
    assert len(df) == 200
    assert df["ts"].min() == start and df["ts"].max() < end
    assert str(df["ts"].dt.tz) == "UTC"
    only = read_samples(engine, start, end, series_ids=[ids[1]])
    assert set(only["series_id"]) == {ids[1]}
    assert read_samples(engine, start, end, component="nope").empty


def test_window_read_uses_the_primary_key(sqlite_engine: Engine) -> None:
    """The plan seeks each series' key range instead of scanning samples."""
    sql = (
        "EXPLAIN QUERY PLAN SELECT x.series_id, x.ts, x.value FROM series s "
        "JOIN components c ON c.id = s.component_id "
        "JOIN samples x ON x.series_id = s.id WHERE x.ts >= 1 AND x.ts < 2 AND c.name = 'a'"
    )
    with sqlite_engine.connect() as conn:
        plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql(sql))
    assert "SEARCH x USING PRIMARY KEY (series_id=? AND ts>? AND ts<?)" in plan, plan
    assert "SCAN x" not in plan


def test_template_counts_add_up_and_keep_their_first_time(engine: Engine) -> None:
    with engine.begin() as conn:
        save_miner_state(
            conn,
            "svc",
            {"v": 1},
            [TemplateUpdate(1, "job <*>", 2, 100, 200), TemplateUpdate(2, "idle", 1, 150, 150)],
        )
    with engine.begin() as conn:
        save_miner_state(conn, "svc", {"v": 2}, [TemplateUpdate(1, "job <*> <*>", 3, 300, 400)])
    with engine.begin() as conn:
        save_miner_state(conn, "svc", {"v": 3}, [])
    rows = templates_frame(engine, "svc").values.tolist()
    assert rows == [["svc", 1, "job <*> <*>", 5, 100, 400], ["svc", 2, "idle", 1, 150, 150]]
    with engine.connect() as conn:
        assert load_miner_state(conn, "svc") == {"v": 3}


def test_a_committed_decision_wakes_a_watch_on_both_backends(engine: Engine) -> None:
    """``selfheal serve`` acts on an approval when it is decided, not at its next poll:
    LISTEN/NOTIFY on PostgreSQL, ``PRAGMA data_version`` on SQLite. A decision rolled back
    wakes nobody; a committed one does."""
    from datetime import timedelta

    from storage.approvals import create_approval, decide
    from storage.signals import watch_decisions
    from storage.types import utcnow

    def ask(conn: object) -> str:
        now = utcnow()
        return create_approval(
            conn,  # type: ignore[arg-type]
            component="c",
            severity="high",
            proposed_action="restart",
            expires_at=now + timedelta(hours=1),
        )

    with engine.begin() as conn:
        first, second = ask(conn), ask(conn)
    watch = watch_decisions(engine)
    try:
        assert not watch.wait(0)  # nothing decided since it opened
        with engine.connect() as conn:
            decide(conn, first, "approved", "alice")
            conn.rollback()
        assert not watch.wait(0.3)
        with engine.begin() as conn:
            decide(conn, first, "approved", "alice")
            decide(conn, second, "rejected", "bob", "not now")
        assert watch.wait(10)
        assert not watch.wait(0.3)  # both decisions, one wake-up
    finally:
        watch.close()
