"""``selfheal serve``: everything on one machine in one command.

Uses ``PREFECT_API_URL`` when it is set; otherwise starts a local Prefect server (UI at
http://127.0.0.1:4200). Upserts the recovery concurrency limit, serves the deployments
(the cycle on an interval, recoveries on demand, nightly tuning, daily retention) and the
dashboard when enabled. Ctrl-C or SIGTERM stops all of it; suspended recovery runs stay
suspended in Prefect and continue after the next ``selfheal serve``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from flows.config import SelfHealConfig
from flows.prefect_server import LocalPrefectServer
from flows.runtime import selfheal_home

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
            cycle_flow.to_deployment(
                name="cycle",
                interval=config.detection_interval,
                parameters=params,
                tags=["selfheal"],
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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _term_to_interrupt() -> None:
    """SIGTERM stops serve like Ctrl-C does (finally blocks run, the local server stops).
    Prefect's runner handles SIGTERM itself once it runs; this covers start-up."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def run_serve(
    config: SelfHealConfig,
    config_path: str | None,
    *,
    prefect_port: int = 4200,
    prefect_database_url: str | None = None,
    cycle: bool = True,
    dashboard: bool | None = None,
    ready: threading.Event | None = None,
) -> int:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_RUNNER_POLL_FREQUENCY,
        temporary_settings,
    )

    _term_to_interrupt()
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
    probes = None
    try:
        # The runner looks for runs to start every 10 s by default; recoveries (and resumed
        # approvals) should not wait that long.
        poll = int(os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY", "2"))
        with temporary_settings(
            updates={PREFECT_API_URL: api_url, PREFECT_RUNNER_POLL_FREQUENCY: poll}
        ):
            import prefect

            from flows.cycle import ensure_limits

            ensure_limits(config.max_concurrent_recoveries)
            probes = _start_probes(config)
            if dashboard if dashboard is not None else config.dashboard_enabled:
                dash = _start_dashboard(config, config_path)
            else:  # /metrics alone, on dashboard_port
                from flows.metrics_endpoint import start_metrics_endpoint

                dash = start_metrics_endpoint(config, config_path)
            deps = deployments(config, config_path, cycle)
            print(f"serving {len(deps)} deployments against {api_url}; Ctrl-C stops", flush=True)
            if ready is not None:
                ready.set()
            prefect.serve(
                *deps, limit=config.max_concurrent_recoveries + 4, print_starting_message=False
            )
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        if probes is not None:
            probes.stop()
        if dash is not None:
            dash.stop()
        if server is not None:
            server.stop()
            os.environ.pop("PREFECT_API_URL", None)
    return 0


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
