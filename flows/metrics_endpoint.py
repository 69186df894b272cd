"""``/metrics``: the healer watched the Prometheus way.

Exposes, in the Prometheus text format, what a user's own Prometheus and Alertmanager need
to alert when the self-healing itself is stuck or failing. Every value is read from our
storage at scrape time by a custom collector (no counters kept in memory, no module-level
registry), so a restart of ``selfheal serve`` loses nothing:

| series | type | meaning |
|---|---|---|
| ``selfheal_up`` | gauge | 1 while the endpoint can read the database |
| ``selfheal_enabled``, ``selfheal_info{mode}`` | gauge | configuration |
| ``selfheal_open_incidents{severity}`` | gauge | open or recovering incidents |
| ``selfheal_recoveries_total{strategy,outcome}`` | counter | recovery attempts by result |
| ``selfheal_active_recoveries`` | gauge | recoveries planned, approved or running |
| ``selfheal_pending_approvals`` | gauge | approvals nobody answered yet |
| ``selfheal_auto_healing_ratio`` | gauge | share of acted-on incidents healed with no human |
| ``selfheal_time_to_recover_seconds`` | gauge | mean time from first anomaly to fix |
| ``selfheal_probe_ok{component,probe}`` | gauge | newest stored probe result |
| ``selfheal_last_detection_timestamp_seconds`` | gauge | when a cycle last detected |
| ``selfheal_detection_lateness_seconds`` | gauge | time since then beyond one interval |
| ``selfheal_cycle_duration_seconds`` | gauge | the last cycle run (Prefect's API) |
| ``selfheal_cycle_lateness_seconds`` | gauge | its start after its schedule (same) |

Alert examples: ``selfheal_detection_lateness_seconds > 120`` (the cycle is stuck),
``increase(selfheal_recoveries_total{outcome="failed"}[1h]) > 3``,
``selfheal_pending_approvals > 0 for 30m``.

The dashboard serves it at ``/metrics``; without the dashboard, ``start_metrics_endpoint``
serves it alone on ``dashboard_port``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flows.config import SelfHealConfig
from flows.runtime import Runtime, open_runtime, selfheal_home
from storage.issues import last_detection_at
from storage.metrics import latest_by_series
from storage.recoveries import recovery_counts

log = logging.getLogger("selfheal.metrics")

SEVERITIES = ("low", "medium", "high", "critical")
PROBE_FRESH_S = 600.0
PREFECT_TIMEOUT_S = 2.0


def prefect_api_url() -> str | None:
    """PREFECT_API_URL, else the server ``selfheal serve`` recorded (None: unknown)."""
    from flows.prefect_server import recorded_api_url

    return os.environ.get("PREFECT_API_URL") or recorded_api_url(selfheal_home(), PREFECT_TIMEOUT_S)


def last_cycle_run(api_url: str) -> dict[str, Any] | None:
    """The newest finished run of the ``cycle`` flow, read from Prefect's REST API."""
    body = {
        "flows": {"name": {"any_": ["cycle"]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}},
        "sort": "EXPECTED_START_TIME_DESC",
        "limit": 1,
    }
    resp = httpx.post(
        api_url.rstrip("/") + "/flow_runs/filter", json=body, timeout=PREFECT_TIMEOUT_S
    )
    resp.raise_for_status()
    runs = resp.json()
    return runs[0] if runs else None


class SelfHealCollector(Collector):
    """Reads the figures from storage on every scrape."""

    def __init__(
        self,
        rt: Runtime,
        prefect_api: Callable[[], str | None] = prefect_api_url,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rt = rt
        self.prefect_api = prefect_api
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("selfheal_up", "1 while the self-healing database is readable")
        try:
            metrics = list(self._from_storage())
        except Exception as exc:  # noqa: BLE001 - a scrape must answer, and say it failed
            log.warning("metrics: cannot read the database: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics
        yield from self._from_prefect()

    def _from_storage(self) -> Iterator[Metric]:
        from flows.api import get_status

        cfg: SelfHealConfig = self.rt.config
        now = self.clock()
        status = get_status(rt=self.rt)
        enabled = GaugeMetricFamily("selfheal_enabled", "1 when self-healing is enabled")
        enabled.add_metric([], 1 if status["active"] else 0)
        yield enabled
        info = GaugeMetricFamily("selfheal_info", "The mode in force", labels=["mode"])
        info.add_metric([str(status["mode"])], 1)
        yield info
        incidents = GaugeMetricFamily(
            "selfheal_open_incidents", "Open or recovering incidents", labels=["severity"]
        )
        by_sev = status["open_issues_by_severity"]
        for sev in SEVERITIES:
            incidents.add_metric([sev], by_sev.get(sev, 0))
        yield incidents
        recoveries = CounterMetricFamily(
            "selfheal_recoveries",
            "Recovery attempts by strategy and outcome",
            labels=["strategy", "outcome"],
        )
        for strategy, outcome, count in recovery_counts(self.rt.engine):
            recoveries.add_metric([strategy, outcome], count)
        yield recoveries
        for name, doc, value in (
            (
                "selfheal_active_recoveries",
                "Recoveries planned, approved or running",
                status["active_recoveries"],
            ),
            (
                "selfheal_pending_approvals",
                "Approvals nobody answered yet",
                status["pending_approvals"],
            ),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g
        acted = CounterMetricFamily(
            "selfheal_incidents_acted_on", "Incidents a recovery acted on or asked about"
        )
        acted.add_metric([], status["issues_acted_on"])
        yield acted
        healed = CounterMetricFamily(
            "selfheal_incidents_healed_automatically", "Incidents healed with no human decision"
        )
        healed.add_metric([], status["healed_automatically"])
        yield healed
        if status["auto_healing_rate"] is not None:
            ratio = GaugeMetricFamily(
                "selfheal_auto_healing_ratio",
                "Share of acted-on incidents healed with no human decision",
            )
            ratio.add_metric([], status["auto_healing_rate"] / 100.0)
            yield ratio
        if status["mean_time_to_recover_s"] is not None:
            ttr = GaugeMetricFamily(
                "selfheal_time_to_recover_seconds",
                "Mean time from an incident's first anomaly to its first successful recovery",
            )
            ttr.add_metric([], status["mean_time_to_recover_s"])
            yield ttr
        probes = latest_by_series(
            self.rt.engine, "probe_ok", pd.Timestamp(now) - pd.Timedelta(seconds=PROBE_FRESH_S)
        )
        if not probes.empty:
            probe = GaugeMetricFamily(
                "selfheal_probe_ok",
                "Newest stored probe result (1 passes, 0 fails)",
                labels=["component", "probe"],
            )
            for row in probes.itertuples():
                labels = row.labels if isinstance(row.labels, dict) else {}
                probe.add_metric([str(row.component), str(labels.get("probe", ""))], row.value)
            yield probe
        last = last_detection_at(self.rt.engine)
        if last is not None:
            stamp = GaugeMetricFamily(
                "selfheal_last_detection_timestamp_seconds",
                "When a detection cycle last ran (Unix time)",
            )
            stamp.add_metric([], last.timestamp())
            yield stamp
            late = GaugeMetricFamily(
                "selfheal_detection_lateness_seconds",
                "Time since the last detection beyond one detection_interval",
            )
            since = (now - last).total_seconds()
            late.add_metric([], max(since - cfg.detection_interval, 0.0))
            yield late

    def _from_prefect(self) -> Iterator[Metric]:
        try:
            url = self.prefect_api()
            run = last_cycle_run(url) if url else None
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("metrics: Prefect API not readable: %s", exc)
            return
        if not run:
            return
        duration = GaugeMetricFamily(
            "selfheal_cycle_duration_seconds", "Run time of the last finished detection cycle"
        )
        duration.add_metric([], float(run.get("total_run_time") or 0.0))
        yield duration
        start, expected = run.get("start_time"), run.get("expected_start_time")
        if start and expected:
            lateness = GaugeMetricFamily(
                "selfheal_cycle_lateness_seconds",
                "How late the last detection cycle started after its scheduled time",
            )
            delay = (pd.Timestamp(start) - pd.Timestamp(expected)).total_seconds()
            lateness.add_metric([], max(delay, 0.0))
            yield lateness


def registry_for(rt: Runtime, **kwargs: Any) -> CollectorRegistry:
    """A registry of its own holding the collector (nothing registered globally)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SelfHealCollector(rt, **kwargs))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The body and content type of a ``/metrics`` answer."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsEndpoint:
    """``/metrics`` alone on ``host:port`` (for ``selfheal serve`` without the dashboard)."""

    def __init__(self, config_path: str | None, port: int, host: str = "127.0.0.1") -> None:
        self.config_path = config_path
        self.port = port
        self.host = host
        self._rt: Runtime | None = None
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> None:
        from prometheus_client import start_http_server

        self._rt = open_runtime(self.config_path)
        try:
            self._server, _ = start_http_server(
                self.port, addr=self.host, registry=registry_for(self._rt)
            )
        except BaseException:
            self._rt.close()
            self._rt = None
            raise
        self.port = self._server.server_port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._rt is not None:
            self._rt.close()
            self._rt = None


def start_metrics_endpoint(
    config: SelfHealConfig, config_path: str | None
) -> MetricsEndpoint | None:
    """The one call ``selfheal serve`` makes when the dashboard is off: ``/metrics`` on
    ``dashboard_port``. Returns the endpoint (``stop()`` it on exit), or None with one
    warning when the port is taken (serving the flows matters more than the endpoint)."""
    endpoint = MetricsEndpoint(config_path, config.dashboard_port)
    try:
        endpoint.start()
    except OSError as exc:
        log.warning(
            "metrics endpoint not started: port %s: %s (set dashboard_port to a free one)",
            config.dashboard_port,
            exc.strerror or exc,
        )
        return None
    print(f"metrics on {endpoint.url}", flush=True)
    return endpoint
