"""The detection cycle's fast paths give what the plain per-series paths give.

No timings here (``bench/detect.py`` measures them): the batch scoring of the default
detector (``score_many``), its rolling statistics, the array-based read and ``derive``, and
the ordering of anomalies in ``detect_metrics`` are checked against the straightforward
pandas versions they replace.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sqlalchemy import Engine

from storage.metrics import labels_key, read_samples, series_frame
from tasks.detection.base import Anomaly, BaseDetector, DetectionResult
from tasks.detection.derive import DerivedSeries, derive
from tasks.detection.metrics_step import (
    MetricDetectionSettings,
    detect_metrics,
    read_component,
)
from tasks.detection.timeseries import _batch
from tasks.detection.timeseries._batch import (
    lagged_counts,
    lagged_median_at,
    lagged_median_bounds,
    lagged_quantile,
)
from tasks.detection.timeseries._common import lagged
from tasks.detection.timeseries.default import DefaultDetector
from tasks.detection.timeseries.zscore import RobustZScoreDetector
from tasks.ingest.records import IngestReport
from tasks.ingest.store import store_samples
from tasks.severity import Severity

CYCLE = {
    "history": "1h",
    "smoothing": ("1min", "5min"),
    "season": None,
    "refractory": "10min",
    "min_points": 60,
    "severity_window": "1h",
}
T0 = pd.Timestamp("2026-03-01 11:00", tz="UTC")


def _grid(n: int, step: str = "10s") -> pd.DatetimeIndex:
    return pd.date_range(T0, periods=n, freq=step).as_unit("us")


def _noisy_pairs(seed: int, n_series: int = 24, n: int = 361) -> list[tuple[pd.Series, pd.Series]]:
    """History/window pairs as the cycle makes them, with the awkward cases mixed in."""
    rng = np.random.default_rng(seed)
    idx = _grid(n)
    pairs = []
    for j in range(n_series):
        v = rng.normal(10 + j, 1 + j % 3, n)
        if j % 6 == 1:
            v = np.round(v)  # quantised: ties in every window
        if j % 6 == 2:
            v[rng.random(n) < 0.05] = np.nan
        if j % 6 == 3:
            v[:] = 4.0  # constant
        if j % 4 == 0:
            v[int(rng.integers(100, n - 10))] += 15  # a spike in the history
        if j % 5 == 0:
            v[-2:] += 20  # a spike in the new points
        s = pd.Series(v, index=idx)
        if j % 7 == 6:
            s = s.drop(s.index[int(rng.integers(0, n - 5))])  # a missed scrape: own index
        cut = len(s) - (1 + j % 4)
        pairs.append((s.iloc[:cut], s.iloc[cut:]))
    return pairs


def _same(a: DetectionResult, b: DetectionResult) -> None:
    pd.testing.assert_series_equal(a.scores, b.scores, check_exact=True)
    key = [(x.ts, x.score, x.severity, x.value, x.details) for x in a.anomalies]
    assert key == [(x.ts, x.score, x.severity, x.value, x.details) for x in b.anomalies]


@pytest.mark.parametrize(
    "params",
    [
        CYCLE,
        {**CYCLE, "history": "20min", "min_points": 30},  # windows that slide
        {**CYCLE, "quantile": 0.99, "margin": 1.0},
        {**CYCLE, "quantile": 0.98, "margin": 1.5},
        {**CYCLE, "small_sample": 1.0, "history": "20min", "min_points": 30},  # margin per point
        {},  # the library defaults: a season, so the per-series arithmetic on a matrix
    ],
)
def test_score_many_equals_one_detector_per_series(params: dict) -> None:
    det = DefaultDetector(**params)
    pairs = _noisy_pairs(seed=3)
    one_by_one = [clone(det).fit(h).score(w) for h, w in pairs]
    together = det.score_many([h for h, _ in pairs], [w for _, w in pairs])
    assert len(together) == len(pairs)
    for a, b in zip(one_by_one, together, strict=True):
        _same(a, b)
    if params is CYCLE:
        assert sum(len(r.anomalies) for r in together) >= 2  # spikes (others are damped)
    assert det.get_params() == DefaultDetector(**params).get_params()  # left unfitted
    assert not hasattr(det, "history_")


def test_score_many_takes_odd_inputs_the_per_series_way() -> None:
    det = DefaultDetector(**CYCLE)
    idx = _grid(200)
    values = np.random.default_rng(0).normal(0, 1, 200)
    values[-1] = 30
    ints = pd.Series(np.round(values * 10).astype(int), index=idx)
    plain = pd.Series(values)  # a RangeIndex
    overlapping = pd.Series(values, index=idx)
    cases = [
        (ints.iloc[:190], ints.iloc[190:]),
        (plain.iloc[:190], plain.iloc[190:]),
        (overlapping, overlapping.iloc[190:]),  # history overlaps the window
        (overlapping.iloc[:0], overlapping.iloc[190:]),  # no history
        (overlapping, overlapping.iloc[:0]),  # nothing new
    ]
    together = det.score_many([h for h, _ in cases], [w for _, w in cases])
    for (h, w), b in zip(cases, together, strict=True):
        _same(clone(det).fit(h).score(w), b)


def test_other_detectors_keep_the_per_series_result() -> None:
    det = RobustZScoreDetector()
    pairs = _noisy_pairs(seed=4, n_series=6)
    together = det.score_many([h for h, _ in pairs], [w for _, w in pairs])
    for (h, w), b in zip(pairs, together, strict=True):
        _same(clone(det).fit(h).score(w), b)


@pytest.mark.parametrize("q", [0.999, 1.0 - 0.999, 0.99, 0.9, 0.5])
@pytest.mark.parametrize(("n", "window"), [(361, 360), (200, 360), (361, 120), (50, 49)])
def test_batch_rolling_statistics_match_pandas(
    q: float, n: int, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_batch, "BLOCK_CELLS", 5000)  # several blocks of windows
    rng = np.random.default_rng(n + window)
    x = rng.normal(size=(n, 7))
    x[:, 1] = np.round(x[:, 1])
    x[rng.random(n) < 0.1, 2] = np.nan
    x[:, 3] = 1.0
    minp = 30
    got = lagged_quantile(x, window, minp, q)
    want = np.column_stack([lagged(x[:, j], window, minp, "quantile", q) for j in range(7)])
    np.testing.assert_array_equal(got, want)
    median = np.column_stack([lagged(x[:, j], window, minp, "median") for j in range(7)])
    rows, cols = np.nonzero(~np.isnan(median))
    at = lagged_median_at(x, window, lagged_counts(x, window), rows, cols)
    np.testing.assert_array_equal(at, median[rows, cols])


def test_median_bounds_hold_where_rounding_is_hardest() -> None:
    rng = np.random.default_rng(8)
    n = 400
    x = np.column_stack(
        [
            rng.normal(size=n),
            1e12 + rng.normal(0, 1e-3, n),  # a large level with tiny noise
            rng.standard_cauchy(n),  # heavy tails
            np.r_[np.full(n // 2, 1e9), rng.normal(size=n - n // 2)],  # a level change
            np.round(rng.normal(size=n)),
            np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
        ]
    )
    for window in (360, 50):
        low, high = lagged_median_bounds(x, window, lagged_counts(x, window))
        median = np.column_stack([lagged(x[:, j], window, 1, "median") for j in range(6)])
        known = ~np.isnan(median)
        assert (low[known] <= median[known]).all()
        assert (median[known] <= high[known]).all()


# --- derive and the read ----------------------------------------------------------------


def _reference_derive(samples: pd.DataFrame, series: pd.DataFrame) -> list[DerivedSeries]:
    """``derive`` as it was written before the array version: a group-by in pandas."""
    meta = series.set_index("series_id")
    out, sums, counts = [], {}, {}
    for sid, grp in samples.groupby("series_id", sort=True):
        if sid not in meta.index:
            continue
        row = meta.loc[sid]
        metric, kind, labels = row["metric"], row["kind"], row["labels"]
        if metric == "up" or metric.endswith("_bucket"):
            continue
        values = pd.Series(grp["value"].to_numpy(dtype=float), index=pd.DatetimeIndex(grp["ts"]))
        values = values[~values.index.duplicated(keep="last")]
        if kind in ("histogram", "summary") and metric.endswith("_sum"):
            sums[(metric[:-4], labels)] = (int(sid), values)
        elif kind in ("histogram", "summary") and metric.endswith("_count"):
            counts[(metric[:-6], labels)] = values
        elif kind == "counter":
            v = values.to_numpy(float)
            t = values.index.as_unit("ns").asi8 / 1e9
            if len(v) < 2:
                rate = pd.Series(dtype=float, index=values.index[:0])
            else:
                dv = np.diff(v)
                dv = np.where(dv < 0, v[1:], dv)
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = np.where(np.diff(t) > 0, dv / np.diff(t), np.nan)
                rate = pd.Series(r, index=values.index[1:]).dropna()
            out.append(DerivedSeries(f"{metric}:rate", labels, int(sid), rate))
        else:
            out.append(DerivedSeries(metric, labels, int(sid), values))
    for key, (sid, s) in sums.items():
        if key in counts:
            j = pd.concat({"s": s, "c": counts[key]}, axis=1, join="inner")
            if len(j) < 2:
                continue
            ds, dc = j["s"].diff(), j["c"].diff()
            reset = (ds < 0) | (dc < 0)
            ds, dc = ds.where(~reset, j["s"]), dc.where(~reset, j["c"])
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = ds / dc
            out.append(DerivedSeries(f"{key[0]}:mean", key[1], sid, mean[dc > 0].dropna()))
    return [d for d in out if len(d.values)]


def _assert_same_derived(a: list[DerivedSeries], b: list[DerivedSeries]) -> None:
    assert [(d.name, d.labels, d.series_id) for d in a] == [
        (d.name, d.labels, d.series_id) for d in b
    ]
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_series_equal(x.values, y.values, check_exact=True, check_freq=False)


def _messy_samples() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(2)
    ts = T0.value // 10**6 + np.arange(60) * 10_000
    rows = []

    def add(sid: int, stamps: np.ndarray, values: np.ndarray) -> None:
        rows.extend(zip([sid] * len(stamps), stamps, values, strict=True))

    counter = np.cumsum(rng.integers(0, 50, 60)).astype(float)
    counter[40:] -= counter[39]  # a reset
    add(1, ts, counter)
    add(2, ts, rng.normal(5, 1, 60))  # gauge
    add(2, ts[10:12], [7.0, 8.0])  # repeated timestamps: the last copy wins
    add(3, ts[::2], np.cumsum(rng.random(30)))  # histogram _sum, every other scrape
    add(4, ts, np.cumsum(rng.integers(0, 3, 60)).astype(float))  # its _count (some Δ = 0)
    add(5, ts, np.ones(60))  # up
    add(6, ts, rng.random(60))  # a bucket
    add(7, ts[:1], [3.0])  # a counter with one point
    add(99, ts, np.zeros(60))  # a series without metadata
    samples = pd.DataFrame(rows, columns=["series_id", "ts", "value"]).sample(
        frac=1, random_state=1
    )
    samples = samples.sort_values(["series_id", "ts"], kind="stable").reset_index(drop=True)
    samples["ts"] = pd.to_datetime(samples["ts"], unit="ms", utc=True)
    series = pd.DataFrame(
        [
            (1, "requests_total", "counter", '{"a":"1"}'),
            (2, "temperature", "gauge", "{}"),
            (3, "latency_seconds_sum", "histogram", "{}"),
            (4, "latency_seconds_count", "histogram", "{}"),
            (5, "up", "gauge", "{}"),
            (6, "latency_seconds_bucket", "histogram", '{"le":"1"}'),
            (7, "errors_total", "counter", "{}"),
        ],
        columns=["series_id", "metric", "kind", "labels"],
    )
    return samples, series


def test_derive_matches_the_group_by_version() -> None:
    samples, series = _messy_samples()
    got = derive(samples, series)
    _assert_same_derived(_reference_derive(samples, series), got)
    assert [d.name for d in got] == ["requests_total:rate", "temperature", "latency_seconds:mean"]
    # Unsorted rows (as a caller might pass them) give the same as the reference too.
    shuffled = samples.sample(frac=1, random_state=3)
    _assert_same_derived(_reference_derive(shuffled, series), derive(shuffled, series))


def _store(engine: Engine, now_ms: int) -> None:
    rng = np.random.default_rng(9)
    n = 400
    ts = now_ms - (n - 1 - np.arange(n)) * 10_000

    def frame(
        metric: str, values: np.ndarray, kind: str, labels: dict | None = None
    ) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "component": "api",
                "metric": metric,
                "labels": labels_key(labels),
                "ts": ts.astype("int64"),
                "value": values.astype(float),
                "kind": kind,
            }
        )

    latency = 0.05 + rng.normal(0, 0.002, n)
    latency[-2:] = 0.5
    frames = [
        frame("latency_seconds", latency, "gauge"),
        frame("up", np.ones(n), "gauge"),
        frame("memory_bytes", 4e7 + rng.normal(0, 1e5, n), "gauge", {"pool": "a"}),
        frame("memory_bytes", 3e7 + rng.normal(0, 1e5, n), "gauge", {"pool": "b"}),
        frame("queue_depth", rng.poisson(5, n).astype(float), "gauge"),
    ]
    for route in ("a", "b", "c"):
        counts = np.cumsum(rng.poisson(200, n)).astype(float)
        frames.append(frame("requests_total", counts, "counter", {"route": route}))
        frames.append(frame("rq_latency_sum", np.cumsum(rng.random(n) * 10), "histogram"))
        frames.append(frame("rq_latency_count", counts, "histogram"))
    report = IngestReport("t")
    store_samples(engine, pd.concat(frames, ignore_index=True), report, clock_ms=now_ms + 1000)
    assert report.rejected_total == 0, report.summary()


def test_read_component_reads_what_read_samples_and_series_frame_read(engine: Engine) -> None:
    now_ms = int(pd.Timestamp("2026-03-01 12:00", tz="UTC").value // 10**6)
    _store(engine, now_ms)
    window = read_component(engine, "api", now_ms, 3600)
    samples = read_samples(engine, now_ms - 3_600_000, now_ms + 1, component="api")
    series = series_frame(engine, "api")
    series["labels"] = series["labels"].map(labels_key)
    _assert_same_derived(_reference_derive(samples, series), window.derived)
    assert window.newest_ms == now_ms
    assert len(window.up) == 361 and (window.up == 1).all()
    labels = {d.labels for d in window.derived if d.name == "memory_bytes"}
    assert labels == {json.dumps({"pool": p}, separators=(",", ":")) for p in "ab"}
    assert read_component(engine, "nobody", now_ms, 3600).derived == []


class _Above(BaseDetector):
    """A detector without ``score_many``: the cycle clones and fits it per series."""

    name = "above"

    def __init__(self, limit: float = 0.2) -> None:
        self.limit = limit

    def fit(self, history: pd.Series) -> _Above:
        self.seen_ = len(history)
        return self

    def score(self, window: pd.Series) -> DetectionResult:
        hits = window[window > self.limit]
        anomalies = [
            Anomaly(self.name, ts, 1.0, Severity.HIGH, float(v), details={"seen": self.seen_})
            for ts, v in hits.items()
        ]
        return DetectionResult((window > self.limit).astype(float), anomalies)


def test_detect_metrics_lists_anomalies_as_the_per_series_loop(engine: Engine) -> None:
    now_ms = int(pd.Timestamp("2026-03-01 12:00", tz="UTC").value // 10**6)
    _store(engine, now_ms)
    window = read_component(engine, "api", now_ms, 3600)
    detectors = [DefaultDetector(**CYCLE), _Above(limit=0.3)]
    watermark = now_ms - 30_000
    got = detect_metrics(window, detectors, watermark, MetricDetectionSettings(behaviour=False))
    cut = pd.Timestamp(watermark, unit="ms", tz="UTC")
    expected = []
    for d in window.derived:
        history, new = d.values[d.values.index <= cut], d.values[d.values.index > cut]
        for proto in detectors:
            if new.empty or not proto.applies_to(d.name):
                continue
            for a in clone(proto).fit(history).score(new).anomalies:
                expected.append((a.detector, d.series_id, int(a.ts.value // 10**6), a.score))
    assert [(a.detector, a.series_id, a.ts_ms, a.score) for a in got] == expected
    assert {(a.detector, a.signature) for a in got} >= {
        ("default", "latency_seconds"),
        ("above", "latency_seconds"),
    }


def test_untyped_kernel_counters_become_rates_and_their_gauges_stay() -> None:
    """The node exporter sends /proc/net/snmp and /proc/vmstat fields untyped: the counters
    among them are read as rates, the current connections as the gauge it is."""
    from tasks.detection.derive import UNTYPED_COUNTERS, derive_arrays, is_untyped_counter

    assert is_untyped_counter("node_vmstat_pgfault", UNTYPED_COUNTERS)
    assert is_untyped_counter("node_netstat_Udp_InDatagrams", UNTYPED_COUNTERS)
    assert not is_untyped_counter("node_netstat_Tcp_CurrEstab", UNTYPED_COUNTERS)
    assert not is_untyped_counter("hms_queue_depth", UNTYPED_COUNTERS)
    index = pd.date_range("2026-01-01", periods=4, freq="10s", tz="UTC")
    meta = {
        1: ("node_vmstat_pgfault", "untyped", "{}"),
        2: ("node_netstat_Tcp_CurrEstab", "untyped", "{}"),
        3: ("node_vmstat_pgfault", "gauge", '{"x":"typed"}'),
    }
    ids = np.repeat([1, 2, 3], 4)
    values = np.r_[[100.0, 200, 300, 400], [5.0, 7, 6, 5], [100.0, 200, 300, 400]]
    got = {
        (d.name, d.labels): d.values.tolist()
        for d in derive_arrays(ids, index.append([index, index]), values, meta)
    }
    assert got[("node_vmstat_pgfault:rate", "{}")] == [10.0, 10.0, 10.0]
    assert got[("node_netstat_Tcp_CurrEstab", "{}")] == [5.0, 7.0, 6.0, 5.0]
    assert got[("node_vmstat_pgfault", '{"x":"typed"}')] == [100.0, 200.0, 300.0, 400.0]
    plain = derive_arrays(ids, index.append([index, index]), values, meta, untyped_counters=())
    assert "node_vmstat_pgfault" in {d.name for d in plain if d.labels == "{}"}
