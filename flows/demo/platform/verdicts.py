"""Score a demo run against its ground truth (the ``fault_injections`` table).

A fault owns the time from its injection to the next one (faults run one after another)
and the components it affects. Within that window:

- **detected**: an anomaly on an affected component at or after the injection; the delay
  is from the injection to that anomaly's timestamp, the severity that of its issue;
- **recovered**: a successful recovery of an issue of an affected component, started
  (else created) in the window; the time to recover runs from the injection to the end
  of that recovery;
- **approval**: whether that recovery waited for a person and who answered.

A **false positive** is an issue (never silenced: silenced issues are the expected side
effects of a recovery's own actions) whose first anomaly lies outside every fault's window,
or in a window on a component the fault does not affect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from tasks.coordination.planner import confirmed


@dataclass
class FaultVerdict:
    fault: str
    component: str
    expected_strategy: str
    detected: bool = False
    detection_delay_s: float | None = None
    severity: str | None = None
    strategy: str | None = None
    approval: str = "-"
    recovered: bool = False
    time_to_recover_s: float | None = None
    issue_id: int | None = None
    trials: int | None = None  # configurations a search tried (the genetic rung)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def windows(faults: pd.DataFrame, end: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    starts = list(faults["injected_at"])
    return [(s, starts[i + 1] if i + 1 < len(starts) else end) for i, s in enumerate(starts)]


def affected(row: pd.Series) -> set[str]:
    detail = row["detail"] if isinstance(row["detail"], dict) else {}
    return {row["component"], *detail.get("affects", [])}


def evaluate(
    faults: pd.DataFrame,
    anomalies: pd.DataFrame,
    issues: pd.DataFrame,
    recoveries: pd.DataFrame,
    approvals: pd.DataFrame,
    end: pd.Timestamp,
    start: pd.Timestamp | None = None,
) -> tuple[list[FaultVerdict], list[dict[str, Any]]]:
    verdicts = []
    wins = windows(faults, end)
    issue_component = issues.set_index("id")["component"] if not issues.empty else pd.Series()
    for (_, row), (w0, w1) in zip(faults.iterrows(), wins, strict=True):
        comps = affected(row)
        v = FaultVerdict(row["fault"], row["component"], row["expected_strategy"] or "")
        mine = anomalies[
            (anomalies["ts"] >= w0) & (anomalies["ts"] < w1) & anomalies["component"].isin(comps)
        ]
        if not mine.empty:
            first = mine.sort_values("ts").iloc[0]
            v.detected = True
            v.detection_delay_s = round((first["ts"] - w0).total_seconds(), 1)
            if pd.notna(first["issue_id"]):
                v.issue_id = int(first["issue_id"])
                sev = issues.loc[issues["id"] == v.issue_id, "severity"]
                v.severity = str(sev.iloc[0]) if not sev.empty else first["severity"]
            else:
                v.severity = first["severity"]
        # A recovery counts in the window it acted in (planned just before the fault, on
        # an incident the fault's symptoms then joined, it acts on the fault).
        acted_at = recoveries["started_at"].fillna(recoveries["created_at"])
        recs = recoveries[(acted_at >= w0) & (acted_at < w1)]
        recs = recs[recs["issue_id"].map(issue_component).isin(comps)]
        ok = recs[recs["status"] == "succeeded"].sort_values("finished_at")
        if not ok.empty:
            fix = ok.iloc[0]
            v.recovered = True
            v.strategy = fix["strategy"]
            v.time_to_recover_s = round((fix["finished_at"] - w0).total_seconds(), 1)
            v.trials = search_trials(fix.get("validation"))
        elif not recs.empty:
            v.strategy = f"{recs.iloc[-1]['strategy']} ({recs.iloc[-1]['status']})"
        asked = (
            approvals[approvals["recovery_id"].isin(recs["id"])]
            if not recs.empty
            else approvals.iloc[0:0]
        )
        if not asked.empty:
            a = asked.iloc[0]
            v.approval = (
                f"{a['decision']} by {a['decided_by']}" if a["decision"] != "pending" else "pending"
            )
        verdicts.append(v)
    return verdicts, false_positives(faults, wins, anomalies, issues, start)


def search_trials(validation: object) -> int | None:
    """The number of trials a search recorded in its recovery's validation details."""
    details = validation.get("details") if isinstance(validation, dict) else None
    trials = details.get("trials") if isinstance(details, dict) else None
    return int(trials) if isinstance(trials, int | float) else None


def false_positives(
    faults: pd.DataFrame,
    wins: list[tuple[pd.Timestamp, pd.Timestamp]],
    anomalies: pd.DataFrame,
    issues: pd.DataFrame,
    start: pd.Timestamp | None,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if issues.empty:
        return out
    times_of = {
        int(k): list(v) for k, v in anomalies.dropna(subset=["issue_id"]).groupby("issue_id")["ts"]
    }
    for _, issue in issues.iterrows():
        details = issue["details"] if isinstance(issue["details"], dict) else {}
        if issue["status"] == "silenced" or "silenced_until" in details:
            continue
        times = times_of.get(int(issue["id"]), [issue["first_seen"]])
        if start is not None and max(times) < start:
            continue
        # Explained when any of its anomalies falls in the window of a fault that affects
        # its component (a noise blip that a real fault later joined is not a false alarm).
        explained = any(
            w0 <= t < w1 and issue["component"] in affected(row)
            for t in times
            for (_, row), (w0, w1) in zip(faults.iterrows(), wins, strict=True)
        )
        if not explained:
            out.append(
                {
                    "id": int(issue["id"]),
                    "component": issue["component"],
                    "title": issue["title"],
                    "severity": issue["severity"],
                    "first_seen": min(times),
                    "confirmed": confirmed(
                        issue["kind"],
                        issue["first_seen"],
                        issue["last_seen"],
                        int(issue["anomaly_count"]),
                    ),
                }
            )
    return out


def table(verdicts: list[FaultVerdict]) -> str:
    head = (
        "fault",
        "component",
        "detected",
        "delay s",
        "severity",
        "strategy",
        "expected",
        "approval",
        "recovered",
        "TTR s",
        "trials",
    )
    rows = [head]
    for v in verdicts:
        rows.append(
            (
                v.fault,
                v.component,
                "yes" if v.detected else "NO",
                "-" if v.detection_delay_s is None else f"{v.detection_delay_s:.1f}",
                v.severity or "-",
                v.strategy or "-",
                v.expected_strategy,
                v.approval,
                "yes" if v.recovered else "NO",
                "-" if v.time_to_recover_s is None else f"{v.time_to_recover_s:.1f}",
                "-" if v.trials is None else str(v.trials),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
