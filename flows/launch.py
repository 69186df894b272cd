"""Starting recovery runs: through the served ``recover`` deployment when there is one.

A deployment run is not a subflow of the cycle (``as_subflow=False``), so it can be
suspended while it waits for approval, and the cycle never waits for it. Without a
deployment (an ad-hoc ``selfheal cycle`` with nothing served) automatic recoveries run
in process, and recoveries waiting for approval run when they are approved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.states import State

from flows.runtime import Runtime

RECOVER_DEPLOYMENT = "recover/recover"


def deployment_available(name: str = RECOVER_DEPLOYMENT) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
        return True
    except ObjectNotFound:
        return False


def run_tags(issue_id: int, component: str, approval_id: str | None) -> list[str]:
    tags = ["selfheal", "recovery", f"issue-{issue_id}", f"component-{component}"]
    if approval_id:
        tags.append(f"approval-{approval_id}")
    return tags


def start_deployment_run(
    issue_id: int,
    component: str,
    recovery_id: int,
    approval_id: str | None,
    config_path: str | None,
) -> str:
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    # Called from sync code, run_deployment returns the run (its stubs also allow a coroutine).
    run: FlowRun = run_deployment(  # type: ignore[assignment]
        RECOVER_DEPLOYMENT,
        parameters={
            "issue_id": issue_id,
            "recovery_id": recovery_id,
            "approval_id": approval_id,
            "config_path": config_path,
        },
        timeout=0,
        as_subflow=False,
        tags=run_tags(issue_id, component, approval_id),
        flow_run_name=f"recover-issue-{issue_id}-{component}",
    )
    return str(run.id)


def launch_recovery_for_approval(rt: Runtime, approval: dict[str, Any]) -> str:
    """An approved recovery that has no run yet: start it now."""
    if approval["decision"] != "approved" or approval["recovery_id"] is None:
        return "nothing to run"
    if deployment_available():
        run_id = start_deployment_run(
            approval["issue_id"],
            approval["component"],
            approval["recovery_id"],
            approval["id"],
            rt.config_path,
        )
        return f"started flow run {run_id}"
    from flows.recover import recover

    # Called from sync code with return_state=True, a flow call returns its final State.
    state: State[Any] = recover(  # type: ignore[assignment]
        approval["issue_id"],
        approval["recovery_id"],
        approval["id"],
        rt.config_path,
        return_state=True,
    )
    if state.is_failed():
        return f"ran in process: failed ({state.message})"
    result = state.result()
    return f"ran in process: {result.get('status')}"
