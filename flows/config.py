"""The configuration model: every option of the seed's table, plus what the system needs.

The seed's options keep their names and defaults at the top level. What the seed did not
have (database, components and their endpoints, log paths, health checks, commands and
hooks, detector and recovery parameters) is added beside them, each validated so that an
error names the option path and the bad value.

Loading order: defaults < JSON file (``--config`` or ``SELFHEAL_CONFIG``) < ``SELFHEAL_*``
environment variables (``SELFHEAL_MODE=automated``, nested with ``__`` as in
``SELFHEAL_RECOVERY__RESTART__MAX_RESTARTS=3``; values are parsed as JSON when they can be).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tasks.detection.candidates import HOST_CONTEXT
from tasks.detection.derive import UNTYPED_COUNTERS
from tasks.detection.saturation import NODE_RULES, SaturationRule
from tasks.recovery.backoff import BackoffPolicy
from tasks.recovery.base import RecoverySettings
from tasks.recovery.breaker import BreakerConfig

Mode = Literal["manual", "supervised", "automated", "learning"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
SeverityName = Literal["low", "medium", "high", "critical"]

_COMPONENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_DOTTED_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*)?$")


def _check_url(value: str | None) -> str | None:
    if value is None:
        return value
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_url)]


def _check_webhook(value: str | None) -> str | None:
    if value is not None and value.startswith("prefect-secret://"):
        if not re.fullmatch(r"prefect-secret://[a-z0-9][a-z0-9-]*", value):
            raise ValueError("a Prefect Secret block name has lowercase letters, digits, '-'")
        return value
    return _check_url(value)


WebhookRef = Annotated[str, AfterValidator(_check_webhook)]


def split_command(value: str | list[str]) -> list[str]:
    """A command is an argument list; a string is split like a shell would, never run by one."""
    if isinstance(value, str):
        try:
            args = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split command {value!r}: {exc}") from None
    else:
        args = list(value)
    if not args or not all(isinstance(a, str) and a for a in args):
        raise ValueError("a command must be a non-empty list of non-empty strings")
    return args


class StrictModel(BaseModel):
    """Unknown keys are errors (the loader turns them into "did you mean" hints)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class Command(StrictModel):
    """A program run without a shell, in its own process group, killed at its timeout."""

    argv: list[str]
    timeout: float = Field(30.0, gt=0, le=3600)
    cwd: str | None = None
    env: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_string_or_list(cls, value: Any) -> Any:
        if isinstance(value, str | list):
            return {"argv": split_command(value)}
        if isinstance(value, dict) and "argv" in value:
            value = dict(value)
            value["argv"] = split_command(value["argv"])
        return value


class HttpAction(StrictModel):
    """An HTTP call used as a hook (isolate, restore, apply a configuration)."""

    url: HttpUrl
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    json_body: dict[str, Any] | None = None
    headers: dict[str, str] = {}
    timeout: float = Field(5.0, gt=0, le=300)


class Hook(StrictModel):
    """Exactly one of a command or an HTTP call."""

    command: Command | None = None
    http: HttpAction | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Hook:
        if (self.command is None) == (self.http is None):
            raise ValueError("give exactly one of 'command' or 'http'")
        return self


class HealthCheck(StrictModel):
    """How recovery validation decides that a component is healthy."""

    url: HttpUrl | None = None
    timeout: float = Field(2.0, gt=0, le=60)
    expect_status: int = Field(200, ge=100, le=599)
    # When no URL is given, the component's latest scraped ``up`` sample decides.
    use_up_metric: bool = True
    # A gauge in [0, 1] the component reports about its own health (the fitness of
    # reconfiguration and genetic search when present).
    score_metric: str | None = None


class Parameter(StrictModel):
    """A tunable parameter of a component, for reconfiguration and genetic search."""

    min: float
    max: float
    default: float | None = None
    type: Literal["int", "float"] = "float"
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> Parameter:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.default is not None and not self.min <= self.default <= self.max:
            raise ValueError(f"default {self.default} lies outside [{self.min}, {self.max}]")
        return self


class ReconfigureHook(StrictModel):
    """Where parameter changes are applied: a JSON file, a command or an HTTP call.

    A command receives the new values as ``NAME=VALUE`` arguments appended to its argv;
    an HTTP call receives them as its JSON body. Values never come from metrics or logs.
    """

    json_file: str | None = None
    command: Command | None = None
    http: HttpAction | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ReconfigureHook:
        given = [x for x in (self.json_file, self.command, self.http) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'json_file', 'command' or 'http'")
        return self


class ProbeHttp(StrictModel):
    url: HttpUrl
    expect_status: int = Field(200, ge=100, le=599)
    body_contains: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


class ProbeMetric(StrictModel):
    """A scraped series compared to a value: ``{"series": "pg_up", "op": "==", "value": 1}``."""

    series: str = Field(min_length=1)
    op: Literal["==", "!=", "<", "<=", ">", ">="] = "=="
    value: float = 1.0
    labels: dict[str, str] = {}
    url: HttpUrl | None = None  # default: the component's metrics_url


class ProbeConfig(StrictModel):
    """One probe in the Kubernetes shape: exactly one of exec, tcp, http, metric."""

    exec: list[str] | None = None
    tcp: str | None = None  # "host:port"
    http: ProbeHttp | None = None
    metric: ProbeMetric | None = None
    # Kubernetes' defaults.
    period_s: float = Field(10.0, ge=0.1, le=86400)
    timeout_s: float = Field(1.0, gt=0, le=3600)
    failure_threshold: int = Field(3, ge=1, le=1000)
    success_threshold: int = Field(1, ge=1, le=1000)
    initial_delay_s: float = Field(0.0, ge=0, le=86400)

    @field_validator("exec", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        return None if value is None else split_command(value)

    @field_validator("tcp")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port with a port in 1..65535")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ProbeConfig:
        given = [k for k in ("exec", "tcp", "http", "metric") if getattr(self, k) is not None]
        if len(given) != 1:
            shown = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of exec, tcp, http, metric (got {shown})")
        if self.timeout_s > self.period_s:
            raise ValueError(
                f"timeout_s ({self.timeout_s:g}) must not exceed period_s ({self.period_s:g})"
            )
        return self


class ProbesConfig(StrictModel):
    """``liveness`` failing: the component is down; ``readiness`` failing: degraded."""

    liveness: ProbeConfig | None = None
    readiness: ProbeConfig | None = None


class DetectionFilter(StrictModel):
    """Glob patterns over series names (``go_*``, ``*_bytes``): which are detection
    candidates. ``include`` wins over the built-in exclusions and over ``exclude``."""

    include: list[str] = []
    exclude: list[str] = []


class ComponentConfig(StrictModel):
    """One component of the platform and how to observe and act on it."""

    kind: str = "service"
    labels: dict[str, str] = {}
    metrics_url: HttpUrl | None = None
    log_paths: list[str] = []
    health: HealthCheck = HealthCheck()
    restart_command: Command | None = None
    isolate: Hook | None = None
    restore: Hook | None = None
    depends_on: list[str] = []
    parameters: dict[str, Parameter] = {}
    reconfigure: ReconfigureHook | None = None
    # The half-open trial check when other components depend on this one (default: health).
    probe: HealthCheck | None = None
    probes: ProbesConfig = ProbesConfig()
    detection: DetectionFilter = DetectionFilter()


class PrometheusQuery(StrictModel):
    """A PromQL query read through a Prometheus server's ``query_range`` API."""

    name: str = Field(min_length=1)
    query: str = Field(min_length=1)
    component: str = Field(min_length=1)
    metric: str | None = None  # stored metric name; defaults to ``name``


class PrometheusSource(StrictModel):
    url: HttpUrl
    queries: list[PrometheusQuery] = []
    step: float = Field(15.0, gt=0, le=3600)
    lookback: float = Field(300.0, gt=0, le=86400 * 7)
    timeout: float = Field(10.0, gt=0, le=300)


class MetricFile(StrictModel):
    """A CSV or JSON-lines file of samples (timestamp, component, metric, value, labels)."""

    path: str = Field(min_length=1)
    format: Literal["csv", "jsonl", "auto"] = "auto"


class IngestSettings(StrictModel):
    scrape_timeout: float = Field(5.0, gt=0, le=120)
    retries: int = Field(2, ge=0, le=10)
    retry_delay: float = Field(1.0, ge=0, le=60)
    max_future_skew: float = Field(300.0, ge=0)  # samples later than now + this are rejected
    log_batch_lines: int = Field(5000, ge=1, le=1_000_000)
    max_line_bytes: int = Field(16384, ge=256, le=10_000_000)
    max_bytes_per_run: int = Field(64 * 1024 * 1024, ge=1024)
    # A log file seen for the first time is read from its end unless this is set.
    log_from_start: bool = False


class PluginSpec(StrictModel):
    """A user class: ``"pkg.module.Class"``, or ``{"path": ..., "params": {...}, "replace":
    true}``; ``params`` go to its constructor, ``replace`` lets it take a built-in's name."""

    path: str
    params: dict[str, Any] = {}
    replace: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _dotted(cls, path: str) -> str:
        if not _DOTTED_PATH.match(path):
            raise ValueError(f"{path!r} is not a dotted path such as 'package.module.ClassName'")
        return path


class DetectorSpec(StrictModel):
    """A detector by registered name, with constructor parameters."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


# Parameters of the default detector for scrape-interval data in a bounded lookback: the
# detector's own defaults suit 5-minute data with weeks of history (NAB). With one hour of
# 10 s points the 0.999 quantile is about the second-largest value and any new maximum
# alarms; the 0.98 quantile with a 1.5 margin sits near 5 standard deviations of gaussian
# noise (bench.detect --sweep: about 1 false alarm per 1,000 series-hours, against ~990).
# No refractory period: a fault that lasts keeps reporting, so its issue stays open and
# its severity follows the deviation; grouping already makes one issue of the stream.
CYCLE_DEFAULT_DETECTOR = {
    "name": "default",
    "params": {
        "history": "1h",
        "smoothing": ["1min", "5min"],
        "season": None,
        "refractory": "0s",
        "min_points": 60,
        "severity_window": "1h",
        "quantile": 0.98,
        "margin": 1.5,
        # Changes under 0.1 % of a series' level are measured against that, not against the
        # spread of a series that was flat (free inodes moved by 300 of 16 million were
        # scored 100 spreads out and opened an issue on this machine's node exporter).
        "min_relative_spread": 0.001,
    },
}


class LogSignatureSpec(StrictModel):
    name: str = Field(min_length=1)
    pattern: str = Field(min_length=1)
    severity: SeverityName = "medium"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class SaturationRuleSpec(StrictModel):
    """``left / capacity`` (two gauges with the same labels) below ``warning`` (high) or
    ``critical`` for ``for_s`` seconds (tasks.detection.saturation)."""

    name: str = Field(min_length=1)
    left: str = Field(min_length=1)
    capacity: str = Field(min_length=1)
    warning: float = Field(gt=0, lt=1)
    critical: float = Field(ge=0, lt=1)
    for_s: float = Field(0.0, ge=0, le=7 * 86400)
    unless: str = ""  # a 0/1 gauge with the same labels that exempts the pair while 1

    @model_validator(mode="after")
    def _ordered(self) -> SaturationRuleSpec:
        if self.critical > self.warning:
            raise ValueError(f"critical ({self.critical}) above warning ({self.warning})")
        return self

    def rule(self, lookback: float) -> SaturationRule:
        hold = min(self.for_s, lookback)
        return SaturationRule(
            self.name, self.left, self.capacity, self.warning, self.critical, hold, self.unless
        )


class DetectionConfig(StrictModel):
    """How the detection step reads, scores and groups."""

    lookback: float = Field(3600.0, ge=60, le=7 * 86400)
    detectors: list[DetectorSpec] = [DetectorSpec.model_validate(CYCLE_DEFAULT_DETECTOR)]
    behaviour: bool = True
    key_metrics: list[str] = [
        "*request*:rate",
        "*latency*:mean",
        "*error*:rate",
        "*queue*",
        "*memory*",
    ]
    shard_size: int = Field(25, ge=1, le=10_000)
    group_wait: float = Field(10.0, ge=0, le=3600)
    resolve_after: float = Field(300.0, gt=0, le=86400)
    flap_window: float = Field(900.0, ge=0, le=7 * 86400)
    repeat_interval: float = Field(3600.0, gt=0, le=7 * 86400)
    correlation_window: float = Field(60.0, ge=0, le=3600)
    # After a recovery acts on a component, its and its dependants' anomalies are expected
    # side effects for this long: they open silenced issues.
    action_grace: float = Field(60.0, ge=0, le=3600)
    log_signatures: list[LogSignatureSpec] = []
    log_burst_factor: float = Field(5.0, gt=1)
    log_burst_min_count: int = Field(10, ge=1)
    # A Dask scheduler (tcp://host:8786) to spread the detection shards over (needs the
    # "dask" extra); unset, shards run one after another in the cycle's process.
    dask_address: str | None = Field(None, pattern=r"^(tcp|tls|inproc|ucx)://\S+$")
    # Series name globs: ``include`` brings back what the built-in exclusions (the
    # exporter's own go_*/process_*/promhttp_*/*_exporter_* and scrape bookkeeping, process
    # identity gauges) or ``exclude`` leave out. Components add their own lists.
    include: list[str] = []
    exclude: list[str] = []
    # Untyped series read as counters (per-second rates) besides ``*_total``: globs, and
    # ``!glob`` for an exception; the last matching entry decides.
    untyped_counters: list[str] = list(UNTYPED_COUNTERS)
    # Context series: their anomalies join an issue on the component and open none (the
    # host's resource families by default; tasks.detection.candidates). Globs matched
    # ignoring case, ``!glob`` for an exception, the last matching entry decides; [] makes
    # every series a symptom again.
    context_metrics: list[str] = list(HOST_CONTEXT)
    # Resources almost used up (the node-exporter mixin's rules by default; [] turns them
    # off). A cycle reads only the lookback, so a hold time longer than it is cut to it.
    saturation: list[SaturationRuleSpec] = [
        SaturationRuleSpec.model_validate(asdict(r)) for r in NODE_RULES
    ]


# The domain's dataclasses hold the defaults; the configuration adds bounds and messages.
_BACKOFF = BackoffPolicy()
_BREAKER = BreakerConfig()
_RECOVERY = RecoverySettings()


class BackoffConfig(StrictModel):
    """Restart backoff (Kubernetes' crash-loop defaults)."""

    base: float = Field(_BACKOFF.base, gt=0, le=3600)
    factor: float = Field(_BACKOFF.factor, ge=1, le=10)
    cap: float = Field(_BACKOFF.cap, gt=0, le=86400)
    reset_after: float = Field(_BACKOFF.reset_after, gt=0, le=86400)
    max_restarts: int = Field(_BACKOFF.max_restarts, ge=1, le=1000)
    window: float = Field(_BACKOFF.window, gt=0, le=7 * 86400)


class BreakerSettings(StrictModel):
    """Circuit-breaker thresholds (resilience4j's names and defaults)."""

    failure_rate_threshold: float = Field(_BREAKER.failure_rate_threshold, gt=0, le=100)
    window_type: Literal["count", "time"] = _BREAKER.window_type
    window_size: int = Field(_BREAKER.window_size, ge=1, le=100_000)
    minimum_calls: int = Field(_BREAKER.minimum_calls, ge=1, le=100_000)
    wait_in_open: float = Field(_BREAKER.wait_in_open, ge=0, le=86400)
    permitted_in_half_open: int = Field(_BREAKER.permitted_in_half_open, ge=1, le=1000)


class RecoveryConfig(StrictModel):
    """How recoveries act, validate and learn."""

    backoff: BackoffConfig = BackoffConfig()
    breaker: BreakerSettings = BreakerSettings()
    validation_timeout: float = Field(_RECOVERY.validation_timeout, gt=0, le=3600)
    validation_poll: float = Field(_RECOVERY.validation_poll, gt=0, le=60)
    settle_time: float = Field(_RECOVERY.settle_time, ge=0, le=3600)
    measure_time: float = Field(_RECOVERY.measure_time, ge=0, le=3600)
    max_inline_backoff: float = Field(_RECOVERY.max_inline_backoff, ge=0, le=3600)
    genetic_trials: int = Field(_RECOVERY.genetic_trials, ge=1, le=100)
    min_learning_attempts: int = Field(_RECOVERY.min_learning_attempts, ge=1, le=1000)
    # After a successful recovery, the same issue is not acted on again for this long
    # unless new anomalies arrive after it.
    cooldown: float = Field(120.0, ge=0, le=86400)
    # Issues below this severity are recorded and shown but get no recovery.
    min_severity: SeverityName = "low"
    # Issues below this severity are acted on only once they fired in more than one
    # sample (a Prometheus alerting rule's ``for``): a one-sample blip starts nothing.
    confirm_below: SeverityName = "low"


class SelfHealConfig(StrictModel):
    """The whole configuration. Field order follows the seed's table, then additions."""

    # The seed's options: same names, same defaults.
    enabled: bool = True
    mode: Mode = "supervised"
    detection_interval: int = Field(30, gt=0, le=86400)
    max_concurrent_recoveries: int = Field(3, ge=1, le=1000)
    quarantine_period: int = Field(600, ge=0, le=30 * 86400)
    dashboard_enabled: bool = True
    dashboard_port: int = Field(8080, ge=1, le=65535)
    # An http(s) URL, or ``prefect-secret://BLOCK`` to read it from a Prefect Secret block.
    notification_webhook: WebhookRef | None = None
    log_level: LogLevel = "INFO"
    metrics_history_days: float = Field(7, gt=0, le=3650)
    component_restart_commands: dict[str, Command] = {}
    # Dotted paths, or {"path": ..., "params": {...}, "replace": false} entries.
    custom_detectors: list[PluginSpec] = []
    custom_strategies: list[PluginSpec] = []

    # Additions.
    database_url: str | None = None
    components: dict[str, ComponentConfig] = {}
    prometheus: PrometheusSource | None = None
    metric_files: list[MetricFile] = []
    ingest: IngestSettings = IngestSettings()
    detection: DetectionConfig = DetectionConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    approval_timeout: int = Field(3600, gt=0, le=30 * 86400)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("custom_detectors", "custom_strategies")
    @classmethod
    def _plugins_load(cls, plugins: list[PluginSpec], info: ValidationInfo) -> list[PluginSpec]:
        # Importing and building user code here makes a broken path, bad parameters or a
        # name clash a configuration error, reported by ``selfheal config check`` before any
        # flow runs.
        from tasks.detection.registry import default_registry
        from tasks.plugins import PluginError
        from tasks.recovery.registry import default_strategies

        build = default_strategies if info.field_name == "custom_strategies" else default_registry
        try:
            build(plugins)
        except PluginError as exc:
            raise ValueError(str(exc)) from None
        return plugins

    @field_validator("components", "component_restart_commands")
    @classmethod
    def _component_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _COMPONENT_NAME.match(name):
                raise ValueError(
                    f"component name {name!r} must start with a letter and hold only "
                    "letters, digits, '_', '.', '-' (at most 64 characters)"
                )
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> SelfHealConfig:
        for name, comp in self.components.items():
            metric_probes = [
                (n, p)
                for n, p in (
                    ("liveness", comp.probes.liveness),
                    ("readiness", comp.probes.readiness),
                )
                if p is not None and p.metric is not None and p.metric.url is None
            ]
            if metric_probes and comp.metrics_url is None:
                raise ValueError(
                    f"components.{name}.probes.{metric_probes[0][0]}.metric needs a url "
                    "or the component's metrics_url"
                )
            for dep in comp.depends_on:
                if dep not in self.components:
                    raise ValueError(
                        f"components.{name}.depends_on names unknown component {dep!r}"
                    )
        return self

    def restart_command_for(self, component: str) -> Command | None:
        """The component's own restart command, else the seed's ``component_restart_commands``."""
        comp = self.components.get(component)
        if comp is not None and comp.restart_command is not None:
            return comp.restart_command
        return self.component_restart_commands.get(component)
