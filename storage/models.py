"""Typed ORM models (SQLAlchemy 2.0). The schema itself is created by Alembic migrations.

Time columns of high-volume tables (``samples``, ``log_events``) are epoch milliseconds in
a BIGINT: compact, index-friendly and identical on both backends. Operational tables use
timezone-aware UTC datetimes, which read better in SQL and notebooks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import JSONText, UTCDateTime, utcnow


class Base(DeclarativeBase):
    @classmethod
    def table(cls) -> Table:
        """The mapped table, typed as a ``Table`` (``__table__`` is a ``FromClause``)."""
        return cast(Table, cls.__table__)


class Component(Base):
    __tablename__ = "components"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(64), default="service")
    labels: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("component_id", "metric", "labels", name="uq_series_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    component_id: Mapped[int] = mapped_column(ForeignKey("components.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(200))
    # Canonical JSON text (sorted keys, see storage.metrics.labels_key): part of the key.
    labels: Mapped[str] = mapped_column(Text, default="{}")
    kind: Mapped[str] = mapped_column(String(16), default="gauge")


class Sample(Base):
    """One observation. The primary key makes re-ingesting the same point a no-op."""

    __tablename__ = "samples"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's convention

    series_id: Mapped[int] = mapped_column(
        ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch ms
    value: Mapped[float] = mapped_column(Float)


class LogSource(Base):
    """A tailed file: the offset is committed with the events it covers."""

    __tablename__ = "log_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    component: Mapped[str] = mapped_column(String(64))
    inode: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Bumped on rotation or truncation: offsets restart at 0 in a new generation.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    byte_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    # Hash of the file's first ``head_len`` bytes: tells a replaced file from the same one
    # even when the inode number is reused.
    head_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    head_len: Mapped[int] = mapped_column(Integer, default=0)
    lines: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LogTemplate(Base):
    __tablename__ = "log_templates"
    __table_args__ = (UniqueConstraint("component", "template_key", name="uq_template_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    component: Mapped[str] = mapped_column(String(64))
    template_key: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[int] = mapped_column(BigInteger)  # epoch ms
    last_seen: Mapped[int] = mapped_column(BigInteger)


class LogEvent(Base):
    """One log line. (source, generation, offset) is its natural key: stored once."""

    __tablename__ = "log_events"
    __table_args__ = (
        UniqueConstraint("source_id", "generation", "byte_offset", name="uq_log_event_offset"),
        Index("ix_log_events_component_ts", "component", "ts"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("log_sources.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column(Integer)
    byte_offset: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[int] = mapped_column(BigInteger)  # epoch ms (parsed, else read time)
    component: Mapped[str] = mapped_column(String(64))
    level: Mapped[str | None] = mapped_column(String(16), nullable=True)
    template_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text)


class DetectionState(Base):
    """How far each detection stream has scored (e.g. ``metrics:proof_engine``)."""

    __tablename__ = "detection_state"

    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    watermark: Mapped[int] = mapped_column(BigInteger)  # epoch ms, exclusive lower bound
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Issue(Base):
    """Anomalies grouped the Alertmanager way: one open issue per fingerprint."""

    __tablename__ = "issues"
    __table_args__ = (
        Index("ix_issues_fingerprint_status", "fingerprint", "status"),
        Index("ix_issues_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    component: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(300))
    title: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    # open / recovering / resolved / silenced
    status: Mapped[str] = mapped_column(String(16))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    # Group wait: nothing acts on the issue before this time, so related anomalies gather.
    actionable_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    anomaly_count: Mapped[int] = mapped_column(Integer, default=0)
    # Set while a down component (or a dependency that is down) explains this issue.
    inhibited_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    details: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)


class AnomalyRow(Base):
    __tablename__ = "anomalies"
    __table_args__ = (
        UniqueConstraint("detector", "component", "signature", "ts", name="uq_anomaly"),
        Index("ix_anomalies_component_ts", "component", "ts"),
        Index("ix_anomalies_issue", "issue_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    detector: Mapped[str] = mapped_column(String(64))
    component: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(300))
    series_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ts: Mapped[int] = mapped_column(BigInteger)  # epoch ms
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    score: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    issue_id: Mapped[int | None] = mapped_column(
        ForeignKey("issues.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Feedback(Base):
    """An operator's verdict on an issue: the labels nightly tuning learns from."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"))
    verdict: Mapped[str] = mapped_column(String(16))  # true_positive / false_positive
    by: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LogMiner(Base):
    """The template miner's state per component, saved with the events it labelled."""

    __tablename__ = "log_miners"

    component: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONText)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Recovery(Base):
    """One recovery attempt: a strategy applied (or proposed) for an issue."""

    __tablename__ = "recoveries"
    __table_args__ = (
        Index("ix_recoveries_issue", "issue_id"),
        Index("ix_recoveries_component_strategy", "component", "strategy", "finished_at"),
        Index("ix_recoveries_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_id: Mapped[int | None] = mapped_column(
        ForeignKey("issues.id", ondelete="SET NULL"), nullable=True
    )
    component: Mapped[str] = mapped_column(String(64))
    issue_kind: Mapped[str] = mapped_column(String(32))
    issue_signature: Mapped[str] = mapped_column(String(300), default="")
    strategy: Mapped[str] = mapped_column(String(64))
    rung: Mapped[int] = mapped_column(Integer, default=0)
    action: Mapped[str] = mapped_column(Text, default="")
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    mode: Mapped[str] = mapped_column(String(16))
    # planned / awaiting_approval / approved / rejected / expired / running / succeeded /
    # failed / recorded_only / skipped
    status: Mapped[str] = mapped_column(String(20))
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    output: Mapped[str] = mapped_column(Text, default="")
    validation: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)


class BreakerRow(Base):
    """A circuit breaker's persisted state (tasks.recovery.breaker.BreakerState)."""

    __tablename__ = "breakers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # copy of body["state"], for queries
    body: Mapped[dict[str, Any]] = mapped_column(JSONText)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RecoveryAction(Base):
    """One action a recovery took on a component (a restart, an isolation, a change)."""

    __tablename__ = "recovery_actions"
    __table_args__ = (
        Index("ix_recovery_actions_component_kind", "component", "kind", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recovery_id: Mapped[int | None] = mapped_column(
        ForeignKey("recoveries.id", ondelete="CASCADE"), nullable=True
    )
    component: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(
        String(32)
    )  # restart / isolate / restore / reconfigure / rollback
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ok: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)


class Approval(Base):
    """A request for a human decision on a recovery, answered in the UI, CLI or API."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_decision", "decision"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # approval_1a2b3c4d
    recovery_id: Mapped[int | None] = mapped_column(
        ForeignKey("recoveries.id", ondelete="SET NULL"), nullable=True
    )
    issue_id: Mapped[int | None] = mapped_column(
        ForeignKey("issues.id", ondelete="SET NULL"), nullable=True
    )
    component: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    proposed_action: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decision: Mapped[str] = mapped_column(String(16))  # pending/approved/rejected/expired
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ui_url: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditEvent(Base):
    """Every decision the system or a person made, as a row (the audit trail)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_issue", "issue_id"), Index("ix_audit_ts", "ts"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100), default="selfheal")
    issue_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recovery_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approval_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    component: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)


class FaultInjection(Base):
    """Ground truth of the demo: which fault was injected where and when."""

    __tablename__ = "fault_injections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run: Mapped[str] = mapped_column(String(64))  # the demo run it belongs to
    component: Mapped[str] = mapped_column(String(64))
    fault: Mapped[str] = mapped_column(String(32))
    expected_strategy: Mapped[str | None] = mapped_column(String(64), nullable=True)
    injected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)


class ConfigVersion(Base):
    """A version of the tunable configuration; exactly one is active."""

    __tablename__ = "config_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(16))  # manual / tuning / rollback
    body: Mapped[dict[str, Any]] = mapped_column(JSONText)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(Text, default="")
    # When it last became the active version (rollback goes to the one active before).
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
