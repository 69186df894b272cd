"""Engines from a URL: SQLite by default (WAL, busy timeout), PostgreSQL at scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseURLError(ValueError):
    """A database URL that cannot be used, with the reason."""


def sqlite_url_for(path: str | Path) -> str:
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def normalise_url(url: str) -> str:
    """Accept the URLs people paste: ``postgres://`` and bare ``postgresql://`` use psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(f"not a database URL: {url!r}") from None
    name = parsed.drivername
    if name in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif not (name.startswith("sqlite") or name.startswith("postgresql")):
        raise DatabaseURLError(
            f"unsupported database {name!r} in {parsed.render_as_string(hide_password=True)}: "
            "use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (dashboard, notebooks) run beside the writer; NORMAL is durable in WAL.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; for SQLite files the parent folder is created."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def describe(engine: Engine) -> str:
    """The URL with any password hidden, for messages and logs."""
    return engine.url.render_as_string(hide_password=True)
