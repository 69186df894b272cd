"""``selfheal logs FILE``: look at a log file the way the cycle sees it.

The file goes through the real path: tailed from its start (``tail_file``), its header
format learned from its own lines, templates mined from the messages, stored, and the
stored lines replayed through the cycle's log step in 30 s cycles of event time
(``tasks.detection.logs_step.replay``). One CSV row per input line:
``line_no, timestamp, level, template_id, template, alert`` (alert: the cycle's
per-line decision, empty when none); a summary on stderr. The database is a scratch
SQLite file unless ``--database-url`` is given.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Annotated, Any

import typer

CSV_COLUMNS = ["line_no", "timestamp", "level", "template_id", "template", "alert"]


def analyse_file(
    path: Path,
    out: IO[str],
    database_url: str | None = None,
    component: str | None = None,
    cycle_s: float = 30.0,
) -> dict[str, Any]:
    """Ingest ``path`` through the real path, write the CSV to ``out``, return a summary."""
    from storage.engine import make_engine, sqlite_url_for
    from storage.logs import read_log_events, templates_frame
    from storage.migrate import ensure_schema
    from tasks.detection.logs_step import LogDetectionSettings, replay
    from tasks.ingest.logtail import NO_TS_NOTE, TailSettings, tail_file
    from tasks.ingest.templating import TemplateAnnotator

    comp = component or path.stem or "logs"
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or sqlite_url_for(Path(tmp) / "scratch.db")
        engine = make_engine(url)
        try:
            ensure_schema(engine)
            annotator = TemplateAnnotator.load(engine, comp)
            settings = TailSettings(from_start=True)
            t0 = time.perf_counter()
            stored = no_ts = 0
            while True:
                report = tail_file(engine, path, comp, settings, annotator, final=True)
                if report.error:
                    raise FileNotFoundError(report.error)
                stored += report.stored
                no_ts += report.notes.get(NO_TS_NOTE, 0)
                if report.stored == 0:
                    break
            ingest_s = time.perf_counter() - t0
            replayed = replay(engine, comp, LogDetectionSettings(), cycle_s)
            decided = replayed.lines
            events = read_log_events(engine, 0, component=comp)
            templates = templates_frame(engine, comp)
        finally:
            engine.dispose()
    events = events.sort_values(["generation", "byte_offset"], ignore_index=True)
    alert = dict(zip(decided["id"], decided["alert"], strict=True))
    text = dict(zip(templates["template_key"], templates["template"], strict=True))
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    alerts = 0
    for i, row in enumerate(events.itertuples(index=False), start=1):
        a = alert.get(row.id)
        a = a if isinstance(a, str) else ""
        alerts += bool(a)
        tid = (
            ""
            if row.template_id is None or row.template_id != row.template_id
            else int(row.template_id)
        )
        writer.writerow(
            [
                i,
                row.ts.isoformat(),
                row.level if isinstance(row.level, str) else "",
                tid,
                text.get(tid, "") if tid != "" else "",
                a,
            ]
        )
    fmt = annotator.get_format(str(path))
    return {
        "file": str(path),
        "lines": len(events),
        "format": fmt.describe() if fmt else "none",
        "lines_without_timestamp": no_ts,
        "templates": len(templates),
        "alerts": alerts,
        "anomalies": len(replayed.anomalies),
        "lines_per_s": round(stored / ingest_s) if ingest_s > 0 else 0,
    }


def register(app: typer.Typer) -> None:
    """Add the ``logs`` command to the ``selfheal`` app."""

    @app.command("logs")
    def logs_cmd(
        file: Annotated[Path, typer.Argument(help="The log file to look at.")],
        out: Annotated[
            Path | None, typer.Option("--out", help="Write the CSV here (default: stdout).")
        ] = None,
        database_url: Annotated[
            str | None,
            typer.Option("--database-url", help="Keep the result in this database."),
        ] = None,
        component: Annotated[
            str | None, typer.Option(help="Component name (default: the file's stem).")
        ] = None,
    ) -> None:
        """Ingest a log file the way the cycle does and write one CSV row per line:
        line_no, timestamp, level, template_id, template, alert (the cycle's decision)."""
        from flows.cli import cli_errors, fail

        if not file.is_file():
            fail(f"log file not found: {file}", 2)
        with cli_errors():
            try:
                if out is None:
                    summary = analyse_file(file, sys.stdout, database_url, component)
                else:
                    with out.open("w", newline="", encoding="utf-8") as fh:
                        summary = analyse_file(file, fh, database_url, component)
            except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
                fail(f"cannot read {file}: {exc}", 2)
        typer.echo(
            f"{summary['file']}: {summary['lines']} lines, format {summary['format']}; "
            f"{summary['lines_without_timestamp']} line(s) without a timestamp (read time "
            f"used); {summary['templates']} templates; {summary['alerts']} alert line(s) in "
            f"{summary['anomalies']} anomalies; "
            f"{summary['lines_per_s']} lines/s ingested",
            err=True,
        )
