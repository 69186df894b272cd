"""What a probe is and what one run of it gives (plain frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from storage.probes import PROBE_LATENCY_METRIC, PROBE_OK_METRIC

ProbeName = Literal["liveness", "readiness"]
ProbeKind = Literal["exec", "tcp", "http", "metric"]
MetricOp = Literal["==", "!=", "<", "<=", ">", ">="]

# Kubernetes' defaults (periodSeconds, timeoutSeconds, failureThreshold, successThreshold,
# initialDelaySeconds).
DEFAULT_PERIOD_S = 10.0
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_INITIAL_DELAY_S = 0.0

# The series a probe run is stored as (one per component and probe name).
PROBE_METRICS = (PROBE_OK_METRIC, PROBE_LATENCY_METRIC)


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of one component. Exactly the fields of its ``kind`` are used."""

    component: str
    name: ProbeName
    kind: ProbeKind
    argv: tuple[str, ...] = ()  # exec
    host: str = ""  # tcp
    port: int = 0  # tcp
    url: str = ""  # http; metric: the metrics endpoint to scrape
    expect_status: int = 200  # http
    body_contains: str | None = None  # http
    series: str = ""  # metric
    labels: tuple[tuple[str, str], ...] = ()  # metric: labels the sample must carry
    op: MetricOp = "=="  # metric
    value: float = 1.0  # metric
    period_s: float = DEFAULT_PERIOD_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    initial_delay_s: float = DEFAULT_INITIAL_DELAY_S

    @property
    def key(self) -> tuple[str, str]:
        return (self.component, self.name)

    def describe(self) -> str:
        if self.kind == "exec":
            return f"exec {' '.join(self.argv)}"
        if self.kind == "tcp":
            return f"tcp {self.host}:{self.port}"
        if self.kind == "http":
            return f"http {self.url}"
        return f"metric {self.series} {self.op} {self.value:g}"


@dataclass(frozen=True)
class ProbeResult:
    """One run: healthy or not, how long it took, when it ended (epoch ms), and why."""

    component: str
    probe: str
    ok: bool
    latency_s: float
    ts_ms: int
    detail: str
