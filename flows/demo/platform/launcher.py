"""Start and stop the simulated platform's processes (for the demo and the tests).

Each service is started the way its restart command starts it (``flows.demo.platform.ctl``),
so the pid file is the one truth about which process is the service, whoever restarted it.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from flows.demo.platform import ctl

# name -> the component it depends on
PLATFORM = {
    "theorem_repository": None,
    "proof_engine": "theorem_repository",
    "genetic_optimizer": None,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceHandle:
    name: str
    port: int
    log_path: Path
    config_path: Path
    state_dir: Path
    argv: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def restart_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "flows.demo.platform.ctl",
            "restart",
            self.name,
            "--state-dir",
            str(self.state_dir),
        ]

    @property
    def pid(self) -> int | None:
        return ctl._pid(self.state_dir, self.name)

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{self.name}.argv.json").write_text(json.dumps(self.argv))
        ctl.start(self.state_dir, self.name)

    def stop(self) -> None:
        ctl.stop(self.state_dir, self.name)

    def alive(self) -> bool:
        return ctl.alive(self.pid)


@dataclass
class Platform:
    workdir: Path
    services: dict[str, ServiceHandle] = field(default_factory=dict)

    def stop(self) -> None:
        for svc in self.services.values():
            svc.stop()


def service_argv(
    name: str,
    port: int,
    log: Path,
    config: Path,
    depends_on: str | None,
    rate: float,
    seed: int,
    extra: list[str] | None = None,
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "flows.demo.platform.service",
        "--name",
        name,
        "--port",
        str(port),
        "--log",
        str(log),
        "--config",
        str(config),
        "--rate",
        str(rate),
        "--seed",
        str(seed),
    ]
    if depends_on:
        argv += ["--depends-on", depends_on]
    return argv + list(extra or [])


def wait_healthy(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def start_platform(
    workdir: Path,
    rate: float = 20.0,
    seed: int = 0,
    names: tuple[str, ...] = tuple(PLATFORM),
    wait_s: float = 15.0,
) -> Platform:
    """Start the components, each healthy before the ones that depend on it start (so the
    proof engine never logs errors about a repository that is still starting)."""
    workdir.mkdir(parents=True, exist_ok=True)
    platform = Platform(workdir)
    for i, name in enumerate(names):
        dep = PLATFORM.get(name)
        dep_url = platform.services[dep].url if dep and dep in platform.services else None
        port = free_port()
        log, cfg = workdir / f"{name}.log", workdir / f"{name}.json"
        handle = ServiceHandle(
            name,
            port,
            log,
            cfg,
            workdir / "state",
            service_argv(name, port, log, cfg, dep_url, rate, seed + i),
        )
        handle.start()
        platform.services[name] = handle
        if not wait_healthy(handle.url, wait_s):
            platform.stop()
            raise RuntimeError(f"{name} did not become healthy on port {port}")
    return platform
