"""The coordinator against a real Prefect server and ``selfheal serve``: modes, approvals
from the CLI, expiry, restarts of serve, notifications, live configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.demo.platform.launcher import Platform, ServiceHandle, start_platform, wait_healthy
from storage.approvals import approvals_frame
from storage.audit import audit_frame
from storage.engine import make_engine, sqlite_url_for
from storage.issues import AnomalyRecord
from storage.migrate import ensure_schema
from storage.recoveries import actions_frame, recoveries_frame
from tests.prefect_stack import REPO, PrefectStack, wait_until
from tests.webhook_receiver import Reply, receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    home = tmp_path_factory.mktemp("stack")
    s = PrefectStack(home)
    s.start()
    serve_cfg = home / "serve.json"
    serve_cfg.write_text(
        json.dumps(
            {"max_concurrent_recoveries": 3, "database_url": sqlite_url_for(home / "serve.db")}
        )
    )
    s.start_serve(serve_cfg)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = start_platform(tmp_path / "platform", names=("theorem_repository", "genetic_optimizer"))
    try:
        yield p
    finally:
        p.stop()


def write_config(tmp_path: Path, platform: Platform, **extra: Any) -> Path:
    comps = {}
    for name, svc in platform.services.items():
        comps[name] = {
            "metrics_url": f"{svc.url}/metrics",
            "health": {"url": f"{svc.url}/health"},
            "restart_command": svc.restart_argv,
        }
    cfg = {
        "database_url": sqlite_url_for(tmp_path / "selfheal.db"),
        "mode": "supervised",
        "components": comps,
        "detection": {"group_wait": 0, "behaviour": False},
        "recovery": {"validation_timeout": 15, "settle_time": 0.5, "measure_time": 0.5},
        "approval_timeout": 600,
        **extra,
    }
    path = tmp_path / "selfheal.json"
    path.write_text(json.dumps(cfg))
    return path


def cli(stack: PrefectStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def kill(svc: ServiceHandle) -> None:
    assert svc.pid is not None
    os.killpg(svc.pid, signal.SIGKILL)
    wait_until(lambda: not svc.alive(), 10, f"{svc.name} to die")


def run_cycle(config: Path) -> dict[str, Any]:
    from flows.cycle import cycle

    return cycle(str(config))


def engine_for(config: Path) -> Any:
    url = json.loads(config.read_text())["database_url"]
    engine = make_engine(url)
    ensure_schema(engine)
    return engine


def suspended(stack: PrefectStack, config: Path, approval_id: str) -> str:
    """Wait until the approval's run is suspended; return its id."""
    engine = engine_for(config)

    def run_id() -> str | None:
        rows = approvals_frame(engine)
        row = rows[rows["id"] == approval_id].iloc[0]
        rid = row["flow_run_id"]
        if isinstance(rid, str) and stack.run_state(rid) in ("Suspended", "Paused"):
            return rid
        return None

    try:
        return str(wait_until(run_id, 90, f"the run of {approval_id} to be suspended"))
    finally:
        engine.dispose()


def recovery_status(config: Path, recovery_id: int) -> str:
    engine = engine_for(config)
    try:
        rec = recoveries_frame(engine)
        return str(rec.set_index("id").loc[recovery_id, "status"])
    finally:
        engine.dispose()


def test_supervised_high_severity_waits_then_approve_restarts(
    stack: PrefectStack, platform: Platform, tmp_path: Path
) -> None:
    config = write_config(tmp_path, platform)
    svc = platform.services["genetic_optimizer"]
    run_cycle(config)  # baseline samples
    kill(svc)
    result = run_cycle(config)
    assert [i["kind"] for i in result["new_issues"]] == ["down"]
    assert len(result["asked"]) == 1 and result["started"]
    approval_id = result["asked"][0]
    run_id = suspended(stack, config, approval_id)
    assert not svc.alive()  # nothing happened before approval

    listing = cli(stack, "approvals", "-c", str(config))
    assert approval_id in listing.stdout and f"/runs/flow-run/{run_id}" in listing.stdout

    out = cli(
        stack, "approve", approval_id, "-c", str(config), "--reason", "go ahead", "--by", "alice"
    )
    assert out.returncode == 0, out.stderr
    assert "resumed" in out.stdout
    wait_until(svc.alive, 90, "the restart after approval")
    assert wait_healthy(svc.url, 30)
    engine = engine_for(config)
    try:
        wait_until(
            lambda: (recoveries_frame(engine)["status"] == "succeeded").any(),
            90,
            "the recovery to be recorded",
        )
        rec = recoveries_frame(engine).iloc[0]
        assert (rec["strategy"], rec["status"]) == ("restart", "succeeded")
        appr = approvals_frame(engine).iloc[0]
        assert (appr["decision"], appr["decided_by"], appr["reason"]) == (
            "approved",
            "alice",
            "go ahead",
        )
        # The issue-level "succeeded" row follows the recovery row (after the concurrency
        # slot is released): read the trail once the run has finished.
        assert wait_until(lambda: stack.run_state(run_id) == "Completed", 60, "run completion")
        events = audit_frame(engine)["event"].tolist()
        for e in ("planned", "asked", "approved", "executed", "validated", "succeeded"):
            assert e in events, events
        assert len(actions_frame(engine, "genetic_optimizer")) == 1
    finally:
        engine.dispose()
    # The same approval cannot be answered twice.
    again = cli(stack, "reject", approval_id, "-c", str(config), "--reason", "too late")
    assert again.returncode == 1 and "already approved by alice" in again.stderr


def test_reject_runs_nothing_and_stores_the_reason(
    stack: PrefectStack, platform: Platform, tmp_path: Path
) -> None:
    marker = tmp_path / "restarted"
    config = write_config(tmp_path, platform)
    data = json.loads(config.read_text())
    data["components"]["genetic_optimizer"]["restart_command"] = ["touch", str(marker)]
    config.write_text(json.dumps(data))
    run_cycle(config)
    kill(platform.services["genetic_optimizer"])
    approval_id = run_cycle(config)["asked"][0]
    run_id = suspended(stack, config, approval_id)
    out = cli(stack, "reject", approval_id, "-c", str(config), "--reason", "maintenance window")
    assert out.returncode == 0, out.stderr
    assert wait_until(lambda: stack.run_state(run_id) == "Completed", 60, "run completion")
    assert not marker.exists()
    engine = engine_for(config)
    try:
        appr = approvals_frame(engine).iloc[0]
        assert (appr["decision"], appr["reason"]) == ("rejected", "maintenance window")
        assert recoveries_frame(engine)["status"].tolist() == ["rejected"]
        assert actions_frame(engine).empty
    finally:
        engine.dispose()
    # An unknown id is a clear error.
    bad = cli(stack, "approve", "approval_00000000", "-c", str(config))
    assert bad.returncode == 2 and "no approval with id" in bad.stderr


def test_unanswered_approval_expires_and_is_notified(
    stack: PrefectStack, platform: Platform, tmp_path: Path
) -> None:
    with receiver(Reply(200)) as hook:
        config = write_config(
            tmp_path,
            platform,
            approval_timeout=4,
            notification_webhook=f"{hook.base}/hook/s3cr3t-token",
        )
        run_cycle(config)
        kill(platform.services["genetic_optimizer"])
        first = run_cycle(config)
        approval_id = first["asked"][0]
        time.sleep(5)  # past approval_timeout
        second = run_cycle(config)
        assert second["expired"] == [approval_id]
        events = [r.json()["event"] for r in hook.requests]
    assert "approval_requested" in events and "approval_expired" in events
    assert "issue_opened" in events
    requested = next(r.json() for r in hook.requests if r.json()["event"] == "approval_requested")
    assert requested["approval_id"] == approval_id
    assert requested["issue"]["component"] == "genetic_optimizer"
    assert requested["proposed_action"].startswith("restart genetic_optimizer")
    engine = engine_for(config)
    try:
        appr = approvals_frame(engine).iloc[0]
        assert appr["decision"] == "expired"
        assert recovery_status(config, int(appr["recovery_id"])) == "expired"
    finally:
        engine.dispose()
    assert not platform.services["genetic_optimizer"].alive()  # nothing was done


def test_pending_approval_does_not_block_the_next_cycle(
    stack: PrefectStack, platform: Platform, tmp_path: Path
) -> None:
    """One component waits for approval; a low-severity issue elsewhere is healed."""
    marker = tmp_path / "repo-restarted"
    config = write_config(tmp_path, platform)
    data = json.loads(config.read_text())
    data["components"]["theorem_repository"]["restart_command"] = ["touch", str(marker)]
    config.write_text(json.dumps(data))
    run_cycle(config)
    kill(platform.services["genetic_optimizer"])
    approval_id = run_cycle(config)["asked"][0]
    suspended(stack, config, approval_id)
    # A medium-severity log issue on the repository, written as detection would write it.
    from flows.detect import persist_detection
    from tasks.issues.grouping import GroupingPolicy

    engine = engine_for(config)
    now = datetime.now(UTC)
    persist_detection(
        engine,
        [
            AnomalyRecord(
                "log_signature",
                "theorem_repository",
                "log",
                "timeout",
                int(now.timestamp() * 1000),
                1.0,
                "medium",
                3.0,
            )
        ],
        {},
        now,
        GroupingPolicy(group_wait=0),
        {},
    )
    result = run_cycle(config)
    assert result["asked"] == [] and len(result["started"]) == 1
    wait_until(marker.exists, 90, "the automatic restart of the repository")
    wait_until(
        lambda: "succeeded" in recoveries_frame(engine)["status"].tolist(),
        90,
        "the automatic recovery to succeed",
    )
    pending = approvals_frame(engine, pending_only=True)
    assert pending["id"].tolist() == [approval_id]  # still waiting, untouched
    engine.dispose()


def test_serve_restart_keeps_a_pending_approval(
    stack: PrefectStack, platform: Platform, tmp_path: Path
) -> None:
    config = write_config(tmp_path, platform)
    svc = platform.services["genetic_optimizer"]
    run_cycle(config)
    kill(svc)
    approval_id = run_cycle(config)["asked"][0]
    run_id = suspended(stack, config, approval_id)
    time.sleep(3)  # the suspended run's process exits shortly after the state changes
    serve_cfg = stack.home / "serve.json"
    stack.stop_serve()  # SIGTERM
    assert stack.run_state(run_id) in ("Suspended", "Paused")
    stack.start_serve(serve_cfg)
    out = cli(stack, "approve", approval_id, "-c", str(config))
    assert out.returncode == 0, out.stderr
    wait_until(svc.alive, 120, "the restart after serve came back")
    engine = engine_for(config)
    try:
        wait_until(
            lambda: "succeeded" in recoveries_frame(engine)["status"].tolist(),
            90,
            "the recovery to be recorded",
        )
        assert len(actions_frame(engine, "genetic_optimizer")) == 1  # once
        assert len(recoveries_frame(engine)) == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("mode", "severity", "expect"),
    [
        ("learning", "critical", "record"),
        ("learning", "low", "record"),
        ("manual", "low", "ask"),
        ("automated", "critical", "launch"),
    ],
)
def test_modes(
    stack: PrefectStack, platform: Platform, tmp_path: Path, mode: str, severity: str, expect: str
) -> None:
    marker = tmp_path / "side-effect"
    config = write_config(tmp_path, platform, mode=mode)
    data = json.loads(config.read_text())
    data["components"]["theorem_repository"]["restart_command"] = ["touch", str(marker)]
    config.write_text(json.dumps(data))
    from flows.detect import persist_detection
    from tasks.issues.grouping import GroupingPolicy

    engine = engine_for(config)
    now = datetime.now(UTC) - timedelta(seconds=1)
    persist_detection(
        engine,
        [
            AnomalyRecord(
                "log_signature",
                "theorem_repository",
                "log",
                "timeout",
                int(now.timestamp() * 1000),
                1.0,
                severity,
                3.0,
            )
        ],
        {},
        now,
        GroupingPolicy(group_wait=0),
        {},
    )
    result = run_cycle(config)
    try:
        if expect == "record":
            assert result["recorded_only"] and not result["started"] and not result["asked"]
            rec = recoveries_frame(engine)
            assert rec["status"].tolist() == ["recorded_only"]
            assert rec["strategy"].tolist() == ["restart"]
            assert "recorded_only" in audit_frame(engine)["event"].tolist()
            assert not marker.exists()
            # ... and it is not proposed again every cycle.
            assert run_cycle(config)["recorded_only"] == []
        elif expect == "ask":
            assert result["asked"] and not marker.exists()
        else:
            assert result["asked"] == [] and result["started"]
            wait_until(marker.exists, 90, "the automatic restart")
    finally:
        engine.dispose()


def test_live_configuration_and_disabled(
    stack: PrefectStack, platform: Platform, tmp_path: Path
) -> None:
    config = write_config(tmp_path, platform)
    assert run_cycle(config)["mode"] == "supervised"
    data = json.loads(config.read_text())
    data["mode"] = "learning"
    config.write_text(json.dumps(data))
    assert run_cycle(config)["mode"] == "learning"  # no restart needed
    config.write_text(json.dumps({**data, "mode": "sometimes"}))  # a broken edit
    assert run_cycle(config)["mode"] == "learning"  # the last valid one stays
    config.write_text(json.dumps({**data, "enabled": False}))
    assert run_cycle(config) == {"enabled": False}


RECORDER = (
    "import sys, time, pathlib\n"
    "log = pathlib.Path(sys.argv[1])\n"
    "with log.open('a') as fh: fh.write(f'start {time.time()}\\n')\n"
    "time.sleep(2.0)\n"
    "with log.open('a') as fh: fh.write(f'end {time.time()}\\n')\n"
)


def test_at_most_max_concurrent_recoveries_run_at_once(stack: PrefectStack, tmp_path: Path) -> None:
    """Ten recovery runs at once against a limit of three (the serve fixture's setting)."""
    from flows.detect import persist_detection
    from flows.launch import start_deployment_run
    from storage.recoveries import create_recovery
    from tasks.issues.grouping import GroupingPolicy
    from tests.realpeers import wait_http

    log = tmp_path / "restarts.log"
    port_file = tmp_path / "toy.json"
    port_file.write_text("{}")
    from flows.demo.platform.launcher import free_port

    port = free_port()
    toy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.toy_service",
            "--port",
            str(port),
            "--config",
            str(port_file),
        ],
        cwd=REPO,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        names = [f"svc{i}" for i in range(10)]
        cfg = {
            "database_url": sqlite_url_for(tmp_path / "selfheal.db"),
            "mode": "automated",
            "max_concurrent_recoveries": 3,
            "components": {
                n: {
                    "health": {"url": f"http://127.0.0.1:{port}/health"},
                    "restart_command": [sys.executable, "-c", RECORDER, str(log)],
                }
                for n in names
            },
            "recovery": {"validation_timeout": 5},
        }
        config = tmp_path / "selfheal.json"
        config.write_text(json.dumps(cfg))
        engine = engine_for(config)
        now = datetime.now(UTC)
        persist_detection(
            engine,
            [
                AnomalyRecord(
                    "default",
                    n,
                    "metric",
                    "latency:mean",
                    int(now.timestamp() * 1000),
                    1.0,
                    "medium",
                )
                for n in names
            ],
            {},
            now,
            GroupingPolicy(group_wait=0),
            {},
        )
        runs = []
        for issue_id, name in enumerate(names, start=1):
            with engine.begin() as conn:
                rid = create_recovery(
                    conn,
                    issue_id=issue_id,
                    component=name,
                    issue_kind="metric",
                    strategy="restart",
                    rung=0,
                    mode="automated",
                    status="planned",
                )
            runs.append(start_deployment_run(issue_id, name, rid, None, str(config)))
        wait_until(
            lambda: all(stack.run_state(r) in ("Completed", "Failed", "Crashed") for r in runs),
            240,
            "all ten recovery runs to finish",
        )
        assert all(stack.run_state(r) == "Completed" for r in runs)
        events = []
        for line in log.read_text().split("\n"):
            if line:
                kind, ts = line.split()
                events.append((float(ts), 1 if kind == "start" else -1))
        running = peak = 0
        for _, delta in sorted(events):
            running += delta
            peak = max(peak, running)
        assert len(events) == 20  # every recovery ran, once
        assert peak <= 3, peak
        assert peak >= 2  # they did overlap: the limit, not luck, kept it at three
        assert (recoveries_frame(engine)["status"] == "succeeded").all()
        engine.dispose()
    finally:
        toy.kill()
        toy.wait()


def test_dead_webhook_never_fails_a_recovery_and_the_url_is_not_logged(
    stack: PrefectStack,
    platform: Platform,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flows.demo.platform.launcher import free_port

    secret = "t0ps3cret"
    dead = f"http://hook-user:{secret}@127.0.0.1:{free_port()}/hooks/{secret}?token={secret}"
    marker = tmp_path / "restarted"
    config = write_config(tmp_path, platform, mode="automated", notification_webhook=dead)
    data = json.loads(config.read_text())
    data["components"]["theorem_repository"]["restart_command"] = ["touch", str(marker)]
    config.write_text(json.dumps(data))
    from flows.detect import persist_detection
    from tasks.issues.grouping import GroupingPolicy

    engine = engine_for(config)
    now = datetime.now(UTC)
    persist_detection(
        engine,
        [
            AnomalyRecord(
                "log_signature",
                "theorem_repository",
                "log",
                "timeout",
                int(now.timestamp() * 1000),
                1.0,
                "medium",
            )
        ],
        {},
        now,
        GroupingPolicy(group_wait=0),
        {},
    )
    caplog.set_level("DEBUG")
    result = run_cycle(config)
    assert result["started"]
    wait_until(
        lambda: "succeeded" in recoveries_frame(engine)["status"].tolist(),
        90,
        "the recovery to succeed despite the dead webhook",
    )
    engine.dispose()
    captured = capsys.readouterr()
    text = captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in text
    assert secret not in stack.serve_log()
