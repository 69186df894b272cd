"""``/metrics`` scraped by a real Prometheus (the Debian package), read back through its
HTTP API; the dashboard serves the same exposition."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.demo.platform.launcher import free_port
from flows.metrics_endpoint import MetricsEndpoint
from storage.engine import make_engine, sqlite_url_for
from storage.issues import IssueRecord, save_issues
from storage.metrics import labels_key
from storage.migrate import ensure_schema
from storage.recoveries import create_recovery
from tasks.ingest.records import IngestReport
from tasks.ingest.store import store_samples
from tests.realpeers import prometheus_server

pytestmark = pytest.mark.integration


def seeded_config(tmp_path: Path) -> Path:
    """A database with two open incidents, recoveries and a probe result."""
    url = sqlite_url_for(tmp_path / "selfheal.db")
    config = tmp_path / "selfheal.json"
    config.write_text(json.dumps({"database_url": url, "dashboard_port": free_port()}))
    engine = make_engine(url)
    ensure_schema(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        ids = save_issues(
            conn,
            [
                IssueRecord(f"fp{i}", "db", kind, kind, f"t{i}", sev, "open", now, now, now)
                for i, (kind, sev) in enumerate([("down", "critical"), ("metric", "medium")])
            ],
        )
        for strategy, status in [
            ("restart", "succeeded"),
            ("restart", "succeeded"),
            ("restart", "failed"),
            ("circuit_breaker", "succeeded"),
        ]:
            create_recovery(
                conn,
                issue_id=ids["fp0"],
                component="db",
                issue_kind="down",
                strategy=strategy,
                mode="automated",
                status=status,
                started_at=now - timedelta(seconds=30),
                finished_at=now,
            )
    now_ms = int(now.timestamp() * 1000)
    report = IngestReport("t")
    store_samples(
        engine,
        pd.DataFrame(
            {
                "component": "db",
                "metric": "probe_ok",
                "labels": labels_key({"probe": "liveness"}),
                "ts": [now_ms - 1000],
                "value": [0.0],
                "kind": "gauge",
            }
        ),
        report,
    )
    engine.dispose()
    return config


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_scrapes_the_healer(tmp_path: Path) -> None:
    config = seeded_config(tmp_path)
    endpoint = MetricsEndpoint(str(config), free_port())
    endpoint.start()
    try:
        own = parse(httpx.get(endpoint.url, timeout=10).text)
        assert own[("selfheal_up", ())] == 1
        assert own[("selfheal_open_incidents", (("severity", "critical"),))] == 1
        assert own[("selfheal_open_incidents", (("severity", "medium"),))] == 1
        key = ("selfheal_recoveries_total", (("outcome", "succeeded"), ("strategy", "restart")))
        assert own[key] == 2
        assert own[("selfheal_probe_ok", (("component", "db"), ("probe", "liveness")))] == 0
        (tmp_path / "prom").mkdir()
        with prometheus_server(tmp_path / "prom", endpoint.url) as prom:
            deadline = time.monotonic() + 60
            while True:
                r = httpx.get(
                    prom + "/api/v1/query",
                    params={
                        "query": 'selfheal_recoveries_total{strategy="restart",outcome="failed"}'
                    },
                    timeout=5,
                ).json()
                result = r["data"]["result"]
                if result or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert result, r
            assert float(result[0]["value"][1]) == 1.0
            r = httpx.get(
                prom + "/api/v1/query",
                params={"query": "sum(selfheal_open_incidents)"},
                timeout=5,
            ).json()
            assert float(r["data"]["result"][0]["value"][1]) == 2.0
            # The target is healthy in Prometheus's own eyes (the text format parsed).
            targets = httpx.get(prom + "/api/v1/targets", timeout=5).json()
            active = targets["data"]["activeTargets"]
            assert active and active[0]["health"] == "up", active
    finally:
        endpoint.stop()


def test_the_dashboard_serves_metrics(tmp_path: Path) -> None:
    from flows.dashboard.server import DashboardServer

    config = seeded_config(tmp_path)
    with DashboardServer(str(config), port=0) as dash:
        resp = httpx.get(dash.url + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert parse(resp.text)[("selfheal_pending_approvals", ())] == 0


def test_cycle_duration_and_lateness_come_from_prefect(
    prefect_server: None, tmp_path: Path
) -> None:
    from prefect import flow
    from prefect.settings import PREFECT_API_URL

    from flows.metrics_endpoint import registry_for
    from flows.runtime import open_runtime

    @flow(name="cycle")
    def fake_cycle() -> int:
        return 1

    fake_cycle()
    api = PREFECT_API_URL.value()
    rt = open_runtime(str(seeded_config(tmp_path)))
    try:
        registry = registry_for(rt, prefect_api=lambda: api)
        found = parse(exposition_text(registry))
    finally:
        rt.close()
    assert found[("selfheal_cycle_duration_seconds", ())] >= 0
    assert found[("selfheal_cycle_lateness_seconds", ())] >= 0


def exposition_text(registry: object) -> str:
    from flows.metrics_endpoint import exposition

    body, _ = exposition(registry)  # type: ignore[arg-type]
    return body.decode()
