"""``selfheal serve``: everything on one machine in one command.

Uses ``PREFECT_API_URL`` when it is set; otherwise starts a local Prefect server (UI at
http://127.0.0.1:4200). Upserts the recovery concurrency limit and, in one long-lived
process:

- **the cycle loop** runs the ``cycle`` flow in process every ``detection_interval``
  seconds (a visible Prefect flow run with its task runs, logs and artifacts, but no new
  interpreter per cycle); a failed scrape between cycles starts the next cycle at once;
- **the executor** (a bounded pool of threads) starts queued automatic recoveries and
  approved ones at once (a decision recorded by any process wakes it; it also polls every
  half second), as in-process ``recover`` flow runs that hold the same strict global
  concurrency limit; an approval answered while serve was down runs once when it comes
  back;
- **the runner** serves the deployments (``recover`` for approval-gated runs, which
  suspend in the UI; ``cycle`` for ad-hoc runs from the UI or CLI; nightly tuning; daily
  retention);
- the dashboard when enabled.

Ctrl-C or SIGTERM stops all of it within seconds: recoveries in flight are recorded as
interrupted and resumed (or expired, when too old) on the next start; suspended approval
runs stay suspended in Prefect.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine

from flows.config import SelfHealConfig
from flows.prefect_server import LocalPrefectServer
from flows.runtime import selfheal_home
from storage.types import utcnow

log = logging.getLogger("selfheal.serve")


def deployments(config: SelfHealConfig, config_path: str | None, cycle: bool = True) -> list[Any]:
    """The same set prefect.yaml declares, for ``prefect.serve``."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    from flows.cycle import cycle as cycle_flow
    from flows.maintenance import retention
    from flows.recover import recover

    params = {"config_path": config_path}
    out = [recover.to_deployment(name="recover", tags=["selfheal", "recovery"])]
    if cycle:
        out.append(
            # No schedule: serve's cycle loop runs the cycle in process on its interval; the
            # deployment is there for ad-hoc runs from the UI or ``prefect deployment run``.
            cycle_flow.to_deployment(
                name="cycle",
                parameters=params,
                tags=["selfheal"],
                description="One detection cycle (run by hand; selfheal serve runs it on "
                f"its interval of {config.detection_interval:g} s in process).",
                # One cycle at a time; a late one is dropped, not queued behind.
                concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy="CANCEL_NEW"),
            )
        )
    out.append(
        retention.to_deployment(
            name="daily", cron="30 3 * * *", parameters=params, tags=["selfheal", "maintenance"]
        )
    )
    try:
        from flows.tune import tune
    except ImportError:
        return out
    out.append(
        tune.to_deployment(
            name="nightly", cron="0 2 * * *", parameters=params, tags=["selfheal", "tuning"]
        )
    )
    return out


POLL_S = 0.5  # the executor looks for work this often (and at once when a cycle queued some,
# or when the decision watch sees an approval decided)
SCRAPE_WATCH_S = 1.0  # between cycles, a component whose metrics port refuses starts one
STOP_BUDGET_S = 8.0  # SIGTERM → exit, everything included


@contextmanager
def _no_heartbeat() -> Iterator[None]:
    """In-process flow runs need no heartbeat thread (it costs a second per run)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _thread(target: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread that runs in a copy of the creating thread's context, so it talks to
    the Prefect server serve is using (``temporary_settings`` lives in a context variable,
    which a plain thread does not inherit: it would start a temporary server of its own)."""
    ctx = contextvars.copy_context()
    return threading.Thread(target=ctx.run, args=(target,), name=name, daemon=True)


class CycleLoop:
    """Runs the cycle flow in process on its interval (start jitter: the loop's own wake-up
    latency); a late cycle starts at once and the schedule moves on from there."""

    def __init__(
        self,
        config_path: str | None,
        interval_s: float,
        stop: threading.Event,
        after_cycle: Callable[[], None] = lambda: None,
        max_history: int = 2000,
        group_wait_s: float = float("inf"),
    ) -> None:
        self.config_path = config_path
        self.interval_s = float(interval_s)
        self.group_wait_s = group_wait_s
        self.stop = stop
        self.after_cycle = after_cycle
        self.starts: deque[float] = deque(maxlen=max_history)  # wall-clock epoch seconds
        self.durations: deque[float] = deque(maxlen=max_history)
        self.lateness: deque[float] = deque(maxlen=max_history)
        self.failures = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = _thread(self._run, "selfheal-cycle-loop")
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Let a cycle in progress finish (its flow run then ends Completed, not Running)."""
        if self._thread is not None:
            self._wake.set()
            self._thread.join(timeout)

    def on_component_down(self, component: str, reason: str) -> None:
        """The hook for detection between cycles: a failed scrape (:class:`ScrapeWatch`) or
        a liveness probe going from passing to failing (the probes' scheduler callback)
        takes the down path now: the next cycle starts at once and records the anomaly."""
        self.run_now(f"{component} down: {reason}")

    def run_now(self, reason: str) -> None:
        """Start the next cycle now (a liveness failure or a failed scrape between cycles)."""
        log.info("cycle requested now: %s", reason)
        self._wake.set()

    def _run(self) -> None:
        from flows.cycle import cycle

        with _no_heartbeat():
            due = time.monotonic()
            while not self.stop.is_set():
                delay = due - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    if self.stop.is_set():
                        break
                self._wake.clear()
                began = time.monotonic()
                self.lateness.append(max(0.0, began - due))
                self.starts.append(time.time())
                opened = False
                try:
                    state = cycle(self.config_path, dispatch="serve", return_state=True)
                    if state.is_failed() or state.is_crashed():
                        self.failures += 1
                        log.warning("cycle ended %s: %s", state.name, state.message)
                    else:
                        opened = bool((state.result() or {}).get("new_issues"))
                except Exception as exc:  # noqa: BLE001 - one bad cycle must not stop the loop
                    self.failures += 1
                    log.warning("cycle failed: %s", exc)
                self.durations.append(time.monotonic() - began)
                self.after_cycle()
                due += self.interval_s
                if opened and self.group_wait_s < self.interval_s:
                    # A new issue becomes actionable after the group wait: decide then,
                    # not a whole interval later.
                    due = min(due, time.monotonic() + self.group_wait_s + 0.1)
                if due < time.monotonic():
                    due = time.monotonic()  # overran: start the next one now, not twice


class ScrapeWatch:
    """Between cycles, a TCP connect to each component's metrics port every second; the
    first refusal after an answer starts a cycle at once (the down path does not wait for
    the next cycle). Liveness probes join through :meth:`CycleLoop.run_now` the same way."""

    def __init__(
        self, config: SelfHealConfig, on_down: Callable[[str, str], None], stop: threading.Event
    ) -> None:
        self.targets: dict[str, tuple[str, int]] = {}
        for name, comp in config.components.items():
            url = getattr(comp, "metrics_url", None)
            if url is None:
                continue
            u = urlsplit(str(url))
            if u.hostname:
                port = u.port or (443 if u.scheme == "https" else 80)
                self.targets[name] = (u.hostname, port)
        self.on_down = on_down
        self.stop = stop
        self.up: dict[str, bool] = {}

    def start(self) -> None:
        if self.targets:
            _thread(self._run, "selfheal-scrape-watch").start()

    def check(self) -> None:
        for name, (host, port) in self.targets.items():
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    ok = True
            except OSError:
                ok = False
            if self.up.get(name) and not ok:
                self.on_down(name, f"{name}: metrics endpoint {host}:{port} refuses connections")
            self.up[name] = ok

    def _run(self) -> None:
        while not self.stop.wait(SCRAPE_WATCH_S):
            self.check()


class DecisionWatch:
    """Pokes the executor the moment an approval is decided by any process (``selfheal
    approve``, the API, another host): LISTEN/NOTIFY on PostgreSQL, SQLite's
    ``data_version`` otherwise (``storage.signals``). The executor's poll stays the
    fallback, so a lost connection only costs latency until it is back."""

    RETRY_S = 2.0

    def __init__(self, engine: Engine, on_decided: Callable[[], None], stop: threading.Event):
        self.engine = engine
        self.on_decided = on_decided
        self.stop = stop
        self.watching = threading.Event()  # set while a watch is open

    def start(self) -> None:
        _thread(self._run, "selfheal-decision-watch").start()

    def _run(self) -> None:
        from storage.signals import watch_decisions

        while not self.stop.is_set():
            try:
                watch = watch_decisions(self.engine)
            except Exception as exc:  # noqa: BLE001 - the database is away: poll meanwhile
                log.warning("decision watch unavailable (polling only): %s", exc)
                self.stop.wait(self.RETRY_S)
                continue
            self.watching.set()
            try:
                while not self.stop.is_set():
                    if watch.wait(POLL_S):
                        self.on_decided()
            except Exception as exc:  # noqa: BLE001 - reconnect; the poll covers the gap
                log.warning("decision watch lost (reconnecting): %s", exc)
                self.stop.wait(self.RETRY_S)
            finally:
                self.watching.clear()
                watch.close()


_RUN_NAME: contextvars.ContextVar[str] = contextvars.ContextVar("selfheal_recover_run_name")


def _recover_run_name() -> str:
    """The executor's recover runs are named after their issue (set by the worker)."""
    return _RUN_NAME.get("recover")


@contextmanager
def _shared_client() -> Iterator[None]:
    """One Prefect client for every flow run of a worker thread: a run then skips the
    client's set-up (TLS context, CSRF token, version check) before its first call."""
    from prefect.context import SyncClientContext

    try:
        ctx = SyncClientContext()
        ctx.__enter__()
    except Exception as exc:  # noqa: BLE001 - each run then makes its own, as before
        log.warning("no shared Prefect client for the executor: %s", exc)
        yield
        return
    try:
        yield
    finally:
        with suppress(Exception):
            ctx.__exit__(None, None, None)


class RecoveryExecutor:
    """Starts queued and approved recoveries of this database in process, at once.

    A bounded pool of daemon threads (``max_concurrent_recoveries``); each recovery is a
    ``recover`` flow run that claims the recovery row first (exactly once across this
    executor, resumed approval runs and retries) and holds the strict global limit. A
    decision recorded by another process wakes it at once (:class:`DecisionWatch`).
    """

    def __init__(
        self,
        engine: Engine,
        config_path: str | None,
        workers: int,
        stop: threading.Event,
        poll_s: float = POLL_S,
    ) -> None:
        self.engine = engine
        self.config_path = config_path
        self.stop = stop
        self.poll_s = poll_s
        self.work: queue.Queue[tuple[int, int | None, str, str | None]] = queue.Queue()
        self.in_flight: set[int] = set()
        self.started_at: dict[int, float] = {}  # recovery id → wall-clock start (bench)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.workers = max(1, workers)
        # Leases of the recovery limit that in-process recoveries hold now: given back
        # when serve stops, so a restart of serve does not cost slots until they expire.
        self.held_leases: set[Any] = set()

    def start(self) -> None:
        for i in range(self.workers):
            _thread(self._worker, f"selfheal-recover-{i}").start()
        _thread(self._poll_loop, "selfheal-executor").start()
        DecisionWatch(self.engine, self.poke, self.stop).start()

    def poke(self) -> None:
        self._wake.set()

    def poll(self) -> int:
        """Queue what is runnable now; returns how many were queued."""
        from storage.recoveries import runnable_recoveries, take_queued, unfinished_rejections

        n = 0
        with self.engine.begin() as conn:
            rows = runnable_recoveries(conn)
            rejected = unfinished_rejections(conn)
            for row in rows:
                rid = int(row["id"])
                with self._lock:
                    if rid in self.in_flight:
                        continue
                if row["status"] == "queued" and not take_queued(conn, rid):
                    continue
                self._submit(rid, row["issue_id"], row["component"], row.get("approval_id"))
                n += 1
        for row in rejected:
            rid = int(row["id"])
            with self._lock:
                if rid in self.in_flight or row.get("approval_id") is None:
                    continue
            self._submit(rid, row["issue_id"], row.get("component") or "", row["approval_id"])
        return n

    def _submit(self, rid: int, issue_id: int | None, component: str, approval: str | None) -> None:
        with self._lock:
            self.in_flight.add(rid)
        self.work.put((rid, issue_id, component, approval))

    def warm_up(self) -> None:
        """Pay the first-recovery costs now (strategy registry, configuration, the flow's
        registration with the API, the first take of a concurrency slot), not when the
        first fault is waiting."""
        try:
            from prefect.client.orchestration import get_client
            from prefect.concurrency.sync import concurrency

            from flows.components import component_specs
            from flows.recover import RECOVERY_LIMIT, recover
            from flows.runtime import open_runtime
            from tasks.recovery.registry import default_strategies

            rt = open_runtime(self.config_path)
            try:
                default_strategies(rt.config.custom_strategies)
                component_specs(rt.config)
            finally:
                rt.close()
            import tasks.recovery.validate  # noqa: F401 - first recovery's imports

            with get_client(sync_client=True) as client:
                client.create_flow(recover)
            # Taken and given back at once: the first take in a process costs ~0.2 s more
            # (Prefect's event loop thread, its async client, the version check) than
            # the next ones. Also proves the strict limit exists.
            try:
                with concurrency(RECOVERY_LIMIT, occupy=1, strict=True, timeout_seconds=5):
                    pass
            except TimeoutError:
                pass  # every slot busy right now: the warm-up is only a head start
        except Exception as exc:  # noqa: BLE001 - only a head start
            log.warning("executor warm-up: %s", exc)

    def _poll_loop(self) -> None:
        from flows.runtime import executor_beacon

        beacon = executor_beacon(self.engine.url.render_as_string(hide_password=False))
        beacon.parent.mkdir(parents=True, exist_ok=True)

        try:
            while not self.stop.is_set():
                try:
                    beacon.write_text(str(os.getpid()))  # fresh: the CLI waits for us
                    self.poll()
                except Exception as exc:  # noqa: BLE001 - a locked or restarting DB: next time
                    log.warning("executor poll failed: %s", exc)
                self._wake.wait(self.poll_s)
                self._wake.clear()
        finally:
            with suppress(OSError):
                beacon.unlink()

    def _worker(self) -> None:
        from prefect import tags

        from flows.launch import run_tags
        from flows.recover import HELD_LEASES, recover

        # Built once: Flow.with_options re-inspects the function (tens of ms per run).
        flow = recover.with_options(flow_run_name=_recover_run_name)
        with _no_heartbeat(), _shared_client():
            while not self.stop.is_set():
                try:
                    rid, issue_id, comp, approval = self.work.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.started_at[rid] = time.time()
                try:
                    if issue_id is None:
                        log.warning("recovery %s has no issue: skipped", rid)
                        continue
                    _RUN_NAME.set(f"recover-issue-{issue_id}-{comp or 'answer'}")
                    token = HELD_LEASES.set(self.held_leases)
                    try:
                        with tags(*run_tags(issue_id, comp or "unknown", approval), "in-process"):
                            state: Any = flow(
                                issue_id, rid, approval, self.config_path, return_state=True
                            )
                    finally:
                        HELD_LEASES.reset(token)
                    if state.is_failed() or state.is_crashed():
                        log.warning(
                            "recovery %s of issue #%s ended %s: %s",
                            rid,
                            issue_id,
                            state.name,
                            state.message,
                        )
                except Exception as exc:  # noqa: BLE001 - the executor outlives one recovery
                    log.warning("recovery %s could not run: %s", rid, exc)
                finally:
                    with self._lock:
                        self.in_flight.discard(rid)

    def shutdown(self) -> list[int]:
        """Record what is still running as interrupted (the next start settles it)."""
        from storage.audit import audit
        from storage.recoveries import mark_interrupted

        with self._lock:
            ids = sorted(self.in_flight)
        if self.held_leases:
            from flows.recover import release_leases

            try:
                release_leases(set(self.held_leases))
            except Exception as exc:  # noqa: BLE001 - the server may be gone: they expire
                log.warning("could not give back recovery slots: %s", exc)
        if not ids:
            return []
        runs = []
        try:
            with self.engine.begin() as conn:
                from storage.recoveries import get_recovery

                runs = [(get_recovery(conn, i) or {}).get("flow_run_id") for i in ids]
                mark_interrupted(conn, ids, "selfheal serve stopped while it ran")
                for rid in ids:
                    audit(conn, "interrupted", recovery_id=rid)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not record interrupted recoveries %s: %s", ids, exc)
        _cancel_runs([r for r in runs if r], "selfheal serve stopped; recorded as interrupted")
        return ids


def _cancel_runs(run_ids: list[str], message: str) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    try:
        with get_client(sync_client=True) as client:
            for rid in run_ids:
                client.set_flow_run_state(UUID(rid), Cancelled(message=message), force=True)
    except Exception as exc:  # noqa: BLE001 - the server may already be gone
        log.warning("could not mark runs %s cancelled: %s", run_ids, exc)


def settle_on_start(engine: Engine, window_s: float) -> dict[str, list[int]]:
    """Recoveries interrupted by the last stop: young ones run again, old ones expire."""
    from storage.audit import audit
    from storage.recoveries import settle_interrupted

    with engine.begin() as conn:
        out = settle_interrupted(conn, utcnow(), window_s)
        for outcome, ids in out.items():
            for rid in ids:
                audit(conn, outcome, recovery_id=rid, reason="interrupted by the last stop")
    if out["resumed"] or out["expired"]:
        log.warning(
            "recoveries interrupted by the last stop: %d resumed, %d expired",
            len(out["resumed"]),
            len(out["expired"]),
        )
    return out


class _RunnerThread:
    """``prefect.serve`` for the deployments, in a thread of this process (the main thread
    keeps the signals, so SIGTERM stops everything within seconds)."""

    def __init__(self, deps: list[Any], limit: int) -> None:
        from prefect.runner import Runner

        # Schedules (nightly tuning, daily retention) are paused while serve is down, as
        # prefect.serve does, so missed runs do not pile up.
        self.runner = Runner(pause_on_shutdown=True, limit=limit)
        for d in deps:
            self.runner.add_deployment(d)
        self.error: BaseException | None = None
        self.thread = _thread(self._run, "selfheal-runner")

    def _run(self) -> None:
        import asyncio

        try:
            asyncio.run(self.runner.start())
        except BaseException as exc:  # noqa: BLE001 - reported by serve's main loop
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> None:
        if self.runner.started and not self.runner.stopping:
            self.runner.stopping = True
            with suppress(Exception):  # already stopping
                self.runner.execute_in_background(self.runner.astop)
        self.thread.join(timeout)


def run_serve(
    config: SelfHealConfig,
    config_path: str | None,
    *,
    prefect_port: int = 4200,
    prefect_database_url: str | None = None,
    cycle: bool = True,
    dashboard: bool | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Blocks until SIGTERM, SIGINT or ``stop`` is set."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_RUNNER_POLL_FREQUENCY,
        temporary_settings,
    )

    stop = stop or threading.Event()
    previous = _stop_on_signals(stop)
    server = None
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        server = LocalPrefectServer(
            selfheal_home() / "prefect",
            prefect_port,
            prefect_database_url or os.environ.get("SELFHEAL_PREFECT_DATABASE_URL"),
            retention_days=max(config.metrics_history_days, 1),
        )
        print(
            f"starting a local Prefect server on {server.ui_url} (log: {server.log_path})",
            flush=True,
        )
        server.start()
        api_url = server.api_url
        os.environ["PREFECT_API_URL"] = api_url  # for the runs' subprocesses
    dash = None
    runner = None
    executor = None
    rt = None
    probes = None
    try:
        # The runner looks for runs to start every 10 s by default; ad-hoc runs and
        # UI-resumed approvals should not wait that long.
        poll = int(os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY", "2"))
        with temporary_settings(
            updates={PREFECT_API_URL: api_url, PREFECT_RUNNER_POLL_FREQUENCY: poll}
        ):
            from flows.cycle import ensure_limits
            from flows.runtime import open_runtime

            ensure_limits(config.max_concurrent_recoveries)
            rt = open_runtime(config_path, config=config)
            settle_on_start(rt.engine, float(config.approval_timeout))
            if dashboard if dashboard is not None else config.dashboard_enabled:
                dash = _start_dashboard(config, config_path)
            else:  # /metrics alone, on dashboard_port
                from flows.metrics_endpoint import start_metrics_endpoint

                dash = start_metrics_endpoint(config, config_path)
            deps = deployments(config, config_path, cycle)
            executor = RecoveryExecutor(
                rt.engine, config_path, config.max_concurrent_recoveries, stop
            )
            # Warm before the deployments are served (serve is "up" once they are): the
            # first fault must not pay the imports and first-run costs.
            executor.warm_up()
            runner = _RunnerThread(deps, limit=config.max_concurrent_recoveries + 4)
            runner.start()
            executor.start()
            loop = None
            if cycle:
                loop = CycleLoop(
                    config_path,
                    config.detection_interval,
                    stop,
                    executor.poke,
                    group_wait_s=config.detection.group_wait,
                )
                loop.start()
                ScrapeWatch(config, loop.on_component_down, stop).start()
                probes = _start_probes(config, _liveness_to(loop.on_component_down))
            else:
                probes = _start_probes(config)
            print(
                f"serving {len(deps)} deployments against {api_url}"
                + (f"; cycle every {config.detection_interval:g} s in process" if cycle else "")
                + "; Ctrl-C stops",
                flush=True,
            )
            if ready is not None:
                ready.set()
            while not stop.wait(0.5):
                if runner.error is not None:
                    raise RuntimeError(f"the deployment runner stopped: {runner.error}")
            print("stopping", flush=True)
            deadline = time.monotonic() + STOP_BUDGET_S
            interrupted = executor.shutdown()
            if interrupted:
                print(f"recoveries interrupted (resumed on the next start): {interrupted}")
            runner.stop(timeout=max(0.5, deadline - time.monotonic() - 4.0))
            if loop is not None:
                loop.join(max(0.1, deadline - time.monotonic() - 3.0))
    except KeyboardInterrupt:
        print("stopping", flush=True)
        stop.set()
        if executor is not None:
            executor.shutdown()
    finally:
        stop.set()
        if probes is not None:
            probes.stop()
        if dash is not None:
            dash.stop()
        if rt is not None:
            rt.close()
        if server is not None:
            server.stop(timeout=3.0)
            os.environ.pop("PREFECT_API_URL", None)
        _restore_signals(previous)
    return 0


def _liveness_to(on_down: Any) -> Any:
    """A probe-transition callback that takes the down path at once when a liveness probe
    starts failing, instead of at the next cycle."""

    def on_transition(result: Any, old: str, new: str) -> None:
        if result.probe == "liveness" and new == "failing":
            on_down(result.component, f"liveness probe failing: {result.detail}")

    return on_transition


def _start_probes(config: SelfHealConfig, on_transition: Any = None) -> Any:
    """Probe every component on its own period in this process (results in the database);
    the returned object has ``stop()``. None when no component has a probe.
    ``on_transition(result, old, new)`` is called when a probe's threshold state changes
    (``new == "failing"`` on a liveness probe: the component just went down)."""
    from flows.probes import start_probe_scheduler
    from flows.runtime import database_url
    from storage.engine import make_engine
    from storage.migrate import ensure_schema

    engine = make_engine(database_url(config))
    ensure_schema(engine)
    scheduler = start_probe_scheduler(config, engine, on_transition, on_stop=engine.dispose)
    if scheduler is None:
        engine.dispose()
        return None
    print(f"probing {len(scheduler.probes)} probes on their own periods", flush=True)
    return scheduler


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM and SIGINT set ``stop`` (main thread only; elsewhere the caller stops us)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda _s, _f: stop.set())
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _start_dashboard(config: SelfHealConfig, config_path: str | None) -> Any:
    try:
        from flows.dashboard.server import DashboardServer
    except ImportError:
        log.warning("dashboard not available in this build")
        return None
    dash = DashboardServer(config_path, port=config.dashboard_port)
    dash.start_in_thread()
    print(f"dashboard on http://127.0.0.1:{config.dashboard_port}", flush=True)
    return dash


def default_config_path(explicit: Path | None) -> str | None:
    if explicit:
        return str(explicit.resolve())
    env = os.environ.get("SELFHEAL_CONFIG")
    return str(Path(env).resolve()) if env else None
