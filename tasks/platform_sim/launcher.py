"""Start and stop the simulated platform's processes (for the demo and the tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

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
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


@dataclass
class Platform:
    workdir: Path
    services: dict[str, ServiceHandle] = field(default_factory=dict)

    def stop(self) -> None:
        for svc in self.services.values():
            svc.stop()


def service_argv(
    name: str, port: int, log: Path, config: Path, depends_on: str | None, rate: float, seed: int
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "tasks.platform_sim.service",
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
    return argv


def start_platform(
    workdir: Path,
    rate: float = 20.0,
    seed: int = 0,
    names: tuple[str, ...] = tuple(PLATFORM),
    wait_s: float = 15.0,
) -> Platform:
    """Start the components (dependencies first) and wait until each answers /health."""
    workdir.mkdir(parents=True, exist_ok=True)
    platform = Platform(workdir)
    for i, name in enumerate(names):
        dep = PLATFORM.get(name)
        dep_url = platform.services[dep].url if dep and dep in platform.services else None
        port = free_port()
        log, cfg = workdir / f"{name}.log", workdir / f"{name}.json"
        handle = ServiceHandle(
            name, port, log, cfg, service_argv(name, port, log, cfg, dep_url, rate, seed + i)
        )
        handle.start()
        platform.services[name] = handle
    deadline = time.monotonic() + wait_s
    for svc in platform.services.values():
        while True:
            try:
                if httpx.get(svc.url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                platform.stop()
                raise RuntimeError(f"{svc.name} did not become healthy on port {svc.port}")
            time.sleep(0.1)
    return platform
