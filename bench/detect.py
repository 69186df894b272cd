"""Detection-cycle benchmark: the detect step (every shard + grouping) without Prefect.

Data: series of 10-second samples in a SQLite file, in components of 100 stored series each:
one ``up``; 44 counters (request and error counts with Poisson increments, byte and CPU
counters with mild gaussian noise); 5 latency histograms (``_sum``/``_count`` pairs); 45
gauges with mild gaussian noise and a slow drift, among them integer queue depths. The
last two hours are stored at the 10-second scrape interval; **older history is stored at
1-minute spacing** (seven days at 10 s would be 60 M rows, longer to generate than to
benchmark), so the table really holds one or seven days of history for every series, only
sparser beyond two hours.

The detect step is what one run of the ``detect`` flow does, called directly with an engine
(no Prefect start-up): ``run_shard`` for every shard of ``DetectionConfig().shard_size``
components with the configured detectors (``CYCLE_DEFAULT_DETECTOR``, behaviour on), then
``persist_detection``. Each timed run starts from the same steady state: watermarks 30 s
before now (the newest three points of every series are new), no anomalies or issues stored.
Timings are the best of a few runs (a noisy 2-core machine).

Figures (full run: 1,000 series in 10 components; ``--quick``: 200 series in 2 components,
two timing runs instead of three, half an hour of false-alarm cycles instead of an hour;
everything else is the same):

``detect.cycle_s``
    The detect step, lookback 3,600 s, one day of stored history; about 2 % of the series
    have a spike in their two newest points. Target: ≤ 3 s (10 % of the 30-second interval).
``detect.series``, ``detect.points_scored``, ``detect.anomalies``
    Stored series; new points handed to the detectors in that cycle; anomalies reported.
``detect.spikes_found``
    Share of the injected spikes the cycle reported.
``detect.read_s``
    The bounded database reads alone (``storage.metrics.read_arrays`` for every component:
    series metadata and the lookback's samples, as arrays).
``detect.read_frames_s``
    The same rows through ``storage.metrics.read_samples`` + ``series_frame`` (what the
    cycle read with before; they build frames from result rows).
``detect.window_s``
    ``read_component`` for every component: the reads plus ``derive``.
``detect.score_s``
    ``detect_metrics`` for every component on those windows (detectors and behaviour).
``detect.persist_s``
    ``persist_detection`` of the cycle's anomalies (grouping, issues, watermarks).
``detect.history_ratio_7d_1d``
    ``detect.cycle_s`` with seven days of stored history over the same with one day (same
    series, same window). Target: ≤ 1.2 (the read seeks an index range per series).
    ``detect.read_ratio_7d_1d``: the same for ``detect.read_s``; ``detect.cycle_7d_s``: the
    seven-day cycle; ``detect.rows_1d`` / ``detect.rows_7d``: rows stored;
    ``detect.generate_s``: time to generate and store the one-day data.
``detect.false_alarms_per_1000_series_hour``
    Steady data only (no injected anomaly): the detect step replayed cycle by cycle every
    30 s over one hour, after one hour of history, watermarks carried from cycle to cycle,
    anomalies and issues persisted. Metric anomalies reported, per 1,000 stored series per
    hour. ``detect.false_alarm_series_per_1000``: series that alarmed at least once;
    ``detect.behaviour_alarms_per_1000_series_hour``: relation and profile anomalies;
    ``detect.false_alarm_issues_per_hour``: issues opened. In sample: the cycle's detector
    settings were chosen on this generator with seed 0.
``detect.unseen_seed.*``
    The same four figures on series, noise and drifts drawn from seed 1, which no setting
    was chosen on (out of sample for the seed; the generator's shapes are still known).
``detect.real_false_alarms_per_1000_series_hour``
    An hour of this machine's real ``prometheus-node-exporter`` (every family, 10 s scrapes,
    recorded once into ``tests/data/node_exporter_host.txt.gz`` while the machine ran this
    benchmark suite, so with its load changes), replayed through the cycle with the default
    configuration (``tests.exporter_replay``): metric anomalies per 1,000 stored series per
    hour (no fault was injected), ``detect.real_false_alarm_issues_per_hour`` issues opened.
    ``detect.real_context_per_1000_series_hour``: anomalies on the host's resource series
    (context: they open no issue, see ``tasks.detection.candidates``), at the same scale.
    The context rule was written after reading which of this hour's series alarmed: in
    sample for it.
``detect.real_later_*``
    The same figures on a longer recording of the same machine
    (``tests/data/node_exporter_host_later.txt.gz``, made on 2026-12-08 after the context
    rule was written, while CI, the demo and benchmarks ran): out of sample. Not in the
    quick run (its replay takes minutes).

``python -m bench.detect --sweep [--quick] [--seed N] [--variants JSON]`` compares default
detector parameter sets (over the cycle defaults) on the same replay, with anomalies
injected into a quarter of the series; false alarms are counted on the other three
quarters (see ``sweep``; one JSON line per parameter set).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from flows.config import CYCLE_DEFAULT_DETECTOR, DetectionConfig
from flows.detect import ShardPlan, persist_detection, run_shard
from storage.engine import make_engine, sqlite_url_for
from storage.issues import AnomalyRecord, set_watermarks
from storage.metrics import (
    SeriesKey,
    SeriesResolver,
    labels_key,
    read_arrays,
    read_samples,
    series_frame,
)
from storage.migrate import ensure_schema
from tasks.detection.candidates import CONTEXT_KIND
from tasks.detection.logs_step import LogDetectionSettings
from tasks.detection.metrics_step import (
    ComponentWindow,
    MetricDetectionSettings,
    detect_metrics,
    read_component,
)
from tasks.detection.registry import default_registry
from tasks.issues.grouping import GroupingPolicy

STEP_S = 10  # scrape interval
DENSE_S = 2 * 3600  # the newest two hours are stored at the scrape interval
SPARSE_STEP_S = 60  # older history: one sample a minute
INTERVAL_S = 30  # detection interval
LOOKBACK_S = 3600.0
DAY_S = 86_400
# A fixed "now" on the scrape grid keeps the data identical from run to run.
NOW_MS = int(datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp() * 1000)
ORIGIN_S = NOW_MS / 1000 - 8 * DAY_S  # counters count from here
# The cycle's detector settings were chosen on seed 0's series; this one was never looked at.
UNSEEN_SEED = 1
# An hour of this machine's real prometheus-node-exporter (every family), scraped every 10 s
# and recorded once (``# TYPE`` lines kept in the first scrape only): ``tests.exporter_replay``.
HOST_RECORDING = Path(__file__).resolve().parents[1] / "tests/data/node_exporter_host.txt.gz"
LATER_HOST_RECORDING = HOST_RECORDING.with_name("node_exporter_host_later.txt.gz")


# -- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One gauge, counter or histogram and how its values are made."""

    component: str
    metric: str
    labels: str
    kind: str  # gauge | counter | histogram (the _sum/_count pair is made together)
    level: float  # gauge level; counter rate per second; histogram mean observation
    noise: float = 0.0  # relative gaussian noise (gauges, continuous counters, histogram sums)
    drift: float = 0.0  # gauges: steepest relative change per hour (a 6-hour sine)
    poisson: bool = False  # integer gauge / counter with Poisson increments
    rate: float = 0.0  # histogram observations per second


@dataclass(frozen=True)
class Effect:
    """An injected anomaly, from point ``start`` (an index into the timestamps) on.

    ``shift``: a gauge moves by ``size`` noise standard deviations; ``scale``: a counter's
    rate, a histogram's mean or an integer gauge's level is multiplied by ``size``.
    ``points``: how long (``None``: to the end).
    """

    kind: str
    size: float
    start: int
    points: int | None = None

    def mask(self, n: int) -> np.ndarray:
        m = np.zeros(n, bool)
        m[self.start : n if self.points is None else self.start + self.points] = True
        return m


def component_specs(component: str, rng: np.random.Generator) -> list[Spec]:
    """100 stored series: up, 44 counters, 5 histograms (10 series), 45 gauges."""

    def spec(metric: str, kind: str, level: float, **kw: Any) -> Spec:
        labels = labels_key(kw.pop("labels", None))
        return Spec(component, metric, labels, kind, float(level), **kw)

    u = rng.uniform
    out = [spec("up", "gauge", 1.0)]
    out += [
        spec("http_requests_total", "counter", u(2, 200), poisson=True, labels={"route": f"/r{i}"})
        for i in range(20)
    ]
    out += [
        spec("http_errors_total", "counter", u(0.05, 2), poisson=True, labels={"route": f"/r{i}"})
        for i in range(10)
    ]
    out += [
        spec("bytes_sent_total", "counter", u(1e4, 1e6), noise=u(0.02, 0.1),
             labels={"route": f"/r{i}"})
        for i in range(10)
    ]  # fmt: skip
    out += [
        spec("cpu_seconds_total", "counter", u(0.1, 0.9), noise=0.05, labels={"core": str(i)})
        for i in range(4)
    ]
    out += [
        spec("request_latency_seconds", "histogram", u(0.01, 0.5), noise=0.05, rate=u(5, 100),
             labels={"route": f"/r{i}"})
        for i in range(5)
    ]  # fmt: skip
    out += [
        spec("memory_bytes", "gauge", u(1e8, 4e9), noise=0.01, drift=u(-0.02, 0.02),
             labels={"pool": f"p{i}"})
        for i in range(5)
    ]  # fmt: skip
    out += [
        spec("queue_depth", "gauge", u(2, 50), poisson=True, labels={"queue": f"q{i}"})
        for i in range(5)
    ]
    names = ["open_connections", "threads", "cache_hit_ratio", "disk_free_bytes", "load"]
    out += [
        spec(names[i % 5], "gauge", u(0.5, 1e3), noise=u(0.005, 0.05), drift=u(-0.02, 0.02),
             labels={"instance": f"i{i // 5}"})
        for i in range(35)
    ]  # fmt: skip
    return out


def make_specs(n_components: int, seed: int = 0) -> list[Spec]:
    rng = np.random.default_rng([7, seed])
    return [s for c in range(n_components) for s in component_specs(f"svc{c:02d}", rng)]


def stored_series(spec: Spec) -> list[tuple[str, str]]:
    """(metric, kind) of the stored series a spec makes."""
    if spec.kind == "histogram":
        return [(f"{spec.metric}_sum", "histogram"), (f"{spec.metric}_count", "histogram")]
    return [(spec.metric, spec.kind)]


def _draw(
    key: int, j: int, ts_s: np.ndarray, recent: np.ndarray, fn: Callable[..., np.ndarray]
) -> np.ndarray:
    """``fn(rng, mask)`` on the recent points and on the older ones, each with its own
    generator, so the recent window does not depend on how much history is stored."""
    out = np.empty(len(ts_s))
    for part, mask in ((1, recent), (2, ~recent)):
        if mask.any():
            out[mask] = fn(np.random.default_rng([key, part, j, int(mask.sum())]), mask)
    return out


def series_values(
    spec: Spec, ts_s: np.ndarray, key: int, recent_from_s: float, effect: Effect | None = None
) -> list[np.ndarray]:
    """Values of the spec's stored series at ``ts_s`` (seconds, increasing).

    Cumulative series are anchored at the first recent point and built backwards into the
    past, so they stay monotone across the dense/sparse boundary.
    """
    n = len(ts_s)
    recent = ts_s >= recent_from_s
    mult = np.ones(n)
    shift = np.zeros(n)
    if effect is not None:
        m = effect.mask(n)
        if effect.kind == "shift":
            shift[m] = effect.size * spec.level * spec.noise
        else:
            mult[m] = effect.size
    if spec.kind == "gauge":
        if spec.metric == "up":
            return [np.ones(n)]
        if spec.poisson:
            return [_draw(key, 0, ts_s, recent, lambda g, m: g.poisson(spec.level * mult[m]))]
        wave = spec.drift * 6 / (2 * np.pi) * np.sin(2 * np.pi * ts_s / 21600)
        noise = _draw(key, 0, ts_s, recent, lambda g, m: g.normal(0, spec.noise, int(m.sum())))
        return [spec.level * (1 + wave) * (1 + noise) + shift]
    dt = np.diff(ts_s, prepend=ts_s[0] - STEP_S)
    if spec.kind == "counter":
        if spec.poisson:
            inc = _draw(key, 0, ts_s, recent, lambda g, m: g.poisson(spec.level * dt[m] * mult[m]))
        else:
            noise = _draw(key, 0, ts_s, recent, lambda g, m: g.normal(0, spec.noise, int(m.sum())))
            inc = np.maximum(spec.level * dt * mult * (1 + noise), 0.0)
        return [_integrate(inc, recent, spec.level * (recent_from_s - ORIGIN_S))]
    count = _draw(key, 0, ts_s, recent, lambda g, m: g.poisson(spec.rate * dt[m]))
    noise = _draw(key, 1, ts_s, recent, lambda g, m: g.normal(0, spec.noise, int(m.sum())))
    total = count * spec.level * mult * (1 + noise / np.sqrt(np.maximum(count, 1)))
    base = spec.rate * (recent_from_s - ORIGIN_S)
    return [
        _integrate(np.maximum(total, 0.0), recent, base * spec.level),
        _integrate(count, recent, base),
    ]


def _integrate(inc: np.ndarray, recent: np.ndarray, start: float) -> np.ndarray:
    """Cumulative values: forwards from ``start`` over the recent points, backwards before."""
    out = np.empty(len(inc))
    out[recent] = start + np.cumsum(inc[recent])
    if (~recent).any():
        # v[i] = v[i + 1] - inc[i + 1], from the first recent point back.
        after = np.append(inc[~recent][1:], inc[recent][0])
        out[~recent] = out[recent][0] - np.cumsum(after[::-1])[::-1]
    return out


def timestamps(history_s: float, end_ms: int, dense_s: float = DENSE_S) -> np.ndarray:
    """Epoch ms of the stored samples: every 10 s within ``dense_s`` of the end, every
    minute before."""
    end_s = end_ms // 1000
    dense = np.arange(end_s - dense_s + STEP_S, end_s + 1, STEP_S)
    if history_s <= dense_s:
        return dense[dense > end_s - history_s] * 1000
    sparse = np.arange(end_s - history_s, dense[0], SPARSE_STEP_S)
    return np.concatenate([sparse, dense]) * 1000


def create_database(path: Path, specs: list[Spec]) -> tuple[Engine, dict[Spec, list[int]]]:
    engine = make_engine(sqlite_url_for(path))
    ensure_schema(engine)
    kinds = {SeriesKey(s.component, m, s.labels): k for s in specs for m, k in stored_series(s)}
    with engine.begin() as conn:
        ids = SeriesResolver().resolve(conn, kinds, kinds)
    sids = {
        s: [ids[SeriesKey(s.component, m, s.labels)] for m, _ in stored_series(s)] for s in specs
    }
    return engine, sids


def fill(
    engine: Engine,
    specs: list[Spec],
    sids: dict[Spec, list[int]],
    ts_ms: np.ndarray,
    keep: np.ndarray,
    effects: Mapping[int, Effect],
    end_ms: int,
    dense_s: float = DENSE_S,
    seed: int = 0,
) -> int:
    """Insert each spec's values at ``ts_ms[keep]``; returns the rows written."""
    ts_s = ts_ms / 1000.0
    stamps = ts_ms[keep].tolist()
    recent_from_s = end_ms / 1000 - dense_s

    def rows() -> Iterator[list[tuple[int, int, float]]]:
        for i, spec in enumerate(specs):
            values = series_values(spec, ts_s, seed * 1_000_003 + i, recent_from_s, effects.get(i))
            for sid, vals in zip(sids[spec], values, strict=True):
                yield list(zip([sid] * len(stamps), stamps, vals[keep].tolist(), strict=True))

    return bulk_load_samples(engine, rows())


def bulk_load_samples(engine: Engine, chunks: Iterable[list[tuple[int, int, float]]]) -> int:
    """Insert (series id, ts ms, value) rows with plain executemany in one transaction,
    half a million at a time (set-up, not what is measured); returns the rows written."""
    sql = "INSERT OR IGNORE INTO samples (series_id, ts, value) VALUES (?, ?, ?)"
    written = 0
    rows: list[tuple[int, int, float]] = []
    with engine.begin() as conn:
        for chunk in chunks:
            rows.extend(chunk)
            if len(rows) > 500_000:
                conn.exec_driver_sql(sql, rows)
                written += len(rows)
                rows = []
        if rows:
            conn.exec_driver_sql(sql, rows)
            written += len(rows)
    # Fold the write-ahead log into the database, as SQLite's automatic checkpoints do in
    # steady state: reads right after a bulk load would otherwise also search the log.
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return written


def spike_effects(specs: list[Spec], n_points: int, seed: int = 11) -> dict[int, Effect]:
    """A spike in the two newest points of about 2 % of the series (not ``up``)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(specs), max(1, len(specs) // 50), replace=False)
    out = {}
    for i in sorted(int(c) for c in chosen):
        s = specs[i]
        if s.metric == "up":
            continue
        gauge = s.kind == "gauge" and not s.poisson
        out[i] = (
            Effect("shift", 20.0, n_points - 2) if gauge else Effect("scale", 10.0, n_points - 2)
        )
    return out


# -- the detect step ---------------------------------------------------------------------


def shard_plans(
    components: list[str], now_ms: int, detectors: tuple[tuple[str, dict[str, Any]], ...] | None
) -> list[ShardPlan]:
    """As ``flows.detect.shard_plans`` builds them from the default configuration."""
    d = DetectionConfig()
    metrics = MetricDetectionSettings(
        lookback_s=d.lookback, behaviour=d.behaviour, key_metrics=tuple(d.key_metrics)
    )
    logs = LogDetectionSettings(lookback_s=d.lookback)
    if detectors is None:
        detectors = tuple((s.name, dict(s.params)) for s in d.detectors)
    first_run = max(2 * INTERVAL_S, 60) * 1000
    return [
        ShardPlan(
            tuple(components[i : i + d.shard_size]), detectors, (), metrics, logs, now_ms, first_run
        )
        for i in range(0, len(components), d.shard_size)
    ]


def policy() -> GroupingPolicy:
    d = DetectionConfig()
    return GroupingPolicy(
        d.group_wait, d.resolve_after, d.flap_window, d.repeat_interval, d.correlation_window
    )


def reset_state(engine: Engine, components: list[str], mark_ms: int) -> None:
    """Steady state before a timed cycle: watermarks at ``mark_ms``, nothing stored yet."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM anomalies")
        conn.exec_driver_sql("DELETE FROM issues")
        set_watermarks(conn, {f"{k}:{c}": mark_ms for c in components for k in ("metrics", "logs")})


@dataclass
class CycleOutcome:
    anomalies: list[AnomalyRecord]
    watermarks: dict[str, int]
    new_issues: int


def detect_step(
    engine: Engine,
    components: list[str],
    now_ms: int,
    detectors: tuple[tuple[str, dict[str, Any]], ...] | None = None,
) -> CycleOutcome:
    """One run of the detect flow's work: every shard, then grouping in one transaction."""
    anomalies: list[AnomalyRecord] = []
    marks: dict[str, int] = {}
    for plan in shard_plans(components, now_ms, detectors):
        res = run_shard(engine, plan)
        if res.errors:
            raise RuntimeError("; ".join(res.errors))
        anomalies += res.anomalies
        marks.update(res.watermarks)
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    summary = persist_detection(engine, anomalies, marks, now, policy(), {})
    return CycleOutcome(anomalies, marks, len(summary.new_issues))


def timed(fn: Callable[[], Any], repeat: int, before: Callable[[], None] | None = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_cycle(
    engine: Engine, components: list[str], repeat: int, spiked: list[set[int]] | None = None
) -> dict[str, float]:
    """Time the detect step and its parts; ``spiked``: the series ids of each spiked spec."""
    mark = NOW_MS - INTERVAL_S * 1000
    start = NOW_MS - int(LOOKBACK_S * 1000)
    outcome: list[CycleOutcome] = []

    def cycle() -> None:
        outcome.append(detect_step(engine, components, NOW_MS))

    cycle_s = timed(cycle, repeat, lambda: reset_state(engine, components, mark))

    def reads() -> None:
        for c in components:
            read_arrays(engine, c, start, NOW_MS + 1)

    def frames() -> None:
        for c in components:
            read_samples(engine, start, NOW_MS + 1, component=c)
            series_frame(engine, c)

    windows: list[ComponentWindow] = []

    def read_windows() -> None:
        windows[:] = [read_component(engine, c, NOW_MS, LOOKBACK_S) for c in components]

    plan = shard_plans(components, NOW_MS, None)[0]
    registry = default_registry()
    detectors = [registry.create(n, p) for n, p in plan.detectors]

    def score() -> None:
        for w in windows:
            detect_metrics(w, detectors, mark, plan.metrics)

    read_s = timed(reads, repeat + 2)
    frames_s = timed(frames, repeat)
    window_s = timed(read_windows, repeat)
    score_s = timed(score, repeat)
    points = sum(
        int((d.values.index.as_unit("ms").asi8 > mark).sum()) for w in windows for d in w.derived
    )
    last = outcome[-1]
    now = datetime.fromtimestamp(NOW_MS / 1000, UTC)

    def persist() -> None:
        persist_detection(engine, last.anomalies, last.watermarks, now, policy(), {})

    persist_s = timed(persist, repeat, lambda: reset_state(engine, components, mark))
    hit = {a.series_id for a in last.anomalies if a.kind == "metric"}
    return {
        "cycle_s": cycle_s,
        "read_s": read_s,
        "read_frames_s": frames_s,
        "window_s": window_s,
        "score_s": score_s,
        "persist_s": persist_s,
        "points_scored": float(points),
        "anomalies": float(len(last.anomalies)),
        "spikes_found": sum(bool(hit & ids) for ids in spiked) / len(spiked) if spiked else 0.0,
    }


# -- false alarms --------------------------------------------------------------------------


def steady_database(
    path: Path,
    specs: list[Spec],
    cycles: int,
    effects: Mapping[int, Effect] | None = None,
    seed: int = 0,
) -> tuple[Engine, dict[Spec, list[int]], int]:
    """One hour of history then ``cycles`` detection intervals, all at 10 s; returns the
    engine, the series ids and the first replayed watermark."""
    engine, sids = create_database(path, specs)
    span_s = int(LOOKBACK_S) + cycles * INTERVAL_S
    ts_ms = timestamps(span_s, NOW_MS, dense_s=span_s)
    everything = np.ones(len(ts_ms), bool)
    fill(engine, specs, sids, ts_ms, everything, effects or {}, NOW_MS, span_s, seed)
    return engine, sids, NOW_MS - cycles * INTERVAL_S * 1000


def false_alarms(
    tmp: Path,
    specs: list[Spec],
    cycles: int,
    detectors: tuple[tuple[str, dict[str, Any]], ...] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Replay steady data through the detect step cycle by cycle and count what fires
    (``detectors``: instead of the configured ones; ``seed``: other noise)."""
    engine, _, first = steady_database(tmp / f"steady-{seed}.db", specs, cycles, seed=seed)
    components = sorted({s.component for s in specs})
    reset_state(engine, components, first)
    metric = behaviour = issues = 0
    series: set[int | None] = set()
    for k in range(1, cycles + 1):
        out = detect_step(engine, components, first + k * INTERVAL_S * 1000, detectors)
        issues += out.new_issues
        for a in out.anomalies:
            if a.kind == "metric":
                metric += 1
                series.add(a.series_id)
            elif a.kind == "behaviour":
                behaviour += 1
    engine.dispose()
    n_series = sum(len(stored_series(s)) for s in specs)
    hours = cycles * INTERVAL_S / 3600
    per = 1000.0 / n_series / hours
    return {
        "detect.false_alarms_per_1000_series_hour": round(metric * per, 2),
        "detect.false_alarm_series_per_1000": round(len(series) * 1000.0 / n_series, 2),
        "detect.behaviour_alarms_per_1000_series_hour": round(behaviour * per, 2),
        "detect.false_alarm_issues_per_hour": round(issues / hours, 2),
    }


def real_false_alarms(
    tmp: Path, recording: Path = HOST_RECORDING, prefix: str = "detect.real_"
) -> dict[str, float]:
    """The cycle's detection with the default configuration over a recording of this
    machine's real ``prometheus-node-exporter`` (no fault injected): metric anomalies per
    1,000 stored series per hour, and issues opened."""
    from tests.exporter_replay import replay

    db = tmp / f"{recording.name}.db"
    config = tmp / f"{recording.name}.json"
    config.write_text(json.dumps({"database_url": sqlite_url_for(db)}))
    out = replay(config, recording)
    metric = sum(1 for a in out.anomalies if a.kind == "metric")
    context = sum(1 for a in out.anomalies if a.kind == CONTEXT_KIND)
    hours = max(out.hours, 1e-9)
    per = 1000.0 / max(out.series, 1) / hours
    return {
        f"{prefix}false_alarms_per_1000_series_hour": round(metric * per, 2),
        f"{prefix}context_per_1000_series_hour": round(context * per, 2),
        f"{prefix}false_alarm_issues_per_hour": round(len(out.issues) / hours, 2),
        f"{prefix}series": float(out.series),
        f"{prefix}hours": round(out.hours, 2),
    }


# -- parameter sweep -----------------------------------------------------------------------

# name → (which specs, effect) for the sweep; sizes in noise standard deviations (shift)
# or as a factor (scale); onsets are spread over the replayed hour.
ANOMALIES: dict[str, tuple[Callable[[Spec], bool], str, float, int | None]] = {
    "gauge spike 6 sd": (lambda s: s.kind == "gauge" and s.noise > 0, "shift", 6.0, 1),
    "gauge spike 10 sd": (lambda s: s.kind == "gauge" and s.noise > 0, "shift", 10.0, 1),
    "gauge shift 1 sd": (lambda s: s.kind == "gauge" and s.noise > 0, "shift", 1.0, None),
    "gauge shift 3 sd": (lambda s: s.kind == "gauge" and s.noise > 0, "shift", 3.0, None),
    "queue x3": (lambda s: s.kind == "gauge" and s.poisson, "scale", 3.0, None),
    "requests x2": (lambda s: s.metric == "http_requests_total", "scale", 2.0, None),
    "errors x5 for 30 s": (lambda s: s.metric == "http_errors_total", "scale", 5.0, 3),
    "errors x3": (lambda s: s.metric == "http_errors_total", "scale", 3.0, None),
    "latency x1.5": (lambda s: s.kind == "histogram", "scale", 1.5, None),
    "latency x3": (lambda s: s.kind == "histogram", "scale", 3.0, None),
}
DETECTION_DELAY_S = 300  # an anomaly counts as found when an alarm comes within 5 minutes

SWEEP_VARIANTS: dict[str, dict[str, Any]] = {
    "cycle default": {},
    "margin 0.5": {"margin": 0.5},
    "margin 1": {"margin": 1.0},
    "margin 1.5": {"margin": 1.5},
    "quantile 0.99, margin 1": {"quantile": 0.99, "margin": 1.0},
}


def sweep(
    n_components: int,
    variants: Mapping[str, Mapping[str, Any]],
    cycles: int = 120,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """False alarms and anomalies found by each parameter set (over the cycle defaults).

    Steady data as in ``false_alarms``; in each component a quarter of the series get an
    anomaly from ``ANOMALIES`` (cycling through them) at a point spread over the replayed
    hour, at least ten minutes before its end. Each cycle reads every component once and
    scores the new points with each variant (the metric detectors only: grouping and the
    behavioural checks do not depend on these parameters). False alarms are counted on the
    untouched series, detections within ``DETECTION_DELAY_S`` of an anomaly's onset.
    ``seed`` draws other series, anomalies and noise.
    """
    specs = make_specs(n_components, seed)
    rng = np.random.default_rng([5, seed])
    span_points = int(LOOKBACK_S + cycles * INTERVAL_S) // STEP_S
    first_point = int(LOOKBACK_S) // STEP_S
    last_onset = span_points - 600 // STEP_S
    effects: dict[int, Effect] = {}
    kinds: dict[int, str] = {}
    names = list(ANOMALIES)
    turn = 0
    for i, s in enumerate(specs):
        if s.metric == "up" or rng.random() >= 0.25:
            continue
        for _ in range(len(names)):
            name = names[turn % len(names)]
            turn += 1
            fits, kind, size, points = ANOMALIES[name]
            if fits(s):
                start = int(rng.integers(first_point + 6, last_onset))
                effects[i], kinds[i] = Effect(kind, size, start, points), name
                break
    base = dict(CYCLE_DEFAULT_DETECTOR["params"])  # type: ignore[call-overload]
    registry = default_registry()
    detectors = {k: [registry.create("default", {**base, **v})] for k, v in variants.items()}
    settings = MetricDetectionSettings(behaviour=False)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "sweep.db"
        engine, sids, first = steady_database(db, specs, cycles, effects, seed)
        by_sid = {sid: i for i, s in enumerate(specs) for sid in sids[s]}
        components = sorted({s.component for s in specs})
        hits: dict[str, list[AnomalyRecord]] = {k: [] for k in variants}
        for c in range(1, cycles + 1):
            now = first + c * INTERVAL_S * 1000
            for comp in components:
                window = read_component(engine, comp, now, LOOKBACK_S)
                for k, dets in detectors.items():
                    hits[k] += detect_metrics(window, dets, now - INTERVAL_S * 1000, settings)
        engine.dispose()
    t0_s = NOW_MS / 1000 - (span_points - 1) * STEP_S
    onset_ms = {i: int((t0_s + e.start * STEP_S) * 1000) for i, e in effects.items()}
    clean = sum(len(stored_series(s)) for i, s in enumerate(specs) if i not in effects)
    clean -= sum(1 for i, s in enumerate(specs) if i not in effects and s.metric == "up")
    rows = []
    for k in variants:
        found: dict[int, int] = {}
        false = 0
        false_by: dict[str, int] = {}
        for a in hits[k]:
            i = by_sid.get(a.series_id or -1)
            if i is None or a.kind != "metric":
                continue
            if i not in effects:
                false += 1
                false_by[a.signature] = false_by.get(a.signature, 0) + 1
            elif 0 <= a.ts_ms - onset_ms[i] <= DETECTION_DELAY_S * 1000:
                found.setdefault(i, a.ts_ms - onset_ms[i])
        row: dict[str, Any] = {
            "variant": k,
            "params": dict(variants[k]),
            "false_alarms_per_1000_series_hour": round(
                false * 1000.0 / clean / (cycles * INTERVAL_S / 3600), 2
            ),
        }
        for name in names:
            mine = [i for i, n in kinds.items() if n == name]
            got = [found[i] for i in mine if i in found]
            delay = f", median {np.median(got) / 1000:.0f} s" if got else ""
            row[name] = f"{len(got)}/{len(mine)}{delay}"
        row["false_alarms_by_metric"] = dict(sorted(false_by.items()))
        rows.append(row)
    return rows


# -- entry point ---------------------------------------------------------------------------


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "detect.cycle_7d_s": "detect.cycle_s",
}
SAMPLE = {
    "detect.cycle_7d_s": "timing on generated series",
    "detect.false_alarms_per_1000_series_hour": (
        "in sample: the generator and seed the cycle's detector settings were chosen on"
    ),
    "detect.spikes_found": "in sample: the generator and seed the settings were chosen on",
    "detect.unseen_seed.false_alarms_per_1000_series_hour": (
        "out of sample: the generator with a seed the settings were not chosen on"
    ),
    "detect.real_false_alarms_per_1000_series_hour": (
        "in sample for the context rule (written after reading which of this hour's real "
        "node-exporter series alarmed); no detector parameter was tuned on it"
    ),
    "detect.real_later_false_alarms_per_1000_series_hour": (
        "out of sample: real node-exporter hours recorded after the context rule was written"
    ),
}


def run(quick: bool = False) -> dict[str, float]:
    """Benchmark the detect step; see the module docstring for the figures."""
    n_components = 2 if quick else 10
    repeat = 2 if quick else 3
    specs = make_specs(n_components)
    n_series = sum(len(stored_series(s)) for s in specs)
    components = sorted({s.component for s in specs})
    ts7 = timestamps(7 * DAY_S, NOW_MS)
    effects = spike_effects(specs, len(ts7))
    figures: dict[str, float] = {"detect.series": float(n_series)}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        t0 = time.perf_counter()
        engine, sids = create_database(tmp / "day.db", specs)
        spiked = [set(sids[specs[i]]) for i in effects]
        one_day = ts7 > NOW_MS - DAY_S * 1000
        rows = fill(engine, specs, sids, ts7, one_day, effects, NOW_MS)
        engine.dispose()
        gen_s = time.perf_counter() - t0
        engine = make_engine(sqlite_url_for(tmp / "day.db"))
        day = measure_cycle(engine, components, repeat, spiked)
        engine.dispose()
        # Seven days: the same database plus six older days of the same series.
        shutil.copy(tmp / "day.db", tmp / "week.db")
        engine = make_engine(sqlite_url_for(tmp / "week.db"))
        rows7 = rows + fill(engine, specs, sids, ts7, ~one_day, effects, NOW_MS)
        week = measure_cycle(engine, components, repeat)
        engine.dispose()
        figures.update(
            {
                "detect.cycle_s": round(day["cycle_s"], 3),
                "detect.points_scored": day["points_scored"],
                "detect.anomalies": day["anomalies"],
                "detect.spikes_found": round(day["spikes_found"], 3),
                "detect.read_s": round(day["read_s"], 3),
                "detect.read_frames_s": round(day["read_frames_s"], 3),
                "detect.window_s": round(day["window_s"], 3),
                "detect.score_s": round(day["score_s"], 3),
                "detect.persist_s": round(day["persist_s"], 3),
                "detect.cycle_7d_s": round(week["cycle_s"], 3),
                "detect.history_ratio_7d_1d": round(week["cycle_s"] / day["cycle_s"], 3),
                "detect.read_ratio_7d_1d": round(week["read_s"] / day["read_s"], 3),
                "detect.rows_1d": float(rows),
                "detect.rows_7d": float(rows7),
                "detect.generate_s": round(gen_s, 1),
            }
        )
        # An hour of cycles (half an hour in the quick run); the rates are per hour.
        cycles = int((1800 if quick else 3600) / INTERVAL_S)
        figures.update(false_alarms(tmp, specs, cycles))
        # The same on series, noise and drifts drawn from a seed the settings were not
        # chosen on.
        unseen = false_alarms(tmp, make_specs(n_components, UNSEEN_SEED), cycles, seed=UNSEEN_SEED)
        figures.update({k.replace("detect.", "detect.unseen_seed."): v for k, v in unseen.items()})
        if HOST_RECORDING.exists():
            figures.update(real_false_alarms(tmp))
        if not quick and LATER_HOST_RECORDING.exists():
            figures.update(real_false_alarms(tmp, LATER_HOST_RECORDING, "detect.real_later_"))
    return figures


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    if "--sweep" in argv:
        # ``--variants '{"name": {"margin": 1.0}}'`` replaces the built-in list.
        at = argv.index("--variants") + 1 if "--variants" in argv else 0
        variants = json.loads(argv[at]) if at else SWEEP_VARIANTS
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        for row in sweep(2 if quick else 10, variants, seed=seed):
            print(json.dumps(row))
        return
    print(json.dumps(run(quick=quick), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
