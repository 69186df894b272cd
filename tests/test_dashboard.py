"""The dashboard: pure views and SVG on plain frames, the HTTP server on both backends, and
the page as a real browser renders it (headless Chromium over CDP, on SQLite)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import Engine

from flows.config import SelfHealConfig
from flows.dashboard.data import ViewOptions, choose_components, load_records, load_snapshot
from flows.dashboard.history import rate_chart, time_to_recover, ttr_chart
from flows.dashboard.live import MAX_MARKERS, component_charts, derived_name, plan_charts
from flows.dashboard.page import render
from flows.dashboard.server import DashboardServer
from flows.dashboard.svg import MAX_POINTS, Bars, Chart, Line, Marker, bar_chart, fmt_value
from flows.dashboard.svg import line_chart as svg_line_chart
from flows.dashboard.views import approval_rows, build_dashboard, summary
from flows.runtime import Runtime
from storage.metrics import SeriesKey, SeriesResolver, insert_samples, labels_key
from tests.browser import Browser, require_chromium
from tests.fixture_outcomes import FixtureInfo, build_outcomes

REPO = Path(__file__).resolve().parents[1]
# Read at import: the autouse _isolated_home fixture removes SELFHEAL_* variables before
# each test runs.
SAVE_SCREENSHOTS = os.environ.get("SELFHEAL_SAVE_SCREENSHOTS") == "1"
NOW = pd.Timestamp("2026-05-01 12:00", tz="UTC")


# -- svg ------------------------------------------------------------------------------


def test_empty_chart_says_so() -> None:
    svg = svg_line_chart(Chart("k", "latency", note="no data yet"))
    assert 'data-empty="true"' in svg and "no data yet" in svg and 'data-points="0"' in svg


def test_nan_values_are_gaps_not_zeros() -> None:
    xs = [0.0, 1.0, 2.0, 3.0, 4.0]
    svg = svg_line_chart(Chart("k", "t", lines=[Line("s", xs, [1.0, math.nan, 2.0, 3.0, None])]))  # type: ignore[list-item]
    assert 'data-points="3"' in svg
    path = svg.split(" d='")[1].split("'")[0]
    assert path.count("M") == 2 and "nan" not in path.lower()


def test_all_nan_chart_is_empty() -> None:
    svg = svg_line_chart(Chart("k", "t", lines=[Line("s", [0.0, 1.0], [math.nan, math.nan])]))
    assert 'data-empty="true"' in svg


def test_long_series_are_thinned() -> None:
    n = 20_000
    svg = svg_line_chart(
        Chart("k", "t", lines=[Line("s", list(range(n)), [float(i % 7) for i in range(n)])])
    )
    points = int(svg.split('data-points="')[1].split('"')[0])
    assert 0 < points <= MAX_POINTS


def test_markers_and_names_are_escaped() -> None:
    chart = Chart(
        "c<1>",
        "<script>alert(1)</script>",
        lines=[Line('a"b', [0.0, 10.0], [1.0, 2.0])],
        markers=[Marker(5.0, 1.5, "<b>", "critical", "s"), Marker(99.0, 1.0, "outside")],
        x_range=(0.0, 10.0),
    )
    svg = svg_line_chart(chart)
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a&quot;b" in svg
    assert svg.count("class='anomaly'") == 1 and 'data-markers="1"' in svg


def test_bar_chart_stacks_and_empty() -> None:
    bars = Bars("b", "t", ["1h", "2h"], {"ok": [1.0, 0.0], "failed": [2.0, math.nan]})
    svg = bar_chart(bars)
    assert svg.count("class='bar'") == 2
    assert 'data-empty="true"' in bar_chart(Bars("b", "t", [], {}))


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (512.0, "B", "512 B"),
        (3 * 1024**3, "B", "3 GiB"),
        (1020 * 1024**2, "B", "1020 MiB"),
        (2.5 * 1024**4, "B", "2.5 TiB"),
        (1500.0, "/s", "1500 /s"),
        (123456.0, "", "1.23e+05"),
        (0.0123, "s", "12.3 ms"),
        (300.0, "s", "5 min"),
        (61.54, "%", "61.5%"),
        (math.nan, "", "–"),
    ],
)
def test_fmt_value(value: float, unit: str, text: str) -> None:
    assert fmt_value(value, unit) == text


# -- views on frames --------------------------------------------------------------------


def test_derived_names_follow_derive() -> None:
    assert derived_name("hms_requests_total", "counter") == "hms_requests_total:rate"
    assert derived_name("lat_seconds_sum", "histogram") == "lat_seconds:mean"
    assert derived_name("lat_seconds_count", "histogram") == "lat_seconds:mean"
    assert derived_name("lat_seconds_bucket", "histogram") is None
    assert derived_name("hms_memory_bytes", "gauge") == "hms_memory_bytes"
    assert derived_name("up", "gauge") == "up"


def test_many_series_are_capped() -> None:
    rows: list[tuple[int, str, dict[str, str], str]] = []
    for m in range(60):
        for ls in range(25):
            rows.append((len(rows), f"m{m}_request_total", {"shard": str(ls)}, "counter"))
    rows += [(9001, "up", {}, "gauge"), (9002, "up", {"job": "x"}, "gauge")]
    rows += [(9003, "x_latency_bucket", {"le": "1"}, "histogram")]
    series = pd.DataFrame(rows, columns=["series_id", "metric", "labels", "kind"])
    plans = plan_charts(series, ["*request*:rate", "*latency*"], max_charts=5, max_lines=3)
    assert len(plans) == 5
    assert all(len(p.label_sets) == 3 and p.total_label_sets == 25 for p in plans)
    assert sum(len(p.series_ids) for p in plans) == 15
    with_up = plan_charts(series, ["*request*:rate"], max_charts=100, max_lines=3)
    up = [p for p in with_up if p.name == "up"]
    assert len(up) == 1 and up[0].series_ids == (9001,)  # only the label-free scrape ``up``


def test_markers_are_placed_on_their_series_and_capped() -> None:
    t0 = NOW.value / 1e9
    series = pd.DataFrame(
        [(1, "req_total", {}, "counter"), (2, "up", {}, "gauge")],
        columns=["series_id", "metric", "labels", "kind"],
    )
    samples = pd.DataFrame(
        {
            "series_id": [1] * 3 + [2] * 3,
            "ts": pd.to_datetime([t0 - 120, t0 - 60, t0] * 2, unit="s", utc=True),
            "value": [0.0, 60.0, 180.0, 1.0, 0.0, 1.0],
        }
    )
    n = MAX_MARKERS + 50
    anomalies = pd.DataFrame(
        {
            "id": range(n + 2),
            "component": ["c"] * (n + 2),
            "ts": pd.to_datetime([t0 - 30] * n + [t0 - 60, t0 - 30], unit="s", utc=True),
            "signature": ["req_total:rate"] * n + ["down", "profile"],
            "kind": ["metric"] * n + ["down", "behaviour"],
            "series_id": [1] * n + [None, None],
            "value": [math.nan] * n + [0.0, None],
            "severity": ["high"] * (n + 2),
            "detector": ["d"] * (n + 2),
            "score": [1.0] * (n + 2),
        }
    )
    plans = plan_charts(series, ["*req*:rate"])
    charts, unplaced = component_charts("c", plans, series, samples, anomalies, (t0 - 180, t0))
    rate, up = charts
    assert len(rate.markers) == MAX_MARKERS and "of 150 anomalies" in rate.note
    assert rate.markers[0].y == pytest.approx(1.5)  # no stored value: on the curve (1 → 2 /s)
    assert [m.y for m in up.markers] == [0.0] and unplaced == 1


def test_choose_components_prefers_trouble_and_caps(sqlite_engine: Engine) -> None:
    records = load_records(sqlite_engine, ViewOptions(), NOW)
    issues = pd.DataFrame(
        {"component": ["c7", "c3"], "severity": ["low", "critical"], "status": ["open", "open"]}
    )
    records = records.__class__(**{**records.__dict__, "issues": issues})
    names = [f"c{i}" for i in range(40)]
    assert choose_components(names, records, [], 5) == ["c3", "c7", "c0", "c1", "c10"]
    assert choose_components(names, records, ["c9", "nope"], 5) == ["c9"]


def test_empty_database_renders_no_data_states(sqlite_engine: Engine) -> None:
    snap = load_snapshot(sqlite_engine, ViewOptions(), NOW)
    view = build_dashboard(snap, 60)
    assert view.panels == [] and view.issues == [] and view.approvals == []
    assert view.summary.auto_healing_rate is None and view.summary.open_issues == 0
    html = render(view, 15)
    for text in ("No data yet", "No open issues.", "No pending approvals.", "No recoveries yet."):
        assert text in html
    assert "no finished recoveries yet" in html and "no healed issues yet" in html


def test_unsafe_ui_links_are_dropped() -> None:
    approvals = pd.DataFrame(
        {
            "id": ["approval_1", "approval_2"],
            "component": ["c", "c"],
            "severity": ["high", "high"],
            "proposed_action": ["restart", "restart"],
            "requested_at": [NOW, NOW],
            "expires_at": [NOW + pd.Timedelta(hours=1), NOW - pd.Timedelta(hours=1)],
            "decision": ["pending", "pending"],
            "ui_url": ["javascript:alert(1)", "https://prefect.example/runs/flow-run/1"],
        }
    )
    rows = approval_rows(approvals, NOW, "/etc/self heal.json")
    assert [r.ui_url for r in rows] == [None, "https://prefect.example/runs/flow-run/1"]
    assert rows[0].expires == "in 60 min" and rows[1].expires == "expired"
    assert rows[0].approve_command == "selfheal approve approval_1 -c '/etc/self heal.json'"


def test_history_matches_status_definitions(engine: Engine) -> None:
    info = build_outcomes(engine)
    records = load_records(engine, ViewOptions(), pd.Timestamp(info.now))
    s = summary(records)
    ttr = time_to_recover(records.issues, records.recoveries)
    assert s.mean_time_to_recover_s == pytest.approx(ttr["seconds"].mean(), abs=0.1)
    rate = rate_chart(records.issues, records.recoveries, records.approvals)
    ys = [y for y in rate.lines[0].ys if not math.isnan(y)]
    assert ys and all(0 <= y <= 100 for y in ys)
    assert len(ttr_chart(records.issues, records.recoveries).lines[0].xs) == len(ttr)


def test_summary_matches_status_command(engine: Engine) -> None:
    from flows.api import get_status

    info = build_outcomes(engine)
    s = summary(load_records(engine, ViewOptions(), pd.Timestamp(info.now)))
    status = get_status(rt=Runtime(SelfHealConfig.model_validate({}), engine))
    for key in (
        "open_issues",
        "open_issues_by_severity",
        "active_recoveries",
        "pending_approvals",
        "auto_healing_rate",
        "mean_time_to_recover_s",
        "issues_acted_on",
        "healed_automatically",
        "issues_total",
    ):
        assert getattr(s, key) == status[key], key


def test_snapshot_with_many_components_stays_bounded(sqlite_engine: Engine) -> None:
    t0 = int(NOW.value // 1_000_000)
    with sqlite_engine.begin() as conn:
        keys = [
            SeriesKey(f"svc{c:02d}", f"m{m}_requests_total", labels_key({"i": str(i)}))
            for c in range(30)
            for m in range(8)
            for i in range(6)
        ]
        ids = SeriesResolver().resolve(conn, keys, dict.fromkeys(keys, "counter"))
        insert_samples(
            conn, [(ids[k], t0 - 60_000 * j, 10.0 * (60 - j)) for k in keys for j in range(5)]
        )
    opts = ViewOptions(max_components=4, max_charts=3, max_lines=2)
    snap = load_snapshot(sqlite_engine, opts, NOW)
    assert len(snap.shown) == 4 and len(snap.components) == 30
    assert snap.series["series_id"].nunique() <= 4 * 3 * 2
    view = build_dashboard(snap, 60)
    assert len(view.hidden_components) == 26
    assert all(len(p.charts) == 3 for p in view.panels)
    assert all(c.lines and len(c.lines) == 2 for p in view.panels for c in p.charts)
    assert "2 of 6 label sets" in render(view, 0)


# -- the server ---------------------------------------------------------------------------


def _config(tmp_path: Path, db_url: str) -> str:
    path = tmp_path / "selfheal.json"
    path.write_text(json.dumps({"database_url": db_url}))
    return str(path)


@contextmanager
def running(config_path: str) -> Iterator[DashboardServer]:
    server = DashboardServer(config_path, port=0)
    server.start_in_thread()
    try:
        yield server
    finally:
        server.stop()


def test_server_serves_page_summary_and_health(engine: Engine, db_url: str, tmp_path: Path) -> None:
    info = build_outcomes(engine)
    with running(_config(tmp_path, db_url)) as server:
        assert server.port > 0 and server.url.endswith(f":{server.port}")
        health = httpx.get(f"{server.url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["components"] == 3
        s = httpx.get(f"{server.url}/api/summary", timeout=10).json()
        assert s["pending_approvals"] == 1 and s["open_issues"] == 3
        assert s["tiles"]["pending_approvals"] == "1"
        page = httpx.get(f"{server.url}/?minutes=30&component=proof_engine", timeout=30)
        assert page.status_code == 200
        assert page.text.count("data-component=") == 1 and "last 30 min" in page.text
        assert info.ui_url in page.text
        past = (info.now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
        page = httpx.get(f"{server.url}/", params={"end": past, "minutes": "bad"}, timeout=30)
        assert f"last 60 min to {past.replace('T', ' ')} UTC" in page.text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_port_in_use_fails_with_the_port(sqlite_engine: Engine, tmp_path: Path) -> None:
    url = sqlite_engine.url.render_as_string(hide_password=False)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        server = DashboardServer(_config(tmp_path, url), port=port)
        with pytest.raises(OSError, match=str(port)):
            server.start_in_thread()
        server.stop()


def test_run_dashboard_serves_until_interrupted(sqlite_engine: Engine, tmp_path: Path) -> None:
    """The CLI hook in a process of its own: prints its URL, serves, exits 0 on Ctrl-C."""
    url = sqlite_engine.url.render_as_string(hide_password=False)
    code = (
        "import sys; from flows.dashboard.server import run_dashboard; "
        "sys.exit(run_dashboard(sys.argv[1], port=0))"
    )
    log = tmp_path / "dashboard.stderr"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, _config(tmp_path, url)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,  # a file: reading a pipe of a live process could block the test
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("dashboard on http://127.0.0.1:"), line + log.read_text()
        base = line.split()[2]
        for _ in range(100):  # the port is bound before the line; uvicorn starts just after
            try:
                assert httpx.get(f"{base}/healthz", timeout=5).json()["status"] == "ok"
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the dashboard never answered")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# -- in a browser -------------------------------------------------------------------------


CHARTS_JS = """[...document.querySelectorAll('svg.chart')].map(s => ({
  key: s.dataset.chart, points: Number(s.dataset.points || 0),
  markers: Number(s.dataset.markers || 0),
  paths: [...s.querySelectorAll('path.line')].map(p => Number(p.dataset.points)),
  width: s.getBoundingClientRect().width}))"""

MARKERS_IN_PLOT_JS = """[...document.querySelectorAll('circle.anomaly')].every(c => {
  const box = c.ownerSVGElement.viewBox.baseVal;
  const x = Number(c.getAttribute('cx')), y = Number(c.getAttribute('cy'));
  return x >= 0 && x <= box.width && y >= 0 && y <= box.height; })"""


@pytest.mark.integration
def test_dashboard_in_a_browser(sqlite_engine: Engine, tmp_path: Path) -> None:
    exe = require_chromium()
    info: FixtureInfo = build_outcomes(sqlite_engine)
    url = sqlite_engine.url.render_as_string(hide_password=False)
    with running(_config(tmp_path, url)) as server, Browser(exe) as browser:
        page = browser.new_page()
        page.navigate(f"{server.url}/")
        page.wait_for("document.body.dataset.updated")  # the refresh script ran
        charts = {c["key"]: c for c in page.evaluate(CHARTS_JS)}

        for comp in info.components:  # every key series drawn, with data
            mine = [c for k, c in charts.items() if k.startswith(f"{comp}/")]
            assert len(mine) == 6, comp
            assert all(c["points"] > 100 and c["paths"] and c["width"] > 0 for c in mine)
        assert charts["proof_engine/hms_request_latency_seconds:mean"]["markers"] == 4
        assert charts["theorem_repository/up"]["markers"] == 3
        assert charts["genetic_optimizer/hms_memory_bytes"]["markers"] == 5
        assert page.evaluate("document.querySelectorAll('circle.anomaly').length") == 12
        assert page.evaluate(MARKERS_IN_PLOT_JS)

        rate = charts["history/auto-healing-rate"]
        assert rate["points"] > 5 and rate["paths"][0] == rate["points"]
        assert charts["history/time-to-recover"]["points"] >= 5
        assert page.evaluate("document.querySelectorAll('rect.bar').length") > 3

        sel = f"[data-approval='{info.pending_approval}'] a.ui-link"
        assert page.evaluate(f"document.querySelector({json.dumps(sel)}).href") == info.ui_url
        links = f"document.querySelectorAll('a[href={json.dumps(info.ui_url)}]').length"
        assert page.evaluate(links) == 1
        assert info.pending_approval in page.evaluate(
            "document.querySelector('#approvals code').textContent"
        )

        rows = page.evaluate(
            "[...document.querySelectorAll('#issues tr[data-issue]')]"
            ".map(r => [Number(r.dataset.issue), r.dataset.status, r.lastChild.textContent])"
        )
        ids = info.issue_ids
        assert {r[0] for r in rows} == {ids["latency"], ids["errors"], ids["leak"]}
        assert [r[2] for r in rows if r[0] == ids["errors"]] == [f"by #{ids['down']}"]
        statuses = page.evaluate(
            "[...document.querySelectorAll('tr[data-recovery]')].map(r => r.dataset.status)"
        )
        assert {"running", "awaiting_approval", "succeeded", "failed"} <= set(statuses)

        page.click("header a[href='?minutes=15']")
        page.wait_for("document.querySelector('#metrics h2').textContent.includes('last 15 min')")
        page.navigate(f"{server.url}/?refresh=0")
        shot = page.screenshot(tmp_path / "dashboard.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if SAVE_SCREENSHOTS:
        target = REPO / "docs" / "img" / "dashboard-test.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_bind_takes_the_port_at_once_and_falls_back_only_when_asked() -> None:
    """The demo binds its dashboard before it starts anything else (a `selfheal serve`
    with default settings would take 8080 in between); a busy port is an error naming it,
    or, when asked, a free port instead."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{busy}"):
            DashboardServer(None, port=busy).bind()
        dash = DashboardServer(None, port=busy)
        try:
            port = dash.bind(any_port_if_taken=True)
            assert port != busy and dash.url.endswith(f":{port}")
            assert dash.bind() == port  # bound once; start_in_thread serves this socket
            with pytest.raises(OSError):
                socket.create_server(("127.0.0.1", port)).close()
        finally:
            dash.stop()
