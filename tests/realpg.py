"""A real PostgreSQL of its own and Debian's prometheus-postgres-exporter pointed at it,
light steady traffic, and selfheal healing it (the cycle on a loop in this process, with
the probe scheduler ``selfheal serve`` starts). Used by tests/test_real_postgres.py and
bench/real.py. Skips (pytest) or raises ``Missing`` (bench) when a part is absent.

PostgreSQL refuses to run as root: initdb, pg_ctl and the restart command run as the
``postgres`` system user through ``runuser -u postgres --``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from flows.demo.platform.launcher import free_port

EXPORTER = "/usr/bin/prometheus-postgres-exporter"


class Missing(RuntimeError):
    """A part of the real setup is not installed or cannot run here."""


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise Missing("PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin)")
    return Path(found[-1]).parent


def check_parts() -> None:
    """Raise ``Missing`` naming what is absent."""
    pg_bin()
    if not Path(EXPORTER).exists():
        raise Missing(
            "prometheus-postgres-exporter not installed (Debian package "
            "prometheus-postgres-exporter; .ci/run installs it)"
        )
    if shutil.which("pg_isready") is None:
        raise Missing("pg_isready not installed (Debian package postgresql-client)")
    if shutil.which("runuser") is None or os.geteuid() != 0:
        raise Missing("needs root and runuser to run PostgreSQL as the postgres user")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise Missing("no postgres system user") from None


@dataclass
class RealPg:
    root: Path
    port: int
    bin: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def as_postgres(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv]

    def start_argv(self) -> list[str]:
        """The restart command: start the server and wait until it accepts connections."""
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        return self.as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", opts, "-w", "-t", "30", "start",
        )  # fmt: skip

    def isready_argv(self) -> list[str]:
        # -U: without it pg_isready logs in as the OS user and the server logs a FATAL
        # "role does not exist" at every probe (a new ERROR template for the log detector).
        return [
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-t",
            "1",
            "-q",
        ]

    def start(self) -> None:
        out = subprocess.run(self.start_argv(), capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {out.stdout}{out.stderr}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.signal(signal.SIGCONT)
        subprocess.run(
            self.as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                             "-w", "stop"),
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def signal(self, sig: int) -> int:
        pid = self.postmaster_pid()
        if pid is None:
            raise ProcessLookupError("no postmaster.pid")
        os.kill(pid, sig)
        return pid

    def answers(self) -> bool:
        return subprocess.run(self.isready_argv(), check=False, timeout=10).returncode == 0

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}?sslmode=disable"


@contextmanager
def postgres_instance() -> Iterator[RealPg]:
    """initdb + pg_ctl start on a free port in a temporary folder owned by postgres."""
    check_parts()
    root = Path(tempfile.mkdtemp(prefix="selfheal-realpg-"))
    user = pwd.getpwnam("postgres")
    os.chown(root, user.pw_uid, user.pw_gid)
    pg = RealPg(root, free_port(), pg_bin())
    try:
        init = subprocess.run(
            pg.as_postgres(str(pg.bin / "initdb"), "-D", str(pg.data), "-A", "trust",
                           "-U", "postgres", "--no-sync"),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_exporter(pg: RealPg, log: Path) -> Iterator[str]:
    """Debian's exporter pointed at ``pg``; yields its metrics URL."""
    port = free_port()
    # connect_timeout: a hung server reads pg_up 0 within 2 s instead of hanging the scrape.
    env = dict(os.environ, DATA_SOURCE_NAME=pg.dsn() + "&connect_timeout=2")
    argv = [EXPORTER, f"--web.listen-address=127.0.0.1:{port}"]
    url = f"http://127.0.0.1:{port}/metrics"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if "pg_up 1" in httpx.get(url, timeout=5).text:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"exporter did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Traffic:
    """Light steady load: a few queries a second on one connection, reconnecting."""

    def __init__(self, pg: RealPg, per_second: float = 4.0) -> None:
        self.pg, self.pause = pg, 1.0 / per_second
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        import psycopg

        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.pg.dsn(), autocommit=True, connect_timeout=2)
                    conn.execute("CREATE TABLE IF NOT EXISTS t (id serial, v float8)")
                conn.execute("INSERT INTO t (v) VALUES (random())")
                conn.execute("SELECT count(*), avg(v) FROM t").fetchone()
                self.ok += 1
            except Exception:  # noqa: BLE001 - the server is being killed on purpose
                self.failed += 1
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
            self._stop.wait(self.pause)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def real_config(
    pg: RealPg,
    metrics_url: str,
    db_url: str,
    probe: str | None,
    period_s: float = 2.0,
    interval: int = 5,
) -> dict[str, Any]:
    """Automated mode, a liveness probe (``exec`` pg_isready, ``tcp``, or none), the
    restart command, the server's log; every other option at its default."""
    comp: dict[str, Any] = {
        "kind": "database",
        "metrics_url": metrics_url,
        "log_paths": [str(pg.log)],
        "restart_command": {"argv": pg.start_argv(), "timeout": 60},
    }
    if probe == "exec":
        comp["probes"] = {"liveness": {"exec": pg.isready_argv(), "period_s": period_s}}
    elif probe == "tcp":
        comp["probes"] = {"liveness": {"tcp": f"127.0.0.1:{pg.port}", "period_s": period_s}}
    return {
        "mode": "automated",
        "detection_interval": interval,
        "dashboard_enabled": False,
        "database_url": db_url,
        "components": {"pg": comp},
    }


@dataclass
class Healer:
    """selfheal on this machine: the probe scheduler as ``selfheal serve`` starts it, and
    the cycle flow on a loop every ``detection_interval`` (in this process: starting
    ``serve`` with its own Prefect server takes most of a minute on a loaded machine)."""

    config_path: Path
    errors: list[str] = field(default_factory=list)
    cycles: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="healer", daemon=True)
        self._probes: Any = None

    def __enter__(self) -> Healer:
        from flows.config_load import load_config
        from flows.serve import _start_probes

        config = load_config(str(self.config_path))
        self.interval = config.detection_interval
        self._probes = _start_probes(config)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(180)
        if self._probes is not None:
            self._probes.stop()

    def _loop(self) -> None:
        from flows.cycle import cycle

        while not self._stop.is_set():
            started = time.monotonic()
            try:
                cycle(str(self.config_path))
                self.cycles += 1
            except Exception as exc:  # noqa: BLE001 - recorded, the loop goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def write_config(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(json.dumps(body, indent=2))
    return path
