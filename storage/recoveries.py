"""Recovery attempts and actions: the record every decision and action leaves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, case, func, insert, select, update

from storage.metrics import _frame
from storage.models import Approval, Recovery, RecoveryAction
from storage.types import utcnow

FINAL = ("succeeded", "failed", "rejected", "expired", "recorded_only", "skipped")
# queued: decided by a cycle run inside ``selfheal serve``, for its in-process executor.
# interrupted: serve stopped while it ran; the next start resumes or expires it.
ACTIVE = ("queued", "planned", "awaiting_approval", "approved", "running", "interrupted")
EXECUTABLE = ("queued", "planned", "approved")


@dataclass(frozen=True)
class StrategyStats:
    strategy: str
    successes: int
    attempts: int

    @property
    def rate(self) -> float:
        """Laplace-smoothed success rate: an untried strategy sits at 0.5, not 0 or 1."""
        return (self.successes + 1) / (self.attempts + 2)


def create_recovery(conn: Connection, **values: Any) -> int:
    values.setdefault("created_at", utcnow())
    values.setdefault("parameters", {})
    values.setdefault("validation", {})
    values.setdefault("output", "")
    values.setdefault("issue_signature", "")
    values.setdefault("action", "")
    return conn.execute(insert(Recovery).values(**values).returning(Recovery.id)).scalar_one()


def update_recovery(conn: Connection, recovery_id: int, **values: Any) -> None:
    conn.execute(update(Recovery).where(Recovery.id == recovery_id).values(**values))


def get_recovery(engine: Engine | Connection, recovery_id: int) -> dict[str, Any] | None:
    stmt = select(Recovery.table()).where(Recovery.table().c.id == recovery_id)
    if isinstance(engine, Connection):
        row = engine.execute(stmt).mappings().first()
    else:
        with engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def record_action(
    conn: Connection,
    recovery_id: int | None,
    component: str,
    kind: str,
    started_at: datetime,
    ok: bool,
    detail: dict[str, Any],
) -> int:
    return conn.execute(
        insert(RecoveryAction)
        .values(
            recovery_id=recovery_id,
            component=component,
            kind=kind,
            started_at=started_at,
            finished_at=utcnow(),
            ok=ok,
            detail=detail,
        )
        .returning(RecoveryAction.id)
    ).scalar_one()


def action_times(conn: Connection, component: str, kind: str, since: datetime) -> list[datetime]:
    t = RecoveryAction.table()
    stmt = (
        select(t.c.started_at)
        .where(t.c.component == component, t.c.kind == kind, t.c.started_at >= since)
        .order_by(t.c.started_at)
    )
    return [r[0] for r in conn.execute(stmt)]


def quarantined_until(
    conn: Connection, component: str, strategy: str, period_s: float, now: datetime
) -> datetime | None:
    """When the (component, strategy) pair leaves quarantine, if a failure put it there."""
    t = Recovery.table()
    stmt = select(func.max(t.c.finished_at)).where(
        t.c.component == component,
        t.c.strategy == strategy,
        t.c.status == "failed",
        t.c.finished_at >= now - timedelta(seconds=period_s),
    )
    last = conn.execute(stmt).scalar()
    if last is None:
        return None
    if last.tzinfo is None:  # func.max bypasses the column type on SQLite
        last = last.replace(tzinfo=UTC)
    return last + timedelta(seconds=period_s)


def strategy_stats(
    conn: Connection, component: str, issue_kind: str, issue_signature: str | None = None
) -> dict[str, StrategyStats]:
    """Outcomes per strategy for this component and kind of issue (executed attempts),
    optionally only for issues of one signature."""
    t = Recovery.table()
    successes = func.sum(case((t.c.status == "succeeded", 1), else_=0))
    stmt = (
        select(t.c.strategy, func.count(), successes)
        .where(
            t.c.component == component,
            t.c.issue_kind == issue_kind,
            t.c.status.in_(("succeeded", "failed")),
        )
        .group_by(t.c.strategy)
    )
    if issue_signature is not None:
        stmt = stmt.where(t.c.issue_signature == issue_signature[:300])
    out: dict[str, StrategyStats] = {}
    for strategy, attempts, successes in conn.execute(stmt):
        out[strategy] = StrategyStats(strategy, int(successes or 0), int(attempts))
    return out


def successful_parameters(
    conn: Connection, component: str, issue_kind: str, strategy: str, limit: int = 5
) -> list[dict[str, Any]]:
    """Parameters of the latest successful attempts of a strategy for this kind of issue."""
    t = Recovery.table()
    stmt = (
        select(t.c.parameters)
        .where(
            t.c.component == component,
            t.c.issue_kind == issue_kind,
            t.c.strategy == strategy,
            t.c.status == "succeeded",
        )
        .order_by(t.c.finished_at.desc())
        .limit(limit)
    )
    return [r[0] for r in conn.execute(stmt)]


def active_recoveries(conn: Connection, issue_id: int | None = None) -> list[dict[str, Any]]:
    t = Recovery.table()
    stmt = select(t).where(t.c.status.in_(ACTIVE))
    if issue_id is not None:
        stmt = stmt.where(t.c.issue_id == issue_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def recoveries_frame(
    engine: Engine | Connection, issue_ids: Sequence[int] | None = None
) -> pd.DataFrame:
    t = Recovery.table()
    cols = [c.name for c in t.columns]
    stmt = select(t).order_by(t.c.id)
    if issue_ids is not None:
        stmt = stmt.where(t.c.issue_id.in_(list(issue_ids)))
    df = _frame(engine, stmt, {}, cols)
    for c in ("created_at", "started_at", "finished_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def actions_frame(engine: Engine | Connection, component: str | None = None) -> pd.DataFrame:
    t = RecoveryAction.table()
    cols = [c.name for c in t.columns]
    stmt = select(t).order_by(t.c.id)
    if component is not None:
        stmt = stmt.where(t.c.component == component)
    df = _frame(engine, stmt, {}, cols)
    for c in ("started_at", "finished_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def recent_actions(conn: Connection, since: datetime) -> list[tuple[str, datetime]]:
    """(component, finished_at) of the actions that finished since ``since``."""
    t = RecoveryAction.table()
    stmt = select(t.c.component, t.c.finished_at).where(t.c.finished_at >= since)
    out = []
    for comp, finished in conn.execute(stmt):
        if finished is not None and finished.tzinfo is None:
            finished = finished.replace(tzinfo=UTC)
        out.append((comp, finished))
    return out


@dataclass(frozen=True)
class RecoveryState:
    """What admission needs of a recovery: its issue, component, status and end."""

    issue_id: int
    component: str
    status: str
    finished_at: datetime | None


def recoveries_for_admission(
    conn: Connection, issue_ids: Sequence[int | None], healed_since: datetime
) -> list[RecoveryState]:
    """Recoveries in flight, those of ``issue_ids``, and successes since ``healed_since``
    (finished times as aware UTC)."""
    t = Recovery.table()
    rows = conn.execute(
        select(t.c.issue_id, t.c.component, t.c.status, t.c.finished_at).where(
            t.c.status.in_(ACTIVE)
            | t.c.issue_id.in_(list(issue_ids))
            | ((t.c.status == "succeeded") & (t.c.finished_at >= healed_since))
        )
    ).all()
    return [RecoveryState(r.issue_id, r.component, r.status, _aware(r.finished_at)) for r in rows]


def healed_issue_ids(conn: Connection, issue_ids: Sequence[int | None]) -> set[int]:
    """Those of ``issue_ids`` that a recovery already healed (a succeeded recovery)."""
    ids = [i for i in issue_ids if i is not None]
    if not ids:
        return set()
    t = Recovery.table()
    rows = conn.execute(
        select(t.c.issue_id).where(t.c.issue_id.in_(ids) & (t.c.status == "succeeded")).distinct()
    ).all()
    return {int(r.issue_id) for r in rows}


def _aware(ts: datetime | None) -> datetime | None:
    return ts if ts is None or ts.tzinfo else ts.replace(tzinfo=UTC)


def count_in_flight(
    engine: Engine | Connection,
    statuses: Sequence[str] = ("queued", "planned", "approved", "running"),
) -> int:
    """Recoveries in one of ``statuses`` (by default: admitted and not yet finished)."""
    t = Recovery.table()
    stmt = select(func.count()).select_from(t).where(t.c.status.in_(list(statuses)))
    if isinstance(engine, Connection):
        return int(engine.execute(stmt).scalar_one())
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def recent_actions_with_issues(
    conn: Connection, since: datetime
) -> list[tuple[str, datetime, int | None]]:
    """(component, finished_at, issue id of its recovery) of the actions finished since
    ``since``: the incident each action was for owns its side effects."""
    a, r = RecoveryAction.table(), Recovery.table()
    stmt = (
        select(a.c.component, a.c.finished_at, r.c.issue_id)
        .select_from(a.outerjoin(r, r.c.id == a.c.recovery_id))
        .where(a.c.finished_at >= since)
    )
    out: list[tuple[str, datetime, int | None]] = []
    for comp, finished, issue_id in conn.execute(stmt):
        if finished is not None and finished.tzinfo is None:
            finished = finished.replace(tzinfo=UTC)
        out.append((comp, finished, issue_id))
    return out


def recovery_counts(engine: Engine | Connection) -> list[tuple[str, str, int]]:
    """(strategy, status, how many) over every recorded recovery attempt."""
    t = Recovery.table()
    stmt = select(t.c.strategy, t.c.status, func.count()).group_by(t.c.strategy, t.c.status)
    if isinstance(engine, Connection):
        rows = engine.execute(stmt).all()
    else:
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
    return [(str(s), str(st), int(n)) for s, st, n in rows]


# -- the in-process executor of ``selfheal serve`` ---------------------------------------


def queue_recovery(conn: Connection, recovery_id: int) -> None:
    """Hand a planned automatic recovery to serve's executor."""
    t = Recovery.table()
    conn.execute(
        update(t).where(t.c.id == recovery_id, t.c.status == "planned").values(status="queued")
    )


def mark_approved(conn: Connection, recovery_id: int) -> None:
    """awaiting_approval → approved (never rewrites a recovery already running or done)."""
    t = Recovery.table()
    conn.execute(
        update(t)
        .where(t.c.id == recovery_id, t.c.status == "awaiting_approval")
        .values(status="approved")
    )


def runnable_recoveries(conn: Connection) -> list[dict[str, Any]]:
    """What serve's executor should start: queued ones, and approved ones nobody runs yet."""
    t, a = Recovery.table(), Approval.table()
    stmt = (
        select(t.c.id, t.c.issue_id, t.c.component, t.c.status, a.c.id.label("approval_id"))
        .select_from(t.outerjoin(a, a.c.recovery_id == t.c.id))
        .where((t.c.status == "queued") | ((t.c.status == "approved") & t.c.flow_run_id.is_(None)))
        .order_by(t.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def take_queued(conn: Connection, recovery_id: int) -> bool:
    """queued → planned, once (the executor that wins starts it)."""
    t = Recovery.table()
    result = conn.execute(
        update(t).where(t.c.id == recovery_id, t.c.status == "queued").values(status="planned")
    )
    return result.rowcount == 1


def claim_execution(conn: Connection, recovery_id: int, flow_run_id: str) -> bool:
    """Record which flow run executes this recovery; False when another run already does.

    Exactly once: a resumed approval run, serve's executor and a retried run all call this
    before acting, and only the first (or the same run again) gets True.
    """
    t = Recovery.table()
    result = conn.execute(
        update(t)
        .where(
            t.c.id == recovery_id,
            t.c.status.in_(EXECUTABLE),
            t.c.flow_run_id.is_(None) | (t.c.flow_run_id == flow_run_id),
        )
        .values(flow_run_id=flow_run_id)
    )
    return result.rowcount == 1


def unfinished_rejections(conn: Connection) -> list[dict[str, Any]]:
    """Rejected recoveries whose waiting run has not recorded the rejection yet."""
    t, a = Recovery.table(), Approval.table()
    stmt = (
        select(t.c.id, t.c.issue_id, t.c.component, a.c.id.label("approval_id"))
        .select_from(t.outerjoin(a, a.c.recovery_id == t.c.id))
        .where(t.c.status == "rejected", t.c.finished_at.is_(None))
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def mark_interrupted(conn: Connection, recovery_ids: Sequence[int], reason: str) -> int:
    """Recoveries in flight when serve stopped: recorded, for the next start to settle."""
    if not recovery_ids:
        return 0
    t = Recovery.table()
    result = conn.execute(
        update(t)
        .where(t.c.id.in_(list(recovery_ids)), t.c.status.in_(ACTIVE))
        .values(status="interrupted", error=reason)
    )
    return int(result.rowcount)


def settle_interrupted(conn: Connection, now: datetime, window_s: float) -> dict[str, list[int]]:
    """At start: interrupted recoveries younger than ``window_s`` are queued again (approved
    ones stay approved), older ones expire. Returns the ids by outcome."""
    t = Recovery.table()
    rows = conn.execute(
        select(t.c.id, t.c.created_at, t.c.mode, t.c.strategy).where(t.c.status == "interrupted")
    ).all()

    a = Approval.table()
    approved = {
        r[0]
        for r in conn.execute(
            select(a.c.recovery_id).where(
                a.c.recovery_id.in_([r[0] for r in rows]), a.c.decision == "approved"
            )
        )
    }
    out: dict[str, list[int]] = {"resumed": [], "expired": []}
    for rid, created, _mode, _strategy in rows:
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if created is not None and (now - created).total_seconds() <= window_s:
            conn.execute(
                update(t)
                .where(t.c.id == rid)
                .values(
                    status="approved" if rid in approved else "queued",
                    flow_run_id=None,
                    started_at=None,
                )
            )
            out["resumed"].append(rid)
        else:
            conn.execute(
                update(t)
                .where(t.c.id == rid)
                .values(status="expired", finished_at=now, error="interrupted; too old to resume")
            )
            out["expired"].append(rid)
    return out
