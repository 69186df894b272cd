"""The genetic search itself, on the simulated response surface (no processes).

The surface is ``flows.demo.platform.surface``, the model the demo's components run: after
the ``workload_shift`` fault the health gauge of a configuration is ``score(config,
"shifted")`` read with 1 % measurement noise. Each searcher starts at the declared defaults
(score 0.68 of a best achievable 0.95) and is scored on the *noise-free* score of what it
tried. Over 20 seeds (5 with ``--quick``):

``genetic.trials_to_95pct_{cmaes,random,nsga2,rules}``
    Mean number of trials until one reaches 95 % of the best achievable score, censored at
    ``MAX_TRIALS`` + 1 when it never does within ``MAX_TRIALS``. CMA-ES is the production
    sampler (``tasks.recovery.genetic.make_sampler``); random search is Optuna's
    ``RandomSampler`` on the same (log-scaled) space; NSGA-II trades the two objectives
    the surface also has (error ratio, latency); the rule ladder is the reconfigure rung's
    rules for a latency/error issue (pool x2, timeout x1.5), tried one after another.
``genetic.reached_95pct_{...}``
    Share of the seeds that reached 95 % within ``MAX_TRIALS``.
``genetic.regret_{...}``
    Best achievable score minus the true score of the configuration each searcher would
    keep (its best *measured* one) after ``REGRET_BUDGET`` trials; mean over seeds.
``genetic.first_incident_trials`` / ``genetic.second_incident_trials``
    The production search loop (``tasks.recovery.genetic.run_search``: rollback rule,
    trial budget of ``INCIDENT_BUDGET``, early stop once the score is back in the
    pre-incident range of the gauge) run on the surface with an Optuna study in a SQLite
    RDB storage: the first incident starts from scratch; the component is then put back to
    its defaults and the same shift happens again; the second search opens the persisted
    study (best known settings enqueued, CMA-ES population resumed). Mean trials per
    incident; ``genetic.{first,second}_incident_healed`` is the share that reached the
    pre-incident range within the budget.

Baselines (same run): CMA-ES against random search, the second incident against the first.
All figures are in sample: the surface was shaped (width of the good region) while
watching CMA-ES and random search on it.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

from flows.demo.platform import surface
from tasks.recovery.base import ComponentSpec, ParameterSpec, ReconfigureSpec
from tasks.recovery.genetic import (
    STOP_SPREADS,
    SearchResult,
    distributions,
    make_sampler,
    range_and_spread,
    run_search,
    study_name,
)
from tasks.recovery.health import HealthMeasure
from tasks.recovery.params import clip_values
from tasks.recovery.reconfigure import DEFAULT_RULES, _matches

MIX = "shifted"
MAX_TRIALS = 200
REGRET_BUDGET = 30
INCIDENT_BUDGET = 40
ISSUE_SIGNATURE = "metric hms_request_latency_seconds errors"

BASELINES = {
    "genetic.trials_to_95pct_cmaes": "genetic.trials_to_95pct_random",
    "genetic.second_incident_trials": "genetic.first_incident_trials",
}


def component() -> ComponentSpec:
    """The demo's component as recovery sees it (bounds and defaults of flows.demo.settings)."""
    params = {
        k: ParameterSpec(lo, hi, surface.DEFAULTS[k], "int")
        for k, (lo, hi) in surface.BOUNDS.items()
    }
    return ComponentSpec("genetic_optimizer", parameters=params, reconfigure=ReconfigureSpec())


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _trace(
    sampler: optuna.samplers.BaseSampler,
    dims: dict[str, BaseDistribution],
    comp: ComponentSpec,
    seed: int,
    n: int,
    multi: bool = False,
) -> list[tuple[float, float]]:
    """(measured, true) score of each of ``n`` trials of one sampler."""
    rng = random.Random(1_000 + seed)
    study = optuna.create_study(
        sampler=sampler, directions=["minimize", "minimize"] if multi else ["maximize"]
    )
    out: list[tuple[float, float]] = []
    level = 0.95 * surface.best_score(MIX)
    for _ in range(n):
        if len(out) >= REGRET_BUDGET and any(true >= level for _, true in out):
            break  # both figures are known
        trial = study.ask(dims)
        values = clip_values(comp, {k: float(v) for k, v in trial.params.items()})
        measured = surface.noisy_score(values, MIX, rng)
        if multi:
            study.tell(trial, list(surface.objectives(values, MIX, rng)))
        else:
            study.tell(trial, measured)
        out.append((measured, surface.score(values, MIX)))
    return out


def _rules_trace(comp: ComponentSpec, seed: int) -> list[tuple[float, float]]:
    """The reconfigure rung's rules for a latency/error issue, from the defaults."""
    rng = random.Random(1_000 + seed)
    current = dict(surface.DEFAULTS)
    out = []
    for rule in DEFAULT_RULES:
        if not _matches(ISSUE_SIGNATURE, rule.issue):
            continue
        changed = {k: v * rule.factor for k, v in current.items() if _matches(k, rule.parameter)}
        if changed:
            values = clip_values(comp, {**current, **changed})
            out.append((surface.noisy_score(values, MIX, rng), surface.score(values, MIX)))
    return out


def trials_to(trace: list[tuple[float, float]], level: float) -> int:
    for i, (_, true) in enumerate(trace):
        if true >= level:
            return i + 1
    return MAX_TRIALS + 1


def regret(trace: list[tuple[float, float]], budget: int) -> float:
    head = trace[:budget]
    kept = max(head, key=lambda t: t[0])[1] if head else surface.score(surface.DEFAULTS, MIX)
    return surface.best_score(MIX) - kept


def pre_incident_range(rng: random.Random, n: int = 120) -> tuple[float, float]:
    """(floor, spread) as the strategy computes them, from gauge samples of the defaults
    in the normal mix."""
    v = np.array([surface.noisy_score(surface.DEFAULTS, "normal", rng) for _ in range(n)])
    return range_and_spread(v)


def incident(
    storage: str, comp: ComponentSpec, seed: int, rng: random.Random, target: tuple[float, float]
) -> tuple[int, bool]:
    """One search of the production loop on the surface; (trials, reached the range)."""
    sampler, _ = make_sampler(len(comp.parameters), 1, seed)
    study = optuna.create_study(
        study_name=study_name(comp.name, "metric"),
        storage=storage,
        sampler=sampler,
        direction="maximize",
        load_if_exists=True,
    )
    start = surface.noisy_score(surface.DEFAULTS, MIX, rng)
    floor, spread = target
    result = search_surface(
        study, comp, rng, start, floor, INCIDENT_BUDGET, stop_margin=STOP_SPREADS * spread
    )
    return len(result.trials), result.stop_reason.startswith("score back")


def search_surface(
    study: optuna.Study,
    comp: ComponentSpec,
    rng: random.Random,
    start: float,
    target: float | None,
    max_trials: int,
    events: list[tuple[str, int, dict[str, float]]] | None = None,
    stop_margin: float = 0.0,
) -> SearchResult:
    """The production search loop (``run_search``) against the response surface under
    ``MIX``, from the defaults; each trial and rollback is appended to ``events`` if given."""
    state = {"values": dict(surface.DEFAULTS)}

    def try_values(number: int, values: dict[str, float]) -> HealthMeasure | str:
        if events is not None:
            events.append(("trial", number, values))
        state["values"] = values
        return HealthMeasure(surface.noisy_score(values, MIX, rng))

    def roll_back(number: int, score: float) -> None:
        if events is not None:
            events.append(("rollback", number, dict(surface.DEFAULTS)))
        state["values"] = dict(surface.DEFAULTS)

    return run_search(
        study,
        distributions(comp),
        lambda v: clip_values(comp, v),
        try_values,
        roll_back,
        start_values=dict(surface.DEFAULTS),
        start_score=start,
        target=target,
        max_trials=max_trials,
        confirm=lambda: HealthMeasure(surface.noisy_score(state["values"], MIX, rng)),
        stop_margin=stop_margin,
    )


def learning(seeds: int) -> dict[str, float]:
    comp = component()
    first, second, ok1, ok2 = [], [], 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            storage = f"sqlite:///{Path(tmp) / f'study-{seed}.db'}"
            rng = random.Random(seed)
            target = pre_incident_range(rng)
            n1, r1 = incident(storage, comp, seed, rng, target)
            # Healed; later the mix goes back, the defaults are restored, and it shifts again.
            n2, r2 = incident(storage, comp, seed + 10_000, rng, target)
            first.append(n1)
            second.append(n2)
            ok1 += r1
            ok2 += r2
    return {
        "genetic.first_incident_trials": round(statistics.mean(first), 2),
        "genetic.second_incident_trials": round(statistics.mean(second), 2),
        "genetic.first_incident_healed": round(ok1 / seeds, 3),
        "genetic.second_incident_healed": round(ok2 / seeds, 3),
    }


def searches(seeds: int) -> dict[str, float]:
    comp = component()
    dims = distributions(comp)
    level = 0.95 * surface.best_score(MIX)
    makers: dict[str, Callable[[int], list[tuple[float, float]]]] = {
        "cmaes": lambda s: _trace(make_sampler(3, 1, s)[0], dims, comp, s, MAX_TRIALS),
        "random": lambda s: _trace(
            optuna.samplers.RandomSampler(seed=s), dims, comp, s, MAX_TRIALS
        ),
        "nsga2": lambda s: _trace(make_sampler(3, 2, s)[0], dims, comp, s, MAX_TRIALS, multi=True),
        "rules": lambda s: _rules_trace(comp, s),
    }
    out: dict[str, float] = {}
    for name, make in makers.items():
        traces = [make(s) for s in range(seeds)]
        hits = [trials_to(t, level) for t in traces]
        out[f"genetic.trials_to_95pct_{name}"] = round(statistics.mean(hits), 2)
        out[f"genetic.reached_95pct_{name}"] = round(sum(h <= MAX_TRIALS for h in hits) / seeds, 3)
        out[f"genetic.regret_{name}"] = round(
            statistics.mean(regret(t, REGRET_BUDGET) for t in traces), 4
        )
    out["genetic.best_achievable"] = round(surface.best_score(MIX), 4)
    out["genetic.defaults_score"] = round(surface.score(surface.DEFAULTS, MIX), 4)
    return out


def run(quick: bool = False) -> dict[str, float]:
    _quiet()
    seeds = 5 if quick else 20
    return {**searches(seeds), **learning(seeds), "genetic.seeds": seeds}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
