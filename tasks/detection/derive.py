"""From stored samples to the series detectors look at.

Counters become per-second rates (a drop is a reset, as in Prometheus' ``rate``);
histograms and summaries become their mean (Δsum / Δcount); buckets are skipped (the mean
and the quantiles carry the signal); gauges stay as they are. The synthetic ``up`` series
is left to the down detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SKIP_SUFFIXES = ("_bucket",)
UP = "up"


@dataclass(frozen=True)
class DerivedSeries:
    name: str  # metric name as detectors see it, e.g. "requests_total:rate"
    labels: str  # canonical JSON of the source series' labels (without "le")
    series_id: int  # the stored series it comes from (the _sum series for means)
    values: pd.Series  # float values indexed by UTC timestamps


def counter_rate(values: pd.Series) -> pd.Series:
    """Per-second increase; after a reset (a drop) the increase is the new value."""
    v = values.to_numpy(dtype=float)
    # as_unit: pandas picks the index resolution (ms, us or ns) from how it was built.
    t = values.index.as_unit("ns").asi8 / 1e9 if len(values) else np.array([])
    if len(v) < 2:
        return pd.Series(dtype=float, index=values.index[:0])
    dv = np.diff(v)
    dv = np.where(dv < 0, v[1:], dv)
    dt = np.diff(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(dt > 0, dv / dt, np.nan)
    out = pd.Series(rate, index=values.index[1:])
    return out.dropna()


def ratio_of_increases(sums: pd.Series, counts: pd.Series) -> pd.Series:
    """Mean of the observations made between scrapes (Δsum / Δcount), NaN-free."""
    joined = pd.concat({"s": sums, "c": counts}, axis=1, join="inner")
    if len(joined) < 2:
        return pd.Series(dtype=float)
    ds = joined["s"].diff()
    dc = joined["c"].diff()
    reset = (ds < 0) | (dc < 0)
    ds = ds.where(~reset, joined["s"])
    dc = dc.where(~reset, joined["c"])
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = ds / dc
    return mean[(dc > 0)].dropna()


def derive(samples: pd.DataFrame, series: pd.DataFrame) -> list[DerivedSeries]:
    """``samples``: series_id, ts, value; ``series``: series_id, metric, labels (str), kind."""
    if samples.empty:
        return []
    meta = series.set_index("series_id")
    out: list[DerivedSeries] = []
    sums: dict[tuple[str, str], tuple[int, pd.Series]] = {}
    counts: dict[tuple[str, str], pd.Series] = {}
    for sid, grp in samples.groupby("series_id", sort=True):
        if sid not in meta.index:
            continue
        row = meta.loc[sid]
        metric, kind, labels = row["metric"], row["kind"], row["labels"]
        if metric == UP or metric.endswith(SKIP_SUFFIXES):
            continue
        values = pd.Series(grp["value"].to_numpy(dtype=float), index=pd.DatetimeIndex(grp["ts"]))
        values = values[~values.index.duplicated(keep="last")]
        if kind in ("histogram", "summary") and metric.endswith("_sum"):
            sums[(metric[:-4], labels)] = (int(sid), values)
            continue
        if kind in ("histogram", "summary") and metric.endswith("_count"):
            counts[(metric[:-6], labels)] = values
            continue
        if kind == "counter":
            out.append(DerivedSeries(f"{metric}:rate", labels, int(sid), counter_rate(values)))
        else:
            out.append(DerivedSeries(metric, labels, int(sid), values))
    for key, (sid, s) in sums.items():
        if key in counts:
            mean = ratio_of_increases(s, counts[key])
            out.append(DerivedSeries(f"{key[0]}:mean", key[1], sid, mean))
    return [d for d in out if len(d.values)]
