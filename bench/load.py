"""Load benchmark: the detection scan every 30 s while a push gateway stores 10 s samples.

Why: ``bench.detect`` times the scan on a quiet database. In production the scan shares
the database with ingest, and on SQLite there is one writer at a time: a push waits while
the scan's grouping transaction commits, and the scan's reads compete for the CPU and the
page cache with the inserts. This benchmark runs both at once for minutes, at the
configured cadence, and reports whether the scan still fits in its interval.

**The load.** ``N`` components of 100 series each (the mix of ``bench.detect``: ``up``, 44
counters, 5 latency histograms as ``_sum``/``_count`` pairs, 45 gauges), one hour of
10-second history stored up front (the detection lookback: the scan reads and derives a
full window from the first cycle on). A separate process plays the push gateway: every
10 s each component pushes one batch (its 100 series at that scrape timestamp) through
``tasks.ingest.store.store_samples`` (validation, series resolution with a fresh
``SeriesResolver`` per push as a stateless request handler has, duplicate-skipping insert,
one transaction per push). The pushes of one 10-second round are spread evenly over it
(independent clients, not one burst). A separate process, because a push gateway is one:
in a thread it would also fight the scan for the GIL, which production does not do.

**The scan.** What one run of the ``detect`` flow does, called in-process without the
Prefect flow wrapper: ``flows.detect.shard_plans`` on a ``Runtime`` with the default
configuration (shards of 25 components), the shards on a local Dask cluster of two
single-threaded worker processes (``run_shard_at``, the body of the task that
``detection.dask_address`` makes the flow submit through prefect-dask), then
``persist_detection`` (grouping, issues, anomalies, watermarks in one transaction). Dask
because scoring holds the GIL: on this 2-core machine 10,000 series took 27.5 s one shard
after another in one process (the flow's default) and longer on threads, too close to the
30 s interval; two processes use both cores. Without the flow wrapper because it adds a
fixed cost per cycle (Prefect API calls for the flow and task runs, independent of the
data) and needs a Prefect API; what this benchmark is about is the work and the database
contention, which the wrapper does not change. Cycles start every 30 s on a fixed
schedule; a cycle that overruns delays the next one (it starts at once).

Figures (full: 100 components = 10,000 series, 10 minutes of measured wall time;
``--quick``: 20 components = 2,000 series, 1.5 minutes; everything else the same):

``load.series``, ``load.components``
    Series stored and pushed; components.
``load.cycles``
    Scan cycles measured (one warm-up cycle after the gateway caught up is not counted).
``load.cycle_p50_s``, ``load.cycle_p95_s``, ``load.cycle_max_s``
    Wall time of the measured scans under load (median, 95th percentile, longest).
``load.overruns``
    Scans longer than the 30-second interval. Target: 0.
``load.idle_cycle_s``
    The same scan with nothing else running, on the same database right after the gateway
    stopped, scoring the same amount of new data as a cycle under load (watermarks put
    back 30 s from the newest scrape every component pushed: three points a series): the
    median of three runs. ``load.cycle_p50_ratio`` and ``load.cycle_p95_ratio``:
    ``cycle_p50_s`` and ``cycle_p95_s`` over it. ``load.idle_cycle_one_process_s``: the
    same scan once with the shards one after another in this process (no cluster), as
    the flow runs them without ``detection.dask_address``; ``load.dask_workers``: 2.
``load.ingest_samples_per_s``, ``load.offered_samples_per_s``
    Samples stored by the gateway per second of measured wall time, and the offered rate
    (series / 10 s): lower means the gateway fell behind.
``load.push_p95_s``, ``load.push_max_s``
    Duration of one push (``store_samples`` of one component's batch), including any wait
    for SQLite's write lock.
``load.push_late_max_s``
    How far behind its schedule the gateway got at worst (the start of a push after its
    planned time): 0 means it never fell behind.
``load.anomalies``
    Anomalies the measured scans reported on this steady data (false alarms).
``load.samples_not_stored``
    Samples of all pushes (catch-up included) that ``store_samples`` did not store
    (rejected or duplicate). Target: 0.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from bench.detect import (
    STEP_S,
    Spec,
    bulk_load_samples,
    make_specs,
    series_values,
    stored_series,
)
from flows.config import SelfHealConfig
from flows.detect import grouping_policy, persist_detection, run_shard, run_shard_at, shard_plans
from flows.runtime import Runtime
from storage.engine import make_engine, sqlite_url_for
from storage.issues import AnomalyRecord, set_watermarks
from storage.metrics import SeriesKey, SeriesResolver
from storage.migrate import ensure_schema
from tasks.ingest.records import IngestReport
from tasks.ingest.store import store_samples

if TYPE_CHECKING:
    from distributed import Client

STEP_MS = STEP_S * 1000
CYCLE_S = 30.0  # the default detection_interval
HISTORY_S = 3600  # the default detection lookback: stored before the measured phase
SPARE_TICKS = 90  # pushes generated beyond the measured phase (covers set-up and catch-up)
DASK_WORKERS = 2  # worker processes of the local cluster (one per core of this machine)


@dataclass(frozen=True)
class ComponentBatch:
    """What one component pushes: its series keys and their values, one column per tick."""

    component: str
    metrics: tuple[str, ...]
    labels: tuple[str, ...]
    kinds: tuple[str, ...]
    values: np.ndarray  # (series, ticks)


@dataclass(frozen=True)
class Timeline:
    """History stored up front and the live pushes that follow it."""

    history: list[tuple[int, np.ndarray, np.ndarray]]  # (series id, ts ms, values)
    batches: list[ComponentBatch]
    first_live_ms: int  # scrape timestamp of live tick 0


def build_timeline(
    engine: Engine, n_components: int, history_s: int, live_ticks: int, end_ms: int
) -> Timeline:
    """Create the series and compute every value: ``history_s`` of 10 s points ending at
    ``end_ms``, then ``live_ticks`` pushes continuing the same series."""
    specs = make_specs(n_components)
    n_hist = history_s // STEP_S
    n = n_hist + live_ticks
    # The last history point is at end_ms; live tick k is k + 1 steps after it.
    ts_ms = end_ms - (n_hist - 1) * STEP_MS + np.arange(n, dtype=np.int64) * STEP_MS
    ts_s = ts_ms / 1000.0
    sids = create_series(engine, specs)
    history: list[tuple[int, np.ndarray, np.ndarray]] = []
    per_comp: dict[str, list[tuple[str, str, str, np.ndarray]]] = {}
    for i, spec in enumerate(specs):
        values = series_values(spec, ts_s, i, float(ts_s[0]))
        for sid, (metric, kind), vals in zip(sids[spec], stored_series(spec), values, strict=True):
            history.append((sid, ts_ms[:n_hist], vals[:n_hist]))
            per_comp.setdefault(spec.component, []).append(
                (metric, spec.labels, kind, vals[n_hist:])
            )
    batches = [
        ComponentBatch(
            comp,
            tuple(r[0] for r in rows),
            tuple(r[1] for r in rows),
            tuple(r[2] for r in rows),
            np.vstack([r[3] for r in rows]),
        )
        for comp, rows in per_comp.items()
    ]
    return Timeline(history, batches, int(ts_ms[n_hist]))


def create_series(engine: Engine, specs: Sequence[Spec]) -> dict[Spec, list[int]]:
    """The stored series of every spec, created up front; their ids by spec."""
    kinds = {SeriesKey(s.component, m, s.labels): k for s in specs for m, k in stored_series(s)}
    with engine.begin() as conn:
        ids = SeriesResolver().resolve(conn, kinds, kinds)
    return {
        s: [ids[SeriesKey(s.component, m, s.labels)] for m, _ in stored_series(s)] for s in specs
    }


def store_history(engine: Engine, history: list[tuple[int, np.ndarray, np.ndarray]]) -> int:
    """Bulk-insert the history (set-up, not what is measured)."""
    return bulk_load_samples(
        engine,
        (
            list(zip([sid] * len(ts), ts.tolist(), vals.tolist(), strict=True))
            for sid, ts, vals in history
        ),
    )


# -- the push gateway (its own process) ----------------------------------------------------


def push_gateway(
    db_url: str,
    batches: list[ComponentBatch],
    first_live_ms: int,
    stop: EventType,
    out: Connection,
) -> None:
    """Push every component's batch every 10 s until ``stop`` is set.

    Pushes whose time has already passed (the history ends before the set-up started) are
    sent at once; then ``("ready", wall time)`` is sent and the schedule is followed.
    At the end ``("done", records)`` with one row per push: scrape timestamp (ms), planned
    start, actual start, end (wall clock, seconds), samples stored.
    """
    engine = make_engine(db_url)
    n_comp = len(batches)
    frames = [
        pd.DataFrame(
            {
                "component": [b.component] * len(b.metrics),
                "metric": list(b.metrics),
                "labels": list(b.labels),
                "ts": np.zeros(len(b.metrics), dtype=np.int64),
                "value": np.zeros(len(b.metrics)),
                "kind": list(b.kinds),
            }
        )
        for b in batches
    ]
    schedule = [(tick, c) for tick in range(batches[0].values.shape[1]) for c in range(n_comp)]
    records: list[tuple[float, float, float, float, int]] = []
    ready = False
    try:
        for tick, c in schedule:
            ts_ms = first_live_ms + tick * STEP_MS
            # Spread over the round, each push after its scrape timestamp.
            planned = ts_ms / 1000 + (c + 0.5) * STEP_S / n_comp
            delay = planned - time.time()
            if delay > 0 and not ready:
                out.send(("ready", time.time()))
                ready = True
            if stop.wait(max(delay, 0.0)):
                break
            frame = frames[c].copy()
            frame["ts"] = ts_ms
            frame["value"] = batches[c].values[:, tick]
            started = time.time()
            report = store_samples(engine, frame, IngestReport("push"), resolver=SeriesResolver())
            records.append((ts_ms, planned, started, time.time(), report.stored))
    finally:
        if not ready:
            out.send(("ready", time.time()))
        out.send(("done", np.array(records, dtype=float).reshape(len(records), 5)))
        engine.dispose()


# -- the scan ------------------------------------------------------------------------------


@dataclass
class ScanResult:
    seconds: float
    anomalies: int


def scan(rt: Runtime, now: datetime, client: Client | None = None) -> ScanResult:
    """One detect step as the flow runs it: the shards one after another, or on the Dask
    cluster of ``client`` as ``detection.dask_address`` makes the flow do; then grouping."""
    t0 = time.perf_counter()
    plans = shard_plans(rt, int(now.timestamp() * 1000))
    if client is None:
        results = [run_shard(rt.engine, plan) for plan in plans]
    else:
        url = rt.config.database_url
        results = client.gather(client.map(run_shard_at, [url] * len(plans), plans, pure=False))
    anomalies: list[AnomalyRecord] = []
    marks: dict[str, int] = {}
    for res in results:
        if res.errors:
            raise RuntimeError("; ".join(res.errors))
        anomalies += res.anomalies
        marks.update(res.watermarks)
    deps = {n: list(c.depends_on) for n, c in rt.config.components.items()}
    persist_detection(rt.engine, anomalies, marks, now, grouping_policy(rt.config), deps)
    return ScanResult(time.perf_counter() - t0, len(anomalies))


def reset_state(engine: Engine, components: Sequence[str], mark_ms: int) -> None:
    """Watermarks at ``mark_ms``, no anomalies or issues: the same work for every idle run."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM anomalies")
        conn.exec_driver_sql("DELETE FROM issues")
        set_watermarks(conn, {f"{k}:{c}": mark_ms for c in components for k in ("metrics", "logs")})


def idle_baseline(
    rt: Runtime,
    components: Sequence[str],
    newest_ms: int,
    repeat: int,
    cycle_s: float,
    client: Client | None,
) -> float:
    """Median scan time on the quiet database, scoring the ``cycle_s`` up to ``newest_ms``
    (the newest scrape every component has pushed) as a cycle under load does."""
    now = datetime.fromtimestamp((newest_ms + 1) / 1000, UTC)
    times = []
    for _ in range(repeat):
        reset_state(rt.engine, components, newest_ms - int(cycle_s * 1000))
        times.append(scan(rt, now, client).seconds)
    return statistics.median(times)


@contextmanager
def dask_client(workers: int) -> Iterator[Client | None]:
    """A local Dask cluster of ``workers`` single-threaded processes (none for 0)."""
    if workers <= 0:
        yield None
        return
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # one line per worker event
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# -- the run -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else 0.0


def run_load(
    tmp: Path,
    n_components: int,
    duration_s: float,
    cycle_s: float = CYCLE_S,
    dask_workers: int = DASK_WORKERS,
) -> dict[str, float]:
    """Set up, run the gateway and the scans together, then measure the idle scans (on
    the cluster, and one after another in this process)."""
    url = sqlite_url_for(tmp / "load.db")
    engine = make_engine(url)
    ensure_schema(engine)
    # History ends a minute back, so the gateway always starts by catching up and its
    # pushes run back to back with the schedule from the first measured cycle on.
    end_ms = (int(time.time() * 1000) // STEP_MS) * STEP_MS - 60_000
    ticks = math.ceil(duration_s / STEP_S) + SPARE_TICKS
    timeline = build_timeline(engine, n_components, HISTORY_S, ticks, end_ms)
    store_history(engine, timeline.history)
    components = [b.component for b in timeline.batches]
    n_series = sum(len(b.metrics) for b in timeline.batches)
    per_push = n_series // n_components
    rt = Runtime(SelfHealConfig.model_validate({"database_url": url}), engine)
    try:
        with dask_client(dask_workers) as client:
            cycles, records, t_start, t_end = under_load(rt, timeline, duration_s, cycle_s, client)
            # The newest scrape every component pushed: the idle scans score the 30 s up to
            # it.
            stamps, counts = np.unique(records[:, 0], return_counts=True)
            newest_ms = int(stamps[counts == n_components].max())
            idle_s = idle_baseline(rt, components, newest_ms, 3, cycle_s, client)
        local_s = idle_baseline(rt, components, newest_ms, 1, cycle_s, None) if client else idle_s
    finally:
        engine.dispose()
    inside = (records[:, 3] >= t_start) & (records[:, 3] <= t_end)
    push_s = records[inside, 3] - records[inside, 2]
    late = records[inside, 2] - records[inside, 1]
    times = [c.seconds for c in cycles]
    p50, p95 = percentile(times, 50), percentile(times, 95)
    return {
        "load.series": float(n_series),
        "load.components": float(n_components),
        "load.cycles": float(len(cycles)),
        "load.cycle_p50_s": round(p50, 3),
        "load.cycle_p95_s": round(p95, 3),
        "load.cycle_max_s": round(max(times), 3),
        "load.overruns": float(sum(t > cycle_s for t in times)),
        "load.dask_workers": float(dask_workers),
        "load.idle_cycle_s": round(idle_s, 3),
        "load.idle_cycle_one_process_s": round(local_s, 3),
        "load.cycle_p50_ratio": round(p50 / idle_s, 3),
        "load.cycle_p95_ratio": round(p95 / idle_s, 3),
        "load.ingest_samples_per_s": round(float(records[inside, 4].sum()) / (t_end - t_start)),
        "load.offered_samples_per_s": round(n_series / STEP_S),
        "load.push_p95_s": round(percentile(push_s.tolist(), 95), 4),
        "load.push_max_s": round(float(push_s.max()) if len(push_s) else 0.0, 4),
        "load.push_late_max_s": round(max(0.0, float(late.max())) if len(late) else 0.0, 3),
        "load.anomalies": float(sum(c.anomalies for c in cycles)),
        "load.samples_not_stored": float(per_push * len(records) - records[:, 4].sum()),
    }


def under_load(
    rt: Runtime, timeline: Timeline, duration_s: float, cycle_s: float, client: Client | None
) -> tuple[list[ScanResult], np.ndarray, float, float]:
    """Start the gateway, wait until it caught up, then scan every ``cycle_s`` for
    ``duration_s``; returns the scans, the gateway's push records and the measured span."""
    ctx = mp.get_context("spawn")  # no fork: this process holds threads and connections
    stop = ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    gateway = ctx.Process(
        target=push_gateway,
        args=(rt.config.database_url, timeline.batches, timeline.first_live_ms, stop, send),
        name="push-gateway",
    )
    gateway.start()
    send.close()
    cycles: list[ScanResult] = []
    try:
        if not receive.poll(600):
            raise RuntimeError("the push gateway did not catch up within 10 minutes")
        kind, _ = receive.recv()
        assert kind == "ready", kind
        scan(rt, datetime.now(UTC), client)  # warm-up: scores the catch-up points
        t_start = time.time()
        next_at = t_start
        while next_at < t_start + duration_s:
            time.sleep(max(0.0, next_at - time.time()))
            cycles.append(scan(rt, datetime.now(UTC), client))
            next_at = max(next_at + cycle_s, time.time())
        t_end = time.time()
    finally:
        stop.set()
        if receive.poll(120):
            kind, records = receive.recv()
        else:
            kind, records = "silent", np.empty((0, 5))
        gateway.join(30)
        if gateway.is_alive():
            gateway.kill()
    if kind != "done":
        raise RuntimeError("the push gateway did not report")
    return cycles, records, t_start, t_end


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "load.cycle_p95_s": "load.idle_cycle_s",
    "load.ingest_samples_per_s": "load.offered_samples_per_s",
}


def run(quick: bool = False) -> dict[str, float]:
    """The load benchmark; see the module docstring for the figures."""
    n_components, duration_s = (20, 90.0) if quick else (100, 600.0)
    with tempfile.TemporaryDirectory() as tmp:
        return run_load(Path(tmp), n_components, duration_s)


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    if "--components" in argv or "--duration" in argv:
        n = int(argv[argv.index("--components") + 1]) if "--components" in argv else 20
        d = float(argv[argv.index("--duration") + 1]) if "--duration" in argv else 60.0
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_load(Path(tmp), n, d), indent=2))
        return
    print(json.dumps(run(quick=quick), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
