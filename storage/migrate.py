"""Alembic migrations, applied programmatically (``selfheal db upgrade`` and on first use)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Not Alembic's default "alembic_version": Optuna's RDB storage, which shares this database,
# keeps its own schema version there.
VERSION_TABLE = "selfheal_alembic_version"
# Any constant works; it only has to be the same for every process using the database.
_PG_LOCK_KEY = 0x5E1F_4EA1


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade the schema; concurrent callers on PostgreSQL are serialised by an advisory lock."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def ensure_schema(engine: Engine) -> None:
    """Apply pending migrations when the database is behind (cheap when it is current)."""
    if current_revision(engine) != head_revision(engine):
        upgrade(engine)


def downgrade(engine: Engine, revision: str) -> str | None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    return current_revision(engine)
