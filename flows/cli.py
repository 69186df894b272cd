"""The ``selfheal`` command. Heavy imports (Prefect, pandas) happen inside the commands so
that ``--help`` and ``config check`` stay fast."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(
    name="selfheal",
    help="Self-healing for the HMS platform, run as Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="JSON configuration file (default: $SELFHEAL_CONFIG).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one clear line and an exit code."""
    from sqlalchemy.exc import OperationalError

    from flows.config_load import ConfigError
    from storage.engine import DatabaseURLError

    try:
        yield
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except DatabaseURLError as exc:
        fail(str(exc), 2)
    except OperationalError as exc:
        fail(f"cannot open the database: {str(exc.orig).strip().splitlines()[0]}", 1)


def _runtime(config: Path | None, migrate: bool = True) -> Any:
    from flows.runtime import open_runtime

    with cli_errors():
        return open_runtime(config, migrate=migrate)


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The configuration file to check.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when valid.")] = False,
) -> None:
    """Validate FILE (with SELFHEAL_* overrides); print the resolved configuration or every
    problem with its option path, and exit 2 when there is any."""
    from flows.config_load import ConfigError, load_config

    try:
        cfg = load_config(file)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if not quiet:
        typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the resolved configuration (defaults, file, environment)."""
    from flows.config_load import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


@config_app.command("versions")
def config_versions_cmd(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the tuned configuration versions (the active one is marked *)."""
    from storage.config_versions import versions_frame

    rt = _runtime(config)
    try:
        df = versions_frame(rt.engine)
    finally:
        rt.close()
    if as_json:
        typer.echo(df.to_json(orient="records", date_format="iso"))
        return
    if df.empty:
        typer.echo("no configuration versions yet (the nightly tune flow creates them)")
    for _, r in df.iterrows():
        mark = "*" if r["active"] else " "
        metrics = ", ".join(
            f"{k}={v}" for k, v in (r["metrics"] or {}).items() if isinstance(v, int | float)
        )
        typer.echo(
            f"{mark} {r['id']:>4}  {r['created_at']:%Y-%m-%d %H:%M}  {r['source']:<9} "
            f"{r['note']}" + (f"  [{metrics}]" if metrics else "")
        )


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


@config_app.command("diff")
def config_diff_cmd(
    a: Annotated[int, typer.Argument(help="A version id.")],
    b: Annotated[int, typer.Argument(help="Another version id.")],
    config: ConfigOpt = None,
) -> None:
    """Show what differs between two configuration versions."""
    from storage.config_versions import get_version

    rt = _runtime(config)
    try:
        with rt.engine.connect() as conn:
            try:
                va, vb = get_version(conn, a), get_version(conn, b)
            except LookupError as exc:
                fail(str(exc).strip("'\""), 2)
    finally:
        rt.close()
    fa, fb = _flatten("", va["body"], {}), _flatten("", vb["body"], {})
    changed = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
    if not changed:
        typer.echo(f"versions {a} and {b} are identical")
    for k in changed:
        typer.echo(f"{k}: {json.dumps(fa.get(k))} -> {json.dumps(fb.get(k))}")


@config_app.command("rollback")
def config_rollback_cmd(
    to: Annotated[
        int | None, typer.Option(help="Activate this version instead of the previous one.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Re-activate the previously active version (or --to N). Flows use it from their
    next run."""
    from storage.audit import audit
    from storage.config_versions import activate, active_version, previous_active

    rt = _runtime(config)
    try:
        with rt.engine.begin() as conn:
            current = active_version(conn)
            target = to if to is not None else (previous_active(conn) or {}).get("id")
            if target is None:
                fail("no earlier active version to roll back to", 1)
            try:
                activate(conn, int(target))  # type: ignore[arg-type]
            except LookupError as exc:
                fail(str(exc).strip("'\""), 2)
            audit(
                conn,
                "config_changed",
                actor="cli",
                action="rollback",
                from_version=(current or {}).get("id"),
                to_version=target,
            )
    finally:
        rt.close()
    typer.echo(f"active configuration version: {target} (was {(current or {}).get('id')})")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply pending migrations to the configured database."""
    from storage.engine import describe
    from storage.migrate import current_revision, upgrade

    rt = _runtime(config, migrate=False)
    try:
        with cli_errors():
            before = current_revision(rt.engine)
            after = upgrade(rt.engine)
        typer.echo(f"{describe(rt.engine)}: {before or 'empty'} -> {after}")
    finally:
        rt.close()


@db_app.command("current")
def db_current(config: ConfigOpt = None) -> None:
    """Print the database's schema revision and the newest one available."""
    from storage.engine import describe
    from storage.migrate import current_revision, head_revision

    rt = _runtime(config, migrate=False)
    try:
        with cli_errors():
            current = current_revision(rt.engine)
        typer.echo(
            f"{describe(rt.engine)}: at {current or 'empty'}, newest {head_revision(rt.engine)}"
        )
    finally:
        rt.close()


@app.command("ingest")
def ingest_cmd(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Run the ingest flow once over every configured source."""
    from flows.config_load import load_config

    with cli_errors():
        load_config(config)  # fail fast with a readable message before Prefect starts
    from flows.ingest import ingest

    with cli_errors():
        result = ingest(str(config) if config else None)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    for src in result["sources"]:
        line = f"{src['source']}: stored {src['stored']}, duplicates {src['duplicates']}"
        if src["rejected"]:
            line += f", rejected {sum(src['rejected'].values())} {src['rejected']}"
        if src["error"]:
            line += f", error: {src['error']}"
        typer.echo(line)
    typer.echo(
        f"total: stored {result['stored']}, duplicates {result['duplicates']}, "
        f"rejected {result['rejected']}"
    )


@app.command("backtest")
def backtest_cmd(
    data: Annotated[
        Path | None,
        typer.Option(
            help="A NAB-style data folder: <category>/<file>.csv with timestamp,value columns."
        ),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Windows file in NAB's combined_windows.json format.")
    ] = None,
    csv: Annotated[
        Path | None,
        typer.Option(help="One timestamp,value CSV to replay (no labels: prints the alarms)."),
    ] = None,
    detector: Annotated[str, typer.Option(help="Registered detector name.")] = "default",
    param: Annotated[
        list[str] | None, typer.Option(help="Detector parameter name=value (repeatable).")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Fixed alarm threshold; default: "
            "chosen on one half of the files, held "
            "fixed on the other."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write NAB-format result files here.")] = None,
    jobs: Annotated[int, typer.Option(help="Processes to replay with.")] = 1,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay labelled series through a detector in streaming order and score it the NAB way
    (standard, reward-low-FP and reward-low-FN profiles)."""
    from flows.backtest import backtest_nab, backtest_series, parse_params
    from flows.config_load import load_config

    with cli_errors():
        custom = load_config(config).custom_detectors if config else []
    try:
        params = parse_params(param or [])
        if csv is not None:
            import pandas as pd

            df = pd.read_csv(csv)
            if not {"timestamp", "value"} <= set(df.columns):
                fail(f"{csv} needs timestamp and value columns", 2)
            series = pd.Series(
                pd.to_numeric(df["value"], errors="coerce").to_numpy(),
                index=pd.DatetimeIndex(pd.to_datetime(df["timestamp"])),
            )
            frame = backtest_series(series, detector, params, custom)
            alarms = frame[frame["alarm"]]
            if out is not None:
                frame.to_csv(out, index=False)
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "rows": len(frame),
                            "alarms": len(alarms),
                            "alarm_times": [str(t) for t in alarms["timestamp"]],
                        }
                    )
                )
            else:
                typer.echo(f"{len(frame)} rows, {len(alarms)} alarms")
                for _, row in alarms.iterrows():
                    typer.echo(
                        f"  {row['timestamp']}  value={row['value']:.6g}  "
                        f"score={row['anomaly_score']:.3f}"
                    )
            return
        if data is None:
            fail("give --data (a NAB-style folder) or --csv", 2)
        report = backtest_nab(data, labels, detector, params, custom, threshold, out, jobs)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        fail(str(exc).strip("'\""), 2)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    typer.echo(f"{report['detector']} on {report['files']} files ({report['windows']} windows)")
    typer.echo(f"threshold: {report['threshold']}")
    for key in ("standard", "reward_low_fp", "reward_low_fn"):
        typer.echo(
            f"  {key:<14} {report[key]:7.2f}   (at 0.5: {report['at_threshold_0.5'][key]:.2f})"
        )
    if out is not None:
        typer.echo(f"result files: {report['result_files']}")


@app.command("cycle")
def cycle_cmd(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Run one detection cycle now (ingest, detect, decide, start recoveries)."""
    from flows.config_load import load_config

    with cli_errors():
        load_config(config)
    from flows.cycle import cycle
    from flows.prefect_server import use_prefect_api

    # On the server `selfheal serve` runs, if any (so the run shows in its UI).
    with cli_errors(), use_prefect_api(required=False):
        result = cycle(str(config.resolve()) if config else None)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    if not result.get("enabled"):
        typer.echo("self-healing is disabled (enabled: false): nothing done")
        return
    typer.echo(
        f"mode {result['mode']}: stored {result['ingested']} samples/lines, "
        f"{len(result['new_issues'])} new issues, {result['resolved']} resolved, "
        f"{len(result['started'])} recoveries started, {len(result['asked'])} "
        f"waiting for approval, {len(result['recorded_only'])} recorded only"
    )
    for issue in result["new_issues"]:
        typer.echo(f"  issue #{issue['id']} {issue['severity']:<8} {issue['title']}")


@app.command("status")
def status_cmd(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Active, mode, open issues, recoveries in flight, pending approvals, auto-healing
    rate and mean time to recover (computed from the tables)."""
    from flows.api import get_status

    with cli_errors():
        status = get_status(str(config) if config else None)
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    rate = status["auto_healing_rate"]
    mttr = status["mean_time_to_recover_s"]
    typer.echo(f"active:              {status['active']}")
    typer.echo(f"mode:                {status['mode']}")
    typer.echo(
        f"open issues:         {status['open_issues']} {status['open_issues_by_severity'] or ''}"
    )
    typer.echo(f"active recoveries:   {status['active_recoveries']}")
    if status.get("escalated_issues"):
        typer.echo(
            f"escalated issues:    {status['escalated_issues']} (recovery failed; needs a human): "
            + ", ".join(f"#{e['id']} {e['component']}" for e in status.get("escalated", []))
        )
    typer.echo(f"pending approvals:   {status['pending_approvals']}")
    typer.echo(
        f"auto-healing rate:   {'n/a' if rate is None else f'{rate:.1f} %'} "
        f"({status['healed_automatically']} of {status['issues_acted_on']} issues)"
    )
    typer.echo(f"mean time to recover: {'n/a' if mttr is None else f'{mttr:.1f} s'}")
    w = status.get("warmup") or {}
    if w.get("learning"):
        until = str(w["until"] or "")[:19].replace("T", " ")
        typer.echo(
            f"detectors learning:  {w['learning']} of {w['series']} series "
            f"(fewer than {w['min_points']} points; all scored by about {until or '?'} UTC)"
        )
    elif w.get("series"):
        typer.echo(f"detectors learning:  none ({w['series']} series scored)")


@app.command("approvals")
def approvals_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Include answered ones.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List pending approvals with their Prefect UI links."""
    from flows.api import list_approvals

    with cli_errors():
        rows = list_approvals(pending_only=not all_, config_path=str(config) if config else None)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no pending approvals" if not all_ else "no approvals")
        return
    for r in rows:
        typer.echo(
            f"{r['id']}  {r['decision']:<8} {r['severity']:<8} {r['component']}: "
            f"{r['proposed_action']}"
        )
        typer.echo(
            f"    requested {r['requested_at']}, expires {r['expires_at']}"
            + (f"\n    {r['ui_url']}" if r.get("ui_url") else "")
        )


def _answer_cmd(
    approve: bool, approval_id: str, reason: str, by: str | None, config: Path | None
) -> None:
    from flows.api import approve_recovery, reject_recovery
    from flows.prefect_server import PrefectUnreachable
    from storage.approvals import ApprovalAlreadyDecided, ApprovalNotFound

    try:
        with cli_errors():
            fn = approve_recovery if approve else reject_recovery
            result = fn(approval_id, reason, by, str(config) if config else None)
    except PrefectUnreachable as exc:
        fail(str(exc), 1)
    except ApprovalNotFound as exc:
        fail(str(exc), 2)
    except ApprovalAlreadyDecided as exc:
        fail(str(exc), 1)
    except ValueError as exc:
        fail(str(exc), 2)
    typer.echo(f"{approval_id} {result['decision']} by {result['by']}: {result['run']}")


@app.command("approve")
def approve_cmd(
    approval_id: Annotated[str, typer.Argument(help="e.g. approval_1a2b3c4d")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "",
    by: Annotated[str | None, typer.Option(help="Who approves (default: login name).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Approve a pending recovery: the waiting run resumes and acts."""
    _answer_cmd(True, approval_id, reason, by, config)


@app.command("reject")
def reject_cmd(
    approval_id: Annotated[str, typer.Argument(help="e.g. approval_1a2b3c4d")],
    reason: Annotated[str, typer.Option(help="Why (required, recorded).")],
    by: Annotated[str | None, typer.Option(help="Who rejects (default: login name).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Reject a pending recovery: nothing runs, the reason is stored."""
    _answer_cmd(False, approval_id, reason, by, config)


@app.command("feedback")
def feedback_cmd(
    issue_id: Annotated[int, typer.Argument(help="The issue's id.")],
    true_positive: Annotated[
        bool | None, typer.Option("--true-positive/--false-positive", help="Was it a real problem?")
    ] = None,
    note: Annotated[str, typer.Option(help="Free text.")] = "",
    by: Annotated[str | None, typer.Option(help="Who (default: login name).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Label an issue as a true or a false positive (what nightly tuning learns from)."""
    from flows.api import feedback

    if true_positive is None:
        fail("give --true-positive or --false-positive", 2)
    try:
        with cli_errors():
            fid = feedback(issue_id, bool(true_positive), by, note, str(config) if config else None)
    except LookupError as exc:
        fail(str(exc).strip("'\""), 2)
    typer.echo(f"feedback #{fid} recorded for issue #{issue_id}")


CONTEXT_SHOWN = 5  # context series listed under an issue, the busiest first


@app.command("issues")
def issues_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Include resolved ones.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List open issues (or all of them)."""
    from flows.runtime import open_runtime
    from storage.issues import issues_frame

    with cli_errors():
        rt = open_runtime(config)
    try:
        df = issues_frame(
            rt.engine, None if all_ else ["open", "recovering", "escalated", "silenced"]
        )
    finally:
        rt.close()
    if as_json:
        typer.echo(df.to_json(orient="records", date_format="iso"))
        return
    if df.empty:
        typer.echo("no issues")
    for _, r in df.iterrows():
        typer.echo(
            f"#{r['id']:<5} {r['status']:<10} {r['severity']:<8} {r['title']} "
            f"({r['anomaly_count']} anomalies, since {r['first_seen']:%H:%M:%S})"
        )
        details = r["details"] if isinstance(r["details"], dict) else {}
        root = details.get("root")
        for fp, sym in (details.get("symptoms") or {}).items():
            if fp != root:  # the incident's other symptoms, under its root
                typer.echo(
                    f"{'':7}symptom: {sym['component']} {sym['kind']} {sym['signature']}"
                    + (" (side effect of a recovery)" if sym.get("side_effect") else "")
                )
        context = sorted(
            (details.get("context") or {}).values(), key=lambda c: -int(c.get("count", 0))
        )
        for c in context[:CONTEXT_SHOWN]:
            typer.echo(
                f"{'':7}context: {c['component']} {c['signature']} "
                f"({c['count']} anomalies, up to {c['severity']})"
            )
        if len(context) > CONTEXT_SHOWN:
            typer.echo(f"{'':7}context: and {len(context) - CONTEXT_SHOWN} more series")


@app.command("serve")
def serve_cmd(
    config: ConfigOpt = None,
    prefect_port: Annotated[
        int, typer.Option(help="Port of the local Prefect server (when PREFECT_API_URL is unset).")
    ] = 4200,
    prefect_database_url: Annotated[
        str | None,
        typer.Option(
            help="Database of the local Prefect server (default SQLite under SELFHEAL_HOME; "
            "or SELFHEAL_PREFECT_DATABASE_URL)."
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Our own database (overrides the configuration's database_url)."),
    ] = None,
    no_cycle: Annotated[bool, typer.Option("--no-cycle", help="Serve recoveries only.")] = False,
    dashboard: Annotated[
        bool | None, typer.Option("--dashboard/--no-dashboard", help="Override dashboard_enabled.")
    ] = None,
) -> None:
    """Run everything on one machine: a local Prefect server unless PREFECT_API_URL is
    set, the scheduled cycle, recoveries, tuning and retention, and the dashboard."""
    import os

    from flows.config_load import load_config
    from flows.serve import default_config_path, run_serve

    if database_url:
        os.environ["SELFHEAL_DATABASE_URL"] = database_url
    path = default_config_path(config)
    with cli_errors():
        cfg = load_config(path)
    from flows.prefect_server import PrefectServerError

    try:
        code = run_serve(
            cfg,
            path,
            prefect_port=prefect_port,
            prefect_database_url=prefect_database_url,
            cycle=not no_cycle,
            dashboard=dashboard,
        )
    except PrefectServerError as exc:
        fail(str(exc), 1)
    raise typer.Exit(code)


@app.command("tune")
def tune_cmd(
    config: ConfigOpt = None,
    budget: Annotated[float, typer.Option(help="Time budget in seconds.")] = 600.0,
    detector: Annotated[str, typer.Option(help="Detector family to tune.")] = "default",
    days: Annotated[float, typer.Option(help="Days of recorded history to learn from.")] = 7.0,
    nab_data: Annotated[Path | None, typer.Option(help="Also learn from a NAB-style folder.")] = (
        None
    ),
    nab_labels: Annotated[Path | None, typer.Option(help="Its combined_windows.json.")] = None,
    tag: Annotated[
        str | None,
        typer.Option(
            help="Data tag (studies with the same tag continue); default: the night's date."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the tuning flow now (what the nightly deployment runs): tune, then promote only
    what beats the running settings on held-back data."""
    from flows.config_load import load_config

    with cli_errors():
        load_config(config)
    from flows.tune import tune

    with cli_errors():
        result = tune(
            str(config) if config else None,
            budget,
            detector,
            days,
            str(nab_data) if nab_data else None,
            str(nab_labels) if nab_labels else None,
            tag,
        )
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    for part in ("detector", "recovery"):
        r = result[part]
        typer.echo(
            f"{part}: "
            + (
                f"skipped ({r['skipped']})"
                if "skipped" in r
                else f"{r['trials']} trials, {'won' if r['won'] else 'lost'} on held-back data"
            )
        )
    typer.echo(
        f"configuration version {result['version']}: "
        + ("activated" if result["activated"] else "recorded, not activated")
    )


@app.command("dashboard")
def dashboard_cmd(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="Port (default: dashboard_port).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve the live dashboard (metrics with anomaly markers, issues, recoveries,
    approvals, healing history) until Ctrl-C."""
    from flows.dashboard.server import run_dashboard

    with cli_errors():
        try:
            code = run_dashboard(str(config) if config else None, port, host)
        except OSError as exc:
            fail(str(exc), 1)
    raise typer.Exit(code)


@app.command("demo")
def demo_cmd(
    mode: Annotated[str, typer.Option(help="manual, supervised, automated or learning.")] = (
        "supervised"
    ),
    duration: Annotated[
        float,
        typer.Option(
            help="Inject no fault after this many seconds (one in progress is followed to "
            "its verdict)."
        ),
    ] = (
        480.0  # seven faults; the last (workload_shift) is healed by a search of ~1-3 min
    ),
    seed: Annotated[int, typer.Option(help="Seeds the services' noise and the pacing.")] = 0,
    faults: Annotated[
        str | None,
        typer.Option(help="Inject only these faults (comma-separated names), in script order."),
    ] = None,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running", help="Keep everything up afterwards (Prefect UI, dashboard)."
        ),
    ] = False,
) -> None:
    """Heal a simulated HMS platform end to end: inject scripted faults, detect, recover,
    print a verdict per fault; exit 1 if a fault was missed or not healed."""
    from flows.config import Mode  # noqa: F401 - documents the choices
    from flows.demo.platform.faults import select_faults
    from flows.demo.runner import run_demo

    if mode not in ("manual", "supervised", "automated", "learning"):
        fail(f"--mode {mode!r}: choose manual, supervised, automated or learning", 2)
    try:
        select_faults(faults)
    except ValueError as exc:
        fail(f"--faults: {exc}", 2)
    raise typer.Exit(run_demo(mode, duration, seed, keep_running, faults))


from flows.logs_cmd import register as _register_logs_cmd  # noqa: E402

_register_logs_cmd(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
