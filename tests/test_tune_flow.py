"""The tune flow: promotion only on held-back wins, rollback, studies that continue, and a
7-day, 100-series history inside the time budget."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from flows.runtime import open_runtime
from storage.config_versions import active_version, versions_frame
from storage.engine import make_engine, sqlite_url_for
from storage.faults import record_injection
from storage.migrate import ensure_schema
from tasks.ingest.records import IngestReport
from tasks.ingest.store import store_samples

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, db: str) -> Path:
    cfg = tmp_path / "selfheal.json"
    cfg.write_text(json.dumps({"database_url": db}))
    return cfg


def test_promotion_refuses_losers_and_rollback_restores(tmp_path: Path) -> None:
    from flows.tune import overlay, promote

    db = sqlite_url_for(tmp_path / "t.db")
    cfg = write_config(tmp_path, db)
    rt = open_runtime(cfg)
    try:
        lost = {
            "won": False,
            "params": {"margin": 9.0},
            "held_out": {"candidate": {}, "running": {}},
        }
        body = overlay(rt, "default", lost, {"skipped": "none"})
        assert body == {}
        refused = promote(rt, body, lost, {}, "t1")
        assert refused["activated"] is False
        with rt.engine.connect() as conn:
            assert active_version(conn)["source"] == "baseline"
        won = {"won": True, "params": {"margin": 2.5}, "held_out": {}}
        rec = {
            "won": True,
            "params": {
                "base": 30.0,
                "factor": 3.0,
                "cap": 600.0,
                "failure_rate_threshold": 40.0,
                "wait_in_open": 90.0,
                "permitted_in_half_open": 2,
                "validation_timeout": 20.0,
            },
            "held_out": {},
        }
        promoted = promote(rt, overlay(rt, "default", won, rec), won, rec, "t2")
        assert promoted["activated"] is True
    finally:
        rt.close()
    # Every flow's next run reads the active version.
    rt = open_runtime(cfg)
    try:
        assert rt.config_version == promoted["version"]
        assert rt.config.detection.detectors[0].params["margin"] == 2.5
        assert rt.config.recovery.backoff.base == 30.0
    finally:
        rt.close()
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "config", "rollback", "-c", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rt = open_runtime(cfg)
    try:
        assert rt.config.detection.detectors[0].params["margin"] == 1.5  # the file's again
        assert rt.config.recovery.backoff.base == 10.0
        frame = versions_frame(rt.engine)
        assert frame[frame["active"]]["source"].tolist() == ["baseline"]
        assert len(frame) == 3
    finally:
        rt.close()
    diff = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "config",
            "diff",
            "1",
            str(promoted["version"]),
            "-c",
            str(cfg),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "recovery.backoff.base: null -> 30.0" in diff.stdout, diff.stdout


def test_the_next_cycle_uses_the_active_version(prefect_server: None, tmp_path: Path) -> None:
    from flows.cycle import cycle
    from storage.config_versions import create_version

    db = sqlite_url_for(tmp_path / "c.db")
    cfg = write_config(tmp_path, db)
    engine = make_engine(db)
    ensure_schema(engine)
    with engine.begin() as conn:
        create_version(conn, {}, "baseline", make_active=True)
        vid = create_version(conn, {"mode": "learning"}, "tuning", make_active=True)
    engine.dispose()
    result = cycle(str(cfg))
    assert (result["mode"], result["config_version"]) == ("learning", vid)


def seed_week(db: str, components: int = 10, per_component: int = 10) -> None:
    """100 series × 7 days at one-minute spacing, with five labelled incidents."""
    engine = make_engine(db)
    ensure_schema(engine)
    end = int(time.time() // 60 * 60 * 1000)
    minutes = 7 * 1440
    ts = end - (minutes - np.arange(minutes)) * 60_000
    rng = np.random.default_rng(3)
    incidents = {c: end - (1 + c) * 86_400_000 // 1 for c in range(0, components, 2)}
    frames = []
    for c in range(components):
        for m in range(per_component):
            daily = 10 * np.sin(2 * np.pi * np.arange(minutes) / 1440)
            values = 100 + daily + rng.normal(0, 2, minutes)
            if c in incidents and m < 3:
                at = int(np.searchsorted(ts, incidents[c]))
                values[at : at + 20] += 60
            frames.append(
                pd.DataFrame(
                    {
                        "component": f"svc{c}",
                        "metric": f"m{m}",
                        "labels": "{}",
                        "ts": ts.astype("int64"),
                        "value": values,
                        "kind": "gauge",
                    }
                )
            )
    store_samples(
        engine, pd.concat(frames, ignore_index=True), IngestReport("t"), clock_ms=end + 1000
    )
    with engine.begin() as conn:
        for c, at in incidents.items():
            when = datetime.fromtimestamp(at / 1000, tz=UTC)
            record_injection(conn, "week", f"svc{c}", "latency_spike", "restart", when, {})
    engine.dispose()


@pytest.mark.slow
def test_a_week_of_100_series_tunes_within_budget_and_continues(
    prefect_server: None, tmp_path: Path
) -> None:
    from flows.tune import tune

    db = sqlite_url_for(tmp_path / "w.db")
    cfg = write_config(tmp_path, db)
    seed_week(db)
    budget = 25.0  # what is tested is that the budget holds and a second run continues
    deadline = datetime.now() + timedelta(seconds=budget)  # Optuna stamps trials in local time
    first = tune(str(cfg), budget_s=budget, data_tag="week")
    assert "skipped" not in first["detector"], first["detector"]
    study = optuna.load_study(study_name=first["detector"]["study"], storage=db)
    # The budget holds: no detector trial starts after it.
    assert all(t.datetime_start is not None and t.datetime_start <= deadline for t in study.trials)
    # The next run sees a window moved on with the clock (and, the next night, a day more):
    # the same data grown, so the study continues.
    second = tune(str(cfg), budget_s=budget, data_tag="week")
    assert second["detector"]["study"] == first["detector"]["study"]
    assert second["detector"]["trials"] > first["detector"]["trials"]
    engine = make_engine(db)
    try:
        frame = versions_frame(engine)
        assert (frame["source"] == "baseline").sum() == 1
        assert (frame["source"] == "tuning").sum() == 2
    finally:
        engine.dispose()
