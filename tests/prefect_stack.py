"""A real Prefect server plus ``selfheal serve`` (the recover deployment), for the tests
that need suspension, resumption and the UI's run pages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from uuid import UUID

from flows.demo.platform.launcher import free_port
from flows.demo.runner import stop_process
from flows.prefect_server import LocalPrefectServer

REPO = Path(__file__).resolve().parents[1]


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.3
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def drain_prefect_workers() -> None:
    """Flush Prefect's background log and event senders to the current API.

    Left undrained they keep events for a server that is gone, and the session's test
    harness later waits on them at its own exit.
    """
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:
            pass  # never started
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


class PrefectStack:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.server = LocalPrefectServer(home / "prefect", free_port())
        self.serve_proc: subprocess.Popen[bytes] | None = None
        self._settings = ExitStack()

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PREFECT_API_URL": self.server.api_url,
            "SELFHEAL_HOME": str(self.home / "selfheal"),
        }

    def start(self) -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self.server.start()
        self._settings.enter_context(
            temporary_settings(updates={PREFECT_API_URL: self.server.api_url})
        )

    def start_serve(self, config: Path, cycle: bool = False) -> None:
        from flows.launch import deployment_available

        log = (self.home / "serve.log").open("ab")
        self.serve_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "serve",
                "--config",
                str(config),
                *([] if cycle else ["--no-cycle"]),
                "--no-dashboard",
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(deployment_available, 90, "the recover deployment to be served")
        time.sleep(1.0)  # the runner registers before it starts polling

    def stop_serve(self) -> None:
        stop_process(self.serve_proc)

    def stop(self) -> None:
        self.stop_serve()
        drain_prefect_workers()  # while the server still answers, as the test harness does
        self._settings.close()
        self.server.stop()

    def run_state(self, run_id: str) -> str | None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
        return run.state.name if run.state else None

    def slots_in_use(self, limit: str) -> int:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return int(client.read_global_concurrency_limit_by_name(limit).active_slots)

    def serve_log(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")
