"""Storm benchmark: a thousand anomalies at once, grouped, then healed within the limits.

Why: an outage of shared infrastructure makes many components alarm in the same minute.
The system must then open one issue per symptom (not one per anomaly), start the most
severe recoveries first, never run more than ``max_concurrent_recoveries`` at once, and
account for every issue. This benchmark makes such a storm and checks all four.

**The storm.** ``N`` components ``storm000``, ``storm001``, … with 10 anomalies each (1,000
in the full run), as a shared dependency's outage makes every client alarm: each
component shows one symptom, ten times, of the kind ``i % 3`` picks: a metric one
(``latency_seconds:mean``), a log one (``OutOfMemoryError``) or a behaviour one (a broken
relation). Severities are mixed: half its anomalies reach the component's worst severity
(critical, high, medium, low for ``i % 4`` = 0, 1, 2, 3), the others are low. Grouping
must make one issue per component out of them (the fingerprint is component, kind and
signature: a component with several distinct symptoms would get one issue for each, and
the planner would still start one recovery at a time for it). The anomalies arrive in
five detection cycles 30 s apart (the last one 30 s ago), each fed through
``flows.detect.persist_detection`` with the default grouping policy, so later anomalies
must join the issues the earlier ones opened. The components are declared independent (no
``depends_on``): without that knowledge, grouping would correlate the log anomalies of all
components into one cross-component issue, which is right for an unknown topology but not
the storm being modelled.

**The recoveries.** Mode ``automated``, ``max_concurrent_recoveries`` 3, the custom
strategy ``bench._storm_strategy.StormStrategy`` registered by dotted path through
``custom_strategies`` (0.5 to 1 s per action; fails for components whose number ends in
7), ``recovery.cooldown`` 0 (every issue gets its own recovery; with the default 120 s a
healed component's other symptoms wait two minutes, as designed, which would only make the
run longer). Cycles of the cycle flow's planning step (``plan_recoveries_task`` on the
storm's configuration: ``plan_cycle`` with its admission, severity order, one recovery per
component and slots) run every 0.5 s instead of every 30 s, so freed slots are refilled
without waiting: the order and the limits do not depend on the interval. Every launched
recovery is a real run of the ``recover`` flow, started in its own thread (as ``selfheal
serve`` starts one deployment run per recovery) against a Prefect server
(``prefect_test_harness``; the tests use their session server), holding a slot of the
``selfheal-recoveries`` global concurrency limit (strict) that ``flows.cycle.ensure_limits``
upserted. Flow heartbeats are off (in-process runs need none; each costs a thread).

Figures (full: 100 components, 1,000 anomalies; ``--quick``: 20 components, 200
anomalies; everything else the same):

``storm.anomalies``, ``storm.components``, ``storm.groups``
    Anomalies fed; components; distinct (component, kind, signature) groups among them.
``storm.open_issues``
    Open issues after the five detection cycles. ``storm.max_issues_per_group``: the most
    issues any one group got. Target: 1 (``open_issues`` = ``groups`` = components).
``storm.feed_s``
    Wall time of the five ``persist_detection`` calls.
``storm.recoveries``
    Recovery attempts executed (rows with a start time).
``storm.peak_concurrent``
    The most strategy executions that overlapped in time (from the start and end times
    each attempt records). ``storm.max_concurrent``: the limit (3).
    ``storm.peak_limit_slots``: the most slots of the Prefect limit seen taken (polled
    every planning cycle, so it can miss short peaks). Target: both ≤ the limit.
``storm.critical_first``
    1 when every critical issue's recovery was launched before any lesser issue's, else 0.
    ``storm.priority_inversions``: within one planning cycle, pairs of a waiting issue
    more severe than a launched one. Target: 1 and 0.
``storm.healed``, ``storm.quarantined``, ``storm.awaiting_approval``, ``storm.lost``
    Every issue at the end: its recovery succeeded; or its strategy failed and is
    quarantined for the component (its own recovery failed, or the planner would skip it
    because of that quarantine); or it waits for an approval (none in automated mode); or
    none of these (``lost``, also counting recoveries left in flight and ``recover`` runs
    that raised). Target: ``lost`` = 0. ``healed`` and ``quarantined`` are fixed by the
    benchmark's own strategy (it fails every component whose number ends in 7: 90 and 10
    of 100), so they check the bookkeeping and are not results: ``lost`` is.
``storm.seconds``
    Wall time from the first planning cycle until nothing is left to start or running.
``storm.plan_max_s``
    The longest planning cycle (it computes a proposal for every candidate).
``storm.run_p50_s``
    Median wall time of one ``recover`` flow run (the action itself takes 0.5 to 1 s; the
    rest is the flow's own work: configuration and database, Prefect run bookkeeping, the
    concurrency slot, the outcome artifact).
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from bench._storm_strategy import PREFIX, fails
from flows.cycle import ensure_limits, plan_recoveries_task, recovery_context
from flows.detect import grouping_policy, persist_detection
from flows.recover import RECOVERY_LIMIT, recover
from flows.runtime import Runtime, open_runtime
from storage.engine import sqlite_url_for
from storage.issues import AnomalyRecord, IssueRecord, load_active_issues
from storage.models import Recovery
from tasks.coordination.planner import CyclePlan
from tasks.recovery.base import IssueInfo
from tasks.recovery.manager import RecoveryManager
from tasks.recovery.registry import default_strategies
from tasks.severity import Severity

STRATEGY_PATH = "bench._storm_strategy.StormStrategy"
SYMPTOMS = (
    ("metric", "latency_seconds:mean", "default"),
    ("log", "OutOfMemoryError", "log_signature"),
    ("behaviour", "relation requests:rate ~ latency_seconds:mean", "relation"),
)
WORST = ("critical", "high", "medium", "low")
CYCLE_S = 30  # between the detection cycles that deliver the storm
PLAN_EVERY_S = 0.5  # between planning cycles (compressed from detection_interval)
IN_FLIGHT = ("planned", "approved", "running")


@dataclass(frozen=True)
class StormShape:
    components: int = 100
    per_component: int = 10
    max_concurrent: int = 3
    detection_cycles: int = 5
    deadline_s: float = 900.0  # give up (and count what is left as lost) after this long


def component_name(i: int) -> str:
    return f"{PREFIX}{i:03d}"


def storm_anomalies(shape: StormShape, end: datetime) -> list[tuple[datetime, list[AnomalyRecord]]]:
    """The storm as detection cycles: (cycle time, anomalies reported in it), oldest first."""
    n_cycles = shape.detection_cycles
    times = [end - timedelta(seconds=CYCLE_S * (n_cycles - 1 - k)) for k in range(n_cycles)]
    out: list[list[AnomalyRecord]] = [[] for _ in times]
    for i in range(shape.components):
        comp = component_name(i)
        worst = WORST[i % 4]
        kind, signature, detector = SYMPTOMS[i % 3]
        for j in range(shape.per_component):
            severity = worst if j % 2 == 0 else "low"
            k = j * n_cycles // shape.per_component  # spread over the cycles, in order
            ts = times[k] - timedelta(milliseconds=1000 + 10 * j)
            out[k].append(
                AnomalyRecord(
                    detector,
                    comp,
                    kind,
                    signature,
                    int(ts.timestamp() * 1000),
                    5.0,
                    severity,
                    value=float(j),
                )
            )
    return list(zip(times, out, strict=True))


def storm_config(tmp: Path, shape: StormShape) -> Path:
    path = tmp / "storm.json"
    config = {
        "database_url": sqlite_url_for(tmp / "storm.db"),
        "mode": "automated",
        "max_concurrent_recoveries": shape.max_concurrent,
        "custom_strategies": [STRATEGY_PATH],
        "dashboard_enabled": False,
        "recovery": {"cooldown": 0},
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class StormResult:
    """What happened; ``figures`` turns it into the benchmark's keys."""

    shape: StormShape
    anomalies: int = 0
    groups: int = 0
    open_issues: int = 0
    max_issues_per_group: int = 0
    feed_s: float = 0.0
    launches: list[tuple[int, str]] = field(default_factory=list)  # (issue id, severity)
    priority_inversions: int = 0
    peak_limit_slots: int = 0
    plan_max_s: float = 0.0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # recover runs that raised
    run_s: list[float] = field(default_factory=list)  # wall time of each recover run
    recoveries: int = 0
    peak_concurrent: int = 0
    outcome: Counter[str] = field(default_factory=Counter)  # issue id → fate, counted
    quarantined_components: set[str] = field(default_factory=set)

    @property
    def critical_first(self) -> bool:
        sev = [s for _, s in self.launches]
        critical = [k for k, s in enumerate(sev) if s == "critical"]
        lesser = [k for k, s in enumerate(sev) if s != "critical"]
        return not critical or not lesser or max(critical) < min(lesser)

    @property
    def lost(self) -> int:
        return self.outcome["lost"] + len(self.errors)

    def figures(self) -> dict[str, float]:
        return {
            "storm.anomalies": float(self.anomalies),
            "storm.components": float(self.shape.components),
            "storm.groups": float(self.groups),
            "storm.open_issues": float(self.open_issues),
            "storm.max_issues_per_group": float(self.max_issues_per_group),
            "storm.feed_s": round(self.feed_s, 3),
            "storm.recoveries": float(self.recoveries),
            "storm.peak_concurrent": float(self.peak_concurrent),
            "storm.peak_limit_slots": float(self.peak_limit_slots),
            "storm.max_concurrent": float(self.shape.max_concurrent),
            "storm.critical_first": float(self.critical_first),
            "storm.priority_inversions": float(self.priority_inversions),
            "storm.healed": float(self.outcome["healed"]),
            "storm.quarantined": float(self.outcome["quarantined"]),
            "storm.awaiting_approval": float(self.outcome["awaiting_approval"]),
            "storm.lost": float(self.lost),
            "storm.seconds": round(self.seconds, 1),
            "storm.plan_max_s": round(self.plan_max_s, 3),
            "storm.run_p50_s": round(statistics.median(self.run_s), 3) if self.run_s else 0.0,
        }


def feed(rt: Runtime, shape: StormShape, result: StormResult) -> None:
    """Deliver the storm through grouping, cycle by cycle; count issues per group."""
    cycles = storm_anomalies(shape, datetime.now(UTC) - timedelta(seconds=CYCLE_S))
    names = [component_name(i) for i in range(shape.components)]
    independent: dict[str, list[str]] = {n: [] for n in names}
    policy = grouping_policy(rt.config)
    t0 = time.perf_counter()
    for now, anomalies in cycles:
        persist_detection(rt.engine, anomalies, {}, now, policy, independent)
    result.feed_s = time.perf_counter() - t0
    every = [a for _, batch in cycles for a in batch]
    result.anomalies = len(every)
    result.groups = len({(a.component, a.kind, a.signature) for a in every})
    with rt.engine.connect() as conn:
        active = load_active_issues(conn, cycles[-1][0])
    per_group = Counter((i.component, i.kind, i.signature) for i in active)
    result.open_issues = sum(1 for i in active if i.status == "open")
    result.max_issues_per_group = max(per_group.values(), default=0)


def taken_slots() -> int:
    """Slots of the recovery limit taken right now, as the Prefect server sees them."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(RECOVERY_LIMIT)
    return int(limit.active_slots)


def inversions(plan: CyclePlan) -> int:
    """Pairs (waiting, launched) in one cycle where the waiting issue is more severe."""
    launched = [Severity.parse(p.issue.severity) for p in plan.of("launch")]
    waiting = [Severity.parse(p.issue.severity) for p in plan.of("wait")]
    return sum(1 for w in waiting for s in launched if w > s)


def heal(rt: Runtime, config_path: Path, result: StormResult) -> None:
    """Plan every 0.5 s and start a ``recover`` run per launch until nothing is left."""
    shape = result.shape
    futures: list[Future[float]] = []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4 * shape.max_concurrent) as pool:
        while time.perf_counter() - t0 < shape.deadline_s:
            idle = all(f.done() for f in futures)
            t_plan = time.perf_counter()
            plan = plan_recoveries_task.fn(rt, datetime.now(UTC))
            result.plan_max_s = max(result.plan_max_s, time.perf_counter() - t_plan)
            result.priority_inversions += inversions(plan)
            for p in plan.of("launch"):
                assert p.issue.id is not None and p.recovery_id is not None
                result.launches.append((p.issue.id, p.issue.severity))
                futures.append(
                    pool.submit(timed_recover, p.issue.id, p.recovery_id, str(config_path))
                )
            result.peak_limit_slots = max(result.peak_limit_slots, taken_slots())
            if idle and not plan.of("launch") and not plan.of("wait"):
                break
            time.sleep(PLAN_EVERY_S)
        result.seconds = time.perf_counter() - t0
        for f in futures:
            try:
                result.run_s.append(f.result(timeout=max(1.0, shape.deadline_s - result.seconds)))
            except Exception as exc:  # noqa: BLE001 - counted as lost, reported
                result.errors.append(f"{type(exc).__name__}: {exc}")


def timed_recover(issue_id: int, recovery_id: int, config_path: str) -> float:
    """One ``recover`` flow run, as a served deployment run would make it; its wall time."""
    t0 = time.perf_counter()
    # A recovery that fails ends its run Failed (loudly); the storm's strategy fails some by
    # design, and their fate is read from the records (``account``), not from the run.
    recover(issue_id, recovery_id, None, config_path, return_state=True)
    return time.perf_counter() - t0


def peak_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant do
    not overlap)."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def account(rt: Runtime, result: StormResult) -> None:
    """The fate of every issue, and the overlap of the recoveries actually executed."""
    t = Recovery.__table__
    with rt.engine.connect() as conn:
        # Every issue: the active ones and all resolved since the epoch.
        issues = load_active_issues(conn, datetime(1970, 1, 1, tzinfo=UTC))
        rows = conn.execute(
            select(t.c.issue_id, t.c.component, t.c.status, t.c.started_at, t.c.finished_at)
        ).all()
    ran = [(r.started_at, r.finished_at) for r in rows if r.started_at and r.finished_at]
    result.recoveries = len(ran)
    result.peak_concurrent = peak_overlap(ran)
    status: dict[int, set[str]] = {}
    for r in rows:
        status.setdefault(r.issue_id, set()).add(r.status)
    manager = RecoveryManager(default_strategies(rt.config.custom_strategies), recovery_context(rt))
    for issue in issues:
        mine = status.get(issue.id or -1, set())
        if mine & set(IN_FLIGHT):
            fate = "lost"  # still planned or running: nothing will finish it
        elif "succeeded" in mine:
            fate = "healed"
        elif "awaiting_approval" in mine:
            fate = "awaiting_approval"
        elif "failed" in mine or quarantined(manager, issue):
            fate = "quarantined"
            result.quarantined_components.add(issue.component)
        else:
            fate = "lost"
        result.outcome[fate] += 1


def quarantined(manager: RecoveryManager, issue: IssueRecord) -> bool:
    """Whether the planner would skip the issue because its strategy is quarantined."""
    rungs, proposal = manager.proposal(IssueInfo.from_record(issue))
    return proposal is None and any((r.skip_reason or "").startswith("quarantined") for r in rungs)


@contextmanager
def quiet_prefect_logs() -> Iterator[None]:
    """Prefect logs every flow run at INFO; hundreds of runs would bury the figures."""
    logger = logging.getLogger("prefect")
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def run_storm(tmp: Path, shape: StormShape, start_server: bool = True) -> StormResult:
    """The whole storm; ``start_server`` False when a Prefect API is already configured
    (the tests' session server)."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )

    config_path = storm_config(tmp, shape)
    result = StormResult(shape)
    with ExitStack() as stack:
        if start_server:
            from prefect.testing.utilities import prefect_test_harness

            # The temporary server must not try to phone home (machines may be offline).
            stack.enter_context(
                temporary_settings(updates={PREFECT_SERVER_ANALYTICS_ENABLED: False})
            )
            stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        stack.enter_context(temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        stack.enter_context(quiet_prefect_logs())
        rt = open_runtime(config_path)
        stack.callback(rt.close)
        ensure_limits(shape.max_concurrent)
        feed(rt, shape, result)
        heal(rt, config_path, result)
        account(rt, result)
    return result


def expected_quarantined(shape: StormShape) -> set[str]:
    """The components whose strategy fails (see ``bench._storm_strategy``)."""
    return {component_name(i) for i in range(shape.components) if fails(component_name(i))}


# Figure → the figure it is compared with (``python -m bench`` prints the ratio).
BASELINES = {
    "storm.open_issues": "storm.groups",
    "storm.peak_concurrent": "storm.max_concurrent",
}
# What data each headline figure's parameters were chosen on (shown in the README table).
SAMPLE = {
    "storm.open_issues": "synthetic storm; grouping defaults not tuned on it",
    "storm.peak_concurrent": "synthetic storm",
}


def run(quick: bool = False) -> dict[str, float]:
    """The storm benchmark; see the module docstring for the figures."""
    shape = StormShape(components=20) if quick else StormShape()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_storm(Path(tmp), shape)
    for err in result.errors[:5]:
        print(f"   recover run failed: {err}", file=sys.stderr)
    return result.figures()


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
