"""Typed ORM models (SQLAlchemy 2.0). The schema itself is created by Alembic migrations.

Time columns of high-volume tables (``samples``, ``log_events``) are epoch milliseconds in
a BIGINT: compact, index-friendly and identical on both backends. Operational tables use
timezone-aware UTC datetimes, which read better in SQL and notebooks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import JSONText, UTCDateTime, utcnow


class Base(DeclarativeBase):
    pass


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
    __table_args__: ClassVar[dict[str, object]] = {"sqlite_with_rowid": False}

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
