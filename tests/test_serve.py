"""``selfheal serve`` as one long-lived process (real Prefect server, real services):
cycles run in process on their interval as visible flow runs, the ``cycle`` deployment is
still runnable by hand, automatic recoveries run in process, and an approval answered
while serve is down is executed exactly once when it comes back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flows.demo.platform.launcher import Platform, start_platform
from storage.approvals import approvals_frame
from storage.engine import make_engine, sqlite_url_for
from storage.migrate import ensure_schema
from storage.recoveries import actions_frame, recoveries_frame
from tests.prefect_stack import REPO, PrefectStack, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[PrefectStack]:
    s = PrefectStack(tmp_path / "stack")
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = start_platform(tmp_path / "platform", names=("genetic_optimizer",))
    try:
        yield p
    finally:
        p.stop()


def write_config(tmp_path: Path, platform: Platform, **extra: Any) -> Path:
    svc = platform.services["genetic_optimizer"]
    cfg = {
        "database_url": sqlite_url_for(tmp_path / "selfheal.db"),
        "components": {
            "genetic_optimizer": {
                "metrics_url": f"{svc.url}/metrics",
                "health": {"url": f"{svc.url}/health"},
                "restart_command": svc.restart_argv,
            }
        },
        "detection": {"group_wait": 0, "behaviour": False},
        "recovery": {"validation_timeout": 15, "settle_time": 0.5, "measure_time": 0.5},
        **extra,
    }
    path = tmp_path / "selfheal.json"
    path.write_text(json.dumps(cfg))
    return path


def engine_for(config: Path) -> Any:
    engine = make_engine(json.loads(config.read_text())["database_url"])
    ensure_schema(engine)
    return engine


def flow_runs(name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name]))))


def kill(platform: Platform) -> None:
    svc = platform.services["genetic_optimizer"]
    assert svc.pid is not None
    os.killpg(svc.pid, signal.SIGKILL)
    wait_until(lambda: not svc.alive(), 10, "the kill")


def test_serve_cycles_in_process_and_heals_in_process(
    stack: PrefectStack, platform: Platform, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    config = write_config(tmp_path, platform, mode="automated", detection_interval=2)
    stack.start_serve(config, cycle=True)

    def in_process_cycles() -> list[Any]:
        return [
            r
            for r in flow_runs("cycle")
            if r.deployment_id is None and r.state is not None and r.state.is_completed()
        ]

    wait_until(lambda: len(in_process_cycles()) >= 3, 120, "three in-process cycles")
    run = in_process_cycles()[0]
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

        tasks = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id]))
        )
        assert {"plan-recoveries", "notify-issues"} <= {t.name.rsplit("-", 1)[0] for t in tasks}
        deployment = client.read_deployment_by_name("cycle/cycle")
        assert deployment.schedules == []  # serve runs it; the deployment is for ad-hoc runs
    adhoc = run_deployment("cycle/cycle", timeout=180, poll_interval=1)
    assert adhoc.state is not None and adhoc.state.is_completed(), adhoc.state

    svc = platform.services["genetic_optimizer"]
    kill(platform)
    wait_until(svc.alive, 90, "the in-process restart")
    engine = engine_for(config)
    try:
        wait_until(
            lambda: "succeeded" in recoveries_frame(engine)["status"].tolist(),
            60,
            "the recovery to be recorded",
        )
        rec = recoveries_frame(engine)
        ok = rec[rec["status"] == "succeeded"].iloc[0]
        assert len(actions_frame(engine, "genetic_optimizer")) == 1
    finally:
        engine.dispose()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(ok["flow_run_id"])]))
        )
    assert runs[0].deployment_id is None and "in-process" in runs[0].tags  # no process start
    # The row is final before the run has sent its notification and artifact.
    wait_until(lambda: stack.run_state(ok["flow_run_id"]) == "Completed", 60, "the run to end")
    t0 = time.monotonic()
    stack.stop_serve()  # SIGTERM
    assert stack.serve_proc is not None and stack.serve_proc.poll() is not None
    assert time.monotonic() - t0 < 30  # generous: the budget is 10 s (see bench serve)


def test_approval_answered_while_serve_is_down_runs_once(
    stack: PrefectStack, platform: Platform, tmp_path: Path
) -> None:
    from flows.cycle import cycle

    config = write_config(tmp_path, platform, mode="supervised", approval_timeout=600)
    stack.start_serve(config)
    cycle(str(config))
    kill(platform)
    result = cycle(str(config))
    run_id, approval_id = result["started"][0], result["asked"][0]
    wait_until(lambda: stack.run_state(run_id) == "Suspended", 120, "the suspension")
    time.sleep(2)  # the suspended run's process exits
    stack.stop_serve()
    approve = subprocess.run(
        [sys.executable, "-m", "flows.cli", "approve", approval_id, "-c", str(config)],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert approve.returncode == 0, approve.stderr
    svc = platform.services["genetic_optimizer"]
    time.sleep(3)
    assert not svc.alive()  # nothing acts while serve is down
    stack.start_serve(config)
    wait_until(svc.alive, 120, "the restart after serve came back")
    engine = engine_for(config)
    try:
        wait_until(
            lambda: "succeeded" in recoveries_frame(engine)["status"].tolist(),
            60,
            "the recovery to be recorded",
        )
        wait_until(
            lambda: stack.run_state(run_id) in ("Completed", "Failed", "Cancelled"),
            60,
            "the waiting run to finish",
        )
        time.sleep(5)  # a second executor or the resumed run would act within this
        assert len(actions_frame(engine, "genetic_optimizer")) == 1  # exactly once
        assert recoveries_frame(engine)["status"].tolist() == ["succeeded"]
        appr = approvals_frame(engine).iloc[0]
        assert appr["decision"] == "approved"
        assert stack.run_state(run_id) == "Completed"  # the UI tells the truth
    finally:
        engine.dispose()


SLOW_RESTART = (
    "import sys, time\n"
    "open(sys.argv[1], 'a').write('start\\n')\n"
    "time.sleep(float(sys.argv[2]))\n"
    "open(sys.argv[1], 'a').write('end\\n')\n"
)


def test_recovery_in_flight_at_sigterm_is_interrupted_then_resumed(
    stack: PrefectStack, platform: Platform, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from flows.cycle import cycle
    from flows.detect import persist_detection
    from storage.issues import AnomalyRecord
    from tasks.issues.grouping import GroupingPolicy

    log = tmp_path / "restarts.log"
    config = write_config(tmp_path, platform, mode="automated")
    data = json.loads(config.read_text())
    data["components"]["genetic_optimizer"]["restart_command"] = [
        sys.executable,
        "-c",
        SLOW_RESTART,
        str(log),
        "20",
    ]
    config.write_text(json.dumps(data))
    engine = engine_for(config)
    try:
        now = datetime.now(UTC)
        persist_detection(
            engine,
            [
                # Down: evidence that a restart is the remedy (a metric anomaly alone on a
                # live component never restarts it).
                AnomalyRecord(
                    "down",
                    "genetic_optimizer",
                    "down",
                    "down",
                    int(now.timestamp() * 1000),
                    0.0,
                    "critical",
                )
            ],
            {},
            now,
            GroupingPolicy(group_wait=0),
            {},
        )
        stack.start_serve(config)
        result = cycle(str(config), dispatch="serve")
        assert [s for s in result["started"] if s.startswith("queued:")], result
        wait_until(lambda: log.exists() and "start" in log.read_text(), 60, "the restart")
        t0 = time.monotonic()
        stack.stop_serve()  # SIGTERM while the restart command runs
        stopped_s = time.monotonic() - t0
        rec = recoveries_frame(engine)
        assert rec["status"].tolist() == ["interrupted"], rec[["status", "error"]]
        run_id = rec["flow_run_id"].iloc[0]
        assert stack.run_state(run_id) == "Cancelled"  # not left Running in the UI
        # Its slot of the recovery limit is given back, not held until the lease expires
        # (a restarted serve would otherwise start with a slot fewer).
        from flows.recover import RECOVERY_LIMIT

        assert stack.slots_in_use(RECOVERY_LIMIT) == 0
        stack.start_serve(config)  # the next start resumes it
        wait_until(
            lambda: recoveries_frame(engine)["status"].tolist() == ["succeeded"],
            120,
            "the resumed recovery to succeed",
        )
        assert log.read_text().count("start") == 2  # ran again once, not more
        assert stopped_s < 30  # generous: the budget is 10 s (bench serve measures it)
    finally:
        engine.dispose()


def test_a_decision_wakes_the_executor_before_its_next_poll(engine: Any) -> None:
    """serve's executor looks for approved recoveries every half second; a decision
    recorded by another process (``selfheal approve``) wakes it at once instead, on both
    backends: LISTEN/NOTIFY on PostgreSQL, ``data_version`` on SQLite."""
    import threading
    from datetime import timedelta

    from flows.serve import DecisionWatch
    from storage.approvals import create_approval, decide
    from storage.types import utcnow

    with engine.begin() as conn:
        approval_id = create_approval(
            conn,
            component="c",
            severity="high",
            proposed_action="restart",
            expires_at=utcnow() + timedelta(hours=1),
        )
    woken, stop = threading.Event(), threading.Event()
    watch = DecisionWatch(engine, woken.set, stop)
    watch.start()
    try:
        assert watch.watching.wait(30)
        assert not woken.is_set()
        with engine.begin() as conn:
            decide(conn, approval_id, "approved", "alice")
        assert woken.wait(30)
    finally:
        stop.set()
