"""Genetic search of recovery parameters with Optuna's ask/tell interface, run safely.

A search tries configurations one at a time on the live component: ask the sampler for
values (always inside the declared bounds), apply them, let them settle for
``settle_time``, measure health over ``measure_time`` (the fitness: the component's
``score_metric`` when it reports one), tell the result. Safety while searching:

- every trial is clipped to the declared bounds and steps before it is applied;
- one trial at a time per component (the coordinator runs one recovery per component,
  and a search applies its trials sequentially);
- a trial whose score is more than ``worse_margin`` below the starting score is rolled
  back to the starting values at once, before anything else happens;
- the search has a trial budget (``genetic_trials``) and a time budget, and stops early
  once the score is back in its pre-incident range (the score metric's stored history
  before the issue began);
- every trial is a recorded action and an audit row (``executed`` with its trial number),
  and runs through ``step_runner`` (the recover flow makes each one a Prefect task run).

At the end the best configuration measured is applied when it beat the start, else the
starting values are restored; then the issue is validated.

Learning across incidents: the study is stored in our database (Optuna's RDB storage)
and named after the component and the kind of issue, so it continues across recoveries
and processes. A new search first re-tries the best configuration the study knows
(``enqueue_trial``), and CMA-ES resumes from the population its stored trials left. CMA-ES
samples spaces of two or more parameters (on a log scale for parameters spanning a
factor of ten or more); NSGA-II is used when error ratio and latency are separate
objectives; a single parameter uses TPE.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from storage.audit import audit
from storage.metrics import read_samples
from tasks.recovery.base import (
    ComponentSpec,
    IssueInfo,
    Outcome,
    Plan,
    RecoveryContext,
    RecoveryStrategy,
)
from tasks.recovery.health import HealthMeasure, check_health, measure, wait_healthy
from tasks.recovery.params import apply_and_record, clip_values, current_values, defaults
from tasks.recovery.validate import Validation, validate_fix

STUDY_PREFIX = "selfheal-genetic-"
WORSE_MARGIN = 0.05  # a trial this far below the starting score is rolled back at once
FLOOR_SPREADS = 4.0  # the pre-incident range: median less this many robust spreads
MIN_SPREAD = 0.005  # of the median: a flat history still has a range
STOP_SPREADS = 0.5  # the search stops this many spreads inside the range
BASELINE = timedelta(hours=1)
T = TypeVar("T")


def _log_scale(lo: float, hi: float) -> bool:
    return lo > 0 and hi / lo >= 10


def distributions(comp: ComponentSpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, p in sorted(comp.parameters.items()):
        step = p.step
        if p.type == "int":
            istep = int(step or 1)
            log = istep == 1 and _log_scale(p.min, p.max)
            out[name] = IntDistribution(int(p.min), int(p.max), log=log, step=istep)
        else:
            log = step is None and _log_scale(p.min, p.max)
            out[name] = FloatDistribution(p.min, p.max, log=log, step=step)
    return out


def describe_bounds(comp: ComponentSpec) -> str:
    return ", ".join(f"{k} [{p.min:g}, {p.max:g}]" for k, p in sorted(comp.parameters.items()))


def optuna_storage_url(ctx: RecoveryContext) -> str:
    return ctx.engine.url.render_as_string(hide_password=False)


def study_name(component: str, kind: str, objectives: int = 1) -> str:
    return f"{STUDY_PREFIX}{component}-{kind}" + ("-pareto" if objectives > 1 else "")


def make_sampler(
    n_params: int, objectives: int = 1, seed: int | None = None
) -> tuple[optuna.samplers.BaseSampler, str]:
    if objectives > 1:
        return optuna.samplers.NSGAIISampler(population_size=8, seed=seed), "NSGA-II"
    if n_params >= 2:
        # Starts at the centre of the (log-scaled) box (the defaults, when they are its
        # geometric middle), 0.3 of its width wide, with small generations (5): a live
        # search pays seconds per trial, so it adapts after fewer of them.
        with warnings.catch_warnings():
            # Optuna 4.9+ deprecates an explicit sigma0 (still honoured until 6.0); the
            # operator's terminal is not the place for that notice.
            warnings.filterwarnings("ignore", message=".*sigma0", category=FutureWarning)
            cmaes = optuna.samplers.CmaEsSampler(
                seed=seed,
                n_startup_trials=0,
                sigma0=0.3,
                popsize=5,
                warn_independent_sampling=False,
            )
        return cmaes, "CMA-ES"
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3), "TPE"


def open_study(
    comp: ComponentSpec,
    ctx: RecoveryContext,
    objectives: int = 1,
    seed: int | None = None,
    kind: str = "metric",
    storage: str | optuna.storages.BaseStorage | None = None,
) -> optuna.Study:
    """The study of (component, kind of issue): created on first use, continued after."""
    optuna.logging.set_verbosity(logging.WARNING)
    sampler, _ = make_sampler(len(comp.parameters), objectives, seed)
    directions: list[Literal["minimize", "maximize"]] = (
        ["minimize"] * objectives if objectives > 1 else ["maximize"]
    )
    return optuna.create_study(
        study_name=study_name(comp.name, kind, objectives),
        storage=storage if storage is not None else optuna_storage_url(ctx),
        sampler=sampler,
        directions=directions,
        load_if_exists=True,
    )


def best_known(study: optuna.Study) -> tuple[dict[str, float], float] | None:
    """The best completed trial of a single-objective study: (values, score)."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values is not None and len(t.values) == 1
    ]
    if not done:
        return None
    best = max(done, key=lambda t: t.values[0])
    return {k: float(v) for k, v in best.params.items()}, float(best.values[0])


def pre_incident_floor(
    engine: Any, component: str, metric: str, first_seen: datetime
) -> float | None:
    """The lower end of the score metric's usual range before the issue began (see
    ``pre_incident_range``)."""
    found = pre_incident_range(engine, component, metric, first_seen)
    return None if found is None else found[0]


def pre_incident_range(
    engine: Any, component: str, metric: str, first_seen: datetime
) -> tuple[float, float] | None:
    """(floor, spread): the lower end of the score metric's usual range before the issue
    began, and the robust spread of its noise.

    Robust to the first minutes of the incident itself (the score often drops some
    samples before the issue is opened on another symptom, pulling the lower part of the
    history down): the 75th percentile of the hour before ``first_seen`` less
    ``FLOOR_SPREADS`` standard deviations of the noise, estimated from the upper half
    alone (at least ``MIN_SPREAD`` of the percentile): for normal noise 3.3 standard
    deviations below the mean."""
    samples = read_samples(
        engine,
        pd.Timestamp(first_seen - BASELINE),
        pd.Timestamp(first_seen),
        component=component,
        metric=metric,
    )
    if len(samples) < 5:
        return None
    return range_and_spread(samples["value"].to_numpy(float))


def range_and_spread(values: np.ndarray) -> tuple[float, float]:
    """``pre_incident_range`` of these samples (see there)."""
    center = float(np.quantile(values, 0.75))
    upper = values[values >= np.median(values)]
    # For normal noise the median distance of the upper half from the 75th percentile
    # is 0.40 standard deviations.
    spread = max(float(np.median(np.abs(upper - center))) / 0.40, MIN_SPREAD * abs(center))
    return center - FLOOR_SPREADS * spread, spread


@dataclass
class TrialRecord:
    number: int
    values: dict[str, float]
    score: float | None
    rolled_back: bool = False
    error: str | None = None
    confirmed: float | None = None  # the second measurement of a trial that hit the target


@dataclass
class SearchResult:
    start_values: dict[str, float]
    start_score: float
    best_values: dict[str, float]
    best_score: float
    target: float | None
    stop_reason: str
    warm_start: dict[str, float] | None = None
    trials: list[TrialRecord] = field(default_factory=list)

    def as_details(self) -> dict[str, Any]:
        return {
            "values": self.best_values,
            "trials": len(self.trials),
            "start_score": round(self.start_score, 4),
            "best_score": round(self.best_score, 4),
            "target": None if self.target is None else round(self.target, 4),
            "stop": self.stop_reason,
            "warm_start": self.warm_start,
            "rolled_back": sum(t.rolled_back for t in self.trials),
            "history": [asdict(t) for t in self.trials],
        }


def _objectives(m: HealthMeasure, multi: bool) -> float | list[float]:
    if not multi:
        return m.score
    return [
        m.error_ratio if m.error_ratio is not None else 1.0 - m.score,
        m.mean_latency_s if m.mean_latency_s is not None else 0.0,
    ]


def _direct(name: str, fn: Callable[[], T]) -> T:
    return fn()


def _never() -> bool:
    return False


def _ignore(record: TrialRecord) -> None:
    return None


def run_search(
    study: optuna.Study,
    dims: dict[str, BaseDistribution],
    clip: Callable[[dict[str, float]], dict[str, float]],
    try_values: Callable[[int, dict[str, float]], HealthMeasure | str],
    roll_back: Callable[[int, float], None],
    *,
    start_values: dict[str, float],
    start_score: float,
    target: float | None,
    max_trials: int,
    out_of_time: Callable[[], bool] = _never,
    worse_margin: float = WORSE_MARGIN,
    multi: bool = False,
    warm_start: bool = True,
    step_runner: Callable[[str, Callable[[], Any]], Any] = _direct,
    on_trial: Callable[[TrialRecord], None] = _ignore,
    confirm: Callable[[], HealthMeasure] | None = None,
    stop_margin: float = 0.0,
) -> SearchResult:
    """The search loop, apart from how values are applied and measured (``try_values``
    applies, settles and measures, or returns why it could not apply; ``roll_back``
    restores the starting values). ``bench.genetic`` runs it on the simulated surface.

    Trials are sequential; each is clipped to the bounds; one scoring more than
    ``worse_margin`` below ``start_score`` is rolled back before the next is asked for;
    the loop stops after ``max_trials``, when ``out_of_time()``, or when a trial reaches
    ``target`` (the pre-incident range) by ``stop_margin`` and, with ``confirm``, the mean
    of it and a second measurement does too (one lucky reading of a noisy score does not
    end the search; the margin keeps a trial that only just reached the range, which the
    validation would fail as often as pass, from ending it). With
    ``warm_start`` the best configuration the study knows is tried first."""
    warm = best_known(study) if warm_start and not multi else None
    if warm is not None:
        study.enqueue_trial(clip(warm[0]), skip_if_exists=False)
    result = SearchResult(
        dict(start_values),
        start_score,
        dict(start_values),
        start_score,
        target,
        "trial budget",
        warm[0] if warm else None,
    )

    def one(number: int) -> TrialRecord:
        trial = study.ask(dims)
        values = clip({k: float(v) for k, v in trial.params.items()})
        measured = try_values(number, values)
        if isinstance(measured, str):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return TrialRecord(number, values, None, error=measured)
        study.tell(trial, _objectives(measured, multi))
        record = TrialRecord(number, values, round(measured.score, 4))
        if measured.score < start_score - worse_margin:
            roll_back(number, measured.score)
            record.rolled_back = True
        elif measured.score > result.best_score:
            result.best_score, result.best_values = measured.score, values
        return record

    for i in range(max_trials):
        if out_of_time():
            result.stop_reason = "time budget"
            break
        number = i + 1
        record: TrialRecord = step_runner(f"genetic-trial-{number}", partial(one, number))
        result.trials.append(record)
        on_trial(record)
        if (
            target is not None
            and not multi
            and record.score is not None
            and not record.rolled_back
            and record.score >= target + stop_margin
        ):
            if confirm is not None:
                record.confirmed = round(confirm().score, 4)
                if (record.score + record.confirmed) / 2 < target + stop_margin:
                    continue
            result.stop_reason = "score back in its pre-incident range"
            break
    return result


class GeneticStrategy(RecoveryStrategy):
    """Parameters: ``multi_objective`` makes error ratio and latency separate goals;
    ``time_budget_s`` bounds a search (default: the trial budget's settle + measure
    windows and a second per trial, twice over, plus a minute); ``worse_margin`` is the
    rollback rule; ``step_runner`` runs each trial (``step_runner(name, fn)``; the recover
    flow can pass one that makes each trial a Prefect task run)."""

    name = "genetic"
    rung = 4

    def __init__(
        self,
        multi_objective: bool = False,
        seed: int | None = None,
        time_budget_s: float | None = None,
        worse_margin: float = WORSE_MARGIN,
        step_runner: Callable[[str, Callable[[], Any]], Any] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.multi_objective = multi_objective
        self.seed = seed
        self.time_budget_s = time_budget_s
        self.worse_margin = worse_margin
        self.step_runner = step_runner or _direct
        self.monotonic = monotonic

    # -- ladder ----------------------------------------------------------------------
    def applicable(self, issue: IssueInfo, ctx: RecoveryContext) -> str | None:
        comp = ctx.components.get(issue.component)
        if comp is None or not comp.parameters or comp.reconfigure is None:
            return "no tunable parameters with a reconfigure hook"
        return None

    def rung_for(self, issue: IssueInfo, ctx: RecoveryContext) -> float:
        """First when the evidence says the workload changed, not the component: it
        answers its health check and runs a configuration we chose (the declared defaults
        or the best our study knows), yet its own score is below its pre-incident range.
        A restart would keep the workload, and going back to defaults changes nothing.
        Only for what the component's measurements show: an error signature in its log or
        a down stretch names a fault of the component itself, which a restart addresses
        (its score sinks with any fault, so a low score alone is no evidence of a new
        workload)."""
        if issue.kind not in ("metric", "behaviour"):
            return float(self.rung)
        comp = ctx.components.get(issue.component)
        first_seen = issue.details.get("first_seen")
        metric = comp.health.score_metric if comp is not None else None
        if (
            comp is None
            or metric is None
            or not comp.parameters
            or comp.reconfigure is None
            or not isinstance(first_seen, datetime)
        ):
            return float(self.rung)
        current = current_values(comp)
        chosen = [defaults(comp)]
        known = self._best_known(comp, ctx, issue.kind)
        if known is not None:
            chosen.append(clip_values(comp, known[0]))
        if not any(all(abs(current[k] - c[k]) <= 1e-9 for k in current) for c in chosen):
            return float(self.rung)  # a configuration change: reconfigure's case
        floor = pre_incident_floor(ctx.engine, comp.name, metric, first_seen)
        if floor is None or not check_health(comp.health, comp.name).ok:
            return float(self.rung)
        m = measure(comp.health, 0.0, comp.name, sleep=ctx.sleep)
        return 0.4 if m.score < floor else float(self.rung)

    def _best_known(
        self, comp: ComponentSpec, ctx: RecoveryContext, kind: str
    ) -> tuple[dict[str, float], float] | None:
        try:
            study = optuna.load_study(
                study_name=study_name(comp.name, kind), storage=optuna_storage_url(ctx)
            )
        except KeyError:
            return None
        return best_known(study)

    # -- plan ------------------------------------------------------------------------
    def budget_s(self, ctx: RecoveryContext) -> float:
        if self.time_budget_s is not None:
            return self.time_budget_s
        s = ctx.settings
        return 2.0 * s.genetic_trials * (s.settle_time + s.measure_time + 1.0) + 60.0

    def plan(self, issue: IssueInfo, ctx: RecoveryContext) -> Plan:
        comp = ctx.component(issue.component)
        s = ctx.settings
        objectives = 2 if self.multi_objective else 1
        _, kind = make_sampler(len(comp.parameters), objectives)
        known = None if self.multi_objective else self._best_known(comp, ctx, issue.kind)
        start = (
            f"starting from the best settings known for this kind of issue "
            f"({_fmt(known[0])}, score {known[1]:.3f})"
            if known
            else "from scratch (no earlier search of this kind)"
        )
        measured = (
            f"then its {comp.health.score_metric} read"
            if comp.health.score_metric
            else f"and measured {s.measure_time:g} s"
        )
        action = (
            f"search {describe_bounds(comp)} of {comp.name} with {kind}, {start}: at most "
            f"{s.genetic_trials} trials or {self.budget_s(ctx):.0f} s, one at a time, each "
            f"settled {s.settle_time:g} s {measured}; a trial scoring "
            f"more than {self.worse_margin:g} below the starting score is rolled back at "
            f"once; stops early when the score is back in its pre-incident range; then "
            f"keeps the best settings measured, or restores the starting ones if none did "
            f"better"
        )
        return Plan(
            self.name,
            comp.name,
            action,
            {
                "parameters": sorted(comp.parameters),
                "bounds": {k: [p.min, p.max] for k, p in sorted(comp.parameters.items())},
                "sampler": kind,
                "max_trials": s.genetic_trials,
                "time_budget_s": self.budget_s(ctx),
                "worse_margin": self.worse_margin,
                "study": study_name(comp.name, issue.kind, objectives),
                "warm_start": known[0] if known else None,
            },
        )

    # -- search ----------------------------------------------------------------------
    def search(self, comp: ComponentSpec, issue: IssueInfo, ctx: RecoveryContext) -> SearchResult:
        s = ctx.settings
        multi = self.multi_objective
        start_values = current_values(comp)
        start = measure(comp.health, s.measure_time, comp.name, sleep=ctx.sleep)
        first_seen = issue.details.get("first_seen")
        found = (
            pre_incident_range(ctx.engine, comp.name, comp.health.score_metric, first_seen)
            if comp.health.score_metric and isinstance(first_seen, datetime)
            else None
        )
        target, spread = found if found is not None else (None, 0.0)
        study = open_study(comp, ctx, 2 if multi else 1, self.seed, issue.kind)

        def try_values(number: int, values: dict[str, float]) -> HealthMeasure | str:
            applied = apply_and_record(comp, values, ctx, "trial", trial=number)
            if not applied.ok:
                return applied.detail
            ctx.sleep(s.settle_time)
            return measure(comp.health, s.measure_time, comp.name, sleep=ctx.sleep)

        def roll_back(number: int, score: float) -> None:
            apply_and_record(
                comp,
                start_values,
                ctx,
                "rollback",
                trial=number,
                reason=f"score {score:.3f} more than {self.worse_margin:g} below the start",
            )

        deadline = self.monotonic() + self.budget_s(ctx)
        return run_search(
            study,
            distributions(comp),
            lambda v: clip_values(comp, v),
            try_values,
            roll_back,
            start_values=start_values,
            start_score=start.score,
            target=target,
            max_trials=s.genetic_trials,
            out_of_time=lambda: self.monotonic() >= deadline,
            worse_margin=self.worse_margin,
            multi=multi,
            step_runner=self.step_runner,
            on_trial=lambda record: self._audit(ctx, issue, record),
            confirm=lambda: measure(comp.health, s.measure_time, comp.name, sleep=ctx.sleep),
            # Hysteresis: stop half a noise spread inside the range, validate at its edge.
            stop_margin=STOP_SPREADS * spread,
        )

    def _audit(self, ctx: RecoveryContext, issue: IssueInfo, record: TrialRecord) -> None:
        with ctx.engine.begin() as conn:
            audit(
                conn,
                "executed",
                issue_id=issue.id,
                recovery_id=ctx.recovery_id,
                component=issue.component,
                strategy=self.name,
                trial=record.number,
                values=record.values,
                score=record.score,
                rolled_back=record.rolled_back,
                error=record.error,
            )

    def validate(
        self, issue: IssueInfo, comp: ComponentSpec, ctx: RecoveryContext, result: SearchResult
    ) -> Validation:
        """With a score metric and a pre-incident range: healthy, and the score (measured
        again, after the final settings settled) back in that range. The issue's own
        symptom is not the test here: a search changes the configuration on purpose, and
        gauges that echo it (a pool size, a queue depth) move with it. Without them, the
        usual validation of the issue."""
        if result.target is None or not comp.health.score_metric:
            return validate_fix(issue, comp, ctx, None)
        s = ctx.settings
        check, waited = wait_healthy(
            comp.health, s.validation_timeout, s.validation_poll, comp.name, ctx.engine, ctx.sleep
        )
        if not check.ok:
            return Validation(False, f"not healthy after {waited:.0f} s: {check.detail}", waited)
        m = measure(comp.health, s.measure_time, comp.name, sleep=ctx.sleep)
        # The settings in force are those of the trial that ended the search: its two
        # readings count too (a noisy gauge is judged on three readings, not the last).
        reads = [m.score]
        last = result.trials[-1] if result.trials else None
        if (
            last is not None
            and last.score is not None
            and last.confirmed is not None
            and last.values == result.best_values
        ):
            reads += [last.score, last.confirmed]
        score = sum(reads) / len(reads)
        shown = f"{score:.3f}" + (f" (mean of {len(reads)} readings)" if len(reads) > 1 else "")
        if score < result.target:
            return Validation(
                False,
                f"healthy; {comp.health.score_metric} = {shown} below its pre-incident "
                f"range (from {result.target:.3f})",
                waited,
            )
        return Validation(
            True,
            f"healthy; {comp.health.score_metric} = {shown} back in its pre-incident "
            f"range (from {result.target:.3f})",
            waited,
        )

    def best_values(self, study: optuna.Study) -> dict[str, float] | None:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            return None
        if self.multi_objective:
            best = min(study.best_trials, key=lambda t: sum(t.values))
            return {k: float(v) for k, v in best.params.items()}
        known = best_known(study)
        return known[0] if known else None

    def execute(self, plan: Plan, issue: IssueInfo, ctx: RecoveryContext) -> Outcome:
        comp = ctx.component(plan.target)
        result = self.search(comp, issue, ctx)
        final = result.best_values
        why = (
            "best of the search"
            if result.best_score > result.start_score
            else "no trial beat the start: starting values restored"
        )
        apply_and_record(comp, final, ctx, why=why)
        ctx.sleep(ctx.settings.settle_time)
        validation = self.validate(issue, comp, ctx, result)
        details = {**result.as_details(), "study": plan.parameters.get("study")}
        if validation.ok:
            return Outcome(True, self.name, validation=validation.as_dict(), details=details)
        return Outcome(
            False,
            self.name,
            error=f"best values did not fix it: {validation.detail}",
            validation=validation.as_dict(),
            details=details,
        )


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(values.items()))
