"""A custom recovery strategy, loaded by dotted path in the tests (``custom_strategies``)."""

from __future__ import annotations

from pathlib import Path

from tasks.recovery.base import IssueInfo, Outcome, Plan, RecoveryContext, RecoveryStrategy


class DrainQueueStrategy(RecoveryStrategy):
    """Pretends to drain a queue by writing a marker file named in the issue's details."""

    name = "drain_queue"
    rung = 0  # least invasive of all: tried first

    def __init__(self, contents: str = "drained") -> None:
        self.contents = contents  # constructor parameters come from the configuration

    def applicable(self, issue: IssueInfo, ctx: RecoveryContext) -> str | None:
        return None if "marker" in issue.details else "no marker path in the issue"

    def plan(self, issue: IssueInfo, ctx: RecoveryContext) -> Plan:
        return Plan(
            self.name,
            issue.component,
            f"drain the queue of {issue.component}",
            {"marker": issue.details["marker"]},
        )

    def execute(self, plan: Plan, issue: IssueInfo, ctx: RecoveryContext) -> Outcome:
        Path(plan.parameters["marker"]).write_text(self.contents)
        return Outcome(True, self.name, validation={"ok": True, "detail": "queue empty"})


class QuietRestartStrategy(DrainQueueStrategy):
    """Takes the built-in restart's name: allowed only with ``replace``."""

    name = "restart"
    rung = 1
