"""Live metric charts: which stored series to read, and the charts they become.

The charts show series the way detectors see them (``tasks.detection.derive``: counters
as rates, histograms as means), so an anomaly marker sits on the curve that was scored.
Planning works on the series list alone, before any sample is read, which is what lets
the dashboard read only the few series it draws.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flows.dashboard.svg import Chart, Line, Marker
from storage.metrics import labels_text
from tasks.detection.derive import SKIP_SUFFIXES, UP, derive

MEAN_KINDS = ("histogram", "summary")
MAX_MARKERS = 100  # per chart; a flapping series can store thousands in a window


@dataclass(frozen=True)
class ChartPlan:
    """One chart of a component: a derived series over up to ``max_lines`` label sets."""

    name: str  # derived name, e.g. "hms_requests_total:rate", "up"
    series_ids: tuple[int, ...]  # stored series to read for it
    label_sets: tuple[str, ...]  # the drawn ones, canonical JSON
    total_label_sets: int


def derived_name(metric: str, kind: str) -> str | None:
    """The name ``derive`` gives a stored series (None: not drawn, e.g. histogram buckets)."""
    if metric == UP:
        return UP
    if metric.endswith(SKIP_SUFFIXES):
        return None
    if kind in MEAN_KINDS and metric.endswith("_sum"):
        return metric[:-4] + ":mean"
    if kind in MEAN_KINDS and metric.endswith("_count"):
        return metric[:-6] + ":mean"
    if kind == "counter":
        return metric + ":rate"
    return metric


def _rank(name: str, patterns: Sequence[str]) -> int | None:
    if name == UP:
        return len(patterns)  # always drawn, after the key metrics
    for i, pattern in enumerate(patterns):
        if fnmatch.fnmatchcase(name, pattern):
            return i
    return None


def plan_charts(
    series: pd.DataFrame, patterns: Sequence[str], max_charts: int = 6, max_lines: int = 4
) -> list[ChartPlan]:
    """Charts for the series matching ``patterns`` (plus ``up``), best-ranked first."""
    groups: dict[str, dict[str, list[int]]] = {}
    ranks: dict[str, int] = {}
    for sid, metric, labels, kind in zip(
        series.get("series_id", []),
        series.get("metric", []),
        series.get("labels", []),
        series.get("kind", []),
        strict=True,
    ):
        name = derived_name(str(metric), str(kind))
        if name is None:
            continue
        text = labels_text(labels)
        if name == UP and text != "{}":
            continue  # the synthetic scrape ``up`` only
        rank = _rank(name, patterns)
        if rank is None:
            continue
        ranks[name] = rank
        groups.setdefault(name, {}).setdefault(text, []).append(int(sid))
    plans = []
    for name in sorted(groups, key=lambda n: (ranks[n], n))[:max_charts]:
        label_sets = sorted(groups[name])
        drawn = tuple(label_sets[:max_lines])
        ids = tuple(sid for text in drawn for sid in groups[name][text])
        plans.append(ChartPlan(name, ids, drawn, len(label_sets)))
    return plans


def unit_for(name: str) -> str:
    """The unit a derived series is in, guessed from Prometheus naming conventions."""
    if name == UP:
        return ""
    if "bytes" in name:
        return "B"
    if "seconds" in name and not name.endswith(":rate"):
        return "s"
    if name.endswith(":rate"):
        return "/s"
    return ""


def _epoch_s(index: pd.Index) -> list[float]:
    return (pd.DatetimeIndex(index).as_unit("ns").asi8 / 1e9).tolist()


def _lines(
    component: str,
    plan: ChartPlan,
    samples: pd.DataFrame,
    series: pd.DataFrame,
) -> list[Line]:
    mine = series[series["series_id"].isin(plan.series_ids)].copy()
    mine["labels"] = mine["labels"].map(labels_text)
    rows = samples[samples["series_id"].isin(plan.series_ids)]
    if rows.empty or mine.empty:
        return []
    if plan.name == UP:  # raw 0/1 samples: ``derive`` leaves ``up`` to the down detector
        values = {
            "{}": pd.Series(rows["value"].to_numpy(float), index=pd.DatetimeIndex(rows["ts"]))
        }
    else:
        derived = derive(rows, mine)
        values = {d.labels: d.values for d in derived if d.name == plan.name}
    out = []
    for text in plan.label_sets:
        v = values.get(text)
        if v is None or v.empty:
            continue
        suffix = "" if text == "{}" else text
        out.append(
            Line(
                f"{component}/{plan.name}{suffix}",
                _epoch_s(v.index),
                v.to_numpy(dtype=float).tolist(),
                dots=len(v) < 3,
            )
        )
    return out


def _matches(plan: ChartPlan, signature: str, kind: str, series_id: Any) -> bool:
    if signature == plan.name or (plan.name == UP and kind == "down"):
        return True
    return series_id is not None and not pd.isna(series_id) and int(series_id) in plan.series_ids


def _marker_y(value: float | None, x: float, lines: list[Line]) -> float:
    """The stored value when there is one, else the first line's value at that time."""
    if value is not None and math.isfinite(value):
        return value
    for line in lines:
        xs = np.asarray(line.xs, dtype=float)
        ys = np.asarray(line.ys, dtype=float)
        ok = np.isfinite(ys)
        if ok.any():
            return float(np.interp(x, xs[ok], ys[ok]))
    return math.nan


def component_charts(
    component: str,
    plans: Sequence[ChartPlan],
    series: pd.DataFrame,
    samples: pd.DataFrame,
    anomalies: pd.DataFrame,
    x_range: tuple[float, float],
) -> tuple[list[Chart], int]:
    """The component's charts with anomaly markers, and how many of its anomalies in the
    window fit no chart (log and behaviour anomalies have no single series)."""
    mine = anomalies[anomalies["component"] == component]
    placed: set[int] = set()
    charts = []
    for plan in plans:
        lines = _lines(component, plan, samples, series)
        markers = []
        for aid, ts, sig, kind, sid, value, sev, det, score in zip(
            mine["id"],
            mine["ts"],
            mine["signature"],
            mine["kind"],
            mine["series_id"],
            mine["value"],
            mine["severity"],
            mine["detector"],
            mine["score"],
            strict=True,
        ):
            if not _matches(plan, str(sig), str(kind), sid):
                continue
            placed.add(int(aid))
            x = pd.Timestamp(ts).value / 1e9
            label = f"{det}: {sev}, score {float(score):.2f} at {pd.Timestamp(ts):%H:%M:%S}"
            y = _marker_y(None if pd.isna(value) else float(value), x, lines)
            markers.append(Marker(x, y, label, str(sev), plan.name))
        note = ""
        if len(markers) > MAX_MARKERS:
            note = f"latest {MAX_MARKERS} of {len(markers)} anomalies"
            markers = sorted(markers, key=lambda m: m.x)[-MAX_MARKERS:]
        elif plan.total_label_sets > len(plan.label_sets):
            note = f"{len(plan.label_sets)} of {plan.total_label_sets} label sets"
        elif not lines:
            note = "no samples in the window"
        charts.append(
            Chart(
                key=f"{component}/{plan.name}",
                title=plan.name,
                unit=unit_for(plan.name),
                lines=lines,
                markers=markers,
                x_range=x_range,
                y_floor=0.0 if plan.name == UP or unit_for(plan.name) else None,
                y_ceiling=1.0 if plan.name == UP else None,
                note=note,
            )
        )
    return charts, len(set(mine["id"].astype(int)) - placed)
