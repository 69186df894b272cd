"""A local ``prefect server start`` as a child process (UI, schedules, pause expirations).

The temporary server Prefect starts when ``PREFECT_API_URL`` is unset has no UI and fires
no schedules, so ``selfheal serve`` and ``selfheal demo`` start a real one (SQLite under
``$SELFHEAL_HOME/prefect`` unless a PostgreSQL URL is given), wait for it to be healthy,
and stop it on exit. Prefect's own retention is switched on: flow runs and events older
than ``retention`` are vacuumed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

API_RECORD = "api.json"  # under the server's home: where the CLI finds the server


class PrefectServerError(RuntimeError):
    pass


class PrefectUnreachable(RuntimeError):
    """No Prefect server to talk to (the message says what to set)."""


def drain_prefect_clients(timeout: float = 5.0) -> None:
    """Send this process's queued logs and events while the server still answers, and stop
    their workers. At exit they would be sent to a stopped server and fail loudly ("All
    connection attempts failed"); and Prefect caches one events worker per client type, not
    per API URL, so a worker left running keeps sending to the server it was made for after
    the process has moved on to another one (a stopped worker is replaced on next use)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with suppress(Exception):
            worker.drain_all(timeout=timeout)


def api_record_path(selfheal_home: Path) -> Path:
    """Where ``selfheal serve`` records the API URL of the server it started."""
    return selfheal_home / "prefect" / API_RECORD


HEALTH_TIMEOUT_S = 10.0  # a busy server answers /health slowly; a dead one refuses at once


def _answers(api_url: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    try:
        return httpx.get(api_url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def recorded_api_url(selfheal_home: Path, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """The API URL recorded under ``SELFHEAL_HOME`` by a running ``selfheal serve`` (None
    when there is no record, it is unreadable, or its server does not answer)."""
    path = api_record_path(selfheal_home)
    try:
        url = json.loads(path.read_text()).get("api_url")
    except (OSError, ValueError, AttributeError):
        return None
    return url if isinstance(url, str) and _answers(url, timeout) else None


def find_api_url(selfheal_home: Path, configured: str | None) -> str:
    """``configured`` (PREFECT_API_URL, from the environment or Prefect's profile) wins;
    else the server ``selfheal serve`` recorded under ``selfheal_home``. Raises
    ``PrefectUnreachable`` with one line saying what to set when neither answers."""
    if configured:
        if _answers(configured):
            return configured
        raise PrefectUnreachable(
            f"PREFECT_API_URL={configured} does not answer: start that Prefect server or "
            "set PREFECT_API_URL to one that runs"
        )
    found = recorded_api_url(selfheal_home)
    if found:
        return found
    raise PrefectUnreachable(
        "no Prefect server found: start `selfheal serve` (it records its server under "
        f"SELFHEAL_HOME={selfheal_home}) or set PREFECT_API_URL "
        "(e.g. http://127.0.0.1:4200/api)"
    )


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def server_env(
    home: Path, port: int, database_url: str | None, retention_days: float = 7
) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            # Prefect's database grows ~16 KB per task run: vacuum flow runs and events.
            "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
            "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(int(retention_days * 86400)),
            "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"P{max(int(retention_days), 1)}D",
            "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "WARNING"),
        }
    )
    if database_url:
        url = database_url
        scheme, _, rest = url.partition("://")
        if scheme.split("+")[0] in ("postgresql", "postgres"):
            url = "postgresql+asyncpg://" + rest  # Prefect's server drives PostgreSQL async
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = url
    return env


@dataclass
class LocalPrefectServer:
    home: Path
    port: int = 4200
    database_url: str | None = None
    retention_days: float = 7.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def start(self, timeout: float = 90.0) -> None:
        if port_in_use("127.0.0.1", self.port):
            raise PrefectServerError(
                f"port {self.port} is already in use; if a Prefect server runs there, use it "
                f"with PREFECT_API_URL=http://127.0.0.1:{self.port}/api, or pick another port"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--analytics-off",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                env=server_env(self.home, self.port, self.database_url, self.retention_days),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrefectServerError(
                    f"prefect server exited with {self.process.returncode}; see {self.log_path}"
                )
            if _answers(self.api_url, timeout=2):
                self._record()
                return
            time.sleep(0.5)
        self.stop()
        raise PrefectServerError(
            f"prefect server not healthy after {timeout:.0f} s; see {self.log_path}"
        )

    @property
    def record_path(self) -> Path:
        return self.home / API_RECORD

    def _record(self) -> None:
        """Write the API URL where the CLI looks for it (atomically)."""
        assert self.process is not None
        body = {"api_url": self.api_url, "server_pid": self.process.pid, "owner_pid": os.getpid()}
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(self.record_path)

    def _forget(self) -> None:
        try:
            if json.loads(self.record_path.read_text()).get("owner_pid") == os.getpid():
                self.record_path.unlink()
        except (OSError, ValueError, AttributeError):
            pass

    def stop(self, timeout: float = 15.0) -> None:
        self._forget()
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue


@contextmanager
def use_prefect_api(required: bool = True) -> Iterator[str | None]:
    """Run the block against the Prefect server to use: ``PREFECT_API_URL`` (environment or
    Prefect profile) wins, else the one ``selfheal serve`` recorded under
    ``SELFHEAL_HOME``. With neither: ``PrefectUnreachable`` when ``required`` (nothing
    was done, no temporary server started), else Prefect's own default (yields None)."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from flows.runtime import selfheal_home

    configured = get_current_settings().api.url
    try:
        url = find_api_url(selfheal_home(), configured)
    except PrefectUnreachable:
        if required:
            raise
        yield None
        return
    if url == configured:
        yield url
        return
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url  # for subprocesses the block starts
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
