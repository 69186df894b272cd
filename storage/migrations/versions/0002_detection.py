"""Detection: anomalies, issues, feedback, detection watermarks, template miner state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "log_miners",
        sa.Column("component", sa.String(64), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "detection_state",
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "issues",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("signature", sa.String(300), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("first_seen", _TS, nullable=False),
        sa.Column("last_seen", _TS, nullable=False),
        sa.Column("actionable_at", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("anomaly_count", sa.Integer(), nullable=False),
        sa.Column("inhibited_by", sa.Integer(), nullable=True),
        sa.Column("last_notified_at", _TS, nullable=True),
        sa.Column("reopen_count", sa.Integer(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
    )
    op.create_index("ix_issues_fingerprint_status", "issues", ["fingerprint", "status"])
    op.create_index("ix_issues_status", "issues", ["status"])
    op.create_table(
        "anomalies",
        sa.Column("id", _ID64, primary_key=True),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("signature", sa.String(300), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=True),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column(
            "issue_id", sa.Integer(), sa.ForeignKey("issues.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("detector", "component", "signature", "ts", name="uq_anomaly"),
    )
    op.create_index("ix_anomalies_component_ts", "anomalies", ["component", "ts"])
    op.create_index("ix_anomalies_issue", "anomalies", ["issue_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "issue_id", sa.Integer(), sa.ForeignKey("issues.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("by", sa.String(100), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_index("ix_anomalies_issue", table_name="anomalies")
    op.drop_index("ix_anomalies_component_ts", table_name="anomalies")
    op.drop_table("anomalies")
    op.drop_index("ix_issues_status", table_name="issues")
    op.drop_index("ix_issues_fingerprint_status", table_name="issues")
    op.drop_table("issues")
    op.drop_table("detection_state")
    op.drop_table("log_miners")
