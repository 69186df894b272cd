"""A local ``prefect server start`` as a child process (UI, schedules, pause expirations).

The temporary server Prefect starts when ``PREFECT_API_URL`` is unset has no UI and fires
no schedules, so ``selfheal serve`` and ``selfheal demo`` start a real one (SQLite under
``$SELFHEAL_HOME/prefect`` unless a PostgreSQL URL is given), wait for it to be healthy,
and stop it on exit. Prefect's own retention is switched on: flow runs and events older
than ``retention`` are vacuumed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class PrefectServerError(RuntimeError):
    pass


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
            try:
                if httpx.get(self.api_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise PrefectServerError(
            f"prefect server not healthy after {timeout:.0f} s; see {self.log_path}"
        )

    def stop(self, timeout: float = 15.0) -> None:
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
