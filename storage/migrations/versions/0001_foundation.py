"""Foundation: components, series, samples, log sources, templates and events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "components",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "component_id",
            sa.Integer(),
            sa.ForeignKey("components.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.UniqueConstraint("component_id", "metric", "labels", name="uq_series_key"),
    )
    # Clustered by (series, ts): a window read is one index range per series, so its cost
    # follows the window and not the history; a repeated point is ignored on insert.
    op.create_table(
        "samples",
        sa.Column(
            "series_id",
            sa.Integer(),
            sa.ForeignKey("series.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "ts"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "log_sources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.String(1024), nullable=False, unique=True),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=True),
        sa.Column("head_len", sa.Integer(), nullable=False),
        sa.Column("lines", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "log_templates",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("template_key", sa.Integer(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("component", "template_key", name="uq_template_key"),
    )
    op.create_table(
        "log_events",
        sa.Column("id", _ID64, primary_key=True),
        sa.Column(
            "source_id",
            sa.Integer(),
            sa.ForeignKey("log_sources.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.UniqueConstraint("source_id", "generation", "byte_offset", name="uq_log_event_offset"),
    )
    op.create_index("ix_log_events_component_ts", "log_events", ["component", "ts"])


def downgrade() -> None:
    op.drop_index("ix_log_events_component_ts", table_name="log_events")
    op.drop_table("log_events")
    op.drop_table("log_templates")
    op.drop_table("log_sources")
    op.drop_table("samples")
    op.drop_table("series")
    op.drop_table("components")
