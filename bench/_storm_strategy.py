"""The recovery strategy of the storm benchmark (``bench.storm``), loaded by dotted path
through ``custom_strategies`` as a user's strategy would be.

It acts on the storm's components only (``storm000``, ``storm001``, …), takes 0.5 to 1 s
(the time depends on the component's number, so runs overlap unevenly), and fails for every
component whose number ends in 7 (a tenth of them): the manager then quarantines the
(component, strategy) pair, which is what the storm checks for those issues. Deterministic,
so every run of the benchmark and of the test does the same work.
"""

from __future__ import annotations

from tasks.recovery.base import IssueInfo, Outcome, Plan, RecoveryContext, RecoveryStrategy

PREFIX = "storm"


def component_number(component: str) -> int | None:
    """``storm042`` → 42; None for a component that is not the storm's."""
    digits = component.removeprefix(PREFIX)
    if digits == component or not digits.isdigit():
        return None
    return int(digits)


def fails(component: str) -> bool:
    """Whether the strategy fails for this component (its number ends in 7)."""
    number = component_number(component)
    return number is not None and number % 10 == 7


def duration_s(component: str) -> float:
    """How long acting on the component takes: 0.5 to 1.0 s by its number."""
    return 0.5 + (component_number(component) or 0) % 6 / 10


class StormStrategy(RecoveryStrategy):
    """Sleeps as a real action would, then succeeds or fails as ``fails`` says."""

    name = "storm_fix"
    rung = 0  # before the built-in ladder (which has nothing configured to act on anyway)

    def applicable(self, issue: IssueInfo, ctx: RecoveryContext) -> str | None:
        if component_number(issue.component) is None:
            return "not a storm component"
        return None

    def plan(self, issue: IssueInfo, ctx: RecoveryContext) -> Plan:
        seconds = duration_s(issue.component)
        return Plan(
            self.name,
            issue.component,
            f"storm fix of {issue.component} ({seconds:.1f} s)",
            {"seconds": seconds},
        )

    def execute(self, plan: Plan, issue: IssueInfo, ctx: RecoveryContext) -> Outcome:
        ctx.sleep(float(plan.parameters["seconds"]))
        if fails(issue.component):
            return Outcome(
                False,
                self.name,
                error=f"{issue.component}: the storm strategy always fails here",
                validation={"ok": False, "detail": "deterministic failure"},
            )
        return Outcome(True, self.name, validation={"ok": True, "detail": "fixed"})
