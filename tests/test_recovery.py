"""Recovery strategies against real processes (time scaled down where it matters)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from flows.demo.platform.launcher import (
    ServiceHandle,
    free_port,
    service_argv,
    start_platform,
    wait_healthy,
)
from storage.recoveries import actions_frame, recoveries_frame
from tasks.recovery.backoff import BackoffPolicy, decide_restart
from tasks.recovery.base import (
    ComponentSpec,
    HealthSpec,
    IssueInfo,
    Outcome,
    ParameterSpec,
    Plan,
    ReconfigureSpec,
    RecoveryContext,
    RecoverySettings,
    RecoveryStrategy,
)
from tasks.recovery.commands import CommandSpec, run_command
from tasks.recovery.genetic import GeneticStrategy, open_study
from tasks.recovery.manager import RecoveryManager
from tasks.recovery.reconfigure import ReconfigureStrategy
from tasks.recovery.registry import default_strategies
from tests.toy_service import running_toy

REPO = Path(__file__).resolve().parents[1]
FAST = RecoverySettings(
    backoff=BackoffPolicy(base=0.3, factor=2, cap=2, reset_after=30, max_restarts=4, window=60),
    validation_timeout=4,
    validation_poll=0.2,
    settle_time=0.3,
    measure_time=0.3,
    quarantine_period=600,
)


def ctx_for(
    engine: Engine, components: dict[str, ComponentSpec], settings: RecoverySettings = FAST
) -> RecoveryContext:
    return RecoveryContext(engine, components, settings)


@pytest.fixture
def genetic_optimizer(tmp_path: Path) -> Iterator[ServiceHandle]:
    platform = start_platform(tmp_path / "platform", names=("genetic_optimizer",))
    try:
        yield platform.services["genetic_optimizer"]
    finally:
        platform.stop()


def spec_for(svc: ServiceHandle) -> ComponentSpec:
    return ComponentSpec(
        svc.name,
        health=HealthSpec(url=f"{svc.url}/health", metrics_url=f"{svc.url}/metrics"),
        restart=CommandSpec(tuple(svc.restart_argv), timeout=20),
    )


def test_killed_process_is_restarted_and_recorded(
    engine: Engine, genetic_optimizer: ServiceHandle
) -> None:
    svc = genetic_optimizer
    old = svc.pid
    assert old is not None
    os.killpg(old, signal.SIGKILL)
    assert not wait_healthy(svc.url, 0.5)
    manager = RecoveryManager(default_strategies(), ctx_for(engine, {svc.name: spec_for(svc)}))
    issue = IssueInfo(None, svc.name, "down", "down", "critical")
    result = manager.apply_recovery(issue)
    assert result.success, result.as_dict()
    assert result.strategy == "restart"
    assert svc.pid != old and svc.alive()
    assert wait_healthy(svc.url, 1)
    rec = recoveries_frame(engine)
    assert rec["status"].tolist() == ["succeeded"]
    assert rec["strategy"].tolist() == ["restart"]
    assert rec["validation"].iloc[0]["ok"] is True


def test_crash_loop_backs_off_then_escalates_and_is_quarantined(
    engine: Engine, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "svc.json"
    cfg.write_text(json.dumps({"crash_on_start": True}))
    port = free_port()
    svc = ServiceHandle(
        "crashy",
        port,
        tmp_path / "crashy.log",
        cfg,
        state,
        service_argv("crashy", port, tmp_path / "crashy.log", cfg, None, 5, 0),
    )
    svc.start()
    spec = ComponentSpec(
        "crashy",
        health=HealthSpec(url=f"{svc.url}/health", timeout=0.5),
        restart=CommandSpec(tuple(svc.restart_argv), timeout=20),
    )
    settings = RecoverySettings(
        backoff=BackoffPolicy(
            base=0.5, factor=2, cap=4, reset_after=60, max_restarts=4, window=120
        ),
        validation_timeout=0.3,
        validation_poll=0.1,
        quarantine_period=600,
    )
    manager = RecoveryManager(default_strategies(), ctx_for(engine, {"crashy": spec}, settings))
    issue = IssueInfo(None, "crashy", "down", "down", "critical")
    result = manager.apply_recovery(issue)
    svc.stop()
    assert not result.success
    actions = actions_frame(engine, "crashy")
    restarts = actions[actions["kind"] == "restart"]
    assert len(restarts) == 4 and not restarts["ok"].any()
    gaps = restarts["started_at"].diff().dt.total_seconds().dropna().tolist()
    # The backoff doubles from one restart to the next: 0.5 s, 1 s, 2 s (measured from the
    # previous restart, as Kubernetes does; validation waits 0.3 s of it).
    for gap, delay in zip(gaps, [0.5, 1.0, 2.0], strict=True):
        assert delay - 0.05 <= gap < delay + 1.5, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    # Escalated: restart failed, the other rungs had nothing to act with.
    assert result.attempts[0]["strategy"] == "restart"
    assert [a.get("skipped", "") != "" for a in result.attempts[1:]] == [True, True, True]
    # And restart is now quarantined for this component.
    rungs = {r.strategy.name: r.skip_reason for r in manager.ladder(issue)}
    assert rungs["restart"] is not None and rungs["restart"].startswith("quarantined")


def test_backoff_schedule_is_kubernetes_like() -> None:
    p = BackoffPolicy(max_restarts=100)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    restarts = [t0]
    waits = []
    now = t0
    for _ in range(7):
        now += timedelta(seconds=1)  # the decision is asked just after a failed restart
        d = decide_restart(restarts, now, p)
        waits.append(d.wait_s)
        now += timedelta(seconds=d.wait_s)
        restarts.append(now)
    assert waits == [9, 19, 39, 79, 159, 299, 299]  # 10 s doubling, capped at 5 min
    assert decide_restart(restarts[:2], restarts[1] + timedelta(minutes=11), p).wait_s == 0
    assert decide_restart(restarts, now, BackoffPolicy(max_restarts=5)).exhausted


def test_shell_syntax_never_reaches_a_command_line(engine: Engine, tmp_path: Path) -> None:
    marker = tmp_path / "restarted"
    pwned = tmp_path / "pwned"
    spec = ComponentSpec(
        "svc",
        health=HealthSpec(use_up_metric=False),
        restart=CommandSpec(("touch", str(marker)), timeout=5),
    )
    nasty = f"; rm -rf {tmp_path} $(touch {pwned}) `touch {pwned}`"
    issue = IssueInfo(None, "svc", "log", nasty, "high", title=nasty, details={"example": nasty})
    manager = RecoveryManager(default_strategies(), ctx_for(engine, {"svc": spec}))
    manager.apply_recovery(issue)
    assert marker.exists()  # the configured command ran ...
    assert not pwned.exists()  # ... and nothing from the issue text did
    assert tmp_path.exists()
    rec = recoveries_frame(engine)
    assert rec["parameters"].iloc[0]["argv"] == ["touch", str(marker)]
    # Arguments are passed as they are, never interpreted by a shell.
    out = run_command(CommandSpec(("echo", "a; touch " + str(pwned), "$(id)")))
    assert out.output.strip() == f"a; touch {pwned} $(id)"
    assert not pwned.exists()


def test_hanging_command_is_killed_with_its_children(tmp_path: Path) -> None:
    # Both processes carry this test's tag: other tests (other xdist workers) may have a
    # `sleep 300` of their own running at the same time.
    tag = f"selfheal-hang-{os.getpid()}"
    script = f"(exec -a {tag}-child sleep 300) & exec -a {tag} sleep 300"
    result = run_command(CommandSpec(("bash", "-c", script), timeout=1.0))
    assert result.timed_out and result.returncode is None
    time.sleep(0.3)
    ps = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    alive = [line for line in ps.splitlines() if tag in line and "Z" not in line.split(None, 2)[1]]
    assert alive == [], alive


@pytest.fixture
def toy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with running_toy(tmp_path, {"pool_size": 4, "cache_size": 100}, "pool_size=4", 1) as running:
        yield running


def toy_spec(url: str, cfg: Path, default_pool: float = 4) -> ComponentSpec:
    return ComponentSpec(
        "toy",
        health=HealthSpec(
            url=f"{url}/health", metrics_url=f"{url}/metrics", score_metric="toy_health_score"
        ),
        parameters={"pool_size": ParameterSpec(1, 64, default_pool, "int")},
        reconfigure=ReconfigureSpec(json_file=str(cfg)),
    )


def test_reconfigure_rolls_back_a_change_that_makes_health_worse(
    engine: Engine, toy: tuple[str, Path]
) -> None:
    url, cfg = toy
    ctx = ctx_for(engine, {"toy": toy_spec(url, cfg)})
    issue = IssueInfo(None, "toy", "behaviour", "queue saturation", "medium")
    strategy = ReconfigureStrategy()
    assert strategy.applicable(issue, ctx) is None
    plan = strategy.plan(issue, ctx)
    assert plan.parameters["candidates"][0]["values"] == {"pool_size": 8.0}  # rule: pool x2
    outcome = strategy.execute(plan, issue, ctx)
    assert not outcome.success
    assert json.loads(cfg.read_text())["pool_size"] == 4  # rolled back
    assert json.loads(cfg.read_text())["cache_size"] == 100  # other keys kept
    tried = outcome.details["tried"][0]
    assert tried["health_after"] < tried["health_before"]
    kinds = actions_frame(engine, "toy")["kind"].tolist()
    assert kinds == ["reconfigure", "rollback"]


def test_reconfigure_stays_in_bounds_and_fixes_a_bad_value(
    engine: Engine, toy: tuple[str, Path]
) -> None:
    url, cfg = toy
    cfg.write_text(json.dumps({"pool_size": 60, "cache_size": 100}))  # a bad change
    spec = toy_spec(url, cfg)
    ctx = ctx_for(engine, {"toy": spec})
    issue = IssueInfo(None, "toy", "behaviour", "queue saturation", "medium")
    strategy = ReconfigureStrategy()
    plan = strategy.plan(issue, ctx)
    cands = [c["values"]["pool_size"] for c in plan.parameters["candidates"]]
    assert cands[0] == 4  # the declared default first
    assert all(1 <= v <= 64 for v in cands)  # 60 x 2 is clipped to the bound
    assert 64 in cands
    outcome = strategy.execute(plan, issue, ctx)
    assert outcome.success, outcome
    assert json.loads(cfg.read_text())["pool_size"] == 4


def test_genetic_reaches_the_optimum_and_resumes_in_a_new_process(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with running_toy(tmp_path, {"x": 0.0, "y": 0.0}, "x=3,y=7", 2) as (url, cfg):
        spec = ComponentSpec(
            "toy2",
            health=HealthSpec(
                url=f"{url}/health", metrics_url=f"{url}/metrics", score_metric="toy_health_score"
            ),
            parameters={"x": ParameterSpec(-10, 10, 0), "y": ParameterSpec(-10, 10, 0)},
            reconfigure=ReconfigureSpec(json_file=str(cfg)),
        )
        settings = RecoverySettings(
            settle_time=0.0,
            measure_time=0.0,
            genetic_trials=3,
            validation_timeout=2,
            validation_poll=0.1,
        )
        ctx = ctx_for(engine, {"toy2": spec}, settings)
        issue = IssueInfo(None, "toy2", "behaviour", "profile", "medium")
        best = 0.0
        recoveries = 0
        for recoveries in range(1, 31):
            strategy = GeneticStrategy(seed=recoveries)  # a fresh object, as a new run has
            outcome = strategy.execute(strategy.plan(issue, ctx), issue, ctx)
            values = outcome.details["values"]
            best = 1 / (1 + ((values["x"] - 3) / 2) ** 2 + ((values["y"] - 7) / 2) ** 2)
            if best >= 0.9:
                break
        assert best >= 0.9, (recoveries, values)
        n_trials = len(open_study(spec, ctx, kind="behaviour").trials)
        assert n_trials == 3 * recoveries
    # A new process continues the same study.
    code = (
        "import sys, optuna\n"
        "s = optuna.load_study(study_name='selfheal-genetic-toy2-behaviour', storage=sys.argv[1])\n"
        "t = s.ask({'x': optuna.distributions.FloatDistribution(-10, 10),"
        " 'y': optuna.distributions.FloatDistribution(-10, 10)})\n"
        "s.tell(t, 0.5)\n"
        "print(len(s.trials), t.number)\n"
    )
    from storage.engine import normalise_url

    out = subprocess.run(
        [sys.executable, "-c", code, normalise_url(db_url)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    total, number = map(int, out.stdout.split())
    assert (total, number) == (n_trials + 1, n_trials)


def test_custom_strategy_by_dotted_path_is_used_first(engine: Engine, tmp_path: Path) -> None:
    from flows.config_load import ConfigError, build_config

    path = "tests.plugin_strategies.DrainQueueStrategy"
    cfg = build_config({"custom_strategies": [path]}, environ={})
    registry = default_strategies(cfg.custom_strategies)
    assert [s.name for s in registry.ladder()][:2] == ["drain_queue", "restart"]
    marker = tmp_path / "drained"
    manager = RecoveryManager(registry, ctx_for(engine, {}))
    issue = IssueInfo(None, "queue", "metric", "depth", "medium", details={"marker": str(marker)})
    result = manager.apply_recovery(issue)
    assert result.success and result.strategy == "drain_queue"
    assert marker.read_text() == "drained"
    with pytest.raises(ConfigError, match="custom_strategies"):
        build_config(
            {"custom_strategies": ["tests.plugin_detectors.QueueLimitDetector"]}, environ={}
        )


def test_custom_strategies_take_parameters_and_replace_only_when_asked(
    engine: Engine, tmp_path: Path
) -> None:
    from flows.config_load import ConfigError, build_config

    cfg = build_config(
        {
            "custom_strategies": [
                {"path": "tests.plugin_strategies.DrainQueueStrategy", "params": {"contents": "x"}}
            ]
        },
        environ={},
    )
    marker = tmp_path / "drained"
    manager = RecoveryManager(default_strategies(cfg.custom_strategies), ctx_for(engine, {}))
    issue = IssueInfo(None, "queue", "metric", "depth", "medium", details={"marker": str(marker)})
    assert manager.apply_recovery(issue).success
    assert marker.read_text() == "x"
    with pytest.raises(ConfigError, match=r"bad parameters \{'size': 3\}"):
        build_config(
            {
                "custom_strategies": [
                    {"path": "tests.plugin_strategies.DrainQueueStrategy", "params": {"size": 3}}
                ]
            },
            environ={},
        )
    quiet = "tests.plugin_strategies.QuietRestartStrategy"
    with pytest.raises(ConfigError, match="strategy named 'restart' is already registered"):
        build_config({"custom_strategies": [quiet]}, environ={})
    replaced = build_config({"custom_strategies": [{"path": quiet, "replace": True}]}, environ={})
    restart = default_strategies(replaced.custom_strategies).get("restart")
    assert type(restart).__name__ == "QuietRestartStrategy"
    with pytest.raises(ConfigError, match="detector named 'default' is already registered"):
        build_config({"custom_detectors": ["tests.plugin_detectors.ShadowDefault"]}, environ={})


def test_the_approved_strategy_runs_even_if_the_ladder_moved_since(engine: Engine) -> None:
    """Seen in the demo: an operator approved 'restart'; by the time the run executed, a
    strategy that places itself by live evidence (the genetic search, on a briefly low
    health score) had moved first, and a search ran instead of the approved restart.
    What was approved runs first; the rest of the ladder is escalation."""
    from storage.recoveries import create_recovery
    from tasks.recovery.registry import StrategyRegistry

    ran: list[str] = []

    class Recorded(RecoveryStrategy):
        def applicable(self, issue: IssueInfo, ctx: RecoveryContext) -> str | None:
            return None

        def plan(self, issue: IssueInfo, ctx: RecoveryContext) -> Plan:
            return Plan(self.name, issue.component, f"{self.name} {issue.component}")

        def execute(self, plan: Plan, issue: IssueInfo, ctx: RecoveryContext) -> Outcome:
            ran.append(self.name)
            return Outcome(True, self.name)

    class Approved(Recorded):
        name, rung = "approved", 1

    class Jumper(Recorded):
        name, rung = "jumper", 2
        live_evidence = False

        def rung_for(self, issue: IssueInfo, ctx: RecoveryContext) -> float:
            return 0.0 if self.live_evidence else float(self.rung)

    jumper = Jumper()
    registry = StrategyRegistry()
    registry.register(Approved())
    registry.register(jumper)
    manager = RecoveryManager(registry, ctx_for(engine, {}))
    issue = IssueInfo(None, "svc", "log", "out_of_memory", "critical")
    _, plan = manager.proposal(issue)
    assert plan is not None and plan.strategy == "approved"
    with engine.begin() as conn:
        rid = create_recovery(
            conn,
            issue_id=None,
            component="svc",
            issue_kind="log",
            issue_signature="out_of_memory",
            strategy=plan.strategy,
            rung=0,
            action=plan.action,
            mode="supervised",
            status="approved",
        )
    jumper.live_evidence = True  # the ladder moves between approval and execution
    assert manager.proposal(issue)[1].strategy == "jumper"  # type: ignore[union-attr]
    result = manager.apply_recovery(issue, "supervised", reuse_recovery_id=rid)
    assert result.success and result.strategy == "approved"
    assert ran == ["approved"]
