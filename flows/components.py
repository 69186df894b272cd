"""From the configuration model to the plain specs the recovery domain works with."""

from __future__ import annotations

from flows.config import Command, HealthCheck, HttpAction, ProbeConfig, SelfHealConfig
from tasks.probes.spec import ProbeSpec
from tasks.recovery.backoff import BackoffPolicy
from tasks.recovery.base import (
    ComponentSpec,
    HealthSpec,
    HookSpec,
    HttpSpec,
    ParameterSpec,
    ReconfigureSpec,
    RecoverySettings,
)
from tasks.recovery.breaker import BreakerConfig
from tasks.recovery.commands import CommandSpec


def command_spec(c: Command | None) -> CommandSpec | None:
    if c is None:
        return None
    return CommandSpec(tuple(c.argv), c.timeout, c.cwd, tuple(sorted(c.env.items())))


def http_spec(h: HttpAction | None) -> HttpSpec | None:
    if h is None:
        return None
    return HttpSpec(h.url, h.method, h.json_body, tuple(sorted(h.headers.items())), h.timeout)


def health_spec(
    h: HealthCheck, metrics_url: str | None, liveness: ProbeSpec | None = None
) -> HealthSpec:
    return HealthSpec(
        h.url, h.timeout, h.expect_status, h.use_up_metric, metrics_url, h.score_metric, liveness
    )


def probe_spec(component: str, name: str, p: ProbeConfig, metrics_url: str | None) -> ProbeSpec:
    common = {
        "period_s": p.period_s,
        "timeout_s": p.timeout_s,
        "failure_threshold": p.failure_threshold,
        "success_threshold": p.success_threshold,
        "initial_delay_s": p.initial_delay_s,
    }
    if p.exec is not None:
        return ProbeSpec(component, name, "exec", argv=tuple(p.exec), **common)  # type: ignore[arg-type]
    if p.tcp is not None:
        host, _, port = p.tcp.rpartition(":")
        return ProbeSpec(component, name, "tcp", host=host.strip("[]"), port=int(port), **common)  # type: ignore[arg-type]
    if p.http is not None:
        return ProbeSpec(
            component,
            name,  # type: ignore[arg-type]
            "http",
            url=p.http.url,
            expect_status=p.http.expect_status,
            body_contains=p.http.body_contains,
            **common,  # type: ignore[arg-type]
        )
    assert p.metric is not None
    return ProbeSpec(
        component,
        name,  # type: ignore[arg-type]
        "metric",
        url=p.metric.url or metrics_url or "",
        series=p.metric.series,
        labels=tuple(sorted(p.metric.labels.items())),
        op=p.metric.op,
        value=p.metric.value,
        **common,  # type: ignore[arg-type]
    )


def probe_specs(config: SelfHealConfig) -> list[ProbeSpec]:
    """Every configured probe of every component, liveness first."""
    out = []
    for name, comp in sorted(config.components.items()):
        for probe_name in ("liveness", "readiness"):
            p = getattr(comp.probes, probe_name)
            if p is not None:
                out.append(probe_spec(name, probe_name, p, comp.metrics_url))
    return out


def component_specs(config: SelfHealConfig) -> dict[str, ComponentSpec]:
    specs: dict[str, ComponentSpec] = {}
    names = set(config.components) | set(config.component_restart_commands)
    for name in sorted(names):
        comp = config.components.get(name)
        restart = command_spec(config.restart_command_for(name))
        if comp is None:
            specs[name] = ComponentSpec(name, restart=restart)
            continue
        hook = comp.reconfigure
        live = comp.probes.liveness
        liveness = probe_spec(name, "liveness", live, comp.metrics_url) if live else None
        specs[name] = ComponentSpec(
            name,
            health=health_spec(comp.health, comp.metrics_url, liveness),
            restart=restart,
            isolate=HookSpec(command_spec(comp.isolate.command), http_spec(comp.isolate.http))
            if comp.isolate
            else None,
            restore=HookSpec(command_spec(comp.restore.command), http_spec(comp.restore.http))
            if comp.restore
            else None,
            depends_on=tuple(comp.depends_on),
            parameters={
                k: ParameterSpec(p.min, p.max, p.default, p.type, p.step)
                for k, p in comp.parameters.items()
            },
            reconfigure=ReconfigureSpec(
                hook.json_file, command_spec(hook.command), http_spec(hook.http)
            )
            if hook
            else None,
            probe=health_spec(comp.probe, None) if comp.probe else None,
        )
    return specs


def recovery_settings(config: SelfHealConfig) -> RecoverySettings:
    r = config.recovery
    b, k = r.backoff, r.breaker
    return RecoverySettings(
        backoff=BackoffPolicy(b.base, b.factor, b.cap, b.reset_after, b.max_restarts, b.window),
        breaker=BreakerConfig(
            k.failure_rate_threshold,
            k.window_type,
            k.window_size,
            k.minimum_calls,
            k.wait_in_open,
            k.permitted_in_half_open,
        ),
        validation_timeout=r.validation_timeout,
        validation_poll=r.validation_poll,
        settle_time=r.settle_time,
        measure_time=r.measure_time,
        max_inline_backoff=r.max_inline_backoff,
        quarantine_period=float(config.quarantine_period),
        genetic_trials=r.genetic_trials,
        min_learning_attempts=r.min_learning_attempts,
    )
