"""The detection cycle: ingest → detect → decide → start recoveries. Scheduled every
``detection_interval`` seconds; it never waits for a recovery or an approval."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.components import component_specs, recovery_settings
from flows.detect import GroupSummary, recheck_after, run_detection
from flows.ingest import run_ingest
from flows.launch import deployment_available, start_deployment_run
from flows.live_config import load_live_config
from flows.notifications import notifier_for
from flows.recover import RECOVERY_LIMIT, recover
from flows.runtime import Runtime, open_runtime
from storage.approvals import approvals_frame, decide
from storage.audit import audit
from storage.issues import get_issue, load_active_issues, mark_notified
from storage.recoveries import queue_recovery, update_recovery
from storage.types import utcnow
from tasks.coordination.planner import CyclePlan, plan_cycle
from tasks.issues.grouping import should_notify
from tasks.notify import Notification
from tasks.recovery.base import RecoveryContext
from tasks.recovery.breaker_strategy import probe_breakers
from tasks.recovery.manager import RecoveryManager
from tasks.recovery.registry import default_strategies

_OPTS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


def ensure_limits(max_concurrent: int) -> None:
    """Create or resize the global limit the recovery runs hold (idempotent)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(RECOVERY_LIMIT, max_concurrent)


def recovery_context(rt: Runtime) -> RecoveryContext:
    return RecoveryContext(rt.engine, component_specs(rt.config), recovery_settings(rt.config))


@task(name="probe-breakers", **_OPTS)
def probe_breakers_task(rt: Runtime) -> list[dict[str, Any]]:
    return [r.__dict__ for r in probe_breakers(recovery_context(rt))]


@task(name="expire-approvals", **_OPTS)
def expire_approvals_task(rt: Runtime, now: datetime) -> list[str]:
    """Pending approvals past their deadline: recorded as expired, nothing is done."""
    pending = approvals_frame(rt.engine, pending_only=True)
    expired = pending[pending["expires_at"] <= now]
    notifier = notifier_for(rt.config)
    done = []
    for row in expired.to_dict("records"):
        with rt.engine.begin() as conn:
            decide(conn, row["id"], "expired", "selfheal", "nobody answered in time", now)
            if row["recovery_id"] is not None:
                update_recovery(
                    conn,
                    int(row["recovery_id"]),
                    status="expired",
                    finished_at=now,
                    error="approval expired",
                )
            audit(
                conn,
                "expired",
                issue_id=row["issue_id"],
                approval_id=row["id"],
                recovery_id=row["recovery_id"],
                component=row["component"],
            )
        issue = get_issue(rt.engine, int(row["issue_id"])) if row["issue_id"] else None
        notifier.send(
            Notification(
                "approval_expired",
                issue=_issue_dict(issue, row["component"]),
                proposed_action=row["proposed_action"],
                approval_id=row["id"],
                ui_url=row["ui_url"],
            )
        )
        done.append(row["id"])
    return done


@task(name="plan-recoveries", **_OPTS)
def plan_recoveries_task(rt: Runtime, now: datetime) -> CyclePlan:
    cfg = rt.config
    manager = RecoveryManager(default_strategies(cfg.custom_strategies), recovery_context(rt))
    return plan_cycle(
        rt.engine,
        manager,
        cfg.mode,
        now,
        max_concurrent=cfg.max_concurrent_recoveries,
        approval_timeout_s=cfg.approval_timeout,
        cooldown_s=cfg.recovery.cooldown,
        quarantine_s=cfg.quarantine_period,
        min_severity=cfg.recovery.min_severity,
        confirm_below=cfg.recovery.confirm_below,
        recheck_after_s=recheck_after(cfg),
    )


@task(name="notify-issues", **_OPTS)
def notify_issues_task(rt: Runtime, summary: GroupSummary, now: datetime) -> int:
    """issue_opened once past the group wait (then throttled), issue_resolved when quiet."""
    from flows.detect import grouping_policy

    notifier = notifier_for(rt.config)
    policy = grouping_policy(rt.config)
    sent = 0
    with rt.engine.connect() as conn:
        active = load_active_issues(conn, now)
    due = [i for i in active if should_notify(i, now, policy)]
    for issue in due:
        notifier.send(Notification("issue_opened", issue=_issue_dict(issue)))
        sent += 1
    with rt.engine.begin() as conn:
        mark_notified(conn, [i.id for i in due if i.id is not None], now)
    for issue_id in summary.resolved_ids:
        resolved = get_issue(rt.engine, issue_id)
        if resolved is not None and resolved.last_notified_at is not None:
            notifier.send(Notification("issue_resolved", issue=_issue_dict(resolved)))
            sent += 1
    return sent


def _issue_dict(issue: Any, component: str = "") -> dict[str, Any]:
    if issue is None:
        return {
            "id": None,
            "component": component,
            "kind": "",
            "severity": "low",
            "title": f"issue on {component}",
        }
    return {
        "id": issue.id,
        "component": issue.component,
        "kind": issue.kind,
        "severity": issue.severity,
        "title": issue.title,
    }


def start_recoveries(rt: Runtime, plan: CyclePlan, dispatch: str = "deployment") -> list[str]:
    """Start a run per launched or asked recovery (the approval ones wait in their run).

    ``dispatch="serve"`` (the cycle loop of ``selfheal serve``): automatic recoveries are
    queued for serve's in-process executor, which starts them at once with no new process;
    approval-gated ones still get a deployment run, so the form waits in the Prefect UI.
    """
    logger = get_run_logger()
    notifier = notifier_for(rt.config)
    served = deployment_available()
    started = []
    for p in plan.planned:
        if p.action not in ("launch", "ask"):
            continue
        issue_id, comp = p.issue.id, p.issue.component
        assert issue_id is not None and p.recovery_id is not None
        if p.action == "ask":
            notifier.send(
                Notification(
                    "approval_requested",
                    issue=_issue_dict(p.issue),
                    proposed_action=p.proposal,
                    approval_id=p.approval_id,
                )
            )
        if dispatch == "serve" and p.action == "launch":
            with rt.engine.begin() as conn:
                queue_recovery(conn, p.recovery_id)
            started.append(f"queued:{p.recovery_id}")
            logger.info(
                "issue #%s (%s, %s): recovery %s queued for serve's executor",
                issue_id,
                comp,
                p.issue.severity,
                p.recovery_id,
            )
        elif served:
            run_id = start_deployment_run(
                issue_id, comp, p.recovery_id, p.approval_id, rt.config_path
            )
            started.append(run_id)
            logger.info(
                "issue #%s (%s, %s): %s recovery run %s",
                issue_id,
                comp,
                p.issue.severity,
                "approval-gated" if p.approval_id else "started",
                run_id,
            )
        elif p.action == "launch":
            # Nothing is served: run it here (the cycle waits for it; a failure is the
            # recovery run's, not the cycle's).
            recover(issue_id, p.recovery_id, None, rt.config_path, return_state=True)
            started.append(f"in-process:{p.recovery_id}")
        else:
            logger.warning(
                "approval %s for issue #%s is pending; nothing serves the recover "
                "deployment, so it will run when approved (selfheal approve %s)",
                p.approval_id,
                issue_id,
                p.approval_id,
            )
    return started


def summary_markdown(summary: GroupSummary, plan: CyclePlan, ingested: int, now: datetime) -> str:
    lines = [
        f"## Cycle at {now:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"- samples and lines stored: {ingested}",
        f"- anomalies stored: {summary.anomalies_stored}",
        f"- issues opened: {len(summary.new_issues)}, reopened: {summary.reopened}, "
        f"resolved: {summary.resolved}",
        f"- recoveries started: {len(plan.of('launch'))}, waiting for approval: "
        f"{len(plan.of('ask'))}, recorded only: {len(plan.of('record'))}, "
        f"waiting for a slot: {len(plan.of('wait'))}, skipped: {len(plan.of('skip'))}",
    ]
    if summary.new_issues:
        lines += [
            "",
            "### New issues",
            "",
            "| id | component | kind | severity | title |",
            "|---|---|---|---|---|",
        ]
        for i in summary.new_issues:
            lines.append(
                f"| {i['id']} | {i['component']} | {i['kind']} | {i['severity']} | {i['title']} |"
            )
    if plan.planned:
        lines += [
            "",
            "### Decisions",
            "",
            "| issue | action | proposal / reason |",
            "|---|---|---|",
        ]
        for p in plan.planned:
            lines.append(
                f"| #{p.issue.id} {p.issue.component} | {p.action} | {p.proposal or p.reason} |"
            )
    return "\n".join(lines)


@flow(name="cycle", description="One detection cycle: ingest, detect, decide, start recoveries.")
def cycle(config_path: str | None = None, dispatch: str = "deployment") -> dict[str, Any]:
    """``dispatch``: ``deployment`` starts recovery runs of the served ``recover``
    deployment (or in process when nothing serves it); ``serve`` queues automatic ones for
    the executor of the ``selfheal serve`` process that runs this cycle."""
    logger = get_run_logger()
    config = load_live_config(config_path, logger)
    if not config.enabled:
        logger.warning("self-healing is disabled (enabled: false): this cycle does nothing")
        return {"enabled": False}
    rt = open_runtime(config_path, config=config)
    try:
        now = utcnow()
        ensure_limits(config.max_concurrent_recoveries)
        reports = run_ingest(rt)
        summary = run_detection(rt, now=datetime.now(UTC))
        probes = probe_breakers_task(rt)
        expired = expire_approvals_task(rt, now)
        plan = plan_recoveries_task(rt, utcnow())
        started = start_recoveries(rt, plan, dispatch)
        notified = notify_issues_task(rt, summary, utcnow())
        ingested = sum(r.stored for r in reports)
        create_markdown_artifact(
            summary_markdown(summary, plan, ingested, now),
            key="cycle-summary",
            description="What the last cycle did",
        )
        return {
            "enabled": True,
            "mode": rt.config.mode,
            "config_version": rt.config_version,
            "ingested": ingested,
            "new_issues": summary.new_issues,
            "resolved": summary.resolved,
            "started": started,
            "asked": [p.approval_id for p in plan.of("ask")],
            "recorded_only": [p.recovery_id for p in plan.of("record")],
            "expired": expired,
            "breakers": probes,
            "notified": notified,
        }
    finally:
        rt.close()
