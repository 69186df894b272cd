"""The ingest flow: one task per source, never per point or per line."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture, wait
from prefect.tasks import exponential_backoff
from sqlalchemy import Engine

from flows.config import SelfHealConfig
from flows.runtime import Runtime, open_runtime
from tasks.ingest.http import SourceUnavailable
from tasks.ingest.logtail import TailSettings
from tasks.ingest.records import IngestReport
from tasks.ingest.sources import (
    ingest_metric_file,
    ingest_prometheus_query,
    record_down,
    scrape_endpoint,
    tail_component_logs,
)

# Engines and reports are live objects: never hash them into cache keys. Network reads
# carry their own timeouts (httpx); a task timeout cannot interrupt a worker thread.
_TASK_OPTS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


@task(
    name="scrape-endpoint",
    retries=2,
    retry_delay_seconds=exponential_backoff(1),
    retry_jitter_factor=0.2,
    **_TASK_OPTS,
)
def scrape_task(
    engine: Engine, component: str, url: str, timeout: float, max_future_ms: int
) -> IngestReport:
    """Scrape; a failure is retried by Prefect, and the last attempt records ``up`` = 0
    instead of failing (a component that is down is news for detection, not an error of
    the flow, and should not print a traceback every cycle)."""
    try:
        return scrape_endpoint(engine, component, url, timeout, max_future_ms)
    except SourceUnavailable as exc:
        ctx = TaskRunContext.get()
        last = ctx is None or ctx.task_run.run_count > ctx.task.retries
        if not last:
            raise
        get_run_logger().warning(
            "component %s: endpoint down after %d attempts: %s",
            component,
            ctx.task_run.run_count if ctx else 1,
            exc,
        )
        return record_down(engine, component, str(exc))


@task(
    name="query-prometheus",
    retries=2,
    retry_delay_seconds=exponential_backoff(1),
    retry_jitter_factor=0.2,
    **_TASK_OPTS,
)
def prometheus_task(
    engine: Engine,
    base_url: str,
    query: str,
    component: str,
    metric: str,
    lookback: float,
    step: float,
    timeout: float,
) -> IngestReport:
    return ingest_prometheus_query(
        engine, base_url, query, component, metric, lookback, step, timeout
    )


@task(name="ingest-metric-file", **_TASK_OPTS)
def metric_file_task(engine: Engine, path: str, fmt: str, max_future_ms: int) -> IngestReport:
    return ingest_metric_file(engine, path, fmt, max_future_ms)


@task(name="tail-logs", **_TASK_OPTS)
def tail_logs_task(
    engine: Engine, component: str, paths: list[str], settings: TailSettings
) -> IngestReport:
    """Tail a component's log files in turn: one template miner per component, so its
    files are read by one task (no lost updates of the miner's state)."""
    return tail_component_logs(engine, component, paths, settings)


def tail_settings(config: SelfHealConfig) -> TailSettings:
    s = config.ingest
    return TailSettings(s.log_batch_lines, s.max_line_bytes, s.max_bytes_per_run)


def run_ingest(rt: Runtime) -> list[IngestReport]:
    """Submit every source's task, wait for all; an unreachable endpoint records ``up`` = 0.

    Called by the ingest flow and by the detection cycle; must run inside a flow.
    """
    logger = get_run_logger()
    cfg, engine = rt.config, rt.engine
    future_ms = int(cfg.ingest.max_future_skew * 1000)
    scrapes: dict[str, PrefectFuture[IngestReport]] = {}
    others: list[tuple[str, PrefectFuture[IngestReport]]] = []
    retries = cfg.ingest.retries
    retry_delays = exponential_backoff(cfg.ingest.retry_delay or 0.1)
    for name, comp in cfg.components.items():
        if comp.metrics_url:
            scrapes[name] = scrape_task.with_options(
                retries=retries, retry_delay_seconds=retry_delays
            ).submit(engine, name, comp.metrics_url, cfg.ingest.scrape_timeout, future_ms)
        if comp.log_paths:
            fut = tail_logs_task.submit(engine, name, list(comp.log_paths), tail_settings(cfg))
            others.append((f"logs of {name}", fut))
    if cfg.prometheus is not None:
        prom = cfg.prometheus
        for q in prom.queries:
            fut = prometheus_task.with_options(
                retries=retries, retry_delay_seconds=retry_delays
            ).submit(
                engine,
                prom.url,
                q.query,
                q.component,
                q.metric or q.name,
                prom.lookback,
                prom.step,
                prom.timeout,
            )
            others.append((f"prometheus {q.name}", fut))
    for mf in cfg.metric_files:
        others.append(
            (f"file {mf.path}", metric_file_task.submit(engine, mf.path, mf.format, future_ms))
        )

    wait([*scrapes.values(), *(f for _, f in others)])
    reports: list[IngestReport] = []
    for name, fut in scrapes.items():
        if fut.state.is_completed():
            reports.append(fut.result())
            continue
        reason = _failure_reason(fut)  # not a network failure: a bug worth its traceback
        logger.error("component %s: scrape failed: %s", name, reason)
        reports.append(record_down(engine, name, reason))
    for label, fut in others:
        if fut.state.is_completed():
            reports.append(fut.result())
        else:
            reason = _failure_reason(fut)
            logger.error("%s failed: %s", label, reason)
            reports.append(IngestReport(source=label, error=reason))
    for r in reports:
        if r.error or r.rejected:
            logger.warning(r.summary())
            for example in r.examples:
                logger.warning("  e.g. %s", example)
        else:
            logger.info(r.summary())
    return reports


def _failure_reason(fut: PrefectFuture[IngestReport]) -> str:
    try:
        fut.result(raise_on_failure=True)
    except SourceUnavailable as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - report any failure by its message
        return f"{type(exc).__name__}: {exc}"
    return "unknown failure"


def summarise(reports: list[IngestReport]) -> dict[str, Any]:
    return {
        "stored": sum(r.stored for r in reports),
        "duplicates": sum(r.duplicates for r in reports),
        "rejected": sum(r.rejected_total for r in reports),
        "errors": [r.error for r in reports if r.error],
        "sources": [r.as_dict() for r in reports],
    }


@flow(name="ingest", description="Scrape endpoints, read Prometheus and files, tail logs.")
def ingest(config_path: str | None = None) -> dict[str, Any]:
    """Ingest every configured source once and return what was stored."""
    rt = open_runtime(config_path)
    try:
        return summarise(run_ingest(rt))
    finally:
        rt.close()
