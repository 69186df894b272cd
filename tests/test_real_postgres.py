"""Real parts end to end: a PostgreSQL of its own, Debian's prometheus-postgres-exporter
pointed at it, light steady traffic, and selfheal in automated mode with a liveness
probe (the probe scheduler ``selfheal serve`` starts, and the cycle flow on a loop in this
process). Faults: none (a short quiet period: bench.real runs the 5-minute one), SIGKILL
of the postmaster, SIGSTOP for 25 s (new connections hang: pg_isready times out); then
the crash with a ``tcp`` probe, and with no probe at all (seen through ``pg_up``)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from storage.engine import make_engine, sqlite_url_for
from storage.issues import anomalies_frame, issues_frame
from storage.recoveries import ACTIVE, actions_frame, recoveries_frame
from tests.realpg import (
    Healer,
    Missing,
    RealPg,
    Traffic,
    check_parts,
    postgres_exporter,
    postgres_instance,
    real_config,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PERIOD_S = 2.0  # probe period (failure_threshold and the rest at Kubernetes' defaults)
INTERVAL = 5  # detection_interval
SIDE_EFFECTS_S = 4 * INTERVAL  # how long after a restart its side effects are awaited
MAX_ISSUES_PER_CRASH = 2  # issue 11: the down incident, and at most one more


@pytest.fixture
def pg() -> Iterator[RealPg]:
    try:
        check_parts()
    except Missing as exc:
        pytest.skip(str(exc))
    with postgres_instance() as instance:
        yield instance


def wait_for(what: str, predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def since_ts(t: float) -> pd.Timestamp:
    return pd.Timestamp(t, unit="s", tz="UTC")


def since(frame: pd.DataFrame, column: str, t: float) -> pd.DataFrame:
    return frame[frame[column] >= pd.Timestamp(t, unit="s", tz="UTC")]


def setup(tmp_path: Path, pg: RealPg, url: str, probe: str | None) -> tuple[Path, str]:
    db_url = sqlite_url_for(tmp_path / "selfheal.db")
    cfg = write_config(
        tmp_path / "selfheal.json", real_config(pg, url, db_url, probe, PERIOD_S, INTERVAL)
    )
    return cfg, db_url


def crash_and_heal(pg: RealPg, db_url: str, detectors: set[str]) -> dict[str, object]:
    """SIGKILL the postmaster; wait for the down issue (a down anomaly from one of
    ``detectors``), the restart and the server."""
    engine = make_engine(db_url)
    try:
        killed_at = time.time()
        pg.signal(signal.SIGKILL)

        def down_issue() -> bool:
            issues = since(issues_frame(engine), "first_seen", killed_at - 1)
            return bool(((issues["kind"] == "down") & (issues["severity"] == "critical")).any())

        wait_for("a critical down issue", down_issue, 120)

        def seen_by_detector() -> bool:
            a = since(anomalies_frame(engine), "ts", killed_at)
            return bool(detectors & set(a[a["kind"] == "down"]["detector"]))

        # The exporter's pg_up 0 (read at the next cycle) and the probe's third failure
        # both feed the same down issue; whichever comes first opens it, and a down issue is
        # acted on at once, so the server may be back before the other one sees it. (That
        # the probes see a hang or a closed port on their own: the hang test below and
        # tests/test_probes.py.)
        wait_for(f"a down anomaly from one of {sorted(detectors)}", seen_by_detector, 60)
        wait_for("a succeeded recovery", lambda: _succeeded(engine, killed_at), 180)
        assert pg.answers()
        actions = since(actions_frame(engine, "pg"), "started_at", killed_at)
        assert (actions["kind"] == "restart").any() and actions["ok"].any()
        # The restart's side effects (counters back at 0, new pids, gauges jumping) show in
        # the next cycles: count the fault's issues once they have had time to appear.
        time.sleep(SIDE_EFFECTS_S)
        issues = since(issues_frame(engine), "first_seen", killed_at - 1)
        return {"issues": len(issues), "titles": list(issues["title"])}
    finally:
        engine.dispose()


def down_reasons(engine, t: float) -> set[str]:  # type: ignore[no-untyped-def]
    """The ``reason`` of every down anomaly since ``t`` (probe failures, pg_up = 0, ...)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT details FROM anomalies WHERE kind = 'down' AND ts >= :t"),
            {"t": int(t * 1000)},
        ).all()
    out = set()
    for (details,) in rows:
        d = json.loads(details) if isinstance(details, str) else details
        out.add(str((d or {}).get("reason")))
    return out


def _succeeded(engine, t: float) -> bool:  # type: ignore[no-untyped-def]
    rec = recoveries_frame(engine)
    rec = rec[rec["created_at"] >= pd.Timestamp(t, unit="s", tz="UTC")]
    return bool((rec["status"] == "succeeded").any())


@pytest.mark.timeout(900)
def test_exec_probe_quiet_then_crash(pg: RealPg, tmp_path: Path, prefect_server: None) -> None:
    with postgres_exporter(pg, tmp_path / "exporter.log") as url, Traffic(pg) as traffic:
        cfg, db_url = setup(tmp_path, pg, url, "exec")
        with Healer(cfg) as healer:
            engine = make_engine(db_url)
            # 1. No fault: no issue (a short quiet period; bench.real runs five minutes).
            time.sleep(60)
            assert healer.cycles >= 3, healer.errors
            assert issues_frame(engine).empty, issues_frame(engine)[["title", "severity"]]

            # 2. SIGKILL of the postmaster: down, restarted, validated by the probe.
            crash = crash_and_heal(pg, db_url, {"probe:liveness", "down"})
            rec = recoveries_frame(engine)
            done = rec[rec["status"] == "succeeded"].iloc[-1]
            assert "liveness probe" in str(done.to_dict()), done.to_dict()
            print("issues for the crash:", crash)
            assert crash["issues"] <= MAX_ISSUES_PER_CRASH, crash

            engine.dispose()
        assert traffic.ok > 0


@pytest.mark.timeout(600)
def test_exec_probe_hang(pg: RealPg, tmp_path: Path, prefect_server: None) -> None:
    """Its own server: a hang right after the crash above would join the crash's down
    issue (still open for resolve_after), which already had its recovery."""
    with postgres_exporter(pg, tmp_path / "exporter.log") as url, Traffic(pg):
        cfg, db_url = setup(tmp_path, pg, url, "exec")
        with Healer(cfg):
            engine = make_engine(db_url)
            time.sleep(15)
            # SIGSTOP for 25 s: a hang. New connections hang, so pg_isready times out.
            stopped_at = time.time()
            pg.signal(signal.SIGSTOP)
            try:

                def hang_seen() -> bool:
                    a = since(anomalies_frame(engine), "ts", stopped_at)
                    return bool((a["detector"] == "probe:liveness").any())

                wait_for("the hang detected by the exec probe", hang_seen, 25)
                time.sleep(max(0.0, stopped_at + 25 - time.time()))
            finally:
                pg.signal(signal.SIGCONT)
            resumed_at = time.time()
            wait_for("the server to answer after SIGCONT", pg.answers, 60)
            time.sleep(30)
            a = since(anomalies_frame(engine), "ts", stopped_at)
            reasons = down_reasons(engine, stopped_at)
            print("hang anomalies:", a.groupby(["detector"]).size().to_dict(), reasons)
            assert "probe:liveness" in set(a["detector"])
            # pg_up: this exporter (0.11) keeps one connection open, served by a backend
            # that SIGSTOP of the postmaster does not stop, so it may keep reading 1:
            # only new connections hang. Printed, not asserted.
            print("pg_up read 0 during the hang:", any("pg_up" in r for r in reasons))
            # No restart storm: at most the backoff ladder's attempts during the hang, and
            # none once the server answers again.
            restarts = since(actions_frame(engine, "pg"), "started_at", stopped_at)
            restarts = restarts[restarts["kind"] == "restart"]
            print(
                "restarts during/after the hang:", restarts[["started_at", "ok"]].to_dict("records")
            )
            hang_recs = since(recoveries_frame(engine), "created_at", stopped_at)
            print(
                "recoveries of the hang:",
                hang_recs[["status", "strategy", "error", "validation"]].to_dict("records"),
            )
            # Recorded: a recovery for the hang, finished (a restart attempt that fails
            # while the hung postmaster holds its lock file, then "healthy again").
            assert not hang_recs.empty
            assert not hang_recs["status"].isin(ACTIVE).any(), hang_recs
            assert len(restarts) <= 5
            late = restarts[
                restarts["started_at"] > pd.Timestamp(resumed_at + 15, unit="s", tz="UTC")
            ]
            assert late.empty, late
            assert pg.answers()
            engine.dispose()


@pytest.mark.timeout(600)
def test_tcp_probe_crash(pg: RealPg, tmp_path: Path, prefect_server: None) -> None:
    with postgres_exporter(pg, tmp_path / "exporter.log") as url, Traffic(pg):
        cfg, db_url = setup(tmp_path, pg, url, "tcp")
        with Healer(cfg):
            time.sleep(15)
            crash = crash_and_heal(pg, db_url, {"probe:liveness", "down"})
            print("issues for the crash (tcp probe):", crash)
            assert crash["issues"] <= MAX_ISSUES_PER_CRASH, crash


@pytest.mark.timeout(600)
def test_no_probe_crash_detected_through_pg_up(
    pg: RealPg, tmp_path: Path, prefect_server: None
) -> None:
    with postgres_exporter(pg, tmp_path / "exporter.log") as url, Traffic(pg):
        cfg, db_url = setup(tmp_path, pg, url, None)
        with Healer(cfg):
            time.sleep(15)
            crash = crash_and_heal(pg, db_url, {"down"})
            engine = make_engine(db_url)
            reasons = down_reasons(engine, 0)
            engine.dispose()
            assert "pg_up = 0" in reasons, reasons
            print("issues for the crash (no probe):", crash)
            assert crash["issues"] <= MAX_ISSUES_PER_CRASH, crash
