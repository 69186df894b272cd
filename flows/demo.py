"""``selfheal demo``: start the simulated platform, ingest it, print what was stored."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from flows.config_load import build_config
from flows.runtime import selfheal_home


def demo_config(platform: object, db_url: str) -> dict[str, object]:
    services = platform.services  # type: ignore[attr-defined]
    return {
        "database_url": db_url,
        "components": {
            name: {
                "metrics_url": f"{svc.url}/metrics",
                "log_paths": [str(svc.log_path)],
                "health": {"url": f"{svc.url}/health"},
            }
            for name, svc in services.items()
        },
    }


def run_demo(keep: bool = False, settle_s: float = 3.0) -> int:
    from flows.ingest import ingest
    from storage.engine import make_engine, sqlite_url_for
    from storage.logs import count_log_events
    from storage.metrics import count_samples, series_frame
    from tasks.platform_sim.launcher import start_platform

    home = selfheal_home()
    home.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="demo-", dir=home))
    db_url = sqlite_url_for(workdir / "selfheal.db")
    print(f"demo folder: {workdir}")
    platform = start_platform(workdir / "platform")
    try:
        print(
            "platform up: " + ", ".join(f"{n} on :{s.port}" for n, s in platform.services.items())
        )
        cfg_data = demo_config(platform, db_url)
        config_file = workdir / "selfheal.json"
        config_file.write_text(json.dumps(cfg_data, indent=2))
        build_config(cfg_data, environ={})  # the demo's own configuration must be valid
        time.sleep(settle_s)  # let the services produce some traffic and log lines
        first = ingest(str(config_file))
        second = ingest(str(config_file))
    finally:
        platform.stop()

    engine = make_engine(db_url)
    series = series_frame(engine)
    print()
    print(f"{'component':<20} {'series':>7}  metrics")
    for comp, grp in series.groupby("component"):
        names = sorted(set(grp["metric"]))
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        print(f"{comp:<20} {len(grp):>7}  {shown}")
    print()
    print(f"samples stored: {count_samples(engine)}; log events stored: {count_log_events(engine)}")
    print(
        f"first ingest stored {first['stored']} rows; a second ingest of the same sources "
        f"stored {second['stored']} new rows and skipped {second['duplicates']} duplicates"
    )
    engine.dispose()
    ok = first["stored"] > 0 and not first["errors"]
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print("demo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1
