"""A real PostgreSQL healed through its exporter and a liveness probe, timed.

**The run.** ``tests.realpg``: a PostgreSQL of its own (initdb + pg_ctl on a free port,
as the ``postgres`` user), Debian's ``prometheus-postgres-exporter`` pointed at it, light
steady traffic (4 queries a second), and selfheal in automated mode: the probe scheduler
``selfheal serve`` starts plus the cycle flow on a loop in this process (a temporary
Prefect API), ``detection_interval`` 5 s and an ``exec`` liveness probe (``pg_isready``)
every ``PERIOD_S`` with Kubernetes' other defaults (timeout 1 s, failure threshold 3).
First a quiet period with no fault (5 minutes; 60 s with ``--quick``), then the
postmaster is killed (SIGKILL) and selfheal restarts it.

**The baselines.** ``real.probe_period_s``: a crash cannot be seen faster than the
failure threshold allows (3 failed probes ≈ 2-3 periods after the kill).
``real.bare_restart_s``: the restart command alone, run by a script that already knows
the server was killed, retried every 0.5 s until it succeeds (measured first, on another
server of its own).

Figures:

``real.false_issues``
    Issues opened during the quiet period (no fault).
``real.crash_detect_s``
    From the SIGKILL to the first critical ``down`` anomaly (its timestamp: the probe
    result or scrape that saw it).
``real.issue_open_s``
    From the SIGKILL to the ``down`` issue being stored (adds the cycle's wait).
``real.ttr_s``
    From the SIGKILL to the end of the successful recovery (restart done, validated by
    the liveness probe).
``real.issues_per_fault``
    Issues opened from the SIGKILL until 90 s after the recovery (the crash and its side
    effects after the restart).
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import pandas as pd

PERIOD_S = 2.0
INTERVAL = 5

BASELINES = {
    "real.crash_detect_s": "real.probe_period_s",
    "real.ttr_s": "real.bare_restart_s",
}


def _ts(t: float) -> pd.Timestamp:
    return pd.Timestamp(t, unit="s", tz="UTC")


def run(quick: bool = False) -> dict[str, float]:
    from prefect.testing.utilities import prefect_test_harness

    from storage.engine import make_engine, sqlite_url_for
    from storage.issues import anomalies_frame, issues_frame
    from storage.recoveries import recoveries_frame
    from tests.realpg import (
        Healer,
        Missing,
        Traffic,
        check_parts,
        postgres_exporter,
        postgres_instance,
        real_config,
        write_config,
    )

    try:
        check_parts()
    except Missing as exc:
        print(f"   skipped: {exc}")
        return {}
    quiet_s = 60.0 if quick else 300.0
    out: dict[str, float] = {"real.probe_period_s": PERIOD_S, "real.quiet_s": quiet_s}
    # The baseline, on a server of its own (its log would otherwise hold the crash before
    # selfheal starts, and the log detector reads a new log from its beginning): a script
    # that knows the server was just killed runs the restart command until it succeeds
    # (right after a SIGKILL the old backends hold the shared memory for a moment).
    with postgres_instance() as base:
        t0 = time.monotonic()
        base.signal(signal.SIGKILL)
        while True:
            try:
                base.start()
                break
            except RuntimeError:
                if time.monotonic() - t0 > 120:
                    raise
                time.sleep(0.5)
        out["real.bare_restart_s"] = round(time.monotonic() - t0, 2)
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp, postgres_instance() as pg:
        root = Path(tmp)
        db_url = sqlite_url_for(root / "selfheal.db")
        with (
            prefect_test_harness(server_startup_timeout=120),
            postgres_exporter(pg, root / "exporter.log") as url,
            Traffic(pg),
        ):
            cfg = write_config(
                root / "selfheal.json", real_config(pg, url, db_url, "exec", PERIOD_S, INTERVAL)
            )
            engine = make_engine(db_url)
            with Healer(cfg) as healer:
                time.sleep(quiet_s)
                out["real.false_issues"] = float(len(issues_frame(engine)))
                killed = time.time()
                pg.signal(signal.SIGKILL)
                deadline = time.time() + 300
                recovered = None
                while time.time() < deadline and recovered is None:
                    time.sleep(0.5)
                    rec = recoveries_frame(engine)
                    rec = rec[(rec["created_at"] >= _ts(killed)) & (rec["status"] == "succeeded")]
                    if not rec.empty:
                        recovered = rec["finished_at"].min().timestamp()
                down = anomalies_frame(engine)
                down = down[(down["ts"] >= _ts(killed)) & (down["kind"] == "down")]
                if not down.empty:
                    out["real.crash_detect_s"] = round(down["ts"].min().timestamp() - killed, 2)
                issues = issues_frame(engine)
                opened = issues[(issues["first_seen"] >= _ts(killed - 1))]
                first_down = opened[opened["kind"] == "down"]
                if not first_down.empty:
                    # first_seen is the anomaly's time; the row exists from the cycle after.
                    out["real.issue_open_s"] = round(
                        first_down["first_seen"].min().timestamp() - killed, 2
                    )
                if recovered is not None:
                    out["real.ttr_s"] = round(recovered - killed, 2)
                    time.sleep(90)  # the side effects after the restart
                issues = issues_frame(engine)
                opened = issues[issues["first_seen"] >= _ts(killed - 1)]
                out["real.issues_per_fault"] = float(len(opened))
                out["real.cycles"] = float(healer.cycles)
                print("   issues of the fault:", list(opened["title"]))
                print("   healer errors:", healer.errors[:3])
            engine.dispose()
    return out
