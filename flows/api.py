"""The public Python API: status, approvals, feedback. The CLI calls these too.

from flows.api import get_status, approve_recovery, reject_recovery
get_status()["auto_healing_rate"]
approve_recovery("approval_1a2b3c4d")
reject_recovery("approval_1a2b3c4d", "not during the release")
"""

from __future__ import annotations

import getpass
import time
from typing import Any
from uuid import UUID

from flows.runtime import Runtime, open_runtime
from storage.approvals import approvals_frame, decide, get_approval
from storage.audit import audit
from storage.issues import add_feedback as store_feedback
from storage.issues import issues_frame
from storage.recoveries import ACTIVE, recoveries_frame, update_recovery
from tasks.coordination.status import healing_stats

RESUME_WAIT_S = 60.0
# How long an answer waits for a running ``selfheal serve`` watching this database (its
# executor is woken by the decision, polls every 0.5 s besides, and keeps a beacon fresh)
# to take the decision over, before resuming the waiting run through Prefect itself.
# Without a fresh beacon: no wait.
HANDOFF_WAIT_S = 15.0
BEACON_FRESH_S = 5.0  # serve's executor rewrites its beacon every 0.5 s


def _user(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "cli"


def get_status(config_path: str | None = None, rt: Runtime | None = None) -> dict[str, Any]:
    """active, mode, open issues, active recoveries, pending approvals, auto-healing rate,
    mean time to recover; computed from the tables."""
    own = rt is None
    rt = rt or open_runtime(config_path)
    try:
        issues = issues_frame(rt.engine)
        recoveries = recoveries_frame(rt.engine)
        approvals = approvals_frame(rt.engine)
        stats = healing_stats(issues, recoveries, approvals)
        open_issues = issues[issues["status"].isin(["open", "recovering", "escalated"])]
        escalated = issues[issues["status"] == "escalated"]
        return {
            "active": rt.config.enabled,
            "mode": rt.config.mode,
            "open_issues": len(open_issues),
            "open_issues_by_severity": {
                str(k): int(v) for k, v in open_issues["severity"].value_counts().items()
            },
            "active_recoveries": int(
                recoveries["status"].isin([s for s in ACTIVE if s != "awaiting_approval"]).sum()
            ),
            "pending_approvals": int((approvals["decision"] == "pending").sum()),
            "auto_healing_rate": None
            if stats.auto_healing_rate is None
            else round(stats.auto_healing_rate, 1),
            "mean_time_to_recover_s": None
            if stats.mean_time_to_recover_s is None
            else round(stats.mean_time_to_recover_s, 1),
            "issues_acted_on": stats.issues_acted_on,
            "healed_automatically": stats.healed_automatically,
            "issues_total": len(issues),
            "warmup": detector_warmup(rt),
            "escalated_issues": stats.escalated,
            "escalated": [
                {"id": int(r["id"]), "component": r["component"], "title": r["title"]}
                for r in escalated.to_dict("records")
            ],
        }
    finally:
        if own:
            rt.close()


def detector_warmup(rt: Runtime) -> dict[str, Any]:
    """How many series the time-series detectors still skip for lack of history."""
    from storage.warmup import series_history
    from tasks.detection.warmup import warmup

    d = rt.config.detection
    min_points = max((int(s.params.get("min_points", 60)) for s in d.detectors), default=60)
    start_ms = int((time.time() - d.lookback) * 1000)
    return warmup(series_history(rt.engine, start_ms), min_points, d.include, d.exclude).as_dict()


def list_approvals(
    pending_only: bool = True, config_path: str | None = None
) -> list[dict[str, Any]]:
    rt = open_runtime(config_path)
    try:
        df = approvals_frame(rt.engine, pending_only=pending_only)
        return [
            {
                k: (v.isoformat() if hasattr(v, "isoformat") and v == v else v)
                for k, v in row.items()
            }
            for row in df.to_dict("records")
        ]
    finally:
        rt.close()


def approve_recovery(
    approval_id: str, reason: str = "", by: str | None = None, config_path: str | None = None
) -> dict[str, Any]:
    """Approve: record the decision (first answer wins), then resume the waiting run."""
    return _answer(approval_id, True, reason, by, config_path)


def reject_recovery(
    approval_id: str, reason: str, by: str | None = None, config_path: str | None = None
) -> dict[str, Any]:
    """Reject with a reason: recorded; the waiting run resumes and does nothing."""
    if not reason or not reason.strip():
        raise ValueError("a rejection needs a reason")
    return _answer(approval_id, False, reason, by, config_path)


def _answer(
    approval_id: str, approve: bool, reason: str, by: str | None, config_path: str | None
) -> dict[str, Any]:
    from flows.prefect_server import use_prefect_api

    # Find the Prefect server first: with none, nothing is decided (raises
    # PrefectUnreachable, whose message says what to set).
    with use_prefect_api(required=True):
        return _answer_on(approval_id, approve, reason, by, config_path)


def _answer_on(
    approval_id: str, approve: bool, reason: str, by: str | None, config_path: str | None
) -> dict[str, Any]:
    rt = open_runtime(config_path)
    actor = _user(by)
    decision = "approved" if approve else "rejected"
    try:
        with rt.engine.begin() as conn:
            approval = decide(conn, approval_id, decision, actor, reason or None)
            if approval["recovery_id"] is not None:
                update_recovery(
                    conn, approval["recovery_id"], status="approved" if approve else "rejected"
                )
            audit(
                conn,
                decision,
                actor=actor,
                issue_id=approval["issue_id"],
                recovery_id=approval["recovery_id"],
                approval_id=approval_id,
                component=approval["component"],
                reason=reason,
            )
        run_note = _handed_off(rt, approval, approve) or _resume(rt, approval_id, approve, reason)
        return {"approval_id": approval_id, "decision": decision, "by": actor, "run": run_note}
    finally:
        rt.close()


def _handed_off(rt: Runtime, approval: dict[str, Any], approve: bool) -> str | None:
    """A running ``selfheal serve`` on this database acts on the decision itself (at once,
    no process start): say so, or None when nobody took it over."""
    from flows.runtime import executor_beacon
    from storage.recoveries import get_recovery

    rid = approval["recovery_id"]
    if rid is None:
        return None
    beacon = executor_beacon(rt.engine.url.render_as_string(hide_password=False))
    try:
        fresh = time.time() - beacon.stat().st_mtime < BEACON_FRESH_S
    except OSError:
        fresh = False
    if not fresh:
        return None  # no serve watches this database: resume the run through Prefect
    deadline = time.monotonic() + HANDOFF_WAIT_S
    while time.monotonic() < deadline:
        row = get_recovery(rt.engine, int(rid)) or {}
        if approve and (row.get("flow_run_id") or row.get("status") not in ("approved", None)):
            return f"executing in selfheal serve (flow run {row.get('flow_run_id')})"
        if not approve and row.get("finished_at") is not None:
            return "recorded by selfheal serve; the waiting run is completed"
        time.sleep(0.1)
    return None


def _resume(rt: Runtime, approval_id: str, approve: bool, reason: str) -> str:
    """Resume the waiting recovery run with the form's input; launch it if it never ran."""
    from prefect import resume_flow_run
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.exceptions import NotPausedError

    from flows.launch import launch_recovery_for_approval

    tag = f"approval-{approval_id}"
    deadline = time.monotonic() + RESUME_WAIT_S
    while True:
        approval = get_approval(rt.engine, approval_id)
        run_id = approval.get("flow_run_id")
        with get_client(sync_client=True) as client:
            if run_id is None:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
                )
                run_id = str(runs[0].id) if runs else None
            if run_id is None:
                return launch_recovery_for_approval(rt, approval)
            run = client.read_flow_run(UUID(run_id))
        state = run.state
        if state is not None and state.is_paused():
            try:
                resume_flow_run(UUID(run_id), run_input={"approve": approve, "reason": reason})
                return f"resumed flow run {run_id}"
            except NotPausedError:
                pass
        elif state is not None and state.is_final():
            if approve and state.name in ("Cancelled", "Crashed", "Failed"):
                # The waiting run was lost (e.g. cancelled while serve shut down): the
                # decision stands, so start the recovery again in a new run.
                approval = get_approval(rt.engine, approval_id)
                return f"flow run {run_id} was {state.name}; " + launch_recovery_for_approval(
                    rt, approval
                )
            return f"flow run {run_id} already {state.name}"
        if time.monotonic() > deadline:
            return (
                f"flow run {run_id} is {state.name if state else 'unknown'}; the decision "
                "is recorded and the run will read it when it reaches its approval step"
            )
        time.sleep(1.0)


def feedback(
    issue_id: int,
    true_positive: bool,
    by: str | None = None,
    note: str = "",
    config_path: str | None = None,
) -> int:
    """Record an operator's verdict on an issue (labels for nightly tuning)."""
    rt = open_runtime(config_path)
    try:
        actor = _user(by)
        with rt.engine.begin() as conn:
            fid = store_feedback(
                conn, issue_id, "true_positive" if true_positive else "false_positive", actor, note
            )
            audit(
                conn,
                "feedback",
                actor=actor,
                issue_id=issue_id,
                verdict="true_positive" if true_positive else "false_positive",
                note=note,
            )
        return fid
    finally:
        rt.close()
