"""Run one probe once: exec, tcp, http or metric. Never raises; a failure is a result.

- ``exec`` runs an argument list without a shell, in its own process group; healthy on
  exit 0. At the timeout the whole group is killed (SIGKILL), so a hung child dies too.
- ``tcp`` is healthy when ``host:port`` accepts a connection within the timeout.
- ``http`` is healthy on the expected status (and body substring when given).
- ``metric`` scrapes the component's metrics endpoint and compares one series to a value.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import httpx

from tasks.ingest.http import redact_url
from tasks.ingest.prometheus_text import parse_exposition
from tasks.ingest.records import IngestReport
from tasks.probes.spec import ProbeResult, ProbeSpec

_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def run_probe(spec: ProbeSpec) -> ProbeResult:
    """Run ``spec`` once; the result's timestamp is when the run ended."""
    start = time.monotonic()
    try:
        ok, detail = _RUNNERS[spec.kind](spec)
    except Exception as exc:  # noqa: BLE001 - a probe that cannot run is a failed probe
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    latency = time.monotonic() - start
    return ProbeResult(
        spec.component, spec.name, ok, latency, int(time.time() * 1000), detail[:500]
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def run_exec(spec: ProbeSpec) -> tuple[bool, str]:
    try:
        proc = subprocess.Popen(
            list(spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed as a whole
            close_fds=True,
        )
    except OSError as exc:
        return False, f"cannot run {spec.argv[0]}: {exc.strerror or exc}"
    try:
        code = proc.wait(timeout=spec.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return False, f"{spec.argv[0]} timed out after {spec.timeout_s:g} s (group killed)"
    finally:
        # A child that outlived its parent (daemonised) still goes with the group.
        if proc.returncode is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    return code == 0, f"{spec.argv[0]} exited with {code}"


def run_tcp(spec: ProbeSpec) -> tuple[bool, str]:
    try:
        with socket.create_connection((spec.host, spec.port), timeout=spec.timeout_s):
            return True, f"{spec.host}:{spec.port} accepted a connection"
    except TimeoutError:
        return False, f"{spec.host}:{spec.port}: no answer in {spec.timeout_s:g} s"
    except OSError as exc:
        return False, f"{spec.host}:{spec.port}: {exc.strerror or exc}"


def run_http(spec: ProbeSpec) -> tuple[bool, str]:
    where = redact_url(spec.url)
    try:
        resp = httpx.get(spec.url, timeout=spec.timeout_s)
    except httpx.HTTPError as exc:
        return False, f"{where}: {type(exc).__name__}"
    if resp.status_code != spec.expect_status:
        return False, f"{where} answered {resp.status_code}, expected {spec.expect_status}"
    if spec.body_contains is not None and spec.body_contains not in resp.text:
        return False, f"{where} answered {resp.status_code} without {spec.body_contains!r}"
    return True, f"{where} answered {resp.status_code}"


def run_metric(spec: ProbeSpec) -> tuple[bool, str]:
    where = redact_url(spec.url)
    try:
        resp = httpx.get(spec.url, timeout=spec.timeout_s)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        return False, f"{where}: {type(exc).__name__}"
    frame = parse_exposition(resp.text, spec.component, 0, IngestReport("probe"))
    rows = frame[frame["metric"] == spec.series] if not frame.empty else frame
    if spec.labels and not rows.empty:
        wanted = dict(spec.labels)
        rows = rows[
            rows["labels"].map(lambda t: all(json.loads(t).get(k) == v for k, v in wanted.items()))
        ]
    if rows.empty:
        return False, f"{spec.series} not reported by {where}"
    value = float(rows["value"].iloc[-1])
    ok = _OPS[spec.op](value, spec.value)
    return ok, f"{spec.series} = {value:g} ({'' if ok else 'not '}{spec.op} {spec.value:g})"


_RUNNERS: dict[str, Callable[[ProbeSpec], tuple[bool, str]]] = {
    "exec": run_exec,
    "tcp": run_tcp,
    "http": run_http,
    "metric": run_metric,
}
