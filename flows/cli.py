"""The ``selfheal`` command. Heavy imports (Prefect, pandas) happen inside the commands so
that ``--help`` and ``config check`` stay fast."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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


def fail(message: str, code: int = 1) -> None:
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


@app.command("demo")
def demo_cmd(
    keep: Annotated[bool, typer.Option(help="Keep the demo's working folder.")] = False,
) -> None:
    """Start the simulated HMS platform, ingest its metrics and logs, print what was stored."""
    from flows.demo import run_demo

    code = run_demo(keep=keep)
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
