"""The CLI finds the Prefect server ``selfheal serve`` started (recorded under
SELFHEAL_HOME) with no PREFECT_API_URL; with no server anywhere it says so in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.demo.platform.launcher import free_port
from flows.demo.runner import stop_process
from flows.prefect_server import api_record_path, recorded_api_url
from storage.approvals import approvals_frame
from storage.engine import make_engine, sqlite_url_for
from storage.issues import AnomalyRecord
from storage.migrate import ensure_schema
from tests.prefect_stack import REPO, drain_prefect_workers, wait_until

pytestmark = pytest.mark.integration


def clean_env(home: Path, prefect_home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SELFHEAL_", "PREFECT_API_URL", "PREFECT_HOME"))
    }
    env.update(
        {
            "SELFHEAL_HOME": str(home),
            "PREFECT_HOME": str(prefect_home),  # no profile that sets an API URL
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_no_server_anywhere_is_one_line_and_exit_1(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_env(home, tmp_path / "prefect-home")
    for args in (
        ["approve", "approval_0000aaaa"],
        ["reject", "approval_0000aaaa", "--reason", "x"],
    ):
        out = cli(env, *args)
        assert out.returncode == 1, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert "PREFECT_API_URL" in lines[0] and "selfheal serve" in lines[0]
        assert "Traceback" not in out.stderr and "temporary server" not in out.stdout + out.stderr
    # A record left by a serve that is gone is not trusted.
    record = api_record_path(home)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"api_url": f"http://127.0.0.1:{free_port()}/api"}))
    assert recorded_api_url(home) is None
    out = cli(env, "approve", "approval_0000aaaa")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out
    # PREFECT_API_URL wins, and a dead one is named.
    dead = f"http://127.0.0.1:{free_port()}/api"
    out = cli({**env, "PREFECT_API_URL": dead}, "approve", "approval_0000aaaa")
    assert out.returncode == 1 and dead in out.stderr and "Traceback" not in out.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, str]]:
    """``selfheal serve`` with its own local Prefect server (no PREFECT_API_URL)."""
    home = tmp_path / "home"
    env = clean_env(home, tmp_path / "prefect-home")
    config = tmp_path / "selfheal.json"
    config.write_text(
        json.dumps(
            {
                "database_url": sqlite_url_for(tmp_path / "selfheal.db"),
                "mode": "supervised",
                "components": {"svc": {"restart_command": ["true"]}},
                "detection": {"group_wait": 0, "behaviour": False},
                "recovery": {"validation_timeout": 1, "settle_time": 0.1, "measure_time": 0.1},
                "approval_timeout": 600,
            }
        )
    )
    log = (tmp_path / "serve.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "serve",
            "--config",
            str(config),
            "--no-cycle",
            "--no-dashboard",
            "--prefect-port",
            str(free_port()),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = wait_until(lambda: recorded_api_url(home), 150, "serve to record its server")
        assert isinstance(url, str)
        yield env, config, url
    finally:
        stop_process(proc)
        log.close()
    assert not api_record_path(home).exists()  # serve removes its record on exit


def _run_state(api_url: str, run_id: str) -> str:
    body = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10).json()
    return str((body.get("state") or {}).get("name"))


def test_approve_and_reject_find_the_server_serve_started(
    served: tuple[dict[str, str], Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, config, api_url = served
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cycle import cycle
    from flows.detect import persist_detection
    from flows.launch import deployment_available
    from flows.prefect_server import use_prefect_api
    from tasks.issues.grouping import GroupingPolicy

    engine = make_engine(json.loads(config.read_text())["database_url"])
    ensure_schema(engine)
    monkeypatch.setenv("SELFHEAL_HOME", env["SELFHEAL_HOME"])
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    def ask() -> str:
        now = datetime.now(UTC) - timedelta(seconds=1)
        record = AnomalyRecord(
            "log_signature",
            "svc",
            "log",
            f"fatal {now.timestamp()}",
            int(now.timestamp() * 1000),
            1.0,
            "critical",
            1.0,
        )
        persist_detection(
            engine, [record], {}, now, GroupingPolicy(group_wait=0, correlation_window=0), {}
        )
        # The test process finds the recorded server too (outside the session's test harness,
        # whose API URL would rightly win, as PREFECT_API_URL does).
        with temporary_settings(restore_defaults={PREFECT_API_URL}), use_prefect_api() as url:
            assert url == api_url
            wait_until(deployment_available, 90, "the recover deployment")
            result: dict[str, Any] = cycle(str(config))
            drain_prefect_workers()
        assert len(result["asked"]) == 1, result
        return str(result["asked"][0])

    def suspended_run(approval_id: str) -> str:
        def run_id() -> str | None:
            rows = approvals_frame(engine)
            rid = rows[rows["id"] == approval_id].iloc[0]["flow_run_id"]
            if isinstance(rid, str) and _run_state(api_url, rid) == "Suspended":
                return rid
            return None

        return str(wait_until(run_id, 120, f"the run of {approval_id} to be suspended"))

    try:
        first = ask()
        run = suspended_run(first)
        out = cli(env, "reject", first, "-c", str(config), "--reason", "not now")
        assert out.returncode == 0, out.stderr
        # The rejected run is not left Suspended: it reads the decision and ends.
        wait_until(lambda: _run_state(api_url, run) == "Completed", 120, "the rejected run to end")

        second = ask()
        run = suspended_run(second)
        out = cli(env, "approve", second, "-c", str(config), "--reason", "go")
        assert out.returncode == 0, out.stderr
        # Resumed through the server, or (serve's executor is watching this database) run
        # by serve at once; either way the suspended run does not stay Suspended.
        assert "resumed" in out.stdout or "executing in selfheal serve" in out.stdout, out.stdout
        wait_until(
            lambda: _run_state(api_url, run) not in ("Suspended", "Paused", "Scheduled"),
            120,
            "the approved run to go on",
        )
    finally:
        engine.dispose()
