"""From stored samples to the series detectors look at.

Counters become per-second rates (a drop is a reset, as in Prometheus' ``rate``);
an untyped ``*_total`` is a counter too (the naming convention), and so is an untyped
series whose name ``untyped_counters`` lists (the node exporter's netstat and vmstat
families are kernel counters it exports untyped: read as gauges, each one is a new
maximum at every scrape); histograms and
summaries become their mean (Δsum / Δcount); buckets are skipped (the mean
and the quantiles carry the signal); gauges stay as they are. The synthetic ``up`` series
is left to the down detector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.detection.candidates import listed

SKIP_SUFFIXES = ("_bucket",)
UP = "up"
# Untyped series that are counters: globs, and ``!glob`` for exceptions (the last matching
# entry decides). The node exporter's /proc/net/{snmp,netstat} and /proc/vmstat fields are
# kernel counters, except the current TCP connections and the IP forwarding setting.
UNTYPED_COUNTERS = (
    "node_netstat_*",
    "node_vmstat_*",
    "!node_netstat_Tcp_CurrEstab",
    "!node_netstat_Ip_Forwarding",
)


def is_untyped_counter(metric: str, patterns: Sequence[str]) -> bool:
    """Whether ``patterns`` (globs, ``!glob`` exceptions, last match wins) list ``metric``."""
    return listed(metric, patterns)


@dataclass(frozen=True)
class DerivedSeries:
    name: str  # metric name as detectors see it, e.g. "requests_total:rate"
    labels: str  # canonical JSON of the source series' labels (without "le")
    series_id: int  # the stored series it comes from (the _sum series for means)
    values: pd.Series  # float values indexed by UTC timestamps


def _rates(v: np.ndarray, t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counter rates of ``v`` sampled at ``t_ns``: the rates and which of ``t[1:]`` keep one."""
    t = t_ns / 1e9
    dv = np.diff(v)
    dv = np.where(dv < 0, v[1:], dv)
    dt = np.diff(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(dt > 0, dv / dt, np.nan)
    return rate, ~np.isnan(rate)


def counter_rate(values: pd.Series) -> pd.Series:
    """Per-second increase; after a reset (a drop) the increase is the new value."""
    if len(values) < 2:
        return pd.Series(dtype=float, index=values.index[:0])
    # as_unit: pandas picks the index resolution (ms, us or ns) from how it was built.
    rate, keep = _rates(values.to_numpy(dtype=float), values.index.as_unit("ns").asi8)
    return pd.Series(rate[keep], index=values.index[1:][keep])


def ratio_of_increases(sums: pd.Series, counts: pd.Series) -> pd.Series:
    """Mean of the observations made between scrapes (Δsum / Δcount), NaN-free."""
    joined = pd.concat({"s": sums, "c": counts}, axis=1, join="inner")
    if len(joined) < 2:
        return pd.Series(dtype=float)
    mean, keep = _mean_of_increases(joined["s"].to_numpy(float), joined["c"].to_numpy(float))
    return pd.Series(mean[keep], index=joined.index[keep])


def _mean_of_increases(s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Δs / Δc on aligned arrays (a drop in either is a reset); the means and which to keep."""
    ds = np.concatenate([[np.nan], np.diff(s)])
    dc = np.concatenate([[np.nan], np.diff(c)])
    reset = (ds < 0) | (dc < 0)
    ds = np.where(reset, s, ds)
    dc = np.where(reset, c, dc)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = ds / dc
    return mean, (dc > 0) & ~np.isnan(mean)


@dataclass
class _Raw:
    """One stored series' samples, deduplicated, as arrays over a slice of the shared index."""

    index: pd.DatetimeIndex
    values: np.ndarray
    ns: np.ndarray  # the index as epoch nanoseconds
    monotonic: bool  # strictly increasing timestamps

    def series(self) -> pd.Series:
        return pd.Series(self.values, index=self.index)


def derive(
    samples: pd.DataFrame,
    series: pd.DataFrame,
    untyped_counters: Sequence[str] = UNTYPED_COUNTERS,
) -> list[DerivedSeries]:
    """``samples``: series_id, ts, value; ``series``: series_id, metric, labels (str), kind."""
    if samples.empty:
        return []
    meta = {
        int(sid): (metric, kind, labels)
        for sid, metric, kind, labels in zip(
            series["series_id"], series["metric"], series["kind"], series["labels"], strict=True
        )
    }
    return derive_arrays(
        samples["series_id"].to_numpy(dtype=np.int64),
        pd.DatetimeIndex(samples["ts"]),
        samples["value"].to_numpy(dtype=float),
        meta,
        untyped_counters,
    )


def derive_arrays(
    series_ids: np.ndarray,
    index: pd.DatetimeIndex,
    values: np.ndarray,
    meta: Mapping[int, tuple[str, str, str]],
    untyped_counters: Sequence[str] = UNTYPED_COUNTERS,
) -> list[DerivedSeries]:
    """``derive`` on columns: one sample per position; ``meta``: id → (metric, kind, labels).

    Works on numpy slices of the columns and builds one pandas Series per derived series, so
    a component's window costs a few array operations per series instead of a group-by.
    """
    if not len(series_ids):
        return []
    order = np.argsort(series_ids, kind="stable")  # keeps each series' rows in their order
    sid, vals, idx = series_ids[order], values[order], index[order]
    ns = idx.as_unit("ns").asi8
    bounds = np.flatnonzero(np.diff(sid)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(sid)]])
    out: list[DerivedSeries] = []
    sums: dict[tuple[str, str], tuple[int, _Raw]] = {}
    counts: dict[tuple[str, str], _Raw] = {}
    for lo, hi in zip(starts.tolist(), stops.tolist(), strict=True):
        key = int(sid[lo])
        if key not in meta:
            continue
        metric, kind, labels = meta[key]
        if metric == UP or metric.endswith(SKIP_SUFFIXES):
            continue
        raw = _raw(idx[lo:hi], vals[lo:hi], ns[lo:hi])
        if kind in ("histogram", "summary") and metric.endswith("_sum"):
            sums[(metric[:-4], labels)] = (key, raw)
            continue
        if kind in ("histogram", "summary") and metric.endswith("_count"):
            counts[(metric[:-6], labels)] = raw
            continue
        if kind == "counter" or (
            kind == "untyped"
            and (metric.endswith("_total") or is_untyped_counter(metric, untyped_counters))
        ):
            out.append(DerivedSeries(f"{metric}:rate", labels, key, _counter_rate(raw)))
        else:
            out.append(DerivedSeries(metric, labels, key, raw.series()))
    for key2, (key, s) in sums.items():
        if key2 in counts:
            mean = _ratio(s, counts[key2])
            out.append(DerivedSeries(f"{key2[0]}:mean", key2[1], key, mean))
    return [d for d in out if len(d.values)]


def _raw(index: pd.DatetimeIndex, values: np.ndarray, ns: np.ndarray) -> _Raw:
    """Drop repeated timestamps (the last copy wins), as ``index.duplicated(keep="last")``."""
    steps = np.diff(ns)
    if (steps > 0).all():
        return _Raw(index, values, ns, True)
    if (steps >= 0).all():  # sorted with repeats: a repeat is followed by its equal
        keep = np.append(steps != 0, True)
        return _Raw(index[keep], values[keep], ns[keep], True)
    keep = ~index.duplicated(keep="last")
    return _Raw(index[keep], values[keep], ns[keep], False)


def _counter_rate(raw: _Raw) -> pd.Series:
    if len(raw.values) < 2:
        return pd.Series(dtype=float, index=raw.index[:0])
    rate, keep = _rates(raw.values, raw.ns)
    return pd.Series(rate[keep], index=raw.index[1:][keep])


def _ratio(sums: _Raw, counts: _Raw) -> pd.Series:
    if not (sums.monotonic and counts.monotonic):
        return ratio_of_increases(sums.series(), counts.series())
    if len(sums.ns) == len(counts.ns) and np.array_equal(sums.ns, counts.ns):
        s, c, index = sums.values, counts.values, sums.index
    else:
        _, i, j = np.intersect1d(sums.ns, counts.ns, assume_unique=True, return_indices=True)
        s, c, index = sums.values[i], counts.values[j], sums.index[i]
    if len(s) < 2:
        return pd.Series(dtype=float)
    mean, keep = _mean_of_increases(s, c)
    return pd.Series(mean[keep], index=index[keep])
