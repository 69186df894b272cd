"""``selfheal serve`` as a long-lived process: cycle cadence, idle cost, approval latency.

Measured on whatever machine runs it (these 2-core boxes are shared and loaded: read the
ratios). A Prefect server of its own (``LocalPrefectServer`` on a free port) and three
healthy simulated components; ``selfheal serve`` runs in a subprocess against that server
(so its CPU is its own, the server's is reported beside it).

Figures:

``serve.cycle_interval_p95_s``, ``serve.cycle_interval_mean_s``, ``serve.cycle_start_jitter_max_s``
    With ``detection_interval`` 5: the gaps between the starts of consecutive in-process
    cycle flow runs (Prefect's own ``start_time``); jitter is the largest |gap − 5|.
``serve.idle_cpu_s_per_hour`` and its baseline ``serve.idle_cpu_s_per_hour_per_run_process``
    CPU seconds (user + system, the process and all its children) per hour with three
    healthy components at the default 30 s interval: today's serve (cycle in process)
    against the previous design, measured in the same run: ``prefect.serve`` of the cycle
    deployment on the same schedule, a new flow-run process per cycle.
    ``serve.idle_cpu_ratio`` is the first over the second (target ≤ 0.2).
``serve.prefect_server_cpu_s_per_hour``
    The Prefect server's CPU over the in-process window (both designs need a server).
``serve.stop_s``
    SIGTERM → the serve process has exited (budget 10 s).
``approval.to_action_p50_s``, ``approval.to_action_after_restart_s``
    Supervised mode: from the decision being recorded (``approvals.decided_at``, written
    by ``selfheal approve`` first) to the restart command starting (a wrapper stamps the
    time before it execs the real command), with serve running; and for an approval that
    was pending across a restart of serve. ``approval.return_to_action_p50_s`` measures
    from ``selfheal approve`` returning instead: it is negative when the restart started
    before the CLI process had finished exiting.
``approval.to_action_resume_s``, ``approval.return_to_action_resume_s`` (baseline)
    The same with a serve that does not watch this database: the approval goes through
    Prefect (resume the suspended run, a new flow-run process), as before.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import REPO
from flows.demo.platform.launcher import Platform, free_port, start_platform
from flows.prefect_server import LocalPrefectServer

NAMES = ("theorem_repository", "genetic_optimizer", "proof_checker")
STAMP = (
    "import os, sys, time\n"
    "open(sys.argv[1], 'a').write(f'{time.time()}\\n')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
LEGACY = """
import sys
import prefect
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from flows.cycle import cycle
dep = cycle.to_deployment(
    name="per-run-process", interval=float(sys.argv[2]), parameters={"config_path": sys.argv[1]},
    concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy="CANCEL_NEW"))
prefect.serve(dep, print_starting_message=False)
"""


def tree_cpu(proc: psutil.Process) -> float:
    """User + system seconds of a process, its reaped children and its live descendants."""
    total = 0.0
    try:
        t = proc.cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def write_config(path: Path, platform: Platform, db: Path, **extra: Any) -> Path:
    comps = {}
    for name, svc in platform.services.items():
        comps[name] = {
            "metrics_url": f"{svc.url}/metrics",
            "log_paths": [str(svc.log_path)],
            "health": {"url": f"{svc.url}/health"},
            "restart_command": svc.restart_argv,
        }
    cfg = {
        "database_url": f"sqlite:///{db}",
        "components": comps,
        "detection": {"group_wait": 0, "behaviour": False},
        "recovery": {"validation_timeout": 15, "settle_time": 0.5, "measure_time": 0.5},
        **extra,
    }
    path.write_text(json.dumps(cfg))
    return path


class Serve:
    def __init__(self, home: Path, api_url: str, config: Path, cycle: bool = True) -> None:
        self.log = home / f"serve-{time.time_ns()}.log"  # one file per serve
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SELFHEAL_")},
            "PREFECT_API_URL": api_url,
            "SELFHEAL_HOME": str(home),
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        args = ["serve", "--config", str(config), "--no-dashboard"]
        if not cycle:
            args.append("--no-cycle")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *args],
            cwd=REPO,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while "serving" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("serve did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.2)
        time.sleep(1.5)  # the runner registers before it polls

    def stop(self) -> float:
        t0 = time.monotonic()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return time.monotonic() - t0


def cycle_starts(after: float) -> list[float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["cycle"])),
            sort=FlowRunSort.START_TIME_ASC,
            limit=200,
        )
    return sorted(
        r.start_time.timestamp()
        for r in runs
        if r.deployment_id is None and r.start_time and r.start_time.timestamp() > after
    )


def measure_interval(home: Path, api: str, platform: Platform, window: float) -> dict[str, float]:
    cfg = write_config(home / "c5.json", platform, home / "c5.db", detection_interval=5)
    serve = Serve(home, api, cfg)
    try:
        t0 = time.time()
        time.sleep(8)  # first cycle: imports and warm-up
        warm = time.time()
        time.sleep(window)
        starts = [s for s in cycle_starts(t0) if s >= warm]
    finally:
        stop_s = serve.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    if len(gaps) < 3:
        raise RuntimeError(f"only {len(starts)} cycles in {window:.0f} s; see {serve.log}")
    gaps.sort()
    p95 = gaps[min(len(gaps) - 1, round(0.95 * (len(gaps) - 1)))]
    return {
        "serve.cycle_interval_p95_s": round(p95, 2),
        "serve.cycle_interval_mean_s": round(statistics.mean(gaps), 2),
        "serve.cycle_start_jitter_max_s": round(max(abs(g - 5.0) for g in gaps), 2),
        "serve.cycles_measured": float(len(gaps)),
        "serve.stop_s": round(stop_s, 2),
    }


def cpu_window(proc: psutil.Process, server: psutil.Process, window: float) -> tuple[float, float]:
    a, sa = tree_cpu(proc), tree_cpu(server)
    time.sleep(window)
    b, sb = tree_cpu(proc), tree_cpu(server)
    return (b - a) * 3600 / window, (sb - sa) * 3600 / window


def measure_idle(
    home: Path, api: str, server_pid: int, platform: Platform, window: float
) -> dict[str, float]:
    cfg = write_config(home / "c30.json", platform, home / "c30.db")  # default interval 30
    server = psutil.Process(server_pid)
    serve = Serve(home, api, cfg)
    try:
        time.sleep(35)  # past the first cycle (imports, first scrape)
        ours, server_cpu = cpu_window(psutil.Process(serve.proc.pid), server, window)
    finally:
        serve.stop()
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_LOGGING_LEVEL": "WARNING"}
    legacy = subprocess.Popen(
        [sys.executable, "-c", LEGACY, str(cfg), "30"],
        cwd=REPO,
        env=env,
        stdout=(home / "legacy.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        time.sleep(35)
        theirs, _ = cpu_window(psutil.Process(legacy.pid), server, window)
    finally:
        os.killpg(legacy.pid, signal.SIGTERM)
        try:
            legacy.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(legacy.pid, signal.SIGKILL)
            legacy.wait()
    return {
        "serve.idle_cpu_s_per_hour": round(ours, 1),
        "serve.idle_cpu_s_per_hour_per_run_process": round(theirs, 1),
        "serve.idle_cpu_ratio": round(ours / theirs, 3) if theirs else -1.0,
        "serve.prefect_server_cpu_s_per_hour": round(server_cpu, 1),
    }


def _approval_config(home: Path, platform: Platform, name: str, stamps: Path) -> Path:
    cfg = write_config(
        home / f"{name}.json",
        platform,
        home / f"{name}.db",
        mode="supervised",
        approval_timeout=900,
    )
    data = json.loads(cfg.read_text())
    # The same fault again and again: no cooldown after a successful restart, and a
    # resolve_after short enough that each kill opens an issue of its own.
    data["recovery"]["cooldown"] = 0
    data["recovery"]["backoff"] = {"base": 0.1, "cap": 0.2, "reset_after": 1, "max_restarts": 1000}
    data["detection"]["resolve_after"] = 5
    data["detection"]["action_grace"] = 0  # a kill right after a restart is a new fault
    cfg.write_text(json.dumps(data))
    data = json.loads(cfg.read_text())
    svc = platform.services["genetic_optimizer"]
    data["components"] = {
        "genetic_optimizer": {
            **data["components"]["genetic_optimizer"],
            "restart_command": [sys.executable, "-c", STAMP, str(stamps), *svc.restart_argv],
        }
    }
    cfg.write_text(json.dumps(data))
    return cfg


def _ask(cfg: Path, platform: Platform) -> tuple[str, str]:
    """Kill the component; a cycle asks; wait until the approval's run is suspended."""
    from prefect.client.orchestration import get_client

    from flows.cycle import cycle
    from flows.demo.platform.launcher import wait_healthy

    svc = platform.services["genetic_optimizer"]
    if not svc.alive():
        subprocess.run(svc.restart_argv, check=True, capture_output=True, cwd=REPO)
        wait_healthy(svc.url, 30)
    cycle(str(cfg))
    assert svc.pid is not None
    os.killpg(svc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while svc.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(5):
        result = cycle(str(cfg))
        if result["asked"]:
            break
        time.sleep(1)
    run_id, approval_id = result["started"][0], result["asked"][0]
    from uuid import UUID

    deadline = time.monotonic() + 120
    while True:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(run_id)).state
        if state is not None and state.name == "Suspended":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"approval run {run_id} never suspended ({state})")
        time.sleep(0.3)
    time.sleep(2)
    return run_id, approval_id


def _why_no_restart(cfg: Path, approval_id: str, serve_log: Path | None) -> str:
    """What the database and the serve log say, for a restart that never started."""
    from storage.approvals import get_approval
    from storage.engine import make_engine
    from storage.recoveries import recoveries_frame

    engine = make_engine(json.loads(cfg.read_text())["database_url"])
    try:
        approval = get_approval(engine, approval_id)
        recoveries = recoveries_frame(engine).to_string(max_colwidth=60)
    finally:
        engine.dispose()
    log = serve_log.read_text(errors="replace")[-4000:] if serve_log else "(no serve log)"
    return f"approval: {approval}\nrecoveries:\n{recoveries}\nserve log ({serve_log}):\n{log}"


def _wait_finished(cfg: Path, timeout: float = 90) -> None:
    """Until every recovery of this database has an outcome (the serve is stopped after)."""
    from storage.engine import make_engine
    from storage.recoveries import recoveries_frame

    engine = make_engine(json.loads(cfg.read_text())["database_url"])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            finished = recoveries_frame(engine)["finished_at"]
            if len(finished) and finished.notna().all():
                return
            time.sleep(0.3)
    finally:
        engine.dispose()


def _approve_and_time(
    home: Path,
    api: str,
    cfg: Path,
    approval_id: str,
    stamps: Path,
    serve_log: Path | None = None,
) -> tuple[float, float]:
    """(decision recorded → restart command started, ``selfheal approve`` returned → started)."""
    before = stamps.read_text().count("\n") if stamps.exists() else 0
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SELFHEAL_")},
        "PREFECT_API_URL": api,
        "SELFHEAL_HOME": str(home),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "approve", approval_id, "-c", str(cfg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    returned = time.time()
    if out.returncode != 0:
        raise RuntimeError(f"selfheal approve failed: {out.stderr[-2000:]}")
    deadline = time.monotonic() + 120
    while True:
        lines = stamps.read_text().split() if stamps.exists() else []
        if len(lines) > before:
            started = float(lines[before])
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                "the restart command never started after the approval\n"
                + _why_no_restart(cfg, approval_id, serve_log)
            )
        time.sleep(0.05)
    from storage.approvals import get_approval
    from storage.engine import make_engine

    engine = make_engine(json.loads(cfg.read_text())["database_url"])
    try:
        decided = get_approval(engine, approval_id)["decided_at"].timestamp()
    finally:
        engine.dispose()
    return started - decided, started - returned


def measure_approvals(home: Path, api: str, platform: Platform, repeat: int) -> dict[str, float]:
    """Each approval on a database of its own (a fresh issue: an issue already acted on is
    never planned again), with a serve watching that database."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    stamps = home / "restarts.txt"
    out: dict[str, float] = {}
    with temporary_settings(updates={PREFECT_API_URL: api}):
        times, after_return = [], []
        for i in range(repeat):
            cfg = _approval_config(home, platform, f"sup{i}", stamps)
            serve = Serve(home, api, cfg, cycle=False)
            try:
                _, approval_id = _ask(cfg, platform)
                decided, returned = _approve_and_time(
                    home, api, cfg, approval_id, stamps, serve.log
                )
                times.append(decided)
                after_return.append(returned)
                _wait_finished(cfg)
            finally:
                serve.stop()
        out["approval.to_action_p50_s"] = round(statistics.median(times), 2)
        out["approval.to_action_max_s"] = round(max(times), 2)
        out["approval.return_to_action_p50_s"] = round(statistics.median(after_return), 2)
        cfg = _approval_config(home, platform, "restarted", stamps)
        serve = Serve(home, api, cfg, cycle=False)
        try:
            _, approval_id = _ask(cfg, platform)
        finally:
            serve.stop()
        serve = Serve(home, api, cfg, cycle=False)  # restarted while the approval waits
        try:
            out["approval.to_action_after_restart_s"] = round(
                _approve_and_time(home, api, cfg, approval_id, stamps, serve.log)[0], 2
            )
        finally:
            serve.stop()
        # Baseline: a serve that does not watch this database (its own config): the
        # approval resumes the suspended run through Prefect, a new process, as before.
        cfg = _approval_config(home, platform, "resume", stamps)
        other = write_config(home / "other.json", platform, home / "other.db")
        serve = Serve(home, api, other, cycle=False)
        try:
            _, approval_id = _ask(cfg, platform)
            decided, returned = _approve_and_time(home, api, cfg, approval_id, stamps)
            out["approval.to_action_resume_s"] = round(decided, 2)
            out["approval.return_to_action_resume_s"] = round(returned, 2)
        finally:
            serve.stop()
    return out


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "serve.idle_cpu_s_per_hour": "serve.idle_cpu_s_per_hour_per_run_process",
    "approval.to_action_p50_s": "approval.to_action_resume_s",
}


def run(quick: bool = False) -> dict[str, float]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        server = LocalPrefectServer(home / "prefect", free_port())
        server.start()
        platform = start_platform(home / "platform", names=NAMES)
        try:
            assert server.process is not None
            settings = temporary_settings(updates={PREFECT_API_URL: server.api_url})
            settings.__enter__()
            only = os.environ.get("BENCH_SERVE_ONLY", "interval,idle,approvals")
            phases = {
                "interval": lambda: measure_interval(
                    home, server.api_url, platform, 45 if quick else 120
                ),
                "idle": lambda: measure_idle(
                    home, server.api_url, server.process.pid, platform, 120 if quick else 300
                ),
                "approvals": lambda: measure_approvals(
                    home, server.api_url, platform, 2 if quick else 5
                ),
            }
            for name, phase in phases.items():
                if name in only.split(","):
                    part = phase()
                    print(json.dumps(part), flush=True)  # kept if a later phase fails
                    figures.update(part)
            settings.__exit__(None, None, None)
        finally:
            platform.stop()
            server.stop()
    figures["serve.machine_loadavg_1m"] = round(os.getloadavg()[0], 2)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
