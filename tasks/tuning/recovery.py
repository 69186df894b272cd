"""Recovery tuning by replay: CMA-ES over the continuous recovery parameters.

Each candidate is scored by replaying recorded timelines through the *same policy code* the
system runs: restart decisions come from :func:`tasks.recovery.backoff.decide_restart` and
breaker decisions from :class:`tasks.recovery.breaker.CircuitBreaker`. Only the world around
them is simulated, the way ``RestartStrategy.execute`` drives it:

Crash loops (:class:`CrashLoop`)
    A component goes down at ``down_at``; the first restart is attempted
    ``first_restart_after_s`` later (detection and planning, not tunable). A restart made
    before the cause clears (``fixed_after_s``) fails: validation waits its whole
    ``validation_timeout`` for health that never comes. A restart after it works and the
    component is healthy ``startup_s`` later, but validation only notices if ``startup_s <=
    validation_timeout``; otherwise the good restart is judged failed (``misjudged``) and the
    loop goes on, possibly restarting a component that was coming up. Between restarts the
    loop waits what ``decide_restart`` says; a wait beyond ``max_inline_backoff`` or an
    exhausted budget escalates (as the strategy returns failure and the ladder moves on). An
    escalated component that is still down comes back ``escalation_delay_s`` later (or when
    the cause clears, whichever is later) plus ``startup_s``.
Dependency outages (:class:`DependencyOutage`)
    A stream of calls, each with the outcome it would have had. A call goes through when
    ``try_acquire`` permits it and its outcome is recorded; refused calls are not made.
    Measured: failing calls let through, healthy calls refused, and how long the breaker
    stays open after the dependency recovered.
Health waits (:class:`HealthWait`)
    How long restarted components actually needed to become healthy (recorded by the
    restart strategy's validation). A validation wait shorter than that judges a good restart
    failed.

The scalar objective (:class:`CostWeights`) is in "seconds of unavailability": unavailability
dominates (1 per second down), then actions and failures - a restart 10, an escalation 120, a
good restart judged failed 30, a second of validation spent on a restart that failed 0.1, a
failing call let through 0.5, a healthy call refused 1, a second the breaker stays open after
recovery 0.1. Tuning minimises the sum over timelines. The validation-wait term is small but
not zero on purpose: without it a long validation wait is a free way to space restarts (the
tuner found 250 s), while in the system it blocks the recovery flow and delays escalation;
with it, spacing goes to the backoff and the wait stays near what start-ups need.

Studies: Optuna RDB studies on the system's database named by :func:`recovery_study_name`;
as for detectors, a study is tied to a lineage of recorded incidents: a second call with the
same name and storage continues it (CMA-ES keeps its state in the trials) when the recorded
crash loops share at least one incident with the ones it last ran on (the history grew or
moved on by a night), and refuses recorded incidents that have nothing in common with them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import TrialState

from tasks.recovery.backoff import BackoffPolicy, decide_restart
from tasks.recovery.base import RecoverySettings
from tasks.recovery.breaker import BreakerConfig, BreakerState, CircuitBreaker

STUDY_PREFIX = "selfheal-tune-recovery-"
SPACE_VERSION = 1
_LINEAGE_ATTR = "timelines_lineage"
_SPACE_ATTR = "space"
BACKOFF_KEYS = ("base", "factor", "cap")
BREAKER_KEYS = ("failure_rate_threshold", "wait_in_open", "permitted_in_half_open")
VALIDATION_KEYS = ("validation_timeout",)


# -- parameters, settings, weights -------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryParams:
    """The tuned recovery parameters (defaults: the system's defaults)."""

    base: float = BackoffPolicy.base
    factor: float = BackoffPolicy.factor
    cap: float = BackoffPolicy.cap
    failure_rate_threshold: float = BreakerConfig.failure_rate_threshold
    wait_in_open: float = BreakerConfig.wait_in_open
    permitted_in_half_open: int = BreakerConfig.permitted_in_half_open
    validation_timeout: float = RecoverySettings.validation_timeout

    @classmethod
    def from_settings(
        cls, backoff: BackoffPolicy, breaker: BreakerConfig, validation_timeout: float
    ) -> RecoveryParams:
        """The parameters a ``RecoverySettings`` runs with."""
        return cls(
            base=backoff.base,
            factor=backoff.factor,
            cap=backoff.cap,
            failure_rate_threshold=breaker.failure_rate_threshold,
            wait_in_open=breaker.wait_in_open,
            permitted_in_half_open=breaker.permitted_in_half_open,
            validation_timeout=validation_timeout,
        )

    def backoff_policy(self, template: BackoffPolicy | None = None) -> BackoffPolicy:
        """``template`` (reset_after, max_restarts, window kept) with the tuned backoff."""
        return replace(
            template or BackoffPolicy(), base=self.base, factor=self.factor, cap=self.cap
        )

    def breaker_config(self, template: BreakerConfig | None = None) -> BreakerConfig:
        """``template`` (window and minimum calls kept) with the tuned breaker values."""
        return replace(
            template or BreakerConfig(),
            failure_rate_threshold=self.failure_rate_threshold,
            wait_in_open=self.wait_in_open,
            permitted_in_half_open=int(self.permitted_in_half_open),
        )

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ReplaySettings:
    """What the replay keeps fixed: untuned policy fields and the world around the policy."""

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    max_inline_backoff: float = RecoverySettings.max_inline_backoff
    escalation_delay_s: float = 900.0  # after escalating, time until a person/next rung acts
    max_steps: int = 1000  # safety net for the restart loop


@dataclass(frozen=True)
class CostWeights:
    """Weights of the scalar objective, in seconds of unavailability (see the module doc)."""

    unavailable_s: float = 1.0
    restart: float = 10.0
    escalation: float = 120.0
    misjudged: float = 30.0
    validation_wait_s: float = 0.1
    failed_call: float = 0.5
    refused_call: float = 1.0
    close_after_s: float = 0.1


# -- timelines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashLoop:
    """A component down at ``down_at`` whose restarts only work ``fixed_after_s`` later."""

    component: str
    down_at: datetime
    fixed_after_s: float
    first_restart_after_s: float = 30.0
    startup_s: float = 5.0
    source: str = "synthetic"


@dataclass(frozen=True)
class DependencyOutage:
    """Calls to a dependency (seconds from the start) and the outcome each would have had."""

    name: str
    times: tuple[float, ...]
    ok: tuple[bool, ...]
    recovered_at_s: float
    source: str = "synthetic"


@dataclass(frozen=True)
class HealthWait:
    """How long a restarted component needed to become healthy."""

    component: str
    needed_s: float


@dataclass(frozen=True)
class RecoveryTimelines:
    crash_loops: tuple[CrashLoop, ...] = ()
    outages: tuple[DependencyOutage, ...] = ()
    health_waits: tuple[HealthWait, ...] = ()

    def fingerprint(self) -> str:
        """A short hash of every timeline: a study must not mix different sets."""
        h = hashlib.sha256()
        for c in self.crash_loops:
            h.update(repr((c.component, c.down_at.isoformat(), c.fixed_after_s)).encode())
            h.update(repr((c.first_restart_after_s, c.startup_s)).encode())
        for o in self.outages:
            h.update(o.name.encode())
            h.update(np.asarray(o.times, float).tobytes() + np.asarray(o.ok, bool).tobytes())
            h.update(repr(o.recovered_at_s).encode())
        for w in self.health_waits:
            h.update(repr((w.component, w.needed_s)).encode())
        return h.hexdigest()[:12]

    def lineage(self) -> list[str]:
        """The recorded incidents (component and time down): what a continued study shares."""
        return sorted(
            f"{c.component}@{c.down_at.isoformat()}"
            for c in self.crash_loops
            if c.source != "single-crash"  # the same canonical set in every corpus
        )


# -- replays -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashLoopOutcome:
    restarts: int
    unavailable_s: float
    escalated: bool
    misjudged: int
    recovered_after_s: float
    validation_wait_s: float = 0.0  # spent waiting for health that a failed restart never got


def replay_crash_loop(
    loop: CrashLoop, params: RecoveryParams, settings: ReplaySettings | None = None
) -> CrashLoopOutcome:
    """Drive ``decide_restart`` through one crash loop as ``RestartStrategy.execute`` does."""
    cfg = settings or ReplaySettings()
    policy = params.backoff_policy(cfg.backoff)
    wait = float(params.validation_timeout)
    t = float(loop.first_restart_after_s)
    restarts: list[datetime] = []
    down_since: float | None = 0.0  # None while the component is up
    healthy_at: float | None = None  # a misjudged good restart: up at this time
    unavailable = 0.0
    misjudged = 0
    failed_wait = 0.0
    escalated = False
    recovered: float | None = None

    def settle(now: float) -> None:
        """Account for a misjudged restart that came up before ``now``."""
        nonlocal healthy_at, down_since, unavailable
        if healthy_at is not None and healthy_at <= now and down_since is not None:
            unavailable += healthy_at - down_since
            down_since = None
        healthy_at = None if healthy_at is not None and healthy_at <= now else healthy_at

    for _ in range(cfg.max_steps):
        now = loop.down_at + timedelta(seconds=t)
        d = decide_restart(restarts, now, policy)
        if d.exhausted or (not d.allowed and d.wait_s > cfg.max_inline_backoff):
            escalated = True
            break
        if not d.allowed:
            t += d.wait_s
            continue
        settle(t)
        healthy_at = None  # a restart interrupts a component that was still starting
        restarts.append(now)
        if down_since is None:
            down_since = t  # restarting a component that was up takes it down
        if t >= loop.fixed_after_s:
            if loop.startup_s <= wait:
                unavailable += t + loop.startup_s - down_since
                recovered = t + loop.startup_s
                break
            misjudged += 1
            healthy_at = t + loop.startup_s
        failed_wait += wait
        t += wait
    else:
        escalated = True
    if recovered is None:
        if healthy_at is not None and down_since is not None:
            unavailable += healthy_at - down_since  # it comes up although judged failed
            recovered = healthy_at
        elif down_since is not None:
            back = max(t + cfg.escalation_delay_s, loop.fixed_after_s) + loop.startup_s
            unavailable += back - down_since
            recovered = back
        else:
            recovered = t
    return CrashLoopOutcome(
        len(restarts), unavailable, escalated, misjudged, recovered, failed_wait
    )


@dataclass(frozen=True)
class OutageOutcome:
    failed_calls: int  # calls made while the dependency failed
    refused_calls: int  # healthy calls the breaker refused
    close_after_s: float  # open (or half-open) time after the dependency recovered
    calls: int


def replay_outage(
    outage: DependencyOutage, params: RecoveryParams, settings: ReplaySettings | None = None
) -> OutageOutcome:
    """Feed the recorded calls through a ``CircuitBreaker`` with the candidate configuration."""
    cfg = settings or ReplaySettings()
    breaker = CircuitBreaker(BreakerState(outage.name), params.breaker_config(cfg.breaker))
    failed = refused = 0
    for t, ok in zip(outage.times, outage.ok, strict=True):
        if breaker.try_acquire(t):
            failed += int(not ok)
            breaker.record(ok, t)
        elif ok:
            refused += 1
    end = outage.times[-1] if outage.times else outage.recovered_at_s
    state = breaker.current(end)
    s = breaker.state
    if s.transitions == 0:
        close_after = 0.0
    elif state == "closed":
        close_after = max((s.changed_at or 0.0) - outage.recovered_at_s, 0.0)
    else:
        close_after = max(end - outage.recovered_at_s, 0.0)
    return OutageOutcome(failed, refused, close_after, len(outage.times))


def score_recovery(
    params: RecoveryParams,
    timelines: RecoveryTimelines,
    weights: CostWeights | None = None,
    settings: ReplaySettings | None = None,
) -> dict[str, float]:
    """Replay every timeline; totals per measure, means per crash loop, and the ``cost``."""
    w = weights or CostWeights()
    loops = [replay_crash_loop(c, params, settings) for c in timelines.crash_loops]
    outs = [replay_outage(o, params, settings) for o in timelines.outages]
    health_misjudged = sum(
        1 for h in timelines.health_waits if h.needed_s > params.validation_timeout
    )
    m = {
        "restarts": float(sum(r.restarts for r in loops)),
        "unavailable_s": float(sum(r.unavailable_s for r in loops)),
        "escalations": float(sum(r.escalated for r in loops)),
        "misjudged": float(sum(r.misjudged for r in loops) + health_misjudged),
        "validation_wait_s": float(sum(r.validation_wait_s for r in loops)),
        "failed_calls": float(sum(o.failed_calls for o in outs)),
        "refused_calls": float(sum(o.refused_calls for o in outs)),
        "close_after_s": float(sum(o.close_after_s for o in outs)),
    }
    n = max(len(loops), 1)
    m["restarts_per_loop"] = m["restarts"] / n
    m["unavailable_s_per_loop"] = m["unavailable_s"] / n
    m["cost"] = (
        w.unavailable_s * m["unavailable_s"]
        + w.restart * m["restarts"]
        + w.escalation * m["escalations"]
        + w.misjudged * m["misjudged"]
        + w.validation_wait_s * m["validation_wait_s"]
        + w.failed_call * m["failed_calls"]
        + w.refused_call * m["refused_calls"]
        + w.close_after_s * m["close_after_s"]
    )
    return m


# -- timelines from what the system recorded ---------------------------------------------------


def _utc(value: Any) -> pd.Timestamp | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _health_wait(detail: Any) -> float | None:
    if not isinstance(detail, dict):
        return None
    validation = detail.get("validation")
    if isinstance(validation, dict) and validation.get("health_wait_s") is not None:
        return float(validation["health_wait_s"])
    return None


def _fault_rows(faults: pd.DataFrame | None) -> list[dict[str, Any]]:
    if faults is None or faults.empty:
        return []
    out = []
    for row in faults.to_dict("records"):
        detail = row.get("detail") if isinstance(row.get("detail"), dict) else {}
        row["_components"] = {row["component"], *detail.get("affects", [])}
        out.append(row)
    return out


def timelines_from_history(
    up_samples: pd.DataFrame,
    actions: pd.DataFrame,
    faults: pd.DataFrame | None = None,
    *,
    series: pd.DataFrame | None = None,
    crash_faults: Sequence[str] = ("crash",),
    default_startup_s: float = 5.0,
) -> list[CrashLoop]:
    """Crash-loop timelines from recorded ``up`` samples, restart actions and fault injections.

    ``up_samples``: component, ts, value (1 up, 0 down) - or series_id, ts, value with the
    ``series`` frame (``storage.metrics.series_frame``) to name components; ``actions``:
    ``storage.recoveries.actions_frame``; ``faults``: ``storage.faults.faults_frame``.

    An episode runs from the first down sample to the next up sample of a component and
    becomes a timeline when restarts were made in it. When the cause cleared
    (``fixed_after_s``) comes from a fault injection on the component that covers the episode
    and has a ``cleared_at``; without one it is the start of the restart that worked - the
    earliest time a restart is *known* to work, so the replay of the recorded policy
    reproduces the recorded restarts - or, when none worked, the time the component came back
    by other means minus its start-up. ``startup_s`` is the successful restart's recorded
    health wait when there is one. Crash-type fault injections (``crash_faults``) that match
    no episode, e.g. because ``up`` was not sampled finely enough, still give a timeline
    from the injection and the restarts that followed it.
    """
    up = up_samples
    if "component" not in up.columns:
        if series is None:
            raise ValueError("up_samples has no component column: pass the series frame")
        names = series[["series_id", "component"]]
        up = up.merge(names, on="series_id", how="inner")
    acts = actions[actions["kind"] == "restart"] if not actions.empty else actions
    fault_rows = _fault_rows(faults)
    used_faults: set[Any] = set()
    out: list[CrashLoop] = []
    for comp, rows in up.groupby("component", sort=True):
        rows = rows.sort_values("ts")
        ts = [_utc(t) for t in rows["ts"]]
        down = (rows["value"].to_numpy(dtype=float) < 0.5).tolist()
        i = 0
        while i < len(down):
            if not down[i] or (i > 0 and down[i - 1]):
                i += 1
                continue
            j = i
            while j < len(down) and down[j]:
                j += 1
            if j == len(down):
                break  # still down at the end: the outcome is not known yet
            down_at, up_at = ts[i], ts[j]
            assert down_at is not None and up_at is not None
            mine = acts[acts["component"] == comp] if not acts.empty else acts
            starts: list[tuple[pd.Timestamp, bool, Any]] = []
            for r in mine.to_dict("records"):
                at = _utc(r["started_at"])
                if at is not None and down_at <= at <= up_at:
                    starts.append((at, bool(r["ok"]), r.get("detail")))
            starts.sort(key=lambda s: s[0])
            i = j
            if not starts:
                continue
            loop = _episode(
                comp, down_at, up_at, starts, fault_rows, used_faults, default_startup_s
            )
            out.append(loop)
    out.extend(_fault_only(acts, fault_rows, used_faults, crash_faults, default_startup_s))
    return sorted(out, key=lambda c: (c.down_at, c.component))


def _episode(
    comp: str,
    down_at: pd.Timestamp,
    up_at: pd.Timestamp,
    starts: list[tuple[pd.Timestamp, bool, Any]],
    fault_rows: list[dict[str, Any]],
    used_faults: set[Any],
    default_startup_s: float,
) -> CrashLoop:
    good = [s for s in starts if s[1]]
    startup = default_startup_s
    if good:
        recorded = _health_wait(good[0][2])
        startup = recorded if recorded is not None else default_startup_s
    fixed: float | None = None
    source = "history"
    for row in fault_rows:
        injected, cleared = _utc(row["injected_at"]), _utc(row.get("cleared_at"))
        if comp not in row["_components"] or injected is None or injected > up_at:
            continue
        if cleared is not None and cleared >= down_at - pd.Timedelta(minutes=10):
            fixed = max((cleared - down_at).total_seconds(), 0.0)
            used_faults.add(row.get("id"))
            source = f"fault:{row.get('id')}"
            break
        if cleared is None and injected >= down_at - pd.Timedelta(minutes=10):
            used_faults.add(row.get("id"))  # the episode covers it; no better fix time
    if fixed is None:
        if good:
            fixed = (good[0][0] - down_at).total_seconds()
        else:
            fixed = max((up_at - down_at).total_seconds() - startup, 0.0)
    return CrashLoop(
        component=str(comp),
        down_at=down_at.to_pydatetime(),
        fixed_after_s=float(fixed),
        first_restart_after_s=float((starts[0][0] - down_at).total_seconds()),
        startup_s=float(startup),
        source=source,
    )


def _fault_only(
    acts: pd.DataFrame,
    fault_rows: list[dict[str, Any]],
    used_faults: set[Any],
    crash_faults: Sequence[str],
    default_startup_s: float,
) -> list[CrashLoop]:
    out = []
    for row in fault_rows:
        if row.get("id") in used_faults or row.get("fault") not in crash_faults:
            continue
        injected, cleared = _utc(row["injected_at"]), _utc(row.get("cleared_at"))
        if injected is None or acts.empty:
            continue
        mine = acts[acts["component"] == row["component"]]
        starts = sorted(
            t for t in (_utc(x) for x in mine["started_at"]) if t is not None and t >= injected
        )
        if not starts:
            continue
        fixed = max((cleared - injected).total_seconds(), 0.0) if cleared is not None else 0.0
        out.append(
            CrashLoop(
                component=str(row["component"]),
                down_at=injected.to_pydatetime(),
                fixed_after_s=fixed,
                first_restart_after_s=(starts[0] - injected).total_seconds(),
                startup_s=default_startup_s,
                source=f"fault:{row.get('id')}",
            )
        )
    return out


def health_waits_from_actions(actions: pd.DataFrame) -> list[HealthWait]:
    """Recorded health waits of successful restarts (``detail["validation"]["health_wait_s"]``)."""
    if actions.empty:
        return []
    out = []
    for r in actions[(actions["kind"] == "restart") & actions["ok"].astype(bool)].to_dict(
        "records"
    ):
        wait = _health_wait(r.get("detail"))
        if wait is not None:
            out.append(HealthWait(str(r["component"]), wait))
    return out


# -- synthetic timelines (benchmarks, tests, a cold start) -------------------------------------


def synthetic_crash_loops(
    n: int,
    seed: int = 0,
    *,
    transient_share: float = 0.3,
    median_fix_s: float = 240.0,
    start: datetime | None = None,
) -> list[CrashLoop]:
    """Crash loops like the platform's: some transient (the first restart works), most with a
    cause that clears after a log-normal time (median ``median_fix_s``), detection 15-60 s,
    start-up log-normal around 8 s with a tail past the 30 s validation wait."""
    rng = np.random.default_rng(seed)
    t0 = start or datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        transient = rng.random() < transient_share
        fix = 0.0 if transient else float(min(rng.lognormal(math.log(median_fix_s), 0.9), 3600))
        out.append(
            CrashLoop(
                component=f"svc{i % 7}",
                down_at=t0 + timedelta(hours=i),
                fixed_after_s=round(fix, 1),
                first_restart_after_s=round(float(rng.uniform(15, 60)), 1),
                startup_s=round(float(min(rng.lognormal(math.log(8.0), 0.6), 120.0)), 1),
            )
        )
    return out


# The common case a tuned policy must not make slower: a crash that one restart heals (or
# two, when the first comes too early), with start-ups within the default validation wait
# (a start-up longer than the wait is a validation problem, which health waits inform).
SINGLE_CRASH_STARTUPS_S = (2.0, 8.0, 20.0)
SINGLE_CRASH_FIX_AFTER_S = (0.0, 5.0)
# Added to a trial's cost (times 1 + the seconds lost) when it heals a single crash later than
# the running settings: larger than any replayed cost, so such a candidate never ranks above
# the running settings, which are always a trial.
SINGLE_CRASH_PENALTY = 1e6


def single_crashes(start: datetime | None = None) -> tuple[CrashLoop, ...]:
    """Crashes healed by the first restart or the second, restarted as soon as detected."""
    t0 = start or datetime(2025, 1, 1, tzinfo=UTC)
    return tuple(
        CrashLoop(
            component="single",
            down_at=t0 + timedelta(hours=i),
            fixed_after_s=fix,
            first_restart_after_s=0.0,
            startup_s=startup,
            source="single-crash",
        )
        for i, (fix, startup) in enumerate(
            (f, s) for f in SINGLE_CRASH_FIX_AFTER_S for s in SINGLE_CRASH_STARTUPS_S
        )
    )


def _single_crash_delays(
    candidate: RecoveryParams, running: RecoveryParams, settings: ReplaySettings | None
) -> list[tuple[CrashLoop, float, float]]:
    """(crash, candidate's time to heal, running's) for each single crash."""
    return [
        (
            loop,
            replay_crash_loop(loop, candidate, settings).recovered_after_s,
            replay_crash_loop(loop, running, settings).recovered_after_s,
        )
        for loop in single_crashes()
    ]


def slower_on_single_crashes(
    candidate: RecoveryParams,
    running: RecoveryParams,
    settings: ReplaySettings | None = None,
) -> list[str]:
    """The single crashes ``candidate`` heals later than ``running`` (empty: none).

    A candidate that wins on long crash loops by waiting longer must not make the common,
    quick case slower: promotion refuses any candidate this returns something for.
    """
    return [
        f"start-up {loop.startup_s:g} s, fixed after {loop.fixed_after_s:g} s: "
        f"healed after {ours:.1f} s instead of {theirs:.1f} s"
        for loop, ours, theirs in _single_crash_delays(candidate, running, settings)
        if ours > theirs + 1e-6
    ]


def single_crash_excess_s(
    candidate: RecoveryParams,
    running: RecoveryParams,
    settings: ReplaySettings | None = None,
) -> float:
    """Seconds ``candidate`` adds, summed over the single crashes it heals later."""
    return sum(
        max(ours - theirs, 0.0)
        for _, ours, theirs in _single_crash_delays(candidate, running, settings)
    )


def synthetic_outages(n: int, seed: int = 0) -> list[DependencyOutage]:
    """Outages of 20 s - 15 min (log-normal, median 2 min) amid 1% background errors, calls at
    0.5-5 per second, 10 minutes before and after."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rate = float(rng.uniform(0.5, 5.0))
        duration = float(np.clip(rng.lognormal(math.log(120.0), 0.8), 20.0, 900.0))
        start, end = 600.0, 600.0 + duration
        horizon = end + 600.0
        times = np.cumsum(rng.exponential(1.0 / rate, size=int(horizon * rate * 1.2) + 10))
        times = times[times < horizon]
        failing = (times >= start) & (times < end)
        ok = ~failing & (rng.random(len(times)) >= 0.01)
        out.append(
            DependencyOutage(
                name=f"dep{i}",
                times=tuple(np.round(times, 3).tolist()),
                ok=tuple(bool(x) for x in ok),
                recovered_at_s=end,
            )
        )
    return out


# -- studies -----------------------------------------------------------------------------------


def recovery_study_name(data_tag: str, scope: str = "all") -> str:
    """``selfheal-tune-recovery-<scope>-v<space version>-<data tag>``.

    ``scope`` is what the parameters apply to (``"all"``, or a component when tuned per
    component); ``data_tag`` names the timelines (the night's date, or
    ``RecoveryTimelines.fingerprint()``).
    """
    return f"{STUDY_PREFIX}{scope}-v{SPACE_VERSION}-{data_tag}"


def recovery_space(
    timelines: RecoveryTimelines | None = None, current: RecoveryParams | None = None
) -> dict[str, BaseDistribution]:
    """The CMA-ES space; only the parameters the timelines can inform.

    Backoff and validation wait need crash loops (or health waits for the wait), the breaker
    needs outages; the others stay at their current values, instead of drifting wherever a
    flat objective lets CMA-ES wander. With ``current``, the first backoff is at most the
    running settings' wait before a second restart (their validation wait or first backoff,
    whichever is longer): a longer one could only delay the second restart of a quick crash,
    which the search refuses anyway (``single_crash_excess_s``), so it is not searched.
    """
    base_high = 300.0
    if current is not None:
        base_high = max(min(current.base, current.cap), current.validation_timeout, 1.5)
    full: dict[str, BaseDistribution] = {
        "base": FloatDistribution(1.0, base_high, log=True),
        "factor": FloatDistribution(1.0, 4.0),
        "cap": FloatDistribution(10.0, 900.0, log=True),
        "failure_rate_threshold": FloatDistribution(10.0, 100.0),
        "wait_in_open": FloatDistribution(1.0, 600.0, log=True),
        "permitted_in_half_open": IntDistribution(1, 10),
        "validation_timeout": FloatDistribution(5.0, 300.0, log=True),
    }
    if timelines is None:
        return full
    keep: set[str] = set()
    if timelines.crash_loops:
        keep |= {*BACKOFF_KEYS, *VALIDATION_KEYS}
    if timelines.health_waits:
        keep |= set(VALIDATION_KEYS)
    if timelines.outages:
        keep |= set(BREAKER_KEYS)
    return {k: v for k, v in full.items() if k in keep}


def open_recovery_study(
    storage: str | optuna.storages.BaseStorage | None,
    *,
    study_name: str | None = None,
    data_tag: str = "adhoc",
    scope: str = "all",
    seed: int | None = None,
) -> optuna.Study:
    """Create or load the CMA-ES study (minimise the cost) on ``storage`` (a URL or None).

    The cost is piecewise constant (restart times are discrete, a loop escalates or not), so
    CMA-ES alone can stall on a plateau: 20 random start-up trials and a population of 16
    find the basin first (on a single recorded loop, 5 seeds out of 5 instead of 4 out of 5).
    """
    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=40, popsize=16, warn_independent_sampling=False
    )
    return optuna.create_study(
        study_name=study_name or recovery_study_name(data_tag, scope),
        storage=storage,
        sampler=sampler,
        direction="minimize",
        load_if_exists=True,
    )


@dataclass(frozen=True)
class RecoveryTuning:
    """The best parameters of the study and how they and the current ones score."""

    best: RecoveryParams
    metrics: dict[str, float]
    current: RecoveryParams
    current_metrics: dict[str, float]
    trials: int
    study_name: str

    @property
    def improved(self) -> bool:
        return self.metrics["cost"] < self.current_metrics["cost"]


def _params_from(values: Mapping[str, Any], current: RecoveryParams) -> RecoveryParams:
    known = {f.name for f in fields(RecoveryParams)}
    kw = {k: v for k, v in values.items() if k in known}
    if "permitted_in_half_open" in kw:
        kw["permitted_in_half_open"] = int(kw["permitted_in_half_open"])
    params = replace(current, **kw)
    # A delay is min(cap, base * factor**n): a base above the cap behaves as base = cap, so
    # say so instead of reporting a first backoff the policy never waits.
    return replace(params, base=min(params.base, params.cap))


def _distance(
    values: Mapping[str, Any], centre: Mapping[str, Any], dims: Mapping[str, BaseDistribution]
) -> float:
    """Distance in the space's own scale (log where the dimension is log)."""
    total = 0.0
    for k, d in dims.items():
        if not isinstance(d, FloatDistribution | IntDistribution):
            continue
        lo, hi, a, b = float(d.low), float(d.high), float(values[k]), float(centre[k])
        if d.log:
            lo, hi, a, b = (math.log(max(x, 1e-12)) for x in (lo, hi, a, b))
        total += ((a - b) / (hi - lo)) ** 2 if hi > lo else 0.0
    return math.sqrt(total)


def tune_recovery(
    study: optuna.Study,
    timelines: RecoveryTimelines,
    current: RecoveryParams | None = None,
    timeout_s: float | None = 30.0,
    n_trials: int | None = None,
    *,
    weights: CostWeights | None = None,
    settings: ReplaySettings | None = None,
) -> RecoveryTuning:
    """Run (or continue) the CMA-ES study; return the best parameters found so far.

    The current parameters are enqueued first (unless the study already has them), so the
    result is never worse than what runs on these timelines. Among equally good trials the
    one closest to the current parameters wins: a parameter the timelines cannot distinguish
    is not changed.
    """
    optuna.logging.set_verbosity(logging.WARNING)
    started = time.monotonic()
    cur = current or RecoveryParams()
    lineage = timelines.lineage()
    known = study.user_attrs.get(_LINEAGE_ATTR)
    if known and lineage and not set(known) & set(lineage):
        raise ValueError(
            f"study {study.study_name!r} was run on other timelines (no recorded incident in "
            f"common: {known[0]} … against {lineage[0]} …); open a study named for these"
        )
    study.set_user_attr(_LINEAGE_ATTR, lineage)
    stored = study.user_attrs.get(_SPACE_ATTR)
    if stored:
        dims = {k: json_to_distribution(v) for k, v in stored.items()}
    else:
        dims = recovery_space(timelines, cur)
        study.set_user_attr(_SPACE_ATTR, {k: distribution_to_json(d) for k, d in dims.items()})
    if not dims:
        raise ValueError("no timelines: nothing to tune")
    centre = cur.as_dict()
    first: dict[str, float | int] = {}
    for k, d in dims.items():
        assert isinstance(d, FloatDistribution | IntDistribution)
        v = min(max(centre[k], d.low), d.high)
        first[k] = round(v) if isinstance(d, IntDistribution) else float(v)
    study.enqueue_trial(first, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        values: dict[str, float | int] = {}
        for k, d in dims.items():
            if isinstance(d, IntDistribution):
                values[k] = trial.suggest_int(k, d.low, d.high, log=d.log)
            else:
                assert isinstance(d, FloatDistribution)
                values[k] = trial.suggest_float(k, d.low, d.high, log=d.log)
        params = _params_from(values, cur)
        m = score_recovery(params, timelines, weights, settings)
        for key in ("restarts", "unavailable_s", "escalations", "misjudged", "failed_calls"):
            trial.set_user_attr(key, m[key])
        trial.set_user_attr("refused_calls", m["refused_calls"])
        if "base" in dims or "validation_timeout" in dims:
            # Never trade the common case for the rare one: a candidate that heals a single
            # crash later than what runs is out of bounds, whatever it saves on long loops.
            # The penalty grows with the seconds lost, so the search is led back to safety.
            excess = single_crash_excess_s(params, cur, settings)
            trial.set_user_attr("single_crash_excess_s", excess)
            return m["cost"] + (SINGLE_CRASH_PENALTY * (1.0 + excess) if excess > 1e-6 else 0.0)
        return m["cost"]

    remaining = None if timeout_s is None else timeout_s - (time.monotonic() - started)
    if remaining is None or remaining > 0:
        study.optimize(objective, n_trials=n_trials, timeout=remaining)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best_cost = min(t.value for t in done if t.value is not None)
    tol = 1e-9 + 1e-9 * abs(best_cost)
    ties = [t for t in done if t.value is not None and t.value <= best_cost + tol]
    best_trial = min(ties, key=lambda t: (_distance(t.params, centre, dims), t.number))
    best = _params_from(best_trial.params, cur)
    return RecoveryTuning(
        best=best,
        metrics=score_recovery(best, timelines, weights, settings),
        current=cur,
        current_metrics=score_recovery(cur, timelines, weights, settings),
        trials=len(done),
        study_name=study.study_name,
    )
