"""The demo's faults: what each one does to a simulated component, and what should fix it."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from flows.demo.platform.launcher import Platform


@dataclass(frozen=True)
class FaultSpec:
    name: str
    component: str
    expected_strategy: str
    description: str
    body: dict[str, Any] = field(default_factory=dict)  # POST /fault
    config_change: dict[str, Any] = field(default_factory=dict)  # written into its config
    affects: tuple[str, ...] = ()  # other components whose symptoms belong to this fault
    timeout_s: float = 75.0


SCRIPT: tuple[FaultSpec, ...] = (
    FaultSpec(
        "crash",
        "genetic_optimizer",
        "restart",
        "the process dies (SIGKILL)",
        body={"type": "crash"},
    ),
    FaultSpec(
        "memory_leak",
        "proof_engine",
        "restart",
        "memory grows by 25 MB/s",
        body={"type": "leak", "mb_per_s": 25},
    ),
    FaultSpec(
        "latency_spike",
        "genetic_optimizer",
        "restart",
        "every request takes 1.2 s longer",
        body={"type": "latency", "seconds": 1.2},
    ),
    FaultSpec(
        "error_burst",
        "theorem_repository",
        "restart",
        "300 OutOfMemoryError lines in its log",
        body={"type": "error_burst", "lines": 300},
    ),
    FaultSpec(
        "bad_configuration",
        "genetic_optimizer",
        "reconfigure",
        "its configuration is changed to pool_size 1, timeout 50 ms (restarts keep it)",
        config_change={"pool_size": 1, "timeout_ms": 50},
    ),
    FaultSpec(
        "failing_dependency",
        "theorem_repository",
        "circuit_breaker",
        "its storage backend fails for 60 s (restarts do not help); the proof engine, "
        "which calls it, fails with it",
        body={"type": "outage", "seconds": 60},
        affects=("proof_engine",),
        timeout_s=90.0,
    ),
    FaultSpec(
        "workload_shift",
        "genetic_optimizer",
        "genetic",
        "its request mix changes (small hot set, slow back-end calls): the defaults now "
        "serve it badly and only a search of pool_size, cache_size and timeout_ms together "
        "finds settings that do (restarts keep the mix)",
        config_change={"workload_mix": "shifted"},
        timeout_s=240.0,
    ),
)


def select_faults(names: str | None) -> tuple[FaultSpec, ...]:
    """The script's faults named in ``names`` (comma-separated), in script order; all when
    ``names`` is empty. Raises ``ValueError`` naming an unknown fault."""
    if not names:
        return SCRIPT
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = [spec.name for spec in SCRIPT]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown fault {', '.join(unknown)}; the script has {', '.join(known)}")
    return tuple(spec for spec in SCRIPT if spec.name in wanted)


def inject(spec: FaultSpec, platform: Platform) -> dict[str, Any]:
    """Apply the fault to the running platform; returns what was done (for the record)."""
    svc = platform.services[spec.component]
    if spec.name == "crash":
        pid = svc.pid
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
        return {"killed_pid": pid}
    if spec.config_change:
        path = Path(svc.config_path)
        data = json.loads(path.read_text()) if path.exists() else {}
        before = {k: data.get(k) for k in spec.config_change}
        data.update(spec.config_change)
        path.write_text(json.dumps(data))
        return {"config_before": before, "config_after": spec.config_change}
    resp = httpx.post(f"{svc.url}/fault", json=spec.body, timeout=5)
    resp.raise_for_status()
    return {"fault": spec.body}
