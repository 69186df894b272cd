"""Failures are loud: a restart command that always fails ends the recovery's Prefect run
Failed with the reason, marks the issue escalated, and says so in ``selfheal status``,
``selfheal issues`` and the webhook (real service, real command, real HTTP receiver)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flows.demo.platform.launcher import start_platform
from storage.engine import make_engine, sqlite_url_for
from storage.issues import issues_frame
from storage.recoveries import recoveries_frame
from tests.prefect_stack import REPO, wait_until
from tests.webhook_receiver import receiver

pytestmark = pytest.mark.integration

ALWAYS_FAILS = [sys.executable, "-c", "import sys; print('cannot start'); sys.exit(3)"]


def test_always_failing_restart_is_loud(
    prefect_server: None,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect.client.orchestration import get_client

    from flows.cycle import cycle

    platform = start_platform(tmp_path / "platform", names=("genetic_optimizer",))
    svc = platform.services["genetic_optimizer"]
    db = sqlite_url_for(tmp_path / "selfheal.db")
    try:
        with receiver() as hook:
            cfg = tmp_path / "selfheal.json"
            cfg.write_text(
                json.dumps(
                    {
                        "database_url": db,
                        "mode": "automated",
                        "notification_webhook": f"{hook.base}/hook",
                        "components": {
                            "genetic_optimizer": {
                                "metrics_url": f"{svc.url}/metrics",
                                "health": {"url": f"{svc.url}/health"},
                                "restart_command": ALWAYS_FAILS,
                            }
                        },
                        "detection": {"group_wait": 0, "behaviour": False},
                        "recovery": {
                            "validation_timeout": 3,
                            "settle_time": 0.2,
                            "backoff": {"base": 0.2, "cap": 1.0},
                        },
                    }
                )
            )
            cycle(str(cfg))
            assert svc.pid is not None
            os.killpg(svc.pid, signal.SIGKILL)
            wait_until(lambda: not svc.alive(), 10, "the kill")
            capfd.readouterr()
            caplog.clear()
            result = cycle(str(cfg))  # nothing serves `recover`: it runs in process
            assert result["started"], result
            engine = make_engine(db)
            try:
                issues = issues_frame(engine)
                down = issues[issues["kind"] == "down"]
                assert down["status"].tolist() == ["escalated"], issues[["kind", "status"]]
                rec = recoveries_frame(engine)
                assert set(rec["status"]) == {"failed"}, rec[["strategy", "status", "error"]]
            finally:
                engine.dispose()

            def ended() -> list[Any] | None:
                # This test's recover run (the session's server holds other tests' runs),
                # once it has reached its final state.
                ids = [UUID(str(rid)) for rid in rec["flow_run_id"].dropna()]
                with get_client(sync_client=True) as client:
                    found = [client.read_flow_run(rid) for rid in ids]
                final = found and all(r.state is not None and r.state.is_final() for r in found)
                return found if final else None

            runs = wait_until(ended, 30, "the recover run to end")
            failed = [r for r in runs if r.state is not None and r.state.is_failed()]
            assert len(failed) == 1, [(r.name, r.state) for r in runs]
            message = failed[0].state.message or ""  # type: ignore[union-attr]
            assert "recovery failed" in message and "restart" in message, message
            # The console, or the log records where Prefect's console handler holds a stream
            # an earlier test's capture replaced (this test's capture cannot see that one).
            logged = [ln for ln in capfd.readouterr().err.splitlines() if "WARNING" in ln]
            logged += [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            loud = {ln[ln.index("issue #") :] for ln in logged if "escalated:" in ln}
            assert len(loud) == 1, logged  # one WARNING line, with the reason
            assert message in next(iter(loud))
            wait_until(
                lambda: any(r.json()["event"] == "recovery_failed" for r in hook.requests),
                10,
                "the webhook",
            )
            body = next(r.json() for r in hook.requests if r.json()["event"] == "recovery_failed")
            assert body["detail"]["issue_status"] == "escalated"
            assert "recovery failed" in body["detail"]["reason"]
        env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
        status = subprocess.run(
            [sys.executable, "-m", "flows.cli", "status", "-c", str(cfg)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr
        assert "escalated issues:    1" in status.stdout, status.stdout
        listed = subprocess.run(
            [sys.executable, "-m", "flows.cli", "issues", "-c", str(cfg)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "escalated" in listed.stdout, listed.stdout
    finally:
        platform.stop()
