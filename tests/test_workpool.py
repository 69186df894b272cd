"""Beyond one machine: a Prefect server on PostgreSQL, a process work pool, the deployments
of prefect.yaml (``prefect deploy --all``), two ``prefect worker`` processes picking up runs,
and the cycle storing into our PostgreSQL database. Skipped without PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from flows.demo.platform.launcher import free_port, start_platform
from flows.prefect_server import LocalPrefectServer
from storage.engine import make_engine
from storage.metrics import count_samples, series_frame
from tests.conftest import PG_ENV, fresh_pg_database
from tests.prefect_stack import REPO, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    if not os.environ.get(PG_ENV):
        pytest.skip(f"PostgreSQL not configured: set {PG_ENV} (as .ci/run does)")
    ours, drop_ours = fresh_pg_database()
    prefects, drop_prefects = fresh_pg_database()
    try:
        yield ours, prefects
    finally:
        drop_ours()
        drop_prefects()


def prefect_cli(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    # A worker does not always stop on the first SIGTERM (see the Prefect notes): twice.
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            continue


def test_cycle_runs_on_two_workers_over_postgresql(pg: tuple[str, str], tmp_path: Path) -> None:
    ours, prefects = pg
    server = LocalPrefectServer(tmp_path / "prefect", free_port(), database_url=prefects)
    assert make_url(prefects).drivername.startswith("postgresql")
    platform = start_platform(tmp_path / "platform", names=("theorem_repository",))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        server.start()
        repo_svc = platform.services["theorem_repository"]
        cfg = tmp_path / "selfheal.json"
        cfg.write_text(
            json.dumps(
                {
                    "database_url": ours,
                    "components": {
                        "theorem_repository": {
                            "metrics_url": f"{repo_svc.url}/metrics",
                            "log_paths": [str(repo_svc.log_path)],
                            "health": {"url": f"{repo_svc.url}/health"},
                        }
                    },
                    "detection": {"behaviour": False},
                }
            )
        )
        env = {
            **os.environ,
            "PREFECT_API_URL": server.api_url,
            "SELFHEAL_PROJECT_DIR": str(REPO),
            "SELFHEAL_CONFIG": str(cfg),
            "SELFHEAL_HOME": str(tmp_path / "home"),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        prefect_cli(env, "work-pool", "create", "selfheal", "--type", "process")
        deployed = prefect_cli(env, "deploy", "--all", "--no-prompt", timeout=300)
        for name in ("cycle", "recover", "nightly", "daily"):
            assert re.search(rf"Deployment '.+/{name}' successfully created", deployed), deployed
        logs = []
        for name in ("worker-a", "worker-b"):
            log = tmp_path / f"{name}.log"
            logs.append(log)
            with log.open("wb") as fh:
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "prefect",
                            "worker",
                            "start",
                            "--pool",
                            "selfheal",
                            "--name",
                            name,
                        ],
                        cwd=REPO,
                        env=env,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            # Cycles one after another (the deployment drops overlapping ones), then several
            # retention runs at once so both workers have something to take.
            cycles = []
            for _ in range(3):
                for _attempt in range(5):
                    run = run_deployment("cycle/cycle", timeout=240, poll_interval=2)
                    # The server frees the deployment's slot shortly after the previous
                    # run's final state: a run created in between is dropped (CANCEL_NEW),
                    # as a scheduled cycle would be. Try again, as the next one would.
                    state = run.state
                    if state is None or "concurrency limit" not in (state.message or ""):
                        break
                    time.sleep(2)
                assert run.state is not None and run.state.is_completed(), run.state
                cycles.append(str(run.id))
            batch = [str(run_deployment("retention/daily", timeout=0).id) for _ in range(6)]

            def finished() -> bool:
                with get_client(sync_client=True) as client:
                    states = [client.read_flow_run(r).state for r in batch]  # type: ignore[arg-type]
                return all(s is not None and s.is_final() for s in states)

            wait_until(finished, 300, "the retention runs")
        text = {log.name: log.read_text(errors="replace") for log in logs}
        taken = {name: {r for r in cycles + batch if r in body} for name, body in text.items()}
        assert all(taken.values()), {k: len(v) for k, v in taken.items()}
        assert set().union(*taken.values()) == set(cycles + batch)
        engine = make_engine(ours)
        try:
            assert count_samples(engine) > 0
            assert "hms_requests_total" in set(series_frame(engine)["metric"])
        finally:
            engine.dispose()
    finally:
        for proc in workers:
            stop_worker(proc)
        server.stop()
        platform.stop()
        time.sleep(0.5)
