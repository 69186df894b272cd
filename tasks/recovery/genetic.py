"""Genetic search of recovery parameters with Optuna's ask/tell interface.

Each recovery runs ``genetic_trials`` trials: ask the sampler for values, apply them,
measure health (the fitness), tell the result. The study lives in the same database
(Optuna's RDB storage), named after the component, so it continues across recoveries
and processes. CMA-ES samples continuous spaces of two or more parameters; NSGA-II is
used when several goals compete (error ratio and latency as separate objectives); a
single parameter uses TPE. After the trials the best values known to the study are
applied and the issue is validated.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from tasks.recovery.base import (
    ComponentSpec,
    IssueInfo,
    Outcome,
    Plan,
    RecoveryContext,
    RecoveryStrategy,
)
from tasks.recovery.health import HealthMeasure, measure
from tasks.recovery.params import apply_and_record, current_values
from tasks.recovery.validate import validate_fix

STUDY_PREFIX = "selfheal-genetic-"


def distributions(comp: ComponentSpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, p in sorted(comp.parameters.items()):
        if p.type == "int":
            out[name] = IntDistribution(int(p.min), int(p.max), step=int(p.step or 1))
        else:
            out[name] = FloatDistribution(p.min, p.max, step=p.step)
    return out


def optuna_storage_url(ctx: RecoveryContext) -> str:
    return ctx.engine.url.render_as_string(hide_password=False)


def open_study(
    comp: ComponentSpec, ctx: RecoveryContext, objectives: int = 1, seed: int | None = None
) -> optuna.Study:
    """The component's study (created on first use, continued afterwards)."""
    optuna.logging.set_verbosity(logging.WARNING)
    dims = distributions(comp)
    if objectives > 1:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.NSGAIISampler(
            population_size=8, seed=seed
        )
        directions: list[Literal["minimize", "maximize"]] = ["minimize"] * objectives
    elif len(dims) >= 2:
        sampler = optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=2, warn_independent_sampling=False
        )
        directions = ["maximize"]
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
        directions = ["maximize"]
    return optuna.create_study(
        study_name=f"{STUDY_PREFIX}{comp.name}" + ("-pareto" if objectives > 1 else ""),
        storage=optuna_storage_url(ctx),
        sampler=sampler,
        directions=directions,
        load_if_exists=True,
    )


def _objectives(m: HealthMeasure, multi: bool) -> float | list[float]:
    if not multi:
        return m.score
    return [
        m.error_ratio if m.error_ratio is not None else 1.0 - m.score,
        m.mean_latency_s if m.mean_latency_s is not None else 0.0,
    ]


class GeneticStrategy(RecoveryStrategy):
    """Parameters: ``multi_objective`` makes error ratio and latency separate goals."""

    name = "genetic"
    rung = 4

    def __init__(self, multi_objective: bool = False, seed: int | None = None) -> None:
        self.multi_objective = multi_objective
        self.seed = seed

    def applicable(self, issue: IssueInfo, ctx: RecoveryContext) -> str | None:
        comp = ctx.components.get(issue.component)
        if comp is None or not comp.parameters or comp.reconfigure is None:
            return "no tunable parameters with a reconfigure hook"
        return None

    def plan(self, issue: IssueInfo, ctx: RecoveryContext) -> Plan:
        comp = ctx.component(issue.component)
        kind = (
            "NSGA-II"
            if self.multi_objective
            else ("CMA-ES" if len(comp.parameters) >= 2 else "TPE")
        )
        return Plan(
            self.name,
            comp.name,
            f"search {', '.join(sorted(comp.parameters))} of {comp.name} with {kind}: "
            f"{ctx.settings.genetic_trials} trials, then apply the best values found",
            {"parameters": sorted(comp.parameters), "sampler": kind},
        )

    def run_trials(self, comp: ComponentSpec, ctx: RecoveryContext, n: int) -> optuna.Study:
        study = open_study(comp, ctx, 2 if self.multi_objective else 1, self.seed)
        dims = distributions(comp)
        for _ in range(n):
            trial = study.ask(dims)
            values = {k: float(v) for k, v in trial.params.items()}
            applied = apply_and_record(comp, values, ctx, trial=trial.number)
            if not applied.ok:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            ctx.sleep(ctx.settings.settle_time)
            m = measure(comp.health, ctx.settings.measure_time, comp.name, sleep=ctx.sleep)
            study.tell(trial, _objectives(m, self.multi_objective))
        return study

    def best_values(self, study: optuna.Study) -> dict[str, float] | None:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            return None
        if self.multi_objective:
            front = study.best_trials
            best = min(front, key=lambda t: sum(t.values))
        else:
            best = max(done, key=lambda t: t.value if t.value is not None else float("-inf"))
        return {k: float(v) for k, v in best.params.items()}

    def execute(self, plan: Plan, issue: IssueInfo, ctx: RecoveryContext) -> Outcome:
        comp = ctx.component(plan.target)
        original = current_values(comp)
        before = measure(comp.health, ctx.settings.measure_time, comp.name, sleep=ctx.sleep)
        study = self.run_trials(comp, ctx, ctx.settings.genetic_trials)
        best = self.best_values(study) or original
        apply_and_record(comp, best, ctx, why="best of the study")
        ctx.sleep(ctx.settings.settle_time)
        validation = validate_fix(issue, comp, ctx, before.error_ratio)
        details: dict[str, Any] = {
            "values": best,
            "trials": len(study.trials),
            "study": study.study_name,
        }
        if validation.ok:
            return Outcome(True, self.name, validation=validation.as_dict(), details=details)
        return Outcome(
            False,
            self.name,
            error=f"best values did not fix it: {validation.detail}",
            validation=validation.as_dict(),
            details=details,
        )
