"""Retention benchmark: delete two days of old data while detection keeps scanning.

Why: the daily retention run deletes millions of rows. On SQLite there is one writer at a
time, so a long delete transaction makes the cycle's grouping transaction wait; and delete
batches started back to back can starve it (SQLite's busy handler polls, so a writer that
holds the lock almost all the time wins almost every race). ``storage.retention`` deletes
in short batches over index ranges and pauses after each one for that reason; this
benchmark checks that a running cycle is never held up by more than a second: a detection
scan runs in another thread every second during retention, and its slowest run is
compared with the same scan on the quiet database.

**The data.** 1,000 series (ten components of ``bench.detect``'s mix: ``up``, counters,
latency histograms, gauges) at the 10-second scrape interval for three days (25.9 M
samples); 2.6 M log events (one a second per component over the same three days); 50,000
anomalies. ``metrics_history_days`` = 1, so retention deletes the two older days: about
two thirds of every table (19 M rows). SQLite file database, WAL, the project's engine
settings. More than the 200 series one might pick: with 200, retention is over in a few
seconds and only two or three scans overlap it.

**The scan.** The detect step for all components as the cycle runs it (``shard_plans`` on
a default configuration, ``run_shard`` on a thread pool, ``persist_detection``), each run
with the watermarks put back 30 s first (so every run scores the same three points per
series; the reset is not timed). It runs every second (at once after a run that took
longer), in a thread of the process that runs retention.

**Two runs**, each on a fresh copy of the same database: ``apply_retention`` as the
retention flow calls it (batches of 5,000 rows, a pause as long as each batch after it),
and the same with ``pause_s=0`` (batches back to back, as before the pauses).

Figures (full as above; ``--quick``: 100 series (one component), 259,200 log events,
5,000 anomalies, the same three days; everything else the same):

``retention.rows_stored``, ``retention.rows_deleted``
    Rows before; rows deleted (``retention.samples_deleted``,
    ``retention.log_events_deleted``, ``retention.anomalies_deleted`` apart).
``retention.seconds``
    Wall time of ``apply_retention`` (while the scans run).
``retention.batches``, ``retention.longest_batch_s``
    Delete transactions, and the longest one from its start to the end of its commit: an
    upper bound of how long it held the write lock (it includes the automatic WAL
    checkpoint SQLite runs after some commits, which holds no write lock, and any wait of
    the retention thread for the CPU).
``retention.idle_cycle_s``
    The scan on the quiet database (median of five runs just before retention).
``retention.max_cycle_stall_s``
    The slowest scan that overlapped retention minus ``idle_cycle_s``: how much longer
    than usual a cycle took at worst while retention ran (lock waits plus competition for
    the CPU and the disk). Target: ≤ 1 s.
``retention.max_write_stall_s``
    The same for the grouping transaction alone (``persist_detection``, the scan's only
    write, so this is essentially its wait for the write lock).
``retention.cycles``, ``retention.cycle_p50_s``
    Scans that overlapped retention, and their median.
``retention.no_pause_seconds``, ``retention.no_pause_max_cycle_stall_s``,
``retention.no_pause_max_write_stall_s``
    The same three figures with the batches back to back (``pause_s=0``).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, insert

from bench.detect import (
    DAY_S,
    NOW_MS,
    create_database,
    fill,
    make_specs,
    timestamps,
)
from flows.config import SelfHealConfig
from flows.detect import grouping_policy, persist_detection, run_shard, shard_plans
from flows.runtime import Runtime
from storage.engine import make_engine, sqlite_url_for
from storage.issues import set_watermarks
from storage.models import LogSource
from storage.retention import RetentionReport, apply_retention

HISTORY_DAYS = 3
KEEP_DAYS = 1  # metrics_history_days
SCAN_EVERY_S = 1.0
INTERVAL_MS = 30_000  # each scan scores the newest 30 s, as a cycle does


@dataclass(frozen=True)
class RetentionShape:
    components: int = 10  # of 100 series each
    log_events: int = 2_592_000  # one a second per component over three days
    anomalies: int = 50_000


def build(path: Path, shape: RetentionShape) -> tuple[Engine, list[str], int]:
    """The database; returns the engine, the components and the rows stored."""
    specs = make_specs(shape.components)
    engine, sids = create_database(path, specs)
    ts = timestamps(HISTORY_DAYS * DAY_S, NOW_MS, dense_s=HISTORY_DAYS * DAY_S)
    rows = fill(engine, specs, sids, ts, np.ones(len(ts), bool), {}, NOW_MS, HISTORY_DAYS * DAY_S)
    components = sorted({s.component for s in specs})
    start_ms = NOW_MS - HISTORY_DAYS * DAY_S * 1000
    now = datetime.now(UTC)
    with engine.begin() as conn:
        source_ids = [
            conn.execute(
                insert(LogSource)
                .values(path=f"/var/log/{c}.log", component=c, updated_at=now)
                .returning(LogSource.id)
            ).scalar_one()
            for c in components
        ]
        # Plain driver inserts: millions of rows, set-up rather than what is measured.
        n_comp = len(components)
        log_ts = np.linspace(start_ms, NOW_MS, shape.log_events, dtype=np.int64).tolist()
        conn.exec_driver_sql(
            "INSERT INTO log_events (source_id, generation, byte_offset, ts, component, level, "
            "template_id, message) VALUES (?, 0, ?, ?, ?, ?, NULL, ?)",
            [
                (
                    source_ids[k % n_comp],
                    k * 80,
                    t,
                    components[k % n_comp],
                    "ERROR" if k % 50 == 0 else "INFO",
                    f"request {k} handled",
                )
                for k, t in enumerate(log_ts)
            ],
        )
        last = NOW_MS - INTERVAL_MS  # older than anything the scans report
        anomaly_ts = np.linspace(start_ms, last, shape.anomalies, dtype=np.int64).tolist()
        created = now.replace(tzinfo=None).isoformat(sep=" ")
        conn.exec_driver_sql(
            "INSERT INTO anomalies (detector, component, kind, signature, series_id, ts, value, "
            "score, severity, details, issue_id, created_at) "
            "VALUES ('default', ?, 'metric', ?, NULL, ?, 1.0, 2.0, 'low', '{}', NULL, ?)",
            [
                (components[k % n_comp], f"metric_{k % 40}:mean", t, created)
                for k, t in enumerate(anomaly_ts)
            ],
        )
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return engine, components, rows + shape.log_events + shape.anomalies


@dataclass(frozen=True)
class Scan:
    """One timed detect step: when it started, its whole time, and the grouping
    transaction's share (its wait for the write lock included)."""

    start: float  # perf_counter
    seconds: float
    write_s: float


def scan_once(rt: Runtime, components: list[str], pool: ThreadPoolExecutor) -> Scan:
    """Watermarks back 30 s (untimed), then one timed detect step at ``NOW_MS``."""
    back = NOW_MS - INTERVAL_MS
    with rt.engine.begin() as conn:
        set_watermarks(conn, {f"{k}:{c}": back for c in components for k in ("metrics", "logs")})
    now = datetime.fromtimestamp((NOW_MS + 1) / 1000, UTC)
    t0 = time.perf_counter()
    results = list(pool.map(lambda p: run_shard(rt.engine, p), shard_plans(rt, NOW_MS + 1)))
    anomalies = [a for r in results for a in r.anomalies]
    marks = {k: v for r in results for k, v in r.watermarks.items()}
    errors = [e for r in results for e in r.errors]
    if errors:
        raise RuntimeError("; ".join(errors))
    t1 = time.perf_counter()
    persist_detection(rt.engine, anomalies, marks, now, grouping_policy(rt.config), {})
    t2 = time.perf_counter()
    return Scan(t0, t2 - t0, t2 - t1)


def scan_loop(rt: Runtime, components: list[str], stop: threading.Event, out: list[Scan]) -> None:
    """Scan every second (at once when a scan took longer) until ``stop`` is set."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        next_at = time.perf_counter()
        while not stop.is_set():
            out.append(scan_once(rt, components, pool))
            next_at = max(next_at + SCAN_EVERY_S, time.perf_counter())
            stop.wait(max(0.0, next_at - time.perf_counter()))


@dataclass
class Measured:
    report: RetentionReport
    seconds: float
    idle: list[Scan]
    during: list[Scan]  # the scans that overlapped retention


def measure(db: Path, components: list[str], pause_s: float | None) -> Measured:
    """Time the idle scan on ``db``, then run retention with the scans beside it."""
    engine = make_engine(sqlite_url_for(db))
    config = SelfHealConfig.model_validate(
        {"database_url": sqlite_url_for(db), "metrics_history_days": KEEP_DAYS}
    )
    rt = Runtime(config, engine)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            idle = [scan_once(rt, components, pool) for _ in range(5)]
        cutoff_ms = NOW_MS - int(config.metrics_history_days * DAY_S * 1000)
        stop = threading.Event()
        scans: list[Scan] = []
        scanner = threading.Thread(
            target=scan_loop, args=(rt, components, stop, scans), name="scan", daemon=True
        )
        scanner.start()
        try:
            time.sleep(SCAN_EVERY_S)  # the scans run on their schedule before retention starts
            t0 = time.perf_counter()
            report = apply_retention(engine, cutoff_ms, pause_s=pause_s)
            t1 = time.perf_counter()
        finally:
            stop.set()
            scanner.join(120)
    finally:
        engine.dispose()
    during = [s for s in scans if s.start < t1 and s.start + s.seconds > t0]
    return Measured(report, t1 - t0, idle, during)


def run_retention(tmp: Path, shape: RetentionShape, compare: bool = True) -> dict[str, float]:
    """Build once; retention as configured, then (``compare``) without pauses, each on a
    fresh copy of the database."""
    template = tmp / "template.db"
    engine, components, stored = build(template, shape)
    engine.dispose()
    runs = {"": None, "no_pause_": 0.0} if compare else {"": None}
    out: dict[str, float] = {"retention.rows_stored": float(stored)}
    for prefix, pause_s in runs.items():
        db = tmp / f"run-{prefix or 'default'}.db"
        shutil.copyfile(template, db)
        m = measure(db, components, pause_s)
        db.unlink()
        if prefix:
            out.update(
                {
                    f"retention.{prefix}seconds": round(m.seconds, 2),
                    f"retention.{prefix}max_cycle_stall_s": stall(m, "seconds"),
                    f"retention.{prefix}max_write_stall_s": stall(m, "write_s"),
                }
            )
        else:
            out.update(figures(m))
    return out


def stall(m: Measured, part: str) -> float:
    """The slowest overlapping scan (or its grouping part) minus the idle median."""
    idle = statistics.median(getattr(s, part) for s in m.idle)
    return round(max((getattr(s, part) for s in m.during), default=idle) - idle, 3)


def figures(m: Measured) -> dict[str, float]:
    r = m.report
    out = {f"retention.{k}": float(v) for k, v in asdict(r).items()}
    out.update(
        {
            "retention.rows_deleted": float(
                r.samples_deleted + r.log_events_deleted + r.anomalies_deleted
            ),
            "retention.seconds": round(m.seconds, 2),
            "retention.longest_batch_s": round(r.longest_batch_s, 3),
            "retention.idle_cycle_s": round(statistics.median(s.seconds for s in m.idle), 3),
            "retention.cycles": float(len(m.during)),
            "retention.cycle_p50_s": round(statistics.median(s.seconds for s in m.during), 3)
            if m.during
            else 0.0,
            "retention.max_cycle_stall_s": stall(m, "seconds"),
            "retention.max_write_stall_s": stall(m, "write_s"),
        }
    )
    return out


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "retention.cycle_p50_s": "retention.idle_cycle_s",
    "retention.max_cycle_stall_s": "retention.no_pause_max_cycle_stall_s",
    "retention.max_write_stall_s": "retention.no_pause_max_write_stall_s",
}


def run(quick: bool = False) -> dict[str, float]:
    """The retention benchmark; see the module docstring for the figures."""
    shape = (
        RetentionShape(components=1, log_events=259_200, anomalies=5_000)
        if quick
        else RetentionShape()
    )
    with tempfile.TemporaryDirectory() as tmp:
        return run_retention(Path(tmp), shape)


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
