"""Start real peers for integration tests: node exporter, Prometheus. Skips when absent."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from flows.demo.platform.launcher import free_port


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (Debian package {package}; .ci/run installs it)")
    return path


def wait_http(url: str, timeout: float = 30.0, ok: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1.0).status_code == ok:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer {ok} within {timeout} s")
        time.sleep(0.2)


@contextmanager
def running(argv: list[str], health_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_http(health_url)
        except TimeoutError:
            proc.kill()
            raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-2000:]}") from None
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def node_exporter(tmp: Path) -> Iterator[str]:
    """A real prometheus-node-exporter on a free port; yields its /metrics URL."""
    binary = need("prometheus-node-exporter", "prometheus-node-exporter")
    port = free_port()
    argv = [binary, f"--web.listen-address=127.0.0.1:{port}"]
    url = f"http://127.0.0.1:{port}/metrics"
    with running(argv, url, tmp / "node_exporter.log"):
        yield url


@contextmanager
def prometheus_server(tmp: Path, scrape_url: str) -> Iterator[str]:
    """A real Prometheus scraping ``scrape_url`` every second; yields its base URL."""
    binary = need("prometheus", "prometheus")
    port = free_port()
    target = scrape_url.split("//", 1)[1].split("/", 1)[0]
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: node\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    argv = [
        binary,
        f"--config.file={cfg}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    base = f"http://127.0.0.1:{port}"
    with running(argv, base + "/-/ready", tmp / "prometheus.log"):
        yield base


def wait_for_points(prom: str, minimum: int = 4, timeout: float = 60.0) -> None:
    """Wait until Prometheus holds ``minimum`` points of its target's ``up`` series."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(
            prom + "/api/v1/query", params={"query": "count_over_time(up[1m])"}, timeout=5
        ).json()
        result = r["data"]["result"]
        if result and float(result[0]["value"][1]) >= minimum:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("Prometheus scraped nothing")
        time.sleep(0.5)
