"""The strategy interface and the plain data it works on.

A strategy answers, in order: is it ``applicable`` to this issue (and if not, why not);
what would it do (``plan``, a description an operator can approve); do it (``execute``,
returning what happened); and did it work (``validate``). The manager records every step.
Strategies are registered by name, like detectors, and users add theirs through
``custom_strategies``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import Engine

from storage.issues import IssueRecord
from tasks.probes.spec import ProbeSpec
from tasks.recovery.backoff import BackoffPolicy
from tasks.recovery.breaker import BreakerConfig
from tasks.recovery.commands import CommandSpec


@dataclass(frozen=True)
class HttpSpec:
    url: str
    method: str = "POST"
    json_body: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0


@dataclass(frozen=True)
class HookSpec:
    command: CommandSpec | None = None
    http: HttpSpec | None = None


@dataclass(frozen=True)
class ParameterSpec:
    min: float
    max: float
    default: float | None = None
    type: str = "float"  # "int" or "float"
    step: float | None = None

    def clip(self, value: float) -> float:
        v = min(max(value, self.min), self.max)
        if self.step:
            v = self.min + round((v - self.min) / self.step) * self.step
            v = min(max(v, self.min), self.max)
        return float(round(v)) if self.type == "int" else float(v)


@dataclass(frozen=True)
class ReconfigureSpec:
    json_file: str | None = None
    command: CommandSpec | None = None
    http: HttpSpec | None = None


@dataclass(frozen=True)
class HealthSpec:
    url: str | None = None
    timeout: float = 2.0
    expect_status: int = 200
    use_up_metric: bool = True
    metrics_url: str | None = None
    score_metric: str | None = None  # a gauge in [0, 1] the component reports about itself
    # The component's liveness probe: when set, it decides health (not "the exporter answered").
    liveness: ProbeSpec | None = None


@dataclass(frozen=True)
class ComponentSpec:
    """Everything recovery knows of a component (built by the flows from the config)."""

    name: str
    health: HealthSpec = HealthSpec()
    restart: CommandSpec | None = None
    isolate: HookSpec | None = None
    restore: HookSpec | None = None
    depends_on: tuple[str, ...] = ()
    parameters: dict[str, ParameterSpec] = field(default_factory=dict)
    reconfigure: ReconfigureSpec | None = None
    probe: HealthSpec | None = None  # half-open trial check when others depend on it


@dataclass(frozen=True)
class IssueInfo:
    """What a strategy sees of an issue."""

    id: int | None
    component: str
    kind: str
    signature: str
    severity: str
    title: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, issue: IssueRecord) -> IssueInfo:
        """From the stored issue; ``details["first_seen"]`` is what validation compares
        against (the metric's range before the issue began)."""
        return cls(
            issue.id,
            issue.component,
            issue.kind,
            issue.signature,
            issue.severity,
            issue.title,
            {**issue.details, "first_seen": issue.first_seen},
        )


@dataclass(frozen=True)
class RecoverySettings:
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    validation_timeout: float = 30.0  # how long validation waits for health
    validation_poll: float = 1.0
    settle_time: float = 5.0  # wait after a change before measuring its effect
    measure_time: float = 5.0  # window over which health is measured
    max_inline_backoff: float = 300.0  # a restart waits at most this long for its backoff
    quarantine_period: float = 600.0
    genetic_trials: int = 4  # trials per genetic recovery
    min_learning_attempts: int = 3  # attempts before success rates reorder the ladder


@dataclass
class RecoveryContext:
    """The world a strategy acts in; clock and sleep are injectable to scale time in tests."""

    engine: Engine
    components: dict[str, ComponentSpec]
    settings: RecoverySettings = field(default_factory=RecoverySettings)
    recovery_id: int | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], None] = field(default=lambda s: __import__("time").sleep(s))

    def component(self, name: str) -> ComponentSpec:
        try:
            return self.components[name]
        except KeyError:
            raise LookupError(f"component {name!r} is not configured") from None


@dataclass(frozen=True)
class Plan:
    strategy: str
    target: str  # the component acted upon
    action: str  # one line an operator reads before approving
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    success: bool
    strategy: str
    error: str | None = None
    output: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class RecoveryStrategy:
    """Base class of every strategy. ``rung`` orders the default ladder (least invasive
    first)."""

    name: ClassVar[str] = "base"
    rung: ClassVar[int] = 100

    def applicable(self, issue: IssueInfo, ctx: RecoveryContext) -> str | None:
        """None when the strategy can act on the issue, else the reason it cannot."""
        raise NotImplementedError

    def rung_for(self, issue: IssueInfo, ctx: RecoveryContext) -> float:
        """Place on the ladder for this issue (default: ``rung``); a strategy that sees
        strong evidence for itself may move forward."""
        return float(self.rung)

    def plan(self, issue: IssueInfo, ctx: RecoveryContext) -> Plan:
        raise NotImplementedError

    def execute(self, plan: Plan, issue: IssueInfo, ctx: RecoveryContext) -> Outcome:
        """Act, then validate; the outcome says whether the issue is fixed."""
        raise NotImplementedError
