"""From frames to what the page shows: pure functions, no I/O, testable on plain frames.

Each view model holds display-ready values (texts already formatted) so the HTML layer
only lays them out, and a test can check a number without rendering a page.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from flows.dashboard.data import SEVERITY_RANK, Records, Snapshot
from flows.dashboard.history import outcome_bars, rate_chart, ttr_chart
from flows.dashboard.live import component_charts
from flows.dashboard.svg import Bars, Chart
from storage.issues import ACTIVE as ACTIVE_ISSUES
from storage.recoveries import ACTIVE as ACTIVE_RECOVERIES
from tasks.coordination.status import healing_stats

MAX_ISSUE_ROWS = 50
MAX_RECENT_RECOVERIES = 20
MAX_ERROR_CHARS = 160


@dataclass(frozen=True)
class Summary:
    """The headline figures, as ``selfheal status`` defines them (see flows.api)."""

    generated_at: str
    open_issues: int
    open_issues_by_severity: dict[str, int]
    active_recoveries: int
    pending_approvals: int
    auto_healing_rate: float | None
    mean_time_to_recover_s: float | None
    issues_acted_on: int
    healed_automatically: int
    issues_total: int
    fingerprint: str  # changes when issues, recoveries, approvals or anomalies change

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IssueRow:
    id: int
    severity: str
    title: str
    component: str
    since: str  # "12 min ago"
    since_iso: str
    anomaly_count: int
    status: str
    inhibited_by: int | None


@dataclass(frozen=True)
class RecoveryRow:
    id: int
    issue_id: int | None
    component: str
    strategy: str
    mode: str
    status: str
    started: str
    duration: str
    error: str


@dataclass(frozen=True)
class ApprovalRow:
    id: str
    component: str
    severity: str
    proposed_action: str
    requested: str
    expires: str
    ui_url: str | None  # only http(s) links are kept
    approve_command: str
    reject_command: str


@dataclass(frozen=True)
class ComponentPanel:
    name: str
    charts: list[Chart]
    active_issues: int
    unplaced_anomalies: int  # log / behaviour anomalies: no single series to mark


@dataclass(frozen=True)
class Dashboard:
    summary: Summary
    window_minutes: int
    window_end: str
    panels: list[ComponentPanel]
    hidden_components: list[str]
    issues: list[IssueRow]
    issues_not_shown: int
    in_flight: list[RecoveryRow]
    recent: list[RecoveryRow]
    approvals: list[ApprovalRow]
    history: list[Chart] = field(default_factory=list)
    outcomes: Bars | None = None


def ago(ts: Any, now: pd.Timestamp) -> str:
    """A short relative time ("45 s ago", "3.2 h ago"); "–" for a missing time."""
    if ts is None or pd.isna(ts):
        return "–"
    seconds = (now - pd.Timestamp(ts)).total_seconds()
    word = "ago" if seconds >= 0 else "from now"
    return f"{duration_text(abs(seconds))} {word}"


def duration_text(seconds: float | None) -> str:
    """Seconds as the unit a person reads fastest ("45 s", "12 min", "3.2 h", "2.0 d")."""
    if seconds is None or pd.isna(seconds):
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _opt_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def expires_text(ts: Any, now: pd.Timestamp) -> str:
    """ "in 56 min" or "expired": what an operator needs to know about an approval."""
    if ts is None or pd.isna(ts):
        return "–"
    left = (pd.Timestamp(ts) - now).total_seconds()
    return f"in {duration_text(left)}" if left > 0 else "expired"


def fingerprint(records: Records) -> str:
    """A digest of what the tables hold now: the page reloads itself when it changes."""
    parts = [
        records.issues[["id", "status", "anomaly_count"]].to_numpy().tolist(),
        records.recoveries[["id", "status"]].to_numpy().tolist(),
        records.approvals[["id", "decision"]].to_numpy().tolist(),
        int(records.anomalies["id"].max()) if len(records.anomalies) else 0,
    ]
    return hashlib.sha1(repr(parts).encode(), usedforsecurity=False).hexdigest()[:16]


def summary(records: Records) -> Summary:
    """The headline figures with the same definitions as ``flows.api.get_status``."""
    issues, recoveries, approvals = records.issues, records.recoveries, records.approvals
    stats = healing_stats(issues, recoveries, approvals)
    open_issues = issues[issues["status"].isin(["open", "recovering"])]
    in_flight = [s for s in ACTIVE_RECOVERIES if s != "awaiting_approval"]
    return Summary(
        generated_at=records.now.isoformat(),
        open_issues=len(open_issues),
        open_issues_by_severity={
            str(k): int(v) for k, v in open_issues["severity"].value_counts().items()
        },
        active_recoveries=int(recoveries["status"].isin(in_flight).sum()),
        pending_approvals=int((approvals["decision"] == "pending").sum()),
        auto_healing_rate=None
        if stats.auto_healing_rate is None
        else round(stats.auto_healing_rate, 1),
        mean_time_to_recover_s=None
        if stats.mean_time_to_recover_s is None
        else round(stats.mean_time_to_recover_s, 1),
        issues_acted_on=stats.issues_acted_on,
        healed_automatically=stats.healed_automatically,
        issues_total=len(issues),
        fingerprint=fingerprint(records),
    )


def issue_rows(issues: pd.DataFrame, now: pd.Timestamp) -> tuple[list[IssueRow], int]:
    """Active issues, worst severity first, then oldest; and how many were left out."""
    active = issues[issues["status"].isin(ACTIVE_ISSUES)].copy()
    active["_rank"] = active["severity"].map(SEVERITY_RANK).fillna(9)
    active = active.sort_values(["_rank", "first_seen"], kind="stable")
    rows = [
        IssueRow(
            id=int(r["id"]),
            severity=str(r["severity"]),
            title=str(r["title"]),
            component=str(r["component"]),
            since=ago(r["first_seen"], now),
            since_iso=pd.Timestamp(r["first_seen"]).isoformat(),
            anomaly_count=int(r["anomaly_count"] or 0),
            status=str(r["status"]),
            inhibited_by=_opt_int(r["inhibited_by"]),
        )
        for _, r in active.head(MAX_ISSUE_ROWS).iterrows()
    ]
    return rows, max(0, len(active) - MAX_ISSUE_ROWS)


def _recovery_row(r: pd.Series, now: pd.Timestamp) -> RecoveryRow:
    start = r["started_at"] if not pd.isna(r["started_at"]) else r["created_at"]
    end = r["finished_at"] if not pd.isna(r["finished_at"]) else now
    seconds = None if pd.isna(start) else (end - start).total_seconds()
    error = "" if r["error"] is None or pd.isna(r["error"]) else str(r["error"])
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    return RecoveryRow(
        id=int(r["id"]),
        issue_id=_opt_int(r["issue_id"]),
        component=str(r["component"]),
        strategy=str(r["strategy"]),
        mode=str(r["mode"]),
        status=str(r["status"]),
        started=ago(start, now),
        duration=duration_text(seconds) + ("" if not pd.isna(r["finished_at"]) else " so far"),
        error=error,
    )


def recovery_rows(
    recoveries: pd.DataFrame, now: pd.Timestamp
) -> tuple[list[RecoveryRow], list[RecoveryRow]]:
    """In-flight recoveries (oldest first) and the most recent finished ones (newest first)."""
    active = recoveries[recoveries["status"].isin(ACTIVE_RECOVERIES)]
    done = recoveries[~recoveries["status"].isin(ACTIVE_RECOVERIES)]
    done = done.sort_values("id", ascending=False).head(MAX_RECENT_RECOVERIES)
    return (
        [_recovery_row(r, now) for _, r in active.iterrows()],
        [_recovery_row(r, now) for _, r in done.iterrows()],
    )


def _safe_link(url: object) -> str | None:
    """Only http(s) links reach an ``href``: a stored value never becomes script."""
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    return None


def approval_rows(
    approvals: pd.DataFrame, now: pd.Timestamp, config_path: str | None = None
) -> list[ApprovalRow]:
    """Pending approvals with the UI link and the CLI commands that answer them."""
    pending = approvals[approvals["decision"] == "pending"]
    config = f" -c {shlex.quote(config_path)}" if config_path else ""
    return [
        ApprovalRow(
            id=str(r["id"]),
            component=str(r["component"]),
            severity=str(r["severity"]),
            proposed_action=str(r["proposed_action"]),
            requested=ago(r["requested_at"], now),
            expires=expires_text(r["expires_at"], now),
            ui_url=_safe_link(r["ui_url"]),
            approve_command=f"selfheal approve {shlex.quote(str(r['id']))}{config}",
            reject_command=(
                f"selfheal reject {shlex.quote(str(r['id']))} --reason 'why not'{config}"
            ),
        )
        for _, r in pending.iterrows()
    ]


def panels(snapshot: Snapshot) -> list[ComponentPanel]:
    """One panel per shown component, all charts on the same time axis (the window)."""
    records = snapshot.records
    x_range = (records.start.value / 1e9, records.end.value / 1e9)
    active = records.issues[records.issues["status"].isin(ACTIVE_ISSUES)]
    out = []
    for comp in snapshot.shown:
        charts, unplaced = component_charts(
            comp,
            snapshot.plans.get(comp, []),
            snapshot.series,
            snapshot.samples,
            records.anomalies,
            x_range,
        )
        out.append(ComponentPanel(comp, charts, int((active["component"] == comp).sum()), unplaced))
    return out


def build_dashboard(snapshot: Snapshot, minutes: int, config_path: str | None = None) -> Dashboard:
    """Everything the page shows; ``config_path`` goes into the CLI commands it suggests."""
    records = snapshot.records
    issues, hidden_issues = issue_rows(records.issues, records.now)
    in_flight, recent = recovery_rows(records.recoveries, records.now)
    return Dashboard(
        summary=summary(records),
        window_minutes=minutes,
        window_end=f"{records.end:%Y-%m-%d %H:%M} UTC",
        panels=panels(snapshot),
        hidden_components=[c for c in snapshot.components if c not in snapshot.shown],
        issues=issues,
        issues_not_shown=hidden_issues,
        in_flight=in_flight,
        recent=recent,
        approvals=approval_rows(records.approvals, records.now, config_path),
        history=[
            rate_chart(records.issues, records.recoveries, records.approvals),
            ttr_chart(records.issues, records.recoveries),
        ],
        outcomes=outcome_bars(records.recoveries),
    )
