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
    config_version: int | None = None  # the active tuned version applied, if any

    def close(self) -> None:
        self.engine.dispose()


def open_runtime(
    config_path: str | os.PathLike[str] | None = None,
    config: SelfHealConfig | None = None,
    migrate: bool = True,
) -> Runtime:
    """Load the configuration (unless given), open the database and apply migrations."""
    path = None if config_path is None else os.fspath(config_path)
    cfg = config if config is not None else load_config(path)
    engine = make_engine(database_url(cfg))
    if migrate:
        ensure_schema(engine)
    version = None
    if migrate:
        cfg, version = with_active_version(cfg, engine)
    return Runtime(cfg, engine, str(config_path) if config_path else None, version)


def with_active_version(
    config: SelfHealConfig, engine: Engine
) -> tuple[SelfHealConfig, int | None]:
    """The configuration with the active tuned version laid over it.

    Tuned settings (detector parameters, recovery thresholds) win over the file's, until
    ``selfheal config rollback`` or a newer version changes them.
    """
    from pydantic import ValidationError

    from flows.config_load import _deep_merge
    from storage.config_versions import active_version

    with engine.connect() as conn:
        version = active_version(conn)
    if not version or not version.get("body"):
        return config, None
    merged = _deep_merge(config.model_dump(mode="json"), version["body"])
    try:
        return SelfHealConfig.model_validate(merged), int(version["id"])
    except ValidationError as exc:
        import logging

        logging.getLogger("selfheal").error(
            "configuration version %s does not validate any more (%s); using the file's",
            version["id"],
            exc.errors()[0]["msg"],
        )
        return config, None


def executor_beacon(db_url: str) -> Path:
    """The file ``selfheal serve``'s executor touches while it watches this database; the
    CLI reads it to know whether to wait for the executor or resume the run itself."""
    import hashlib

    digest = hashlib.sha256(db_url.encode()).hexdigest()[:16]
    return selfheal_home() / f"executor-{digest}.alive"
