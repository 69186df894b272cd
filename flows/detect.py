"""The detect flow: score what is new, group anomalies into issues, publish what changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from sqlalchemy import Engine

from flows.components import probe_specs
from flows.config import SelfHealConfig
from flows.probes import probe_thresholds, run_due_probes
from flows.runtime import Runtime, database_url, open_runtime
from storage.engine import make_engine
from storage.issues import (
    AnomalyRecord,
    get_watermarks,
    load_active_issues,
    open_metric_issue_starts,
    recent_cutoff,
    save_anomalies,
    save_issues,
    set_watermarks,
)
from storage.metrics import component_names
from storage.recoveries import active_recoveries, healed_issue_ids, recent_actions_with_issues
from tasks.detection.logs_step import LogDetectionSettings, detect_logs
from tasks.detection.metrics_step import MetricDetectionSettings, detect_metrics, read_component
from tasks.detection.registry import default_registry
from tasks.issues.grouping import (
    GroupingPolicy,
    action_incidents,
    group,
    inhibitions,
    silences_from_actions,
)
from tasks.plugins import Plugin, as_plugin

_TASK_OPTS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


@dataclass(frozen=True)
class ShardPlan:
    components: tuple[str, ...]
    detectors: tuple[tuple[str, dict[str, Any]], ...]
    custom: tuple[Plugin, ...]
    metrics: MetricDetectionSettings
    logs: LogDetectionSettings
    now_ms: int
    first_run_ms: int  # how much of the window a component seen for the first time scores


@dataclass
class ShardResult:
    anomalies: list[AnomalyRecord] = field(default_factory=list)
    watermarks: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def run_shard(engine: Engine, plan: ShardPlan) -> ShardResult:
    """Detect over a shard of components (plain function; the task wraps it)."""
    registry = default_registry(plan.custom)
    detectors = [registry.create(name, params) for name, params in plan.detectors]
    # Custom detectors run with their defaults unless the configuration lists them.
    named = {name for name, _ in plan.detectors}
    detectors += [registry.create(n) for n in registry.custom_names if n not in named]
    streams = [s for c in plan.components for s in (f"metrics:{c}", f"logs:{c}")]
    with engine.connect() as conn:
        marks = get_watermarks(conn, streams)
        baselines = open_metric_issue_starts(conn, plan.components)
    result = ShardResult()
    default_mark = plan.now_ms - plan.first_run_ms
    for comp in plan.components:
        try:
            mkey = f"metrics:{comp}"
            wm = marks.get(mkey, default_mark)
            window = read_component(
                engine, comp, plan.now_ms, plan.metrics.lookback_s, plan.metrics.untyped_counters
            )
            result.anomalies += detect_metrics(
                window, detectors, wm, plan.metrics, baselines.get(comp)
            )
            result.watermarks[mkey] = max(wm, window.newest_ms or wm)
            lkey = f"logs:{comp}"
            lwm = marks.get(lkey, default_mark)
            log_anomalies, newest = detect_logs(engine, comp, lwm, plan.now_ms, plan.logs)
            result.anomalies += log_anomalies
            result.watermarks[lkey] = max(lwm, newest or lwm)
        except Exception as exc:  # noqa: BLE001 - one bad component must not stop the others
            result.errors.append(f"{comp}: {type(exc).__name__}: {exc}")
    return result


@task(name="run-probes", **_TASK_OPTS)
def run_probes_task(rt: Runtime) -> int:
    """The probes no scheduler ran in their last period, once each, stored."""
    results = run_due_probes(rt.config, rt.engine)
    failed = [r for r in results if not r.ok]
    for r in failed:
        get_run_logger().info("%s probe of %s failed: %s", r.probe, r.component, r.detail)
    return len(results)


@task(name="detect-shard", **_TASK_OPTS)
def detect_shard_task(engine: Engine, plan: ShardPlan) -> ShardResult:
    return run_shard(engine, plan)


def run_shard_at(db_url: str, plan: ShardPlan) -> ShardResult:
    """``run_shard`` for another process or host: it opens its own engine."""
    engine = make_engine(db_url)
    try:
        return run_shard(engine, plan)
    finally:
        engine.dispose()


@task(name="detect-shard-remote", **_TASK_OPTS)
def detect_shard_remote_task(db_url: str, plan: ShardPlan) -> ShardResult:
    return run_shard_at(db_url, plan)


@flow(name="detect-shards", description="Detection shards spread over a Dask cluster.")
def detect_shards_flow(db_url: str, plans: list[ShardPlan]) -> list[ShardResult]:
    futures = [detect_shard_remote_task.submit(db_url, plan) for plan in plans]
    wait(futures)
    out = []
    for fut in futures:
        if fut.state.is_completed():
            out.append(fut.result())
        else:
            get_run_logger().error("detection shard failed: %s", fut.state.message)
    return out


def detect_shards_on_dask(db_url: str, plans: list[ShardPlan], address: str) -> list[ShardResult]:
    """Run the shards on the Dask cluster at ``address`` (a subflow with a Dask runner)."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise RuntimeError(
            "detection.dask_address is set but prefect-dask is not installed: "
            "pip install 'selfheal[dask]'"
        ) from None
    runner = DaskTaskRunner(address=address)
    # prefect-dask's runner is a TaskRunner at run time; its stubs do not say so.
    return detect_shards_flow.with_options(task_runner=runner)(db_url, plans)  # type: ignore[arg-type]


@dataclass
class GroupSummary:
    new_issues: list[dict[str, Any]]
    reopened: int
    resolved: int
    anomalies_stored: int
    resolved_ids: list[int] = field(default_factory=list)


def persist_detection(
    engine: Engine,
    anomalies: list[AnomalyRecord],
    watermarks: dict[str, int],
    now: datetime,
    policy: GroupingPolicy,
    depends_on: dict[str, list[str]],
) -> GroupSummary:
    """Group, store issues and anomalies, refresh inhibitions and move the watermarks, all
    in one transaction: a crash leaves the previous state and the same points are scored
    again."""
    with engine.begin() as conn:
        active = load_active_issues(conn, recent_cutoff(now, policy.flap_window))
        window = policy.side_effect_window
        acted = recent_actions_with_issues(conn, recent_cutoff(now, window))
        # A recovery still running (a restart in progress) silences too.
        acted += [
            (r["component"], now, r["issue_id"])
            for r in active_recoveries(conn)
            if r["status"] == "running"
        ]
        silences = silences_from_actions([(c, t) for c, t, _ in acted], depends_on, window)
        owners = action_incidents(acted, depends_on)
        healed = healed_issue_ids(conn, [i.id for i in active])
        outcome = group(anomalies, active, now, policy, depends_on, silences, owners, healed)
        ids = save_issues(conn, outcome.issues.values())
        stored = save_anomalies(conn, outcome.anomalies, ids)
        current = load_active_issues(conn, now)
        changed = []
        by_id = {i.id: i for i in current}
        for issue_id, inhibitor in inhibitions(current, depends_on).items():
            issue = by_id[issue_id]
            if issue.inhibited_by != inhibitor:
                issue.inhibited_by = inhibitor
                changed.append(issue)
        save_issues(conn, changed)
        set_watermarks(conn, watermarks)
    new = [outcome.issues[fp] for fp in outcome.opened]
    return GroupSummary(
        new_issues=[
            {
                "id": i.id,
                "component": i.component,
                "kind": i.kind,
                "severity": i.severity,
                "title": i.title,
                "first_seen": i.first_seen.isoformat(),
                "anomalies": i.anomaly_count,
                "status": i.status,
            }
            for i in new
        ],
        reopened=len(outcome.reopened),
        resolved=len(outcome.resolved),
        anomalies_stored=stored,
        resolved_ids=[rid for fp in outcome.resolved if (rid := outcome.issues[fp].id) is not None],
    )


@task(name="group-issues", **_TASK_OPTS)
def group_task(
    engine: Engine,
    anomalies: list[AnomalyRecord],
    watermarks: dict[str, int],
    now: datetime,
    policy: GroupingPolicy,
    depends_on: dict[str, list[str]],
) -> GroupSummary:
    return persist_detection(engine, anomalies, watermarks, now, policy, depends_on)


def grouping_policy(config: SelfHealConfig) -> GroupingPolicy:
    d = config.detection
    return GroupingPolicy(
        d.group_wait,
        d.resolve_after,
        d.flap_window,
        d.repeat_interval,
        d.correlation_window,
        d.action_grace,
    )


def recheck_after(config: SelfHealConfig) -> float:
    """Seconds after a fix before a healed incident's own symptoms count against it: the
    cooldown, the side-effect window, and the longest ``smoothing`` span of the configured
    detectors (until then a smoothed series still spans the time before the fix)."""
    d = config.detection
    spans = [
        pd.Timedelta(span).total_seconds()
        for spec in d.detectors
        for span in (spec.params.get("smoothing") or [])
        if isinstance(span, str)
    ]
    return max([config.recovery.cooldown, grouping_policy(config).side_effect_window, *spans])


def shard_plans(rt: Runtime, now_ms: int) -> list[ShardPlan]:
    cfg = rt.config
    d = cfg.detection
    comps = sorted(set(cfg.components) | set(component_names(rt.engine)))
    metrics = MetricDetectionSettings(
        lookback_s=d.lookback,
        behaviour=d.behaviour,
        key_metrics=tuple(d.key_metrics),
        untyped_counters=tuple(d.untyped_counters),
        context_metrics=tuple(d.context_metrics),
        saturation_rules=tuple(r.rule(d.lookback) for r in d.saturation),
        include=tuple(d.include),
        exclude=tuple(d.exclude),
        component_filters={
            n: (tuple(c.detection.include), tuple(c.detection.exclude))
            for n, c in cfg.components.items()
            if c.detection.include or c.detection.exclude
        },
        probe_thresholds=probe_thresholds(cfg),
    )
    logs = LogDetectionSettings(
        lookback_s=d.lookback,
        extra_signatures=tuple((s.name, s.pattern, s.severity) for s in d.log_signatures),
        burst_factor=d.log_burst_factor,
        burst_min_count=d.log_burst_min_count,
    )
    detectors = tuple((s.name, dict(s.params)) for s in d.detectors)
    first_run = int(max(2 * cfg.detection_interval, 60) * 1000)
    return [
        ShardPlan(
            tuple(comps[i : i + d.shard_size]),
            detectors,
            tuple(as_plugin(p) for p in cfg.custom_detectors),
            metrics,
            logs,
            now_ms,
            first_run,
        )
        for i in range(0, len(comps), d.shard_size)
    ]


def run_detection(rt: Runtime, now: datetime | None = None) -> GroupSummary:
    """Submit one task per shard, then group everything in one task. Call inside a flow."""
    logger = get_run_logger()
    if probe_specs(rt.config):
        # Probes nobody ran lately (no scheduler: ``selfheal cycle``) run now, before reading.
        run_probes_task(rt)
    now = now or datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    plans = shard_plans(rt, now_ms)
    address = rt.config.detection.dask_address
    if address:
        results = detect_shards_on_dask(database_url(rt.config), plans, address)
    else:
        # One shard after another: scoring is pandas and numpy work that holds the GIL, and
        # shards on threads thrash it. 10,000 series took 27.5 s on one thread, 38.8 s on
        # two and 45 s on four (2-core machine, bench.load's mix). Several cores are used
        # by running the shards on processes: a Dask cluster (detection.dask_address).
        results = []
        for plan in plans:
            state = detect_shard_task(rt.engine, plan, return_state=True)
            if state.is_completed():
                results.append(state.result())
            else:
                logger.error("detection shard failed: %s", state.message)
    anomalies: list[AnomalyRecord] = []
    marks: dict[str, int] = {}
    for res in results:
        anomalies += res.anomalies
        marks.update(res.watermarks)
        for err in res.errors:
            logger.error("detection error: %s", err)
    deps = {n: list(c.depends_on) for n, c in rt.config.components.items()}
    summary = group_task(rt.engine, anomalies, marks, now, grouping_policy(rt.config), deps)
    logger.info(
        "detection: %d anomalies, %d new issues, %d reopened, %d resolved",
        len(anomalies),
        len(summary.new_issues),
        summary.reopened,
        summary.resolved,
    )
    if summary.new_issues:
        create_table_artifact(
            summary.new_issues, key="new-issues", description=f"Issues opened at {now.isoformat()}"
        )
    return summary


@flow(name="detect", description="Score new points and log lines, group anomalies into issues.")
def detect(config_path: str | None = None) -> dict[str, Any]:
    rt = open_runtime(config_path)
    try:
        s = run_detection(rt)
        return {
            "new_issues": s.new_issues,
            "reopened": s.reopened,
            "resolved": s.resolved,
            "anomalies": s.anomalies_stored,
        }
    finally:
        rt.close()
