"""Restart: run the component's configured restart command, then validate.

Restarts follow Kubernetes' crash-loop backoff (``tasks.recovery.backoff``), counted over
every restart of the component, whichever recovery made it. While validation fails the
strategy waits its backoff and restarts again; past ``max_restarts`` in the window it
stops and reports failure, so the ladder escalates and the pair is quarantined. A down
component whose liveness probe passes again before a restart (a hang that ended) is
not restarted.
"""

from __future__ import annotations

import shlex
from datetime import timedelta

from storage.recoveries import action_times, record_action
from tasks.recovery.backoff import decide_restart
from tasks.recovery.base import IssueInfo, Outcome, Plan, RecoveryContext, RecoveryStrategy
from tasks.recovery.commands import run_command
from tasks.recovery.evidence import gather, no_restart_reason
from tasks.recovery.health import check_health, measure
from tasks.recovery.validate import validate_fix


class RestartStrategy(RecoveryStrategy):
    name = "restart"
    rung = 1

    def _history(self, component: str, ctx: RecoveryContext) -> list:
        window = timedelta(seconds=ctx.settings.backoff.window)
        with ctx.engine.connect() as conn:
            return action_times(conn, component, "restart", ctx.clock() - window)

    def applicable(self, issue: IssueInfo, ctx: RecoveryContext) -> str | None:
        comp = ctx.components.get(issue.component)
        if comp is None:
            return f"component {issue.component!r} is not configured"
        if comp.restart is None:
            return "no restart command configured"
        ev = gather(issue, ctx)
        if ev.restart_reason is None:
            return no_restart_reason(ev)
        decision = decide_restart(self._history(comp.name, ctx), ctx.clock(), ctx.settings.backoff)
        if decision.exhausted:
            return decision.reason
        return None

    def plan(self, issue: IssueInfo, ctx: RecoveryContext) -> Plan:
        comp = ctx.component(issue.component)
        assert comp.restart is not None
        argv = list(comp.restart.argv)
        why = gather(issue, ctx).restart_reason
        return Plan(
            self.name,
            comp.name,
            f"restart {comp.name}: run `{shlex.join(argv)}` (timeout "
            f"{comp.restart.timeout:g} s), then check its health"
            + (f" (evidence: {why})" if why else ""),
            {"argv": argv, "evidence": why},
        )

    def execute(self, plan: Plan, issue: IssueInfo, ctx: RecoveryContext) -> Outcome:
        comp = ctx.component(plan.target)
        assert comp.restart is not None
        policy = ctx.settings.backoff
        before = None
        if issue.kind not in ("down", "metric") and comp.health.metrics_url:
            before = measure(comp.health, 0.0, comp.name, sleep=ctx.sleep).error_ratio
        attempts: list[dict[str, object]] = []
        outputs: list[str] = []
        while True:
            decision = decide_restart(self._history(comp.name, ctx), ctx.clock(), policy)
            if decision.exhausted:
                return Outcome(
                    False,
                    self.name,
                    error=decision.reason,
                    output="\n".join(outputs)[-4000:],
                    details={"restarts": attempts, "exhausted": True},
                )
            if not decision.allowed:
                if decision.wait_s > ctx.settings.max_inline_backoff:
                    return Outcome(
                        False,
                        self.name,
                        error=decision.reason,
                        details={"restarts": attempts, "backoff_s": decision.wait_s},
                    )
                ctx.sleep(decision.wait_s)
                continue
            if issue.kind == "down" and comp.health.liveness is not None:
                # A hang that ended (SIGCONT), or a crash something else restarted: the
                # liveness probe passes again, so restarting it now would only hurt.
                check = check_health(comp.health, comp.name, ctx.engine)
                if check.ok:
                    return Outcome(
                        True,
                        self.name,
                        output="\n".join(outputs)[-4000:],
                        validation={"ok": True, "detail": f"healthy again: {check.detail}"},
                        details={"restarts": attempts, "healthy_before_restart": True},
                    )
            started = ctx.clock()
            result = run_command(comp.restart)
            outputs.append(result.output)
            validation = validate_fix(issue, comp, ctx, before) if result.ok else None
            detail = {
                "command": result.describe(),
                "streak": decision.streak + 1,
                "validation": validation.as_dict() if validation else None,
            }
            with ctx.engine.begin() as conn:
                record_action(
                    conn,
                    ctx.recovery_id,
                    comp.name,
                    "restart",
                    started,
                    bool(validation and validation.ok),
                    detail,
                )
            attempts.append(detail)
            if validation is not None and validation.ok:
                return Outcome(
                    True,
                    self.name,
                    output="\n".join(outputs)[-4000:],
                    validation=validation.as_dict(),
                    details={"restarts": attempts},
                )
