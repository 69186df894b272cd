"""``selfheal demo``: start the platform, a Prefect server, ``selfheal serve`` and the
dashboard; run the detection cycle every few seconds; inject a scripted sequence of faults;
answer approvals the way an operator would (``flows.api.approve_recovery``, the code path
of ``selfheal approve``); print a verdict per fault and exit non-zero if a fault was
missed or not healed."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.demo.platform.faults import FaultSpec, inject, select_faults
from flows.demo.settings import demo_config
from flows.prefect_server import drain_prefect_clients
from flows.runtime import selfheal_home

# The detectors need min_points (10) points of a 3 s cycle before they score anything: a
# metric fault picked first with `--faults` must find them ready.
WARMUP_S = 33.0
SETTLE_S = 2.0
CYCLE_S = 3.0
APPROVAL_DELAY_S = 1.0  # how long the "operator" looks at a pending approval first
OPERATOR = "demo-operator"


def say(text: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S}  {text}", flush=True)


@dataclass
class FaultRun:
    spec: FaultSpec
    injection_id: int
    injected_at: datetime
    done_at: datetime | None = None
    healed: bool = False


@dataclass
class DemoState:
    run_id: str
    workdir: Path
    config_path: Path
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    script: tuple[FaultSpec, ...] = ()  # the faults this run injects, in order
    faults: list[FaultRun] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    seen_approvals: dict[str, float] = field(default_factory=dict)


def free_or(port: int) -> int:
    from flows.demo.platform.launcher import free_port
    from flows.prefect_server import port_in_use

    return port if not port_in_use("127.0.0.1", port) else free_port()


def free_other_than(taken: int) -> int:
    from flows.demo.platform.launcher import free_port

    port = free_port()
    while port == taken:
        port = free_port()
    return port


def launch_serve(config_path: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``selfheal serve`` for the recover deployment (the cycle runs here, in process)."""
    argv = [
        sys.executable,
        "-m",
        "flows.cli",
        "serve",
        "--config",
        str(config_path),
        "--no-cycle",
        "--no-dashboard",
    ]
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    yield_cpu_to_platform(proc.pid)  # the flow-run processes it starts inherit it
    return proc


def yield_cpu_to_platform(pid: int) -> None:
    """Lower the CPU priority of one of the demo's own orchestration processes.

    The demo runs the platform and its healer on one machine (two cores here). A recover
    flow run starts a Python process that imports Prefect for several seconds of CPU; at
    equal priority that slows the platform's request handling, and the detectors rightly
    see latency and throughput anomalies on healthy components: false positives the demo
    itself caused. In production the platform runs elsewhere; here the orchestration
    yields to it (nice 10), which changes nothing when the machine is idle.
    """
    # Not permitted, or not POSIX: run at equal priority.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, pid, 10)


def route_prefect_logs(log_path: Path) -> logging.Handler:
    """Prefect's lines (every task run, and the warnings an injected fault causes, such as
    a scrape of a killed component) go to ``log_path``; the terminal keeps the demo's
    narrative and Prefect's errors."""
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.ERROR)
    to_file = logging.FileHandler(log_path)
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("prefect").addHandler(to_file)
    return to_file


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def answer_approvals(state: DemoState, mode: str) -> None:
    """Show pending approvals, then answer them through the same path as the CLI."""
    from flows.api import approve_recovery, list_approvals

    now = time.monotonic()
    for a in list_approvals(pending_only=True, config_path=str(state.config_path)):
        aid = a["id"]
        if aid in state.answered:
            continue
        if aid not in state.seen_approvals:
            # Answered from the notification, as `selfheal approve` can be: serve acts on
            # the decision whether or not the waiting run is already up in the UI.
            state.seen_approvals[aid] = now
            say(f"approval pending: {aid} [{a['severity']}] {a['proposed_action']}")
            link = a.get("ui_url") or "(its run is starting)"
            say(f"    answer in the Prefect UI: {link}  or: selfheal approve {aid}")
        if now - state.seen_approvals[aid] < APPROVAL_DELAY_S:
            continue
        result = approve_recovery(
            aid,
            reason=f"approved by the demo ({mode} mode)",
            by=OPERATOR,
            config_path=str(state.config_path),
        )
        state.answered.add(aid)
        say(f"approved {aid} as {OPERATOR}: {result['run']}")


def fault_healed(state: DemoState, run: FaultRun) -> bool:
    from flows.runtime import open_runtime
    from storage.issues import issues_frame
    from storage.recoveries import recoveries_frame

    rt = open_runtime(str(state.config_path))
    try:
        rec = recoveries_frame(rt.engine)
        issues = issues_frame(rt.engine)
    finally:
        rt.close()
    comps = {run.spec.component, *run.spec.affects}
    ids = set(issues[issues["component"].isin(comps)]["id"])
    ok = rec[
        (rec["status"] == "succeeded")
        & rec["issue_id"].isin(ids)
        & (rec["created_at"] >= run.injected_at)
    ]
    return not ok.empty


def mark_fault_cleared(state: DemoState, run: FaultRun) -> None:
    """The ground truth's end: labels for tuning cover injection to clearance."""
    from flows.runtime import open_runtime
    from storage.faults import mark_cleared

    rt = open_runtime(str(state.config_path))
    try:
        with rt.engine.begin() as conn:
            mark_cleared(conn, run.injection_id, run.done_at or datetime.now(UTC))
    finally:
        rt.close()


def record_fault(state: DemoState, spec: FaultSpec, detail: dict[str, Any]) -> FaultRun:
    from flows.runtime import open_runtime
    from storage.faults import record_injection

    now = datetime.now(UTC)
    rt = open_runtime(str(state.config_path))
    try:
        with rt.engine.begin() as conn:
            iid = record_injection(
                conn,
                state.run_id,
                spec.component,
                spec.name,
                spec.expected_strategy,
                now,
                {**detail, "affects": list(spec.affects), "description": spec.description},
            )
    finally:
        rt.close()
    return FaultRun(spec, iid, now)


def report(state: DemoState) -> int:
    import pandas as pd

    from flows.api import get_status
    from flows.demo.platform.verdicts import evaluate, table
    from flows.runtime import open_runtime
    from storage.approvals import approvals_frame
    from storage.faults import faults_frame
    from storage.issues import anomalies_frame, issues_frame
    from storage.recoveries import recoveries_frame
    from tasks.severity import Severity

    rt = open_runtime(str(state.config_path))
    try:
        faults = faults_frame(rt.engine, state.run_id)
        verdicts, fps = evaluate(
            faults,
            anomalies_frame(rt.engine),
            issues_frame(rt.engine),
            recoveries_frame(rt.engine),
            approvals_frame(rt.engine),
            end=pd.Timestamp.now(tz="UTC"),
            start=pd.Timestamp(state.started) + pd.Timedelta(seconds=WARMUP_S),
        )
        status = get_status(rt=rt)
    finally:
        rt.close()
    print()
    print(table(verdicts))
    print()
    missed = [v for v in verdicts if not v.detected]
    unhealed = [v for v in verdicts if not v.recovered]
    not_run = len(state.script) - len(verdicts)
    print(
        f"faults: {len(verdicts)} injected, {len(verdicts) - len(missed)} detected, "
        f"{len(verdicts) - len(unhealed)} healed"
        + (f", {not_run} not run (time ran out)" if not_run else "")
    )
    recovery = json.loads(state.config_path.read_text())["recovery"]
    floor = Severity.parse(recovery["min_severity"])
    confirm = Severity.parse(recovery.get("confirm_below", "low"))
    # As the planner decides: at or above min_severity, and below confirm_below only once
    # it fired in more than one sample.
    acted = [
        f
        for f in fps
        if Severity.parse(f["severity"]) >= floor
        and (Severity.parse(f["severity"]) >= confirm or f["confirmed"])
    ]
    print(
        f"false positives: {len(acted)} that would be acted on, "
        f"{len(fps) - len(acted)} informational (below {floor.label}, or below "
        f"{confirm.label} and seen in one sample only)"
        + "".join(f"\n    #{f['id']} {f['severity']} {f['title']}" for f in acted)
    )
    rate = status["auto_healing_rate"]
    mttr = status["mean_time_to_recover_s"]
    print(
        f"auto-healing rate: {'n/a' if rate is None else f'{rate:.0f} %'} "
        f"({status['healed_automatically']} of {status['issues_acted_on']} issues healed "
        f"with no human); mean time to recover: {'n/a' if mttr is None else f'{mttr:.1f} s'}"
    )
    summary = {
        "verdicts": [v.as_dict() for v in verdicts],
        "false_positives": len(acted),
        "false_positives_informational": len(fps) - len(acted),
        "status": status,
        "not_run": not_run,
    }
    (state.workdir / "demo-result.json").write_text(json.dumps(summary, indent=2, default=str))
    ok = not missed and not unhealed and not not_run
    print(f"demo {'PASSED' if ok else 'FAILED'} (details: {state.workdir / 'demo-result.json'})")
    return 0 if ok else 1


class Operator(threading.Thread):
    """Answers approvals the moment they are worth answering (polls every half second),
    through ``flows.api.approve_recovery``: the code path of ``selfheal approve``."""

    def __init__(self, state: DemoState, mode: str) -> None:
        super().__init__(name="demo-operator", daemon=True)
        self.state, self.mode = state, mode
        self.stopping = threading.Event()
        # Prefect's settings (the API URL) live in context variables, which a new thread
        # does not inherit: run the loop in a copy of the creator's context.
        self.context = contextvars.copy_context()

    def run(self) -> None:
        self.context.run(self._loop)

    def _loop(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                answer_approvals(self.state, self.mode)
            except Exception as exc:  # noqa: BLE001 - keep answering; say what went wrong
                say(f"operator: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


# A cycle may fail once (a slow answer from the server under load); this many in a row is a
# broken run.
MAX_FAILED_CYCLES = 5


def why_cycles_fail(
    server: Any, serve: subprocess.Popen[bytes], workdir: Path, prefect_log: Path
) -> str | None:
    """The process that died under the cycles, with where its log is (None: all alive)."""
    if server is not None and server.process is not None and server.process.poll() is not None:
        return (
            f"the local Prefect server exited with code {server.process.returncode}; "
            f"its log: {server.log_path}"
        )
    if serve.poll() is not None:
        return (
            f"selfheal serve exited with code {serve.returncode}; its log: {workdir / 'serve.log'}"
        )
    return None


def run_demo(
    mode: str = "supervised",
    duration: float = 240.0,
    seed: int = 0,
    keep_running: bool = False,
    faults: str | None = None,
) -> int:
    """Run the demo; ``faults`` names the faults to inject (comma-separated, default all).
    No fault is injected after ``duration`` seconds; the demo ends when the last injected
    fault has its verdict (healed, or its own timeout)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    from flows.config_load import build_config
    from flows.dashboard.server import DashboardServer
    from flows.demo.platform.launcher import start_platform
    from flows.launch import deployment_available
    from flows.prefect_server import LocalPrefectServer
    from storage.engine import sqlite_url_for

    script = select_faults(faults)
    rng = random.Random(seed)
    home = selfheal_home()
    run_id = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}-seed{seed}"
    workdir = home / "demo" / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + duration
    with ExitStack() as stack:
        say(f"demo {run_id} in {workdir} (mode {mode}, seed {seed})")
        api_url = os.environ.get("PREFECT_API_URL")
        server = None
        if not api_url:
            # The server takes several seconds to start: start the platform meanwhile.
            server = LocalPrefectServer(workdir / "prefect", free_or(4200))
            say(f"starting a local Prefect server on {server.ui_url}")
            starter = threading.Thread(target=server.start, name="prefect-server")
            starter.start()
            stack.callback(server.stop)
            api_url = server.api_url
        # 10 requests/s per component: enough signal, and CPU left for Prefect on 2 cores.
        platform = start_platform(workdir / "platform", rate=10, seed=seed)
        stack.callback(platform.stop)
        say("platform up: " + ", ".join(f"{n} :{s.port}" for n, s in platform.services.items()))
        # Two ports taken now: the dashboard's (bound at once, so nothing started before it
        # serves can take it), and serve's /metrics (serve starts first).
        config_path = workdir / "selfheal.json"
        dash = DashboardServer(str(config_path), port=8080)
        dash_port = dash.bind(any_port_if_taken=True)
        stack.callback(dash.stop)
        config = demo_config(
            platform, sqlite_url_for(workdir / "selfheal.db"), mode, free_other_than(dash_port)
        )
        build_config(config, environ={})  # the demo's own configuration must validate
        config_path.write_text(json.dumps(config, indent=2))
        state = DemoState(run_id, workdir, config_path, script=script)
        if server is not None:
            starter.join()
            if not server.process or server.process.poll() is not None:
                raise RuntimeError(f"the Prefect server did not start; see {server.log_path}")
            yield_cpu_to_platform(server.process.pid)
        # In-process cycles need no heartbeat (it costs a second per run).
        stack.enter_context(
            temporary_settings(
                updates={PREFECT_API_URL: api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
            )
        )
        prefect_log = workdir / "prefect-runs.log"
        stack.callback(logging.getLogger("prefect").removeHandler, route_prefect_logs(prefect_log))
        # Runs before the server stops and the settings are restored (callbacks are LIFO).
        stack.callback(drain_prefect_clients)
        env = {**os.environ, "PREFECT_API_URL": api_url, "SELFHEAL_HOME": str(home)}
        serve = launch_serve(config_path, env, workdir / "serve.log")
        stack.callback(stop_process, serve)
        dash.start_in_thread()
        say(f"dashboard on {dash.url}; Prefect UI on {api_url.removesuffix('/api')}")
        if mode in ("supervised", "manual"):
            operator = Operator(state, mode)
            operator.start()
            stack.callback(operator.stop)

        from flows.cycle import cycle

        say(f"warming up for {WARMUP_S:.0f} s (detectors learn the normal range)")
        pending = list(script)
        next_at = time.monotonic() + WARMUP_S
        current: FaultRun | None = None
        touched_at: dict[str, float] = {}  # component → when its last fault had its verdict
        side_effect_window = max(
            config["detection"]["action_grace"], config["detection"]["correlation_window"]
        )
        served = False
        failed_cycles = 0
        # ``duration`` bounds the injecting; a fault already injected is still followed to
        # its verdict (healed, or its own timeout), so no fault is judged half-way.
        while time.monotonic() < deadline or (current is not None and current.done_at is None):
            t0 = time.monotonic()
            try:
                result = cycle(str(config_path), dispatch="serve")
                failed_cycles = 0
            except Exception as exc:  # noqa: BLE001 - name what failed, then go on or stop
                failed_cycles += 1
                say(f"detection cycle failed: {type(exc).__name__}: {exc}")
                culprit = why_cycles_fail(server, serve, workdir, prefect_log)
                if culprit is not None or failed_cycles >= MAX_FAILED_CYCLES:
                    say(
                        "demo FAILED: "
                        + (culprit or f"{failed_cycles} cycles in a row failed")
                        + f"; the cycles' log: {prefect_log}"
                    )
                    return 2
                time.sleep(CYCLE_S)
                continue
            for issue in result.get("new_issues", []):
                quiet = (
                    " (silenced: a side effect of a recovery in progress)"
                    if issue.get("status") == "silenced"
                    else ""
                )
                say(f"issue #{issue['id']} [{issue['severity']}] {issue['title']}{quiet}")
            if not served and deployment_available():
                served = True
                say("selfheal serve is serving the recover deployment")
            if current is not None and current.done_at is None:
                age = (datetime.now(UTC) - current.injected_at).total_seconds()
                over = age > current.spec.timeout_s
                if fault_healed(state, current) or over:
                    current.done_at = datetime.now(UTC)
                    current.healed = not over
                    mark_fault_cleared(state, current)
                    say(
                        f"fault {current.spec.name}: "
                        + ("healed" if current.healed else "NOT healed in time")
                    )
                    next_at = time.monotonic() + SETTLE_S + rng.uniform(0, 1.5)
                    for name in (current.spec.component, *current.spec.affects):
                        touched_at[name] = time.monotonic()
            ready = current is None or current.done_at is not None
            if ready and pending:
                # What shows on a component within the side-effect window of its
                # recovery is recorded as that recovery's side effect: a fault injected
                # there would be judged as one, so a fault on a component recovered
                # lately waits the window out (a real gap, see tasks.issues.grouping).
                for name in (pending[0].component, *pending[0].affects):
                    if name in touched_at:
                        next_at = max(next_at, touched_at[name] + side_effect_window + 1)
            if ready and served and time.monotonic() >= next_at:
                if not pending or time.monotonic() >= deadline:
                    if pending:
                        say(f"time is up: {len(pending)} fault(s) not injected")
                    break
                spec = pending.pop(0)
                try:
                    detail = inject(spec, platform)
                except Exception as exc:  # noqa: BLE001 - e.g. the component is still down
                    say(f"could not inject {spec.name} on {spec.component}: {exc}")
                    detail = {"error": f"not injected: {exc}"}
                current = record_fault(state, spec, detail)
                state.faults.append(current)
                say(f"injected {spec.name} on {spec.component}: {spec.description}")
            # A new issue is actionable after the group wait: the next cycle decides then.
            pause = CYCLE_S - (time.monotonic() - t0)
            if result.get("new_issues"):
                pause = min(pause, config["detection"]["group_wait"] + 0.1)
            time.sleep(max(0.0, pause))
        else:
            say(f"time is up: {len(pending)} fault(s) not injected")
        code = report(state)
        if keep_running:
            say("still running: Ctrl-C stops the platform, serve, the server and the dashboard")
            try:
                while True:
                    cycle(str(config_path), dispatch="serve")
                    time.sleep(CYCLE_S)
            except KeyboardInterrupt:
                say("stopping")
        return code
