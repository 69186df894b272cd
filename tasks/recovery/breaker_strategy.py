"""Circuit breaker: isolate a failing dependency from the components that call it.

When the issue's component is failing and another component depends on it (and has an
``isolate`` hook), the breaker ``dependant->dependency`` opens and the dependant stops
calling the dependency (it degrades instead of failing with it). ``probe_breakers``, run
every cycle, moves open breakers to half-open after ``wait_in_open``, runs at most
``permitted_in_half_open`` trial checks of the dependency and, when they pass, closes the
breaker and runs the dependant's ``restore`` hook; when they fail the breaker opens again.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import methodcaller

from storage.breakers import breakers_frame
from storage.recoveries import record_action
from tasks.recovery.base import IssueInfo, Outcome, Plan, RecoveryContext, RecoveryStrategy
from tasks.recovery.breaker_store import BreakerStore
from tasks.recovery.health import check_health, measure
from tasks.recovery.hooks import run_hook
from tasks.recovery.validate import validate_fix


def breaker_name(dependant: str, dependency: str) -> str:
    return f"{dependant}->{dependency}"


def targets(issue: IssueInfo, ctx: RecoveryContext) -> list[tuple[str, str]]:
    """(dependant, dependency) pairs this issue calls for isolating."""
    pairs = []
    for name, comp in sorted(ctx.components.items()):
        if comp.isolate is not None and issue.component in comp.depends_on:
            pairs.append((name, issue.component))
    own = ctx.components.get(issue.component)
    if own is not None and own.isolate is not None:
        for dep in own.depends_on:
            spec = ctx.components.get(dep)
            if spec is not None and not check_health(spec.health, dep, ctx.engine).ok:
                pairs.append((issue.component, dep))
    return pairs


class CircuitBreakerStrategy(RecoveryStrategy):
    name = "circuit_breaker"
    rung = 2

    def applicable(self, issue: IssueInfo, ctx: RecoveryContext) -> str | None:
        if not targets(issue, ctx):
            return "no dependant with an isolate hook, and no failing dependency to isolate"
        return None

    def plan(self, issue: IssueInfo, ctx: RecoveryContext) -> Plan:
        pairs = targets(issue, ctx)
        text = "; ".join(
            f"open breaker {breaker_name(a, b)} ({a} stops calling {b})" for a, b in pairs
        )
        return Plan(self.name, pairs[0][0], text, {"pairs": [list(p) for p in pairs]})

    def execute(self, plan: Plan, issue: IssueInfo, ctx: RecoveryContext) -> Outcome:
        store = BreakerStore(ctx.engine, ctx.settings.breaker)
        details: list[dict[str, object]] = []
        ok_all = True
        last_validation = None
        for dependant, dependency in plan.parameters["pairs"]:
            comp = ctx.component(dependant)
            before = (
                measure(comp.health, 0.0, dependant, sleep=ctx.sleep).error_ratio
                if comp.health.metrics_url
                else None
            )
            name = breaker_name(dependant, dependency)
            now = ctx.clock()
            store.update(name, methodcaller("trip", now.timestamp()))
            assert comp.isolate is not None
            result = run_hook(comp.isolate, body={"dependency": dependency, "enabled": False})
            with ctx.engine.begin() as conn:
                record_action(
                    conn,
                    ctx.recovery_id,
                    dependant,
                    "isolate",
                    now,
                    result.ok,
                    {"breaker": name, "hook": result.detail},
                )
            if not result.ok:
                ok_all = False
                details.append({"breaker": name, "error": result.detail})
                continue
            ctx.sleep(ctx.settings.settle_time)
            dep_issue = IssueInfo(issue.id, dependant, "breaker", name, issue.severity)
            last_validation = validate_fix(dep_issue, comp, ctx, before)
            ok_all &= last_validation.ok
            details.append({"breaker": name, "validation": last_validation.as_dict()})
        return Outcome(
            ok_all,
            self.name,
            error=None if ok_all else "isolation did not restore the dependants",
            validation=last_validation.as_dict() if last_validation else {},
            details={"breakers": details},
        )


@dataclass(frozen=True)
class ProbeResult:
    breaker: str
    state: str
    restored: bool = False
    detail: str = ""


def probe_breakers(ctx: RecoveryContext) -> list[ProbeResult]:
    """Half-open trials for open breakers whose wait has passed; close and restore on success."""
    store = BreakerStore(ctx.engine, ctx.settings.breaker)
    results = []
    frame = breakers_frame(ctx.engine)
    for name in frame[frame["state"].isin(["open", "half_open"])]["name"]:
        dependant, _, dependency = name.partition("->")
        comp, dep = ctx.components.get(dependant), ctx.components.get(dependency)
        if comp is None or dep is None:
            continue
        now = ctx.clock().timestamp()
        state = store.update(name, methodcaller("current", now))
        while state == "half_open":
            if not store.update(name, methodcaller("try_acquire", now)):
                break
            ok = check_health(dep.probe or dep.health, dependency, ctx.engine).ok
            state = store.update(name, methodcaller("record", ok, now))
        restored = False
        detail = ""
        if state == "closed" and comp.restore is not None:
            started = ctx.clock()
            hook = run_hook(comp.restore, body={"dependency": dependency, "enabled": True})
            with ctx.engine.begin() as conn:
                record_action(
                    conn,
                    None,
                    dependant,
                    "restore",
                    started,
                    hook.ok,
                    {"breaker": name, "hook": hook.detail},
                )
            restored, detail = hook.ok, hook.detail
        results.append(ProbeResult(name, state, restored, detail))
    return results
