"""What every flow and command needs first: the configuration and an open database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from flows.config import SelfHealConfig
from flows.config_load import load_config
from storage.engine import make_engine, sqlite_url_for
from storage.migrate import ensure_schema


def selfheal_home() -> Path:
    """``SELFHEAL_HOME``, else ``.selfheal`` in the working directory."""
    return Path(os.environ.get("SELFHEAL_HOME") or Path.cwd() / ".selfheal").expanduser()


def database_url(config: SelfHealConfig) -> str:
    """The configured URL, else a SQLite file under the home folder."""
    if config.database_url:
        return config.database_url
    return sqlite_url_for(selfheal_home() / "selfheal.db")


@dataclass
class Runtime:
    config: SelfHealConfig
    engine: Engine
    config_path: str | None = None

    def close(self) -> None:
        self.engine.dispose()


def open_runtime(
    config_path: str | os.PathLike[str] | None = None,
    config: SelfHealConfig | None = None,
    migrate: bool = True,
) -> Runtime:
    """Load the configuration (unless given), open the database and apply migrations."""
    cfg = config if config is not None else load_config(config_path)
    engine = make_engine(database_url(cfg))
    if migrate:
        ensure_schema(engine)
    return Runtime(cfg, engine, str(config_path) if config_path else None)
