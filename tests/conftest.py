"""Shared fixtures: one Prefect test server per session, databases on both backends."""

from __future__ import annotations

import os

# Must be set before Prefect is imported anywhere.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from storage.engine import make_engine, normalise_url, sqlite_url_for
from storage.migrate import ensure_schema

REPO = Path(__file__).resolve().parents[1]
PG_ENV = "SELFHEAL_TEST_DATABASE_URL"


def datasets_dir() -> Path:
    return Path(os.environ.get("SELFHEAL_DATASETS") or REPO.parent / "shared" / "datasets")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect API for the whole session (started on first use)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own SELFHEAL_HOME and no inherited configuration."""
    monkeypatch.setenv("SELFHEAL_HOME", str(tmp_path / "home"))
    for key in list(os.environ):
        if key.startswith("SELFHEAL_") and key not in (
            PG_ENV,
            "SELFHEAL_DATASETS",
            "SELFHEAL_HOME",
        ):
            monkeypatch.delenv(key)


def _pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV) or None


def fresh_pg_database() -> tuple[str, callable]:  # type: ignore[valid-type]
    """Create an empty database on the test server; return its URL and a dropper."""
    admin = _pg_admin_url()
    assert admin
    admin_url = normalise_url(admin)
    name = f"selfheal_t_{uuid.uuid4().hex[:12]}"
    admin_engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()

    return url, drop


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once per backend (PostgreSQL only when configured)."""
    if request.param == "sqlite":
        yield sqlite_url_for(tmp_path / "test.db")
        return
    if not _pg_admin_url():
        pytest.skip(f"PostgreSQL not configured: set {PG_ENV} (as .ci/run does)")
    url, drop = fresh_pg_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    ensure_schema(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(sqlite_url_for(tmp_path / "sqlite.db"))
    ensure_schema(eng)
    try:
        yield eng
    finally:
        eng.dispose()
