"""The dashboard's only reads: frames from ``storage``, bounded by window and caps.

Everything the page shows is computed from one ``Snapshot``, so a page is consistent with
itself and the views stay pure functions of frames. The caps (components, charts, label
sets) bound the number of queries and rows, whatever the size of the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import Engine

from flows.dashboard.live import ChartPlan, plan_charts
from storage.approvals import approvals_frame
from storage.issues import ACTIVE as ACTIVE_ISSUES
from storage.issues import anomalies_frame, issues_frame
from storage.metrics import component_names, read_samples, series_frame
from storage.recoveries import recoveries_frame

KEY_METRICS = ("*request*:rate", "*latency*:mean", "*error*:rate", "*queue*", "*memory*")
SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}


@dataclass(frozen=True)
class ViewOptions:
    """What a page asks for; the server fills it from the query string (clamped)."""

    minutes: int = 60
    end: pd.Timestamp | None = None  # None: now
    components: tuple[str, ...] = ()  # empty: the most relevant ones, up to the cap
    key_metrics: tuple[str, ...] = KEY_METRICS
    max_components: int = 8
    max_charts: int = 6
    max_lines: int = 4
    refresh_s: int = 15  # 0 disables auto-refresh


@dataclass(frozen=True)
class Records:
    """The operational tables (small), plus the anomalies of the window."""

    now: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp
    issues: pd.DataFrame
    recoveries: pd.DataFrame
    approvals: pd.DataFrame
    anomalies: pd.DataFrame


@dataclass(frozen=True)
class Snapshot:
    records: Records
    components: list[str]  # every known component
    shown: list[str]  # the ones charted, in display order
    plans: dict[str, list[ChartPlan]] = field(default_factory=dict)
    series: pd.DataFrame = field(default_factory=pd.DataFrame)  # planned series only
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)


def window(options: ViewOptions, now: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    end = options.end if options.end is not None else now
    return end - pd.Timedelta(minutes=options.minutes), end


def load_records(engine: Engine, options: ViewOptions, now: pd.Timestamp) -> Records:
    """Issues, recoveries and approvals (all of them: the history charts need them) and the
    window's anomalies. Four queries; the summary endpoint needs nothing else."""
    start, end = window(options, now)
    return Records(
        now=now,
        start=start,
        end=end,
        issues=issues_frame(engine),
        recoveries=recoveries_frame(engine),
        approvals=approvals_frame(engine),
        anomalies=anomalies_frame(engine, start=start, end=end + pd.Timedelta(milliseconds=1)),
    )


def choose_components(
    names: Sequence[str], records: Records, wanted: Sequence[str], cap: int
) -> list[str]:
    """Asked-for components, else those with active issues (worst first), then those with
    anomalies in the window, then the rest by name; at most ``cap``."""
    if wanted:
        known = set(names)
        return [c for c in wanted if c in known][:cap]
    issues = records.issues
    active = issues[issues["status"].isin(ACTIVE_ISSUES)]
    worst: dict[str, int] = {}
    for comp, sev in zip(active["component"], active["severity"], strict=True):
        worst[comp] = min(worst.get(comp, 9), SEVERITY_RANK.get(sev, 5))
    noisy = set(records.anomalies["component"])
    ranked = sorted(names, key=lambda c: (worst.get(c, 9), c not in noisy, c))
    return ranked[:cap]


def load_snapshot(engine: Engine, options: ViewOptions, now: pd.Timestamp) -> Snapshot:
    """Records, then per shown component its series list, then one bounded sample read."""
    records = load_records(engine, options, now)
    names = component_names(engine)
    shown = choose_components(names, records, options.components, options.max_components)
    plans: dict[str, list[ChartPlan]] = {}
    frames = []
    for comp in shown:
        series = series_frame(engine, component=comp)
        plans[comp] = plan_charts(
            series, options.key_metrics, options.max_charts, options.max_lines
        )
        wanted = {sid for plan in plans[comp] for sid in plan.series_ids}
        frames.append(series[series["series_id"].isin(wanted)])
    series = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    ids = [int(s) for s in series.get("series_id", [])]
    samples = (
        read_samples(
            engine, records.start, records.end + pd.Timedelta(milliseconds=1), series_ids=ids
        )
        if ids
        else pd.DataFrame({"series_id": [], "ts": [], "value": []})
    )
    return Snapshot(records, names, shown, plans, series, samples)
