"""Recovery: recovery attempts, the actions they took, and circuit breakers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recoveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "issue_id",
            sa.Integer(),
            sa.ForeignKey("issues.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("issue_kind", sa.String(32), nullable=False),
        sa.Column("issue_signature", sa.String(300), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("validation", sa.Text(), nullable=False),
    )
    op.create_index("ix_recoveries_issue", "recoveries", ["issue_id"])
    op.create_index(
        "ix_recoveries_component_strategy", "recoveries", ["component", "strategy", "finished_at"]
    )
    op.create_index("ix_recoveries_status", "recoveries", ["status"])
    op.create_table(
        "recovery_actions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "recovery_id",
            sa.Integer(),
            sa.ForeignKey("recoveries.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_recovery_actions_component_kind",
        "recovery_actions",
        ["component", "kind", "started_at"],
    )
    op.create_table(
        "breakers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("breakers")
    op.drop_index("ix_recovery_actions_component_kind", table_name="recovery_actions")
    op.drop_table("recovery_actions")
    op.drop_index("ix_recoveries_status", table_name="recoveries")
    op.drop_index("ix_recoveries_component_strategy", table_name="recoveries")
    op.drop_index("ix_recoveries_issue", table_name="recoveries")
    op.drop_table("recoveries")
