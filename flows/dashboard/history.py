"""Healing history: how the auto-healing rate and the time to recover evolved.

Both figures use the definitions of ``tasks.coordination.status.healing_stats`` (the
numbers ``selfheal status`` prints), evaluated as of each recovery's end, so the last point
of the rate chart is the status command's rate over finished recoveries.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flows.dashboard.svg import Bars, Chart, Line
from tasks.coordination.status import healing_stats

MAX_RATE_POINTS = 150  # each point is one healing_stats evaluation
MAX_TTR_POINTS = 500
MAX_BUCKETS = 24
OUTCOME_COLOURS = {"succeeded": "#059669", "failed": "#dc2626", "other": "#9ca3af"}


def _finished(recoveries: pd.DataFrame) -> pd.DataFrame:
    done = recoveries[recoveries["finished_at"].notna() & (recoveries["status"] != "recorded_only")]
    return done.sort_values("finished_at", kind="stable")


def _epoch_s(values: pd.Series) -> list[float]:
    return (pd.DatetimeIndex(values).as_unit("ns").asi8 / 1e9).tolist()


def rate_chart(issues: pd.DataFrame, recoveries: pd.DataFrame, approvals: pd.DataFrame) -> Chart:
    """Cumulative auto-healing rate (%) as of each finished recovery (sampled when many)."""
    done = _finished(recoveries)
    title = "auto-healing rate, cumulative (%)"
    if done.empty:
        return Chart("history/auto-healing-rate", title, "%", note="no finished recoveries yet")
    times = pd.DatetimeIndex(done["finished_at"].drop_duplicates())
    if len(times) > MAX_RATE_POINTS:
        pick = np.unique(np.linspace(0, len(times) - 1, MAX_RATE_POINTS).round().astype(int))
        times = times[pick]
    decided = approvals["decided_at"]
    xs, ys = [], []
    for t in times:
        stats = healing_stats(
            issues,
            done[done["finished_at"] <= t],
            approvals[decided.isna() | (decided <= t)],
        )
        xs.append(t.value / 1e9)
        ys.append(np.nan if stats.auto_healing_rate is None else stats.auto_healing_rate)
    line = Line("auto-healing rate", xs, ys, dots=len(xs) <= 40)
    return Chart("history/auto-healing-rate", title, "%", [line], y_floor=0.0, y_ceiling=100.0)


def time_to_recover(issues: pd.DataFrame, recoveries: pd.DataFrame) -> pd.DataFrame:
    """Per healed issue: when its first successful recovery ended and how long after the
    issue's first anomaly (``fixed_at``, ``seconds``), in fix order."""
    ok = recoveries[(recoveries["status"] == "succeeded") & recoveries["finished_at"].notna()]
    if ok.empty or issues.empty:
        return pd.DataFrame({"issue_id": [], "fixed_at": [], "seconds": []})
    first_fix = ok.groupby("issue_id")["finished_at"].min().rename("fixed_at")
    seen = issues.set_index("id")["first_seen"]
    joined = pd.concat({"fixed_at": first_fix, "seen": seen}, axis=1, join="inner").dropna()
    joined["seconds"] = (joined["fixed_at"] - joined["seen"]).dt.total_seconds()
    out = joined.rename_axis("issue_id").reset_index()[["issue_id", "fixed_at", "seconds"]]
    return out.sort_values("fixed_at", kind="stable").reset_index(drop=True)


def ttr_chart(issues: pd.DataFrame, recoveries: pd.DataFrame) -> Chart:
    """One point per healed issue, at the time it was healed (the latest 500)."""
    ttr = time_to_recover(issues, recoveries).tail(MAX_TTR_POINTS)
    title = "time to recover per healed issue"
    if ttr.empty:
        return Chart("history/time-to-recover", title, "s", note="no healed issues yet")
    line = Line("time to recover", _epoch_s(ttr["fixed_at"]), ttr["seconds"].tolist(), dots=True)
    return Chart("history/time-to-recover", title, "s", [line], y_floor=0.0)


def outcome_bars(recoveries: pd.DataFrame) -> Bars:
    """Finished recoveries per hour by outcome, over the last ``MAX_BUCKETS`` hours of
    activity (empty hours included, so gaps read as gaps)."""
    done = _finished(recoveries)
    title = "recoveries per hour"
    if done.empty:
        return Bars("history/outcomes", title, [], {}, OUTCOME_COLOURS)
    hours = pd.DatetimeIndex(done["finished_at"]).floor("h")
    last = hours.max()
    buckets = pd.date_range(end=last, periods=MAX_BUCKETS, freq="h")
    buckets = buckets[buckets >= hours.min()]
    outcome = done["status"].where(done["status"].isin(["succeeded", "failed"]), "other")
    counts = pd.crosstab(hours, outcome.to_numpy()).reindex(buckets, fill_value=0)
    stacks = {
        name: counts[name].astype(float).tolist() if name in counts else [0.0] * len(buckets)
        for name in OUTCOME_COLOURS
    }
    labels = [f"{b:%H}h" for b in buckets]
    return Bars("history/outcomes", title, labels, stacks, OUTCOME_COLOURS)
