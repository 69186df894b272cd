"""``selfheal status --json`` on a fixture database, against hand-computed figures."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from storage.approvals import create_approval, decide
from storage.issues import IssueRecord, save_issues
from storage.recoveries import create_recovery

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def issue(n: int, status: str) -> IssueRecord:
    return IssueRecord(
        fingerprint=f"fp{n}",
        component=f"c{n}",
        kind="metric",
        signature="x",
        title=f"issue {n}",
        severity="high",
        status=status,
        first_seen=T0,
        last_seen=T0,
        actionable_at=T0,
    )


def build_fixture(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = save_issues(
            conn,
            [
                issue(1, "resolved"),
                issue(2, "resolved"),
                issue(3, "open"),
                issue(4, "open"),
                issue(5, "open"),
            ],
        )

        def rec(n: int, status: str, finished: float | None) -> int:
            return create_recovery(
                conn,
                issue_id=ids[f"fp{n}"],
                component=f"c{n}",
                issue_kind="metric",
                strategy="restart",
                rung=0,
                mode="supervised",
                status=status,
                finished_at=T0 + timedelta(seconds=finished) if finished is not None else None,
            )

        rec(1, "succeeded", 60)  # healed with no human: 60 s
        r2 = rec(2, "succeeded", 120)  # healed after a person approved: 120 s
        a2 = create_approval(
            conn,
            recovery_id=r2,
            issue_id=ids["fp2"],
            component="c2",
            severity="high",
            proposed_action="restart",
            requested_at=T0,
            expires_at=T0 + timedelta(hours=1),
        )
        decide(conn, a2, "approved", "alice", "ok", T0 + timedelta(seconds=30))
        rec(3, "failed", 45)  # acted on, not healed
        rec(4, "recorded_only", 0)  # learning mode: not acted on
        rec(5, "running", None)  # in flight
        create_approval(
            conn,
            recovery_id=None,
            issue_id=ids["fp5"],
            component="c5",
            severity="critical",
            proposed_action="restart",
            requested_at=T0,
            expires_at=T0 + timedelta(hours=1),
        )


def test_status_json_matches_hand_computed_figures(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    build_fixture(engine)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"database_url": db_url, "mode": "manual"}))
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "status", "--json", "-c", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    # Acted on: issues 1, 2, 3, 5 (4 was only recorded). Healed with no human: issue 1.
    assert status["issues_acted_on"] == 4
    assert status["healed_automatically"] == 1
    assert status["auto_healing_rate"] == 25.0
    # Mean time to recover over issues 1 and 2: (60 + 120) / 2.
    assert status["mean_time_to_recover_s"] == 90.0
    assert status["open_issues"] == 3
    assert status["active_recoveries"] == 1
    assert status["pending_approvals"] == 1
    assert (status["active"], status["mode"]) == (True, "manual")
