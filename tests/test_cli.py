"""The ``selfheal`` command: every subcommand has --help; errors are messages, not tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.main import get_command

from flows.cli import app


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, cmd in getattr(group, "commands", {}).items():
        out += _commands(cmd, (*prefix, name))
    return out


ALL = _commands(get_command(app))


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "selfheal")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", *path, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_bad_database_url_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.json"
    cfg.write_text('{"database_url": "mysql://nobody@nowhere/db"}')
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "db", "upgrade", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unsupported database 'mysql'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.json"
    cfg.write_text('{"database_url": "postgresql://nobody@127.0.0.1:1/db"}')
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "db", "current", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot open the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_upgrade_creates_schema(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.json"
    cfg.write_text(f'{{"database_url": "sqlite:///{tmp_path}/x.db"}}')
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "db", "upgrade", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    from storage.migrate import MIGRATIONS_DIR

    newest = max(p.name.split("_")[0] for p in (MIGRATIONS_DIR / "versions").glob("0*.py"))
    assert f"empty -> {newest}" in result.stdout


def test_demo_with_an_unknown_fault_names_it_and_the_known_ones() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "--faults", "crash,meteor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "unknown fault meteor" in result.stderr and "memory_leak" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_fault_selection_keeps_script_order() -> None:
    from flows.demo.platform.faults import SCRIPT, select_faults

    assert select_faults(None) == SCRIPT
    picked = select_faults("memory_leak, crash")
    assert [s.name for s in picked] == ["crash", "memory_leak"]
