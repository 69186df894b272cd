"""Which issues get a recovery this cycle, in which order, and what the mode says about it.

Admission, like Alertmanager's routing plus a work queue's priority:

- an issue is a candidate when it is open, not inhibited, past its group wait, has no
  recovery in flight, and was not just healed (``cooldown`` after a successful recovery,
  unless new anomalies arrived after it);
- an issue a recovery healed ("recovering" until its quiet period resolves it) is a
  candidate again only when its symptoms still fire ``recheck_after`` seconds after the
  fix (at least the detectors' longest smoothing window: before that, a smoothed gauge
  still spans the time before the fix, so its alarm says nothing about the fix): the fix
  did not hold, or the same symptom has a new cause, and the ladder goes on instead of
  the incident waiting for a quiet period that never comes;
- an issue whose recovery an operator rejected, or let expire, or that learning mode
  already recorded, is not proposed again: that incident has had its decision (a new
  incident is a new issue);
- candidates go most severe first (then oldest);
- automatic recoveries start only while fewer than ``max_concurrent`` run, so critical
  issues are not queued behind lesser ones (the Prefect concurrency limit is the hard
  guard underneath);
- an issue whose every strategy is quarantined or not applicable is skipped, and said so
  once per quarantine period, not every cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Engine

from storage.approvals import create_approval
from storage.audit import audit, has_event_since
from storage.issues import IssueRecord, load_active_issues
from storage.recoveries import (
    ACTIVE,
    count_in_flight,
    create_recovery,
    recoveries_for_admission,
)
from tasks.coordination.policy import decide_mode
from tasks.recovery.base import IssueInfo
from tasks.recovery.manager import RecoveryManager
from tasks.severity import Severity

Action = Literal["launch", "ask", "record", "skip", "wait"]
DECIDED = ("recorded_only", "rejected", "expired")


@dataclass
class PlannedRecovery:
    issue: IssueRecord
    action: Action
    recovery_id: int | None = None
    approval_id: str | None = None
    proposal: str = ""
    reason: str = ""


@dataclass
class CyclePlan:
    planned: list[PlannedRecovery] = field(default_factory=list)

    def of(self, action: Action) -> list[PlannedRecovery]:
        return [p for p in self.planned if p.action == action]


def confirmed(kind: str, first_seen: datetime, last_seen: datetime, anomaly_count: int) -> bool:
    """Fired in more than one sample, or down. Seen in the demo: a neighbour's restart
    starved the CPU for a second, one latency sample rose (medium), and a parameter search
    began on a healthy component, hiding the memory leak injected next as its side
    effect."""
    return kind == "down" or last_seen > first_seen or anomaly_count > 1


def _confirmed(issue: IssueRecord) -> bool:
    return confirmed(issue.kind, issue.first_seen, issue.last_seen, issue.anomaly_count)


def candidates(
    engine: Engine, now: datetime, cooldown_s: float, recheck_after_s: float = float("inf")
) -> list[IssueRecord]:
    """Open issues to act on, most severe first.

    One recovery per component at a time: a component with a recovery in flight (or
    waiting for approval) gets no second one, and a component healed less than
    ``cooldown_s`` ago is left alone for issues that saw no anomaly since the fix (its
    other symptoms were most likely the same incident and are fading).
    """
    with engine.connect() as conn:
        issues = [
            i
            for i in load_active_issues(conn, now)
            if i.status in ("open", "recovering")
            and i.inhibited_by is None
            and i.actionable_at <= now
        ]
        if not issues:
            return []
        since = now - timedelta(seconds=max(cooldown_s, 0))
        rows = recoveries_for_admission(conn, [i.id for i in issues], since)
    decided = {r.issue_id for r in rows if r.status in DECIDED or r.status in ACTIVE}
    busy_components = {r.component for r in rows if r.status in ACTIVE}
    healed: dict[str, datetime] = {}
    own_fix: dict[int, datetime] = {}  # issue id → its last successful recovery
    for r in rows:
        if r.status == "succeeded" and r.finished_at is not None:
            healed[r.component] = max(healed.get(r.component, r.finished_at), r.finished_at)
            if r.issue_id is not None:
                own_fix[r.issue_id] = max(own_fix.get(r.issue_id, r.finished_at), r.finished_at)
    recheck = timedelta(seconds=recheck_after_s) if math.isfinite(recheck_after_s) else None
    out = []
    for issue in issues:
        if issue.id in decided or issue.component in busy_components:
            continue
        fixed = own_fix.get(issue.id) if issue.id is not None else None
        if fixed is not None and (recheck is None or issue.last_seen <= fixed + recheck):
            continue  # healed, and nothing says the fix did not hold: it waits to resolve
        if fixed is None and issue.status != "open":
            continue  # "recovering" with nothing succeeded: its recovery is being settled
        last_fix = healed.get(issue.component)
        if (
            last_fix is not None
            and (now - last_fix).total_seconds() < cooldown_s
            and issue.last_seen <= last_fix
        ):
            continue
        out.append(issue)
    out.sort(key=lambda i: (-Severity.parse(i.severity), i.first_seen))
    # Several issues of one component: only the most severe gets a recovery this cycle.
    seen: set[str] = set()
    unique = []
    for issue in out:
        if issue.component not in seen:
            seen.add(issue.component)
            unique.append(issue)
    return unique


def running_count(engine: Engine) -> int:
    return count_in_flight(engine)


def _recently_skipped(engine: Engine, issue_id: int, since: datetime) -> bool:
    return has_event_since(engine, issue_id, "skipped", since)


def plan_cycle(
    engine: Engine,
    manager: RecoveryManager,
    mode: str,
    now: datetime,
    *,
    max_concurrent: int,
    approval_timeout_s: float,
    cooldown_s: float,
    quarantine_s: float,
    min_severity: str = "low",
    recheck_after_s: float = float("inf"),
    confirm_below: str = "low",
) -> CyclePlan:
    """Decide and record this cycle's recoveries (rows and approvals); launching is the
    caller's job. Issues below ``confirm_below`` wait until they fired in more than one
    sample (``_confirmed``)."""
    plan = CyclePlan()
    slots = max_concurrent - running_count(engine)
    floor = Severity.parse(min_severity)
    confirm = Severity.parse(confirm_below)
    for issue in candidates(engine, now, cooldown_s, recheck_after_s):
        if Severity.parse(issue.severity) < floor:
            continue
        if Severity.parse(issue.severity) < confirm and not _confirmed(issue):
            continue
        info = IssueInfo.from_record(issue)
        rungs, proposal = manager.proposal(info)
        if proposal is None:
            reason = "; ".join(f"{r.strategy.name}: {r.skip_reason}" for r in rungs)
            if not _recently_skipped(engine, issue.id, now - timedelta(seconds=quarantine_s)):  # type: ignore[arg-type]
                with engine.begin() as conn:
                    audit(
                        conn, "skipped", issue_id=issue.id, component=issue.component, reason=reason
                    )
            plan.planned.append(PlannedRecovery(issue, "skip", reason=reason))
            continue
        decision = decide_mode(mode, issue.severity)
        if decision == "automatic" and slots <= 0:
            plan.planned.append(
                PlannedRecovery(
                    issue, "wait", proposal=proposal.action, reason="all recovery slots busy"
                )
            )
            continue
        status = {
            "automatic": "planned",
            "approval": "awaiting_approval",
            "record_only": "recorded_only",
        }[decision]
        with engine.begin() as conn:
            rid = create_recovery(
                conn,
                issue_id=issue.id,
                component=issue.component,
                issue_kind=issue.kind,
                issue_signature=issue.signature[:300],
                strategy=proposal.strategy,
                rung=0,
                action=proposal.action,
                parameters=proposal.parameters,
                mode=mode,
                status=status,
                finished_at=now if decision == "record_only" else None,
            )
            audit(
                conn,
                "planned",
                issue_id=issue.id,
                recovery_id=rid,
                component=issue.component,
                strategy=proposal.strategy,
                action=proposal.action,
                mode=mode,
                decision=decision,
            )
            approval_id = None
            if decision == "approval":
                approval_id = create_approval(
                    conn,
                    recovery_id=rid,
                    issue_id=issue.id,
                    component=issue.component,
                    severity=issue.severity,
                    proposed_action=proposal.action,
                    requested_at=now,
                    expires_at=now + timedelta(seconds=approval_timeout_s),
                )
                audit(
                    conn,
                    "asked",
                    issue_id=issue.id,
                    recovery_id=rid,
                    approval_id=approval_id,
                    component=issue.component,
                    action=proposal.action,
                )
            elif decision == "record_only":
                audit(
                    conn,
                    "recorded_only",
                    issue_id=issue.id,
                    recovery_id=rid,
                    component=issue.component,
                    action=proposal.action,
                )
        action: Action = {"automatic": "launch", "approval": "ask", "record_only": "record"}[
            decision
        ]  # type: ignore[assignment]
        if action == "launch":
            slots -= 1
        plan.planned.append(PlannedRecovery(issue, action, rid, approval_id, proposal.action))
    return plan
