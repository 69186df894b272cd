"""Components, series and samples: bulk writes that skip duplicates, window reads as frames."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Executable, bindparam, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.models import Component, Series
from storage.types import canonical_json, utcnow


def labels_key(labels: dict[str, str] | None) -> str:
    """The canonical JSON text of a label set: hashable, order-independent, as stored."""
    if not labels:
        return "{}"
    return canonical_json({str(k): str(v) for k, v in labels.items()})


@dataclass(frozen=True)
class SeriesKey:
    component: str
    metric: str
    labels: str = "{}"  # canonical JSON, see labels_key


@dataclass
class SeriesResolver:
    """Maps series keys to ids, creating missing components and series on the way.

    One resolver serves one ingest run (it is a cache, not global state); re-resolving
    after a concurrent insert is safe because inserts ignore conflicts and ids are re-read.
    """

    component_ids: dict[str, int] = field(default_factory=dict)
    series_ids: dict[SeriesKey, int] = field(default_factory=dict)

    def resolve(
        self,
        conn: Connection,
        keys: Iterable[SeriesKey],
        kinds: dict[SeriesKey, str] | None = None,
    ) -> dict[SeriesKey, int]:
        wanted = {k for k in keys if k not in self.series_ids}
        if wanted:
            self._ensure_components(conn, {k.component for k in wanted})
            self._load_series(conn, wanted)
            # Sorted: ids are then given in one order whatever the process's string-hash
            # seed, so the same scrapes always make the same ids (and anything that breaks
            # a tie by id, such as which anomaly of a cycle comes first, repeats).
            missing = sorted(
                (k for k in wanted if k not in self.series_ids),
                key=lambda k: (k.component, k.metric, k.labels),
            )
            if missing:
                rows = [
                    {
                        "component_id": self.component_ids[k.component],
                        "metric": k.metric,
                        "labels": k.labels,
                        "kind": (kinds or {}).get(k, "gauge"),
                    }
                    for k in missing
                ]
                _insert_ignore(conn, Series.table(), rows)
                self._load_series(conn, set(missing))
        return self.series_ids

    def _ensure_components(self, conn: Connection, names: set[str]) -> None:
        missing = names - self.component_ids.keys()
        if not missing:
            return
        self._load_components(conn, missing)
        new = missing - self.component_ids.keys()
        if new:
            now = utcnow()
            rows = [
                {"name": n, "kind": "service", "labels": {}, "created_at": now} for n in sorted(new)
            ]
            _insert_ignore(conn, Component.table(), rows)
            self._load_components(conn, new)

    def _load_components(self, conn: Connection, names: set[str]) -> None:
        stmt = select(Component.id, Component.name).where(
            Component.name.in_(bindparam("names", expanding=True))
        )
        for cid, name in conn.execute(stmt, {"names": sorted(names)}):
            self.component_ids[name] = cid

    def _load_series(self, conn: Connection, keys: set[SeriesKey]) -> None:
        """Load ids of the components' series in one query per 500 components."""
        names = {v: k for k, v in self.component_ids.items()}
        cids = sorted({self.component_ids[k.component] for k in keys})
        stmt = text(
            "SELECT id, component_id, metric, labels FROM series WHERE component_id IN :cids"
        ).bindparams(bindparam("cids", expanding=True))
        for i in range(0, len(cids), 500):
            for sid, cid, metric, labels in conn.execute(stmt, {"cids": cids[i : i + 500]}):
                self.series_ids[SeriesKey(names[cid], metric, labels or "{}")] = sid


def _load_labels(raw: str) -> dict[str, str]:
    import json

    return json.loads(raw) if raw else {}


def _insert_ignore(conn: Connection, table: object, rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(pg_insert(table).on_conflict_do_nothing(), rows)  # type: ignore[arg-type]
    else:
        conn.execute(sqlite_insert(table).on_conflict_do_nothing(), rows)  # type: ignore[arg-type]


def insert_samples(conn: Connection, rows: Sequence[tuple[int, int, float]]) -> int:
    """Insert ``(series_id, ts_ms, value)`` rows, skipping ones already stored.

    Returns the number of new rows. SQLite takes a driver-level ``executemany`` (the
    fastest path it has); PostgreSQL streams the batch with COPY into a temporary table and
    moves it over with ``ON CONFLICT DO NOTHING``.
    """
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        return _insert_samples_pg(conn, rows)
    cur = conn.exec_driver_sql(
        "INSERT OR IGNORE INTO samples (series_id, ts, value) VALUES (?, ?, ?)", list(rows)
    )
    return max(cur.rowcount, 0)


def _insert_samples_pg(conn: Connection, rows: Sequence[tuple[int, int, float]]) -> int:
    raw = conn.connection.driver_connection
    conn.exec_driver_sql(
        "CREATE TEMP TABLE IF NOT EXISTS _samples_in "
        "(series_id integer, ts bigint, value double precision) ON COMMIT DELETE ROWS"
    )
    buf = io.StringIO()
    for sid, ts, value in rows:
        buf.write(f"{sid}\t{ts}\t{value!r}\n")
    with raw.cursor() as cur, cur.copy("COPY _samples_in (series_id, ts, value) FROM STDIN") as cp:  # type: ignore[union-attr]
        cp.write(buf.getvalue())
    result = conn.exec_driver_sql(
        "INSERT INTO samples (series_id, ts, value) "
        "SELECT DISTINCT ON (series_id, ts) series_id, ts, value FROM _samples_in "
        "ON CONFLICT DO NOTHING"
    )
    conn.exec_driver_sql("TRUNCATE _samples_in")
    return max(result.rowcount, 0)


def series_frame(engine: Engine | Connection, component: str | None = None) -> pd.DataFrame:
    """Every series (id, component, metric, labels, kind), optionally of one component."""
    sql = (
        "SELECT s.id AS series_id, c.name AS component, s.metric, s.labels, s.kind "
        "FROM series s JOIN components c ON c.id = s.component_id"
    )
    params: dict[str, object] = {}
    if component is not None:
        sql += " WHERE c.name = :component"
        params["component"] = component
    sql += " ORDER BY s.id"
    df = _frame(engine, sql, params, ["series_id", "component", "metric", "labels", "kind"])
    df["labels"] = df["labels"].map(_load_labels)
    return df


def read_samples(
    engine: Engine | Connection,
    start: pd.Timestamp | int,
    end: pd.Timestamp | int | None = None,
    *,
    component: str | None = None,
    metric: str | None = None,
    series_ids: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Samples with ``start <= ts < end`` as a frame (series_id, ts, value), ts as UTC.

    The query walks the series table and seeks each series' primary-key range, so the
    cost follows the size of the window, not of the stored history.
    """
    start_ms = to_ms(start)
    end_ms = to_ms(end) if end is not None else 2**62
    where = ["x.ts >= :start", "x.ts < :end"]
    params: dict[str, object] = {"start": start_ms, "end": end_ms}
    joins = ""
    if component is not None:
        joins = " JOIN components c ON c.id = s.component_id"
        where.append("c.name = :component")
        params["component"] = component
    if metric is not None:
        where.append("s.metric = :metric")
        params["metric"] = metric
    sql = (
        "SELECT x.series_id, x.ts, x.value FROM series s"
        + joins
        + " JOIN samples x ON x.series_id = s.id WHERE "
        + " AND ".join(where)
    )
    stmt = text(sql)
    if series_ids is not None:
        stmt = text(sql + " AND s.id IN :ids").bindparams(bindparam("ids", expanding=True))
        params["ids"] = list(series_ids) or [-1]
    df = _frame(engine, stmt, params, ["series_id", "ts", "value"])
    df["ts"] = pd.to_datetime(df["ts"].astype("int64"), unit="ms", utc=True)
    df["value"] = df["value"].astype(float)
    return df.sort_values(["series_id", "ts"], kind="stable").reset_index(drop=True)


def count_samples(engine: Engine | Connection) -> int:
    return int(_scalar(engine, "SELECT COUNT(*) FROM samples"))


def _scalar(engine: Engine | Connection, sql: str) -> Any:
    if isinstance(engine, Connection):
        return engine.exec_driver_sql(sql).scalar()
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()


def _frame(
    engine: Engine | Connection,
    sql: str | Executable,
    params: dict[str, object],
    columns: list[str],
) -> pd.DataFrame:
    stmt = text(sql) if isinstance(sql, str) else sql
    if isinstance(engine, Connection):
        rows = engine.execute(stmt, params).all()
    else:
        with engine.connect() as conn:
            rows = conn.execute(stmt, params).all()
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.DataFrame.from_records(rows, columns=columns)


def to_ms(ts: pd.Timestamp | int | float | np.integer) -> int:
    """Epoch milliseconds from a Timestamp (naive means UTC) or a number already in ms."""
    if isinstance(ts, int | np.integer):
        return int(ts)
    if isinstance(ts, float):
        return int(ts)
    t = pd.Timestamp(ts)
    if t.tzinfo is None:
        t = t.tz_localize("UTC")
    return int(t.value // 1_000_000)


def component_names(engine: Engine | Connection) -> list[str]:
    df = _frame(engine, text("SELECT name FROM components ORDER BY name"), {}, ["name"])
    return df["name"].tolist()


_COMPONENT_SERIES_SQL = text(
    "SELECT s.id, s.metric, s.labels, s.kind FROM series s "
    "JOIN components c ON c.id = s.component_id WHERE c.name = :component"
)
# The statement of ``read_samples`` for one component: an index range per series, so the cost
# follows the window and not the stored history. Written once per driver parameter style,
# since the fast path hands it to the driver's own cursor.
_COMPONENT_SAMPLES_SQL = (
    "SELECT x.series_id, x.ts, x.value FROM series s "
    "JOIN components c ON c.id = s.component_id "
    "JOIN samples x ON x.series_id = s.id "
    "WHERE c.name = {component} AND x.ts >= {start} AND x.ts < {end}"
)
_PLACEHOLDERS = {
    "named": {k: f":{k}" for k in ("component", "start", "end")},  # sqlite3
    "pyformat": {k: f"%({k})s" for k in ("component", "start", "end")},  # psycopg
}


def read_arrays(
    engine: Engine, component: str, start_ms: int, end_ms: int
) -> tuple[dict[int, tuple[str, str, str]], np.ndarray]:
    """The bounded read: the component's series (id → metric, kind, canonical labels) and
    its samples with ``start_ms <= ts < end_ms`` as an ``(n, 3)`` array (id, ts, value).

    The same rows as ``series_frame`` and ``read_samples`` give, on one connection and
    straight into arrays: building a frame from the result rows costs more than the query.
    """
    with engine.connect() as conn:
        series = conn.execute(_COMPONENT_SERIES_SQL, {"component": component}).all()
        table = _sample_table(conn, {"component": component, "start": start_ms, "end": end_ms})
    meta = {int(sid): (metric, kind, labels_text(labels)) for sid, metric, labels, kind in series}
    return meta, table


def _sample_table(conn: Connection, params: dict[str, object]) -> np.ndarray:
    """(series_id, ts, value) rows as an ``(n, 3)`` float array.

    The rows come straight from the driver's cursor as plain tuples: numpy converts those
    in one call, while result rows would have to be re-packed one by one (tens of thousands
    of short-lived objects a component, which also wake the garbage collector). Epoch
    milliseconds and ids are exact in a float64 (below 2**53); NULL becomes NaN.
    """
    style = _PLACEHOLDERS.get(conn.dialect.paramstyle)
    if style is None:  # another driver: the portable (slower) way
        named = _COMPONENT_SAMPLES_SQL.format(**_PLACEHOLDERS["named"])
        rows = [tuple(r) for r in conn.execute(text(named), params).all()]
        return np.array(rows, dtype=float).reshape(len(rows), 3)
    sql = _COMPONENT_SAMPLES_SQL.format(**style)
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    finally:
        cursor.close()
    return np.array(fetched, dtype=float).reshape(len(fetched), 3)


def labels_text(labels: object) -> str:
    """Stored label text → canonical JSON, as ``series_frame`` + ``labels_key`` give it."""
    if isinstance(labels, str) or labels is None:
        labels = json.loads(labels) if labels else {}
    return labels_key(labels) if isinstance(labels, dict) else str(labels)


def latest_values(
    engine: Engine | Connection,
    component: str,
    metric: str,
    since: pd.Timestamp,
    labels: dict[str, str] | None = None,
) -> list[tuple[pd.Timestamp, float]]:
    """(ts, value) of the newest sample since ``since`` of each series of ``metric`` on
    ``component`` whose labels include ``labels`` (e.g. ``probe_ok{probe="liveness"}``)."""
    series = series_frame(engine, component)
    series = series[series["metric"] == metric]
    if labels:
        want = labels.items()
        series = series[series["labels"].map(lambda got: want <= got.items())]
    if series.empty:
        return []
    recent = read_samples(engine, since, series_ids=list(series["series_id"]))
    if recent.empty:
        return []
    last = recent.groupby("series_id").tail(1)
    return [(ts, float(v)) for ts, v in zip(last["ts"], last["value"], strict=True)]


def latest_by_series(engine: Engine | Connection, metric: str, since: pd.Timestamp) -> pd.DataFrame:
    """The newest sample since ``since`` of every series named ``metric``, any component:
    a frame (component, labels (dict), ts, value)."""
    sql = (
        "SELECT s.id AS series_id, c.name AS component, s.labels FROM series s "
        "JOIN components c ON c.id = s.component_id WHERE s.metric = :metric"
    )
    series = _frame(engine, sql, {"metric": metric}, ["series_id", "component", "labels"])
    series["labels"] = series["labels"].map(_load_labels)
    cols = ["component", "labels", "ts", "value"]
    if series.empty:
        return pd.DataFrame(columns=cols)
    recent = read_samples(engine, since, series_ids=list(series["series_id"]))
    last = recent.groupby("series_id").tail(1)
    joined = last.merge(series[["series_id", "component", "labels"]], on="series_id")
    return joined[cols].reset_index(drop=True)
