"""Coordination: approvals, the audit trail, fault injections, configuration versions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "recovery_id",
            sa.Integer(),
            sa.ForeignKey("recoveries.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column(
            "issue_id", sa.Integer(), sa.ForeignKey("issues.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("proposed_action", sa.Text(), nullable=False),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("decided_by", sa.String(100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("ui_url", sa.Text(), nullable=True),
    )
    op.create_index("ix_approvals_decision", "approvals", ["decision"])
    op.create_table(
        "audit_events",
        sa.Column("id", _ID64, primary_key=True),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=True),
        sa.Column("recovery_id", sa.Integer(), nullable=True),
        sa.Column("approval_id", sa.String(32), nullable=True),
        sa.Column("component", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_issue", "audit_events", ["issue_id"])
    op.create_index("ix_audit_ts", "audit_events", ["ts"])
    op.create_table(
        "fault_injections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run", sa.String(64), nullable=False),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("fault", sa.String(32), nullable=False),
        sa.Column("expected_strategy", sa.String(64), nullable=True),
        sa.Column("injected_at", _TS, nullable=False),
        sa.Column("cleared_at", _TS, nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_table(
        "config_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("config_versions")
    op.drop_table("fault_injections")
    op.drop_index("ix_audit_ts", table_name="audit_events")
    op.drop_index("ix_audit_issue", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_approvals_decision", table_name="approvals")
    op.drop_table("approvals")
