"""The cycle's log step: cold start, bursts with a baseline, and ``selfheal logs``."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from flows.config import SelfHealConfig
from storage.logs import read_log_events
from tasks.detection.logs_step import LogDetectionSettings, detect_log_lines, detect_logs
from tasks.ingest.logtail import TailSettings
from tasks.ingest.sources import tail_component_logs

REPO = Path(__file__).resolve().parents[1]
HEALTHY = [
    "GET /api/items/{i} 200 in {ms} ms",
    "cache hit ratio {r} percent",
    "worker {w} picked job {i}",
    "session {i} opened for user{w}",
    "flushed {i} rows to disk in {ms} ms",
]


def healthy_line(t_s: float, i: int) -> str:
    stamp = pd.Timestamp(t_s, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    msg = HEALTHY[i % len(HEALTHY)].format(i=i, ms=i % 90, r=80 + i % 17, w=i % 6)
    return f"{stamp} INFO [worker-{i % 4}] {msg}\n"


def error_line(t_s: float, i: int) -> str:
    stamp = pd.Timestamp(t_s, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{stamp} ERROR [worker-{i % 4}] payment gateway connection refused (attempt {i})\n"


def warning_line(t_s: float) -> str:
    stamp = pd.Timestamp(t_s, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{stamp} WARNING [worker-0] disk latency 40 ms on sda\n"


def cycle(engine: Engine, comp: str, paths: list[str], wm: int, now_ms: int) -> tuple[list, int]:
    """One cycle as flows.cycle runs it: ingest the component's logs, then its log step
    with the settings the detect flow builds from the default configuration."""

    d = SelfHealConfig().detection
    settings = LogDetectionSettings(
        lookback_s=d.lookback,
        burst_factor=d.log_burst_factor,
        burst_min_count=d.log_burst_min_count,
    )
    tail_component_logs(engine, comp, paths, TailSettings())
    anomalies, newest = detect_logs(engine, comp, wm, now_ms, settings)
    return anomalies, max(wm, newest or wm)


def test_cold_start_is_quiet_then_one_error_burst_is_one_anomaly(
    engine: Engine, tmp_path: Path
) -> None:
    # Cycle times are simulated; they end in the past, so no line is later than the clock.
    now = time.time() - 600
    log = tmp_path / "svc.log"
    # An existing healthy log: 2,000 lines over the last 2,000 seconds.
    log.write_text("".join(healthy_line(now - 2000 + i, i) for i in range(2000)))
    wm = int((now - 60) * 1000)
    total = []
    i = 2000
    for c in range(10):  # ten 30 s cycles; the service keeps logging healthy lines
        t_end = now + 30 * (c + 1)
        with log.open("a") as fh:
            for k in range(30):
                fh.write(healthy_line(t_end - 30 + k, i))
                i += 1
        anomalies, wm = cycle(engine, "svc", [str(log)], wm, int(t_end * 1000))
        total += anomalies
    assert total == []
    # The first cycle read the file from its end: neither its history nor the lines
    # written before that first cycle were ingested.
    assert len(read_log_events(engine, 0)) == 270
    # One error template, 40 times in a cycle.
    t_end = now + 330
    with log.open("a") as fh:
        for k in range(40):
            fh.write(error_line(t_end - 30 + k * 0.5, k))
    anomalies, wm = cycle(engine, "svc", [str(log)], wm, int(t_end * 1000))
    assert len(anomalies) == 1, anomalies
    assert anomalies[0].severity in ("high", "critical")
    assert anomalies[0].details["count"] >= 1


def test_bursts_wait_for_a_baseline(sqlite_engine: Engine, tmp_path: Path) -> None:
    now = time.time()
    log = tmp_path / "svc.log"
    log.write_text("")
    wm = int((now - 1) * 1000)
    settings = LogDetectionSettings()
    # 10 minutes of history only: a burst of a WARNING template is not decided yet.
    with log.open("a") as fh:
        for k in range(600):
            fh.write(healthy_line(now - 600 + k, k * 5))
        for k in range(60):
            fh.write(warning_line(now + k * 0.4))
        for k in range(60):
            fh.write(healthy_line(now + k * 0.4, 7))  # routine: "worker 1 picked job 7" x 60
    tail_component_logs(sqlite_engine, "svc", [str(log)], TailSettings(from_start=True))
    res = detect_log_lines(sqlite_engine, "svc", wm, int((now + 30) * 1000), settings)
    assert res.anomalies == []
    # With 40 minutes of history the same burst is one anomaly.
    long = LogDetectionSettings(burst_min_history_s=300)
    res = detect_log_lines(sqlite_engine, "svc", wm, int((now + 30) * 1000), long)
    assert [a.detector for a in res.anomalies] == ["log_burst"]
    assert set(res.lines.loc[res.lines["alert"].notna(), "message"]) == {
        "disk latency 40 ms on sda"
    }


def test_selfheal_logs_matches_what_the_cycle_stores_and_decides(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    now = time.time() - 3600
    lines = []
    for k in range(400):
        t = now + k * 2
        if k in (150, 151, 152, 300):
            lines.append(error_line(t, k))
        elif k == 200:
            stamp = pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            lines.append(f"{stamp} CRITICAL [worker-0] out of memory: killed process 4242\n")
        else:
            lines.append(healthy_line(t, k))
    source = tmp_path / "source.log"
    source.write_text("".join(lines))
    out = tmp_path / "out.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "logs", str(source), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "400 lines" in proc.stderr and "alert line(s)" in proc.stderr
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 400

    # The live cycle on the same lines: the file grows cycle by cycle (30 s), the ingest
    # tails it, the log step decides.
    live = tmp_path / "live.log"
    live.write_text("")
    settings = LogDetectionSettings()
    wm = int(now * 1000) - 1
    decided: dict[int, str] = {}
    pos = 0
    t = now
    while pos < len(lines):
        t += 30
        with live.open("a") as fh:
            while pos < len(lines) and now + pos * 2 <= t:
                fh.write(lines[pos])
                pos += 1
        tail_component_logs(sqlite_engine, "source", [str(live)], TailSettings(from_start=True))
        res = detect_log_lines(sqlite_engine, "source", wm, int(t * 1000), settings)
        for eid, alert in zip(res.lines["id"], res.lines["alert"], strict=True):
            if isinstance(alert, str):
                decided[int(eid)] = alert
        wm = max(wm, res.newest or wm)
    events = read_log_events(sqlite_engine, 0).sort_values("byte_offset", ignore_index=True)
    assert [int(r["template_id"]) for r in rows] == [int(x) for x in events["template_id"]]
    assert [r["alert"] for r in rows] == [decided.get(int(e), "") for e in events["id"]]
    alerts = [r for r in rows if r["alert"]]
    assert {r["line_no"] for r in alerts} >= {"151", "201"}  # first error, the OOM line
