"""``notebooks/outcomes.ipynb`` runs top to bottom on a fixture database and on an empty
one, in a real kernel (the venv's ``python3``), as ``jupyter nbconvert --execute`` would."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from sqlalchemy import Engine

from storage.engine import make_engine, sqlite_url_for
from storage.migrate import ensure_schema
from storage.outcomes import load_outcomes
from tests.fixture_outcomes import build_outcomes

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "outcomes.ipynb"


def execute(database_url: str, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Run the notebook in a fresh kernel that sees ``SELFHEAL_DATABASE_URL``."""
    monkeypatch.setenv("SELFHEAL_DATABASE_URL", database_url)  # the kernel inherits it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def text_of(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in outputs(nb) if o.output_type == "stream")


def test_load_outcomes_has_every_table(engine: Engine) -> None:
    build_outcomes(engine)
    frames = load_outcomes(engine)
    assert set(frames) == {"issues", "recoveries", "approvals", "anomalies", "fault_injections"}
    assert len(frames["fault_injections"]) == 3 and len(frames["anomalies"]) == 13
    assert str(frames["fault_injections"]["injected_at"].dt.tz) == "UTC"


@pytest.mark.slow
def test_notebook_plots_the_fixture_outcomes(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_outcomes(sqlite_engine)
    nb = execute(sqlite_engine.url.render_as_string(hide_password=False), monkeypatch)
    errors = [o for o in outputs(nb) if o.output_type == "error"]
    assert not errors, errors
    images = [o for o in outputs(nb) if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 3  # time to recover, auto-healing rate, per strategy/component
    assert all(len(o.data["image/png"]) > 5_000 for o in images)
    text = text_of(nb)
    assert "issues acted on:      13" in text and "no recoveries yet" not in text


@pytest.mark.slow
def test_notebook_copes_with_an_empty_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqlite_url_for(tmp_path / "empty.db")
    engine = make_engine(url)
    ensure_schema(engine)
    engine.dispose()
    nb = execute(url, monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    assert not [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    text = text_of(nb)
    assert text.count("no recoveries yet") == 3 and "not a demo database" in text
