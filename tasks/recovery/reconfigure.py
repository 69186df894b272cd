"""Reconfigure: change declared parameters within their bounds, keep what helps.

Candidates, in order: what succeeded before for this component and kind of issue; the
declared defaults when the values in force differ from them (a bad change is the usual
cause); then the rules matching the issue (raise a pool on saturation, shrink a cache on
memory pressure, ...). Each candidate is applied, given ``settle_time``, and validated;
a change after which health is worse than before (or the issue remains) is rolled back
and the next candidate tried.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from storage.recoveries import successful_parameters
from tasks.recovery.base import (
    ComponentSpec,
    IssueInfo,
    Outcome,
    Plan,
    RecoveryContext,
    RecoveryStrategy,
)
from tasks.recovery.health import measure
from tasks.recovery.params import apply_and_record, clip_values, current_values, defaults
from tasks.recovery.validate import validate_fix

MAX_CANDIDATES = 3
WORSE_TOLERANCE = 0.02


@dataclass(frozen=True)
class Rule:
    """When the issue signature matches ``issue``, change matching parameters."""

    issue: tuple[str, ...]
    parameter: tuple[str, ...]
    factor: float


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        ("*latency*", "*queue*", "*timeout*", "*saturat*"),
        ("*pool*", "*worker*", "*thread*", "*concurrency*"),
        2.0,
    ),
    Rule(("*latency*", "*timeout*"), ("*timeout*",), 1.5),
    Rule(("*memory*", "*oom*", "*out_of_memory*"), ("*cache*", "*buffer*"), 0.5),
    Rule(("*error*",), ("*timeout*", "*retr*"), 1.5),
)


def _matches(text: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(text.lower(), p) for p in patterns)


def candidates(
    issue: IssueInfo, comp: ComponentSpec, ctx: RecoveryContext, current: dict[str, float]
) -> list[tuple[str, dict[str, float]]]:
    out: list[tuple[str, dict[str, float]]] = []
    with ctx.engine.connect() as conn:
        for params in successful_parameters(conn, comp.name, issue.kind, "reconfigure"):
            values = clip_values(comp, params.get("values", {}))
            if values:
                out.append(("worked before for this kind of issue", values))
    base = defaults(comp)
    if any(abs(current[k] - base[k]) > 1e-9 for k in base):
        out.append(("back to the declared defaults", base))
    signature = f"{issue.kind} {issue.signature}"
    for rule in DEFAULT_RULES:
        if not _matches(signature, rule.issue):
            continue
        changed = {k: v * rule.factor for k, v in current.items() if _matches(k, rule.parameter)}
        if changed:
            values = clip_values(comp, {**current, **changed})
            out.append((f"rule: {', '.join(changed)} x{rule.factor:g}", values))
    unique: list[tuple[str, dict[str, float]]] = []
    for why, values in out:
        if values != current and all(values != v for _, v in unique):
            unique.append((why, values))
    return unique[:MAX_CANDIDATES]


class ReconfigureStrategy(RecoveryStrategy):
    name = "reconfigure"
    rung = 3

    def rung_for(self, issue: IssueInfo, ctx: RecoveryContext) -> float:
        """First of all when the values in force drifted from the declared defaults: a
        configuration change is the likeliest cause, and a restart would keep it."""
        comp = ctx.components.get(issue.component)
        if comp is None or not comp.parameters or comp.reconfigure is None:
            return float(self.rung)
        current, base = current_values(comp), defaults(comp)
        drifted = any(abs(current[k] - base[k]) > 1e-9 for k in base)
        return 0.5 if drifted else float(self.rung)

    def applicable(self, issue: IssueInfo, ctx: RecoveryContext) -> str | None:
        comp = ctx.components.get(issue.component)
        if comp is None or not comp.parameters or comp.reconfigure is None:
            return "no tunable parameters with a reconfigure hook"
        if not candidates(issue, comp, ctx, current_values(comp)):
            return "no parameter change to try"
        return None

    def plan(self, issue: IssueInfo, ctx: RecoveryContext) -> Plan:
        comp = ctx.component(issue.component)
        current = current_values(comp)
        cands = candidates(issue, comp, ctx, current)
        why, first = cands[0]
        return Plan(
            self.name,
            comp.name,
            f"reconfigure {comp.name}: {_diff(current, first)} ({why}); roll back if "
            "health gets worse",
            {"current": current, "candidates": [{"why": w, "values": v} for w, v in cands]},
        )

    def execute(self, plan: Plan, issue: IssueInfo, ctx: RecoveryContext) -> Outcome:
        comp = ctx.component(plan.target)
        s = ctx.settings
        original = current_values(comp)
        tried = []
        for cand in plan.parameters["candidates"]:
            before = measure(comp.health, s.measure_time, comp.name, sleep=ctx.sleep)
            applied = apply_and_record(comp, cand["values"], ctx, why=cand["why"])
            if not applied.ok:
                tried.append({**cand, "error": applied.detail})
                continue
            ctx.sleep(s.settle_time)
            validation = validate_fix(issue, comp, ctx, before.error_ratio)
            after = measure(comp.health, s.measure_time, comp.name, sleep=ctx.sleep)
            worse = after.score < before.score - WORSE_TOLERANCE
            entry = {
                **cand,
                "health_before": round(before.score, 4),
                "health_after": round(after.score, 4),
                "validation": validation.as_dict(),
            }
            tried.append(entry)
            if validation.ok and not worse:
                return Outcome(
                    True,
                    self.name,
                    validation=validation.as_dict(),
                    details={"values": cand["values"], "tried": tried},
                )
            apply_and_record(
                comp,
                original,
                ctx,
                "rollback",
                reason="health worse" if worse else validation.detail,
            )
            ctx.sleep(s.settle_time)
        return Outcome(
            False,
            self.name,
            error="no parameter change fixed the issue",
            details={"tried": tried, "values": original},
        )


def _diff(old: dict[str, float], new: dict[str, float]) -> str:
    parts = [
        f"{k} {old.get(k, float('nan')):g} -> {v:g}"
        for k, v in new.items()
        if abs(v - old.get(k, float("nan"))) > 1e-12 or k not in old
    ]
    return ", ".join(parts) or "no change"
