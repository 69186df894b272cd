"""Apply a recovery to an issue: walk the ladder, record everything, learn from outcomes.

The ladder is the registered strategies, least invasive first, reordered by how well each
worked before for this component and kind of issue (Laplace-smoothed success rate, once a
strategy has ``min_learning_attempts`` recorded attempts). A strategy that failed for the
component within ``quarantine_period`` is skipped; one that is not applicable says why. A
failed rung escalates to the next. Every attempt is a row in ``recoveries``.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

from storage.audit import audit
from storage.recoveries import (
    create_recovery,
    get_recovery,
    quarantined_until,
    strategy_stats,
    update_recovery,
)
from tasks.recovery.base import IssueInfo, Outcome, Plan, RecoveryContext, RecoveryStrategy
from tasks.recovery.evidence import PENDING
from tasks.recovery.registry import StrategyRegistry


@dataclass(frozen=True)
class Rung:
    strategy: RecoveryStrategy
    skip_reason: str | None = None  # quarantined or not applicable


@dataclass
class RecoveryResult:
    success: bool
    strategy: str | None
    error: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    recovery_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "strategy": self.strategy,
            "error": self.error,
            "attempts": self.attempts,
            "recovery_ids": self.recovery_ids,
        }


class RecoveryManager:
    def __init__(self, registry: StrategyRegistry, ctx: RecoveryContext) -> None:
        self.registry = registry
        self.ctx = ctx

    def ladder(self, issue: IssueInfo) -> list[Rung]:
        s = self.ctx.settings
        now = self.ctx.clock()
        with self.ctx.engine.connect() as conn:
            stats = strategy_stats(conn, issue.component, issue.kind)
            quarantine = {
                st.name: quarantined_until(conn, issue.component, st.name, s.quarantine_period, now)
                for st in self.registry.ladder()
            }

        def learned(st: RecoveryStrategy) -> float:
            known = stats.get(st.name)
            if known is None or known.attempts < s.min_learning_attempts:
                return 0.5
            return known.rate

        def place(st: RecoveryStrategy) -> float:
            try:
                return st.rung_for(issue, self.ctx)
            except Exception:  # noqa: BLE001 - a broken hook keeps the default place
                return float(st.rung)

        ordered = sorted(self.registry.ladder(), key=lambda st: (-learned(st), place(st)))
        rungs = []
        for st in ordered:
            until = quarantine.get(st.name)
            if until is not None and until > now:
                rungs.append(Rung(st, f"quarantined until {until.isoformat(timespec='seconds')}"))
                continue
            try:
                reason = st.applicable(issue, self.ctx)
            except Exception as exc:  # noqa: BLE001 - a broken strategy must not stop others
                reason = f"applicability check failed: {exc}"
            rungs.append(Rung(st, reason))
        return rungs

    def proposal(self, issue: IssueInfo) -> tuple[list[Rung], Plan | None]:
        """The ladder and the plan of its first usable rung (what an approval shows)."""
        rungs = self.ladder(issue)
        for r in rungs:
            if r.skip_reason is None:
                return rungs, r.strategy.plan(issue, self.ctx)
            if r.skip_reason.startswith(PENDING):
                # Its evidence is still forming (a resource still rising): wait for it
                # rather than act with a strategy further down the ladder.
                return rungs, None
        return rungs, None

    def apply_recovery(
        self,
        issue: IssueInfo,
        mode: str = "automated",
        flow_run_id: str | None = None,
        reuse_recovery_id: int | None = None,
    ) -> RecoveryResult:
        """Try the usable rungs in order until one fixes the issue (the seed's API).

        ``reuse_recovery_id`` is a row already created for this recovery (planned, or
        approved by an operator): the first attempt is recorded in it, and the strategy
        it names goes first. The ladder is ordered again here, and a strategy that places
        itself by live evidence may move between planning and execution; what an operator
        approved (or the audit trail announced) is what runs, the rest is escalation.
        """
        result = RecoveryResult(False, None)
        reuse = reuse_recovery_id
        rungs = self.ladder(issue)
        if reuse_recovery_id is not None:
            planned = get_recovery(self.ctx.engine, reuse_recovery_id)
            first = planned.get("strategy") if planned else None
            rungs.sort(key=lambda r: r.strategy.name != first)  # stable: the rest keep order
        for index, rung in enumerate(rungs):
            if rung.skip_reason is not None:
                result.attempts.append(
                    {"strategy": rung.strategy.name, "skipped": rung.skip_reason}
                )
                continue
            outcome, rid = self._attempt(rung.strategy, index, issue, mode, flow_run_id, reuse)
            reuse = None
            result.recovery_ids.append(rid)
            result.attempts.append(
                {
                    "strategy": outcome.strategy,
                    "success": outcome.success,
                    "error": outcome.error,
                    "recovery_id": rid,
                }
            )
            if outcome.success:
                result.success, result.strategy, result.error = True, outcome.strategy, None
                return result
            result.strategy, result.error = outcome.strategy, outcome.error
            with self.ctx.engine.begin() as conn:
                audit(
                    conn,
                    "quarantined",
                    issue_id=issue.id,
                    recovery_id=rid,
                    component=issue.component,
                    strategy=outcome.strategy,
                    seconds=self.ctx.settings.quarantine_period,
                )
                audit(
                    conn,
                    "escalated",
                    issue_id=issue.id,
                    recovery_id=rid,
                    component=issue.component,
                    after=outcome.strategy,
                )
        if not result.recovery_ids:
            result.error = "no applicable strategy: " + "; ".join(
                f"{a['strategy']}: {a['skipped']}" for a in result.attempts
            )
        return result

    def _attempt(
        self,
        strategy: RecoveryStrategy,
        rung: int,
        issue: IssueInfo,
        mode: str,
        flow_run_id: str | None,
        reuse_recovery_id: int | None,
    ) -> tuple[Outcome, int]:
        ctx = self.ctx
        plan = strategy.plan(issue, ctx)
        values: dict[str, Any] = {
            "strategy": strategy.name,
            "rung": rung,
            "action": plan.action,
            "parameters": plan.parameters,
            "status": "running",
            "flow_run_id": flow_run_id,
            "started_at": ctx.clock(),
        }
        with ctx.engine.begin() as conn:
            if reuse_recovery_id is not None:
                rid = reuse_recovery_id
                update_recovery(conn, rid, **values)
            else:
                rid = create_recovery(
                    conn,
                    issue_id=issue.id,
                    component=issue.component,
                    issue_kind=issue.kind,
                    issue_signature=issue.signature[:300],
                    mode=mode,
                    **values,
                )
            audit(
                conn,
                "executed",
                issue_id=issue.id,
                recovery_id=rid,
                component=issue.component,
                strategy=strategy.name,
                action=plan.action,
            )
        ctx.recovery_id = rid
        try:
            outcome = strategy.execute(plan, issue, ctx)
        except Exception as exc:  # noqa: BLE001 - record the failure, escalate
            outcome = Outcome(
                False,
                strategy.name,
                error=f"{type(exc).__name__}: {exc}",
                output=traceback.format_exc()[-2000:],
            )
        finally:
            ctx.recovery_id = None
        params = dict(plan.parameters)
        if "values" in outcome.details:
            params["values"] = outcome.details["values"]
        with ctx.engine.begin() as conn:
            update_recovery(
                conn,
                rid,
                status="succeeded" if outcome.success else "failed",
                finished_at=ctx.clock(),
                error=outcome.error,
                output=outcome.output[-4000:],
                parameters=params,
                validation={**outcome.validation, "details": outcome.details},
            )
            audit(
                conn,
                "validated" if outcome.success else "failed",
                issue_id=issue.id,
                recovery_id=rid,
                component=issue.component,
                strategy=strategy.name,
                ok=outcome.success,
                error=outcome.error,
                validation=outcome.validation.get("detail"),
            )
        return outcome, rid
