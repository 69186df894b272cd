"""The recovery flow: one run per issue, waiting for approval when the mode says so.

The cycle creates the recovery row (and the approval row, when one is needed) before it
starts this run, so everything this flow does before waiting is a read: when a suspended
run is resumed, Prefect starts it again from the top and nothing is done twice.

Waiting for approval: in a deployment run the flow is *suspended* (its process exits and
the wait survives a restart of ``selfheal serve``); called directly (no deployment) it is
*paused* in process. Either way the Prefect UI shows a form (approve, reason) above a
markdown description of the issue, the evidence and the proposed action; ``selfheal
approve`` / ``reject`` and the Python API answer the same run. The decision is written to
the ``approvals`` table first, and the first answer wins.

Execution holds a slot of the global concurrency limit ``selfheal-recoveries`` (size
``max_concurrent_recoveries``), taken with ``strict=True`` so a missing limit is an error,
never a silent no-op.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, pause_flow_run, suspend_flow_run, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.concurrency.sync import concurrency
from prefect.context import TagsContext, get_run_context
from prefect.input import RunInput

from flows.components import component_specs, recovery_settings
from flows.notifications import notifier_for
from flows.runtime import Runtime, open_runtime
from storage.approvals import ApprovalAlreadyDecided, decide, get_approval, set_flow_run
from storage.audit import audit
from storage.issues import anomalies_frame, get_issue, set_issue_status
from storage.recoveries import claim_execution, get_recovery, mark_approved, update_recovery
from tasks.notify import Notification
from tasks.recovery.base import IssueInfo, RecoveryContext
from tasks.recovery.genetic import GeneticStrategy
from tasks.recovery.manager import RecoveryManager
from tasks.recovery.registry import default_strategies

RECOVERY_LIMIT = "selfheal-recoveries"
# The slot is a lease the holder renews every 3/4 of it: a holder killed mid-recovery (a
# SIGKILLed serve) frees its slot within this plus the server's 15 s sweep, not 5 minutes.
RECOVERY_LEASE_S = 60.0
# Where a long-lived caller (selfheal serve's executor) collects the leases its recoveries
# hold, to give them back when it stops; None elsewhere.
HELD_LEASES: contextvars.ContextVar[set[Any] | None] = contextvars.ContextVar(
    "selfheal_held_leases", default=None
)


class RecoveryFailed(RuntimeError):
    """A recovery that failed on every rung, escalated or found them all quarantined (the
    recover run ends Failed with it); ``result`` is what the run recorded."""

    def __init__(self, reason: str, result: dict[str, Any]) -> None:
        super().__init__(reason)
        self.result = result


@task(name="genetic-trial", task_run_name="{name}", cache_policy=NO_CACHE, persist_result=False)
def genetic_trial(name: str, step: Callable[[], Any]) -> Any:
    """One trial of the genetic search (apply, settle, measure, maybe roll back) as its own
    task run, so the run's page in the Prefect UI shows the search trial by trial."""
    return step()


def run_trial(name: str, step: Callable[[], Any]) -> Any:
    """Run one trial as a task run that carries no tags of its own (its flow run carries
    the issue's). A tagged task run first asks the server for the tags' concurrency slots:
    one more round trip per trial, which a busy SQLite-backed server answered after 2 s,
    sometimes 30 s, in the demo, while the trial itself takes 3.5 s."""
    with TagsContext(current_tags=set()):
        return genetic_trial(name, step)


UI_ACTOR = "prefect-ui"


class RecoveryApproval(RunInput):
    """The form shown on a waiting recovery run."""

    approve: bool
    reason: str = ""


def issue_info(rt: Runtime, issue_id: int) -> IssueInfo:
    issue = get_issue(rt.engine, issue_id)
    if issue is None:
        raise LookupError(f"no issue with id {issue_id}")
    return IssueInfo.from_record(issue)


def approval_markdown(rt: Runtime, issue: IssueInfo, action: str, approval: dict[str, Any]) -> str:
    """What an operator reads above the form: the issue, the evidence, the proposal."""
    evidence = anomalies_frame(rt.engine, component=issue.component).tail(8)
    lines = [
        f"## Approve recovery of `{issue.component}`?",
        "",
        f"**Issue #{issue.id}**: {issue.title}  ",
        f"severity **{issue.severity}**, kind `{issue.kind}`, signature `{issue.signature}`",
        "",
        f"**Proposed action**: {action}",
        "",
        f"Approval id `{approval['id']}`, expires "
        f"{approval['expires_at']:%Y-%m-%d %H:%M:%S} UTC. Also answerable with "
        f"`selfheal approve {approval['id']}` or `selfheal reject {approval['id']} "
        f'--reason "..."`.',
    ]
    if not evidence.empty:
        lines += [
            "",
            "### Evidence (latest anomalies)",
            "",
            "| time (UTC) | detector | signature | value | severity |",
            "|---|---|---|---|---|",
        ]
        for _, a in evidence.iterrows():
            value = "" if a["value"] is None or a["value"] != a["value"] else f"{a['value']:.4g}"
            lines.append(
                f"| {a['ts']:%H:%M:%S} | {a['detector']} | {a['signature']} | "
                f"{value} | {a['severity']} |"
            )
    return "\n".join(lines)


def _flow_run() -> FlowRun:
    """The flow run this code runs in (recover's steps only run inside one)."""
    run: FlowRun | None = getattr(get_run_context(), "flow_run", None)
    if run is None:
        raise RuntimeError("recover's steps must run inside its flow run")
    return run


def approval_key(approval_id: str) -> str:
    """The pause key (Prefect allows only lowercase letters, digits and dashes)."""
    return "approval-" + approval_id.lower().replace("_", "-")


def wait_for_decision(
    rt: Runtime, issue: IssueInfo, approval_id: str, action: str
) -> dict[str, Any]:
    """Suspend (or pause) until answered; returns the approval row with its decision."""
    logger = get_run_logger()
    approval = get_approval(rt.engine, approval_id)
    if approval["decision"] != "pending":
        return approval  # answered before the run got here (CLI raced the suspension)
    run = _flow_run()
    from prefect.utilities.urls import url_for

    ui_url = url_for("flow-run", obj_id=run.id)
    with rt.engine.begin() as conn:
        set_flow_run(conn, approval_id, str(run.id), ui_url)
    remaining = (approval["expires_at"] - datetime.now(UTC)).total_seconds()
    if remaining <= 0:
        return approval  # the cycle records the expiry
    form = RecoveryApproval.with_initial_data(
        description=approval_markdown(rt, issue, action, approval), approve=False, reason=""
    )
    logger.info("waiting for approval %s (%s)", approval_id, ui_url or "no UI")
    try:
        if run.deployment_id is not None:
            answer = suspend_flow_run(
                wait_for_input=form, timeout=int(remaining) + 1, key=approval_key(approval_id)
            )
        else:
            answer = pause_flow_run(
                wait_for_input=form,
                timeout=int(remaining) + 1,
                poll_interval=2,
                key=approval_key(approval_id),
            )
    except Exception as exc:
        # Prefect's own pause bookkeeping (a Pause signal) must propagate; a timeout means
        # nobody answered: the cycle records the expiry.
        from prefect.exceptions import FlowPauseTimeout

        if isinstance(exc, FlowPauseTimeout):
            return get_approval(rt.engine, approval_id)
        raise
    decision = "approved" if answer.approve else "rejected"
    try:
        with rt.engine.begin() as conn:
            approval = decide(conn, approval_id, decision, UI_ACTOR, answer.reason or None)
            audit(
                conn,
                decision,
                actor=UI_ACTOR,
                issue_id=issue.id,
                approval_id=approval_id,
                recovery_id=approval["recovery_id"],
                component=issue.component,
                reason=answer.reason,
            )
    except ApprovalAlreadyDecided as exc:
        approval = exc.approval  # the CLI or API answered first: its decision stands
    return approval


@flow(
    name="recover",
    description="Recover one issue: wait for approval if needed, then walk the strategy ladder.",
)
def recover(
    issue_id: int, recovery_id: int, approval_id: str | None = None, config_path: str | None = None
) -> Any:
    """Returns a dict, or a Failed state (reason as its message) when the recovery failed,
    escalated past every rung or found every rung quarantined: failures are loud."""
    logger = get_run_logger()
    rt = open_runtime(config_path)
    try:
        issue = issue_info(rt, issue_id)
        row = get_recovery(rt.engine, recovery_id)
        if row is None:
            raise LookupError(f"no recovery with id {recovery_id}")
        if row["status"] in ("succeeded", "failed", "rejected", "expired"):
            if row["status"] == "rejected" and row["finished_at"] is None and approval_id:
                rejected = get_approval(rt.engine, approval_id)
                return _not_executed(rt, issue, recovery_id, rejected)
            logger.info("recovery %s already %s", recovery_id, row["status"])
            return {"status": row["status"], "recovery_id": recovery_id}
        notifier = notifier_for(rt.config)
        me = str(_flow_run().id)
        approval: dict[str, Any] | None = None
        if approval_id is not None:
            approval = wait_for_decision(rt, issue, approval_id, row["action"])
            if approval["decision"] != "approved":
                return _not_executed(rt, issue, recovery_id, approval)
            with rt.engine.begin() as conn:
                mark_approved(conn, recovery_id)
                mine = claim_execution(conn, recovery_id, me)
        else:
            with rt.engine.begin() as conn:
                mine = claim_execution(conn, recovery_id, me)
        if not mine:
            current = get_recovery(rt.engine, recovery_id) or {}
            logger.info(
                "recovery %s is executed by flow run %s (%s); nothing to do here",
                recovery_id,
                current.get("flow_run_id"),
                current.get("status"),
            )
            return {
                "status": "executed elsewhere",
                "recovery_id": recovery_id,
                "flow_run_id": current.get("flow_run_id"),
            }
        closing = None
        if approval is not None:
            # The approval's own run, if another run executes it, ends now: the UI shows
            # where the action runs while it runs (backoff may keep it minutes). Beside the
            # action, once the slot is held: two Prefect API calls the restart need not
            # wait for, and that would contend with the slot's (a SQLite Prefect server
            # answered the take 503, retried 2 s later, when both wrote at once).
            closing = Beside(complete_waiting_run, approval, me)
        try:
            result = execute_recovery(
                rt, issue, recovery_id, row["mode"], on_slot=closing.start if closing else None
            )
        finally:
            if closing is not None:
                closing.finish(WAITING_RUN_TIMEOUT_S)  # also when the slot never came
        event = "recovery_succeeded" if result["success"] else "recovery_failed"
        reason = None if result["success"] else failure_reason(result)
        notifier.send(
            Notification(
                event,
                issue=_issue_dict(issue),
                proposed_action=row["action"],
                approval_id=approval_id,
                detail={
                    "strategy": result["strategy"],
                    "error": result["error"],
                    **({"issue_status": "escalated", "reason": reason} if reason else {}),
                },
            )
        )
        _artifact(
            issue,
            ("succeeded with " if result["success"] else "failed: ")
            + str(result["strategy"] if result["success"] else result["error"]),
            result["attempts"],
        )
        if reason is not None:
            logger.warning("issue #%s (%s) escalated: %s", issue.id, issue.component, reason)
            from prefect.states import Failed

            # The exception is what a direct call of the flow raises; the message is what
            # the UI and `prefect flow-run inspect` show.
            return Failed(
                message=reason, data=RecoveryFailed(reason, {"status": "failed", **result})
            )
        return {"status": "succeeded", **result}
    finally:
        rt.close()


def failure_reason(result: dict[str, Any]) -> str:
    """One line: what was tried and why it did not heal, for the run state and the log."""
    tried = [a for a in result["attempts"] if "skipped" not in a]
    skipped = [a for a in result["attempts"] if "skipped" in a]
    if not tried:
        return (
            "no strategy could act ("
            + "; ".join(f"{a['strategy']}: {a['skipped']}" for a in skipped)
            + ")"
        )
    last = tried[-1]
    text = f"recovery failed after {len(tried)} strategies: {last['strategy']}: {last['error']}"
    quarantined = [a["strategy"] for a in skipped if "quarantined" in str(a["skipped"])]
    if quarantined:
        text += f"; quarantined: {', '.join(quarantined)}"
    return text


def _not_executed(
    rt: Runtime, issue: IssueInfo, recovery_id: int, approval: dict[str, Any]
) -> dict[str, Any]:
    status = approval["decision"] if approval["decision"] != "pending" else "expired"
    with rt.engine.begin() as conn:
        update_recovery(
            conn,
            recovery_id,
            status=status,
            finished_at=datetime.now(UTC),
            error=approval.get("reason"),
        )
    _artifact(
        issue,
        f"not executed: approval {status}"
        + (f" ({approval['reason']})" if approval.get("reason") else ""),
    )
    me = str(_flow_run().id)
    complete_waiting_run(approval, me)
    return {"status": status, "recovery_id": recovery_id, "approval_id": approval["id"]}


WAITING_RUN_TIMEOUT_S = 30.0  # how long a recovery waits, at its end, for that bookkeeping


class Beside:
    """``fn(*args)`` in a thread with the creating run's context (its client, logger and
    settings), started when the caller says so and at the latest by :meth:`finish`."""

    def __init__(self, fn: Callable[..., None], *args: Any) -> None:
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(
            target=ctx.run, args=(fn, *args), name=f"selfheal-{fn.__name__}", daemon=True
        )
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def finish(self, timeout: float) -> None:
        self.start()
        self._thread.join(timeout)


def complete_waiting_run(approval: dict[str, Any], by_run: str) -> None:
    """The approval's own run, still suspended after the decision was acted on elsewhere,
    is completed with a message saying where, so the Prefect UI tells the truth."""
    run_id = approval.get("flow_run_id")
    if not run_id or run_id == by_run:
        return
    from uuid import UUID

    from prefect.context import SyncClientContext
    from prefect.states import Completed

    who = approval.get("decided_by") or "?"
    if approval["decision"] == "approved":
        message = f"approved by {who}; executing in flow run {by_run}"
    else:
        message = f"{approval['decision']} by {who}: {approval.get('reason') or ''}".strip()
    try:
        # The run's own client when there is one (from another thread: its context is
        # shared, never entered or closed here), else a client of its own.
        with SyncClientContext.get_or_create() as ctx:
            client = ctx.client
            run = client.read_flow_run(UUID(run_id))
            # Only a run still waiting: a resumed one (Scheduled, Pending, Running) is
            # about to run and ends by itself ("executed elsewhere").
            if run.state is None or not run.state.is_paused():
                return
            client.set_flow_run_state(UUID(run_id), Completed(message=message), force=True)
    except Exception as exc:  # noqa: BLE001 - the UI lagging must not undo the recovery
        get_run_logger().warning("could not complete waiting run %s: %s", run_id, exc)


def _current_leases() -> set[Any]:
    """The concurrency leases the current run holds (Prefect records each one at once)."""
    from prefect.concurrency.context import ConcurrencyContext

    ctx = ConcurrencyContext.get()
    return set(ctx.cleanup_lease_ids) if ctx is not None else set()


def release_leases(lease_ids: set[Any]) -> int:
    """Give back leases whose holder is stopping; returns how many were released."""
    from prefect.client.orchestration import get_client

    released = 0
    with get_client(sync_client=True) as client:
        for lease_id in list(lease_ids):
            try:
                client.release_concurrency_slots_with_lease(lease_id=lease_id)
                released += 1
            except Exception:  # noqa: BLE001 - already expired or released: nothing held
                pass
    return released


def execute_recovery(
    rt: Runtime,
    issue: IssueInfo,
    recovery_id: int,
    mode: str,
    on_slot: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Walk the ladder holding one slot of the recovery concurrency limit. ``on_slot`` is
    called once the slot is held: from there to the action no Prefect API call is made,
    so bookkeeping started then runs beside the action without delaying it."""
    ctx = RecoveryContext(rt.engine, component_specs(rt.config), recovery_settings(rt.config))
    strategies = default_strategies(rt.config.custom_strategies)
    for strategy in strategies.ladder():
        if isinstance(strategy, GeneticStrategy):
            strategy.step_runner = run_trial
    manager = RecoveryManager(strategies, ctx)
    run = _flow_run()
    held = HELD_LEASES.get()
    # A missed renewal (a stalled Prefect server) must not kill an action half done: the
    # limit is briefly over-committed instead.
    with concurrency(
        RECOVERY_LIMIT,
        occupy=1,
        strict=True,
        lease_duration=RECOVERY_LEASE_S,
        raise_on_lease_renewal_failure=False,
    ):
        leases = _current_leases()
        if held is not None:
            held.update(leases)
        try:
            if on_slot is not None:
                on_slot()
            with rt.engine.begin() as conn:
                if issue.id is not None:
                    set_issue_status(conn, issue.id, "recovering")
            result = manager.apply_recovery(issue, mode, str(run.id), reuse_recovery_id=recovery_id)
        finally:
            if held is not None:
                held.difference_update(leases)
    with rt.engine.begin() as conn:
        if issue.id is not None:
            audit(
                conn,
                "succeeded" if result.success else "failed",
                issue_id=issue.id,
                component=issue.component,
                strategy=result.strategy,
                error=result.error,
            )
            if not result.success:
                # Every rung failed or was quarantined: a human has to look.
                set_issue_status(conn, issue.id, "escalated")
    if not result.recovery_ids:
        # Nothing could act: close the planned row so it does not look in flight.
        with rt.engine.begin() as conn:
            update_recovery(
                conn,
                recovery_id,
                status="failed",
                finished_at=datetime.now(UTC),
                error=result.error,
            )
    return result.as_dict()


def _issue_dict(issue: IssueInfo) -> dict[str, Any]:
    return {
        "id": issue.id,
        "component": issue.component,
        "kind": issue.kind,
        "severity": issue.severity,
        "title": issue.title,
    }


def _artifact(issue: IssueInfo, outcome: str, attempts: list[dict[str, Any]] | None = None) -> None:
    lines = [f"### Recovery of issue #{issue.id} ({issue.component}): {outcome}", ""]
    if attempts:
        lines += ["| strategy | result |", "|---|---|"]
        for a in attempts:
            if "skipped" in a:
                lines.append(f"| {a['strategy']} | skipped: {a['skipped']} |")
            else:
                lines.append(
                    f"| {a['strategy']} | "
                    f"{'succeeded' if a['success'] else 'failed: ' + str(a['error'])} |"
                )
    create_markdown_artifact(
        "\n".join(lines),
        key=f"recovery-issue-{issue.id}",
        description=f"Outcome of the recovery of issue #{issue.id}",
    )
