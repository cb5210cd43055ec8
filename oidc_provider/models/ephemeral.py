from sqlalchemy import Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class EphemeralEntry(db.Model):
    """The SQL store's rows: short-lived state when no Redis is configured."""

    __tablename__ = "ephemeral"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class EphemeralJob(db.Model):
    """The SQL store's background jobs (background.py): a payload, sealed, and when it is next due."""

    __tablename__ = "ephemeral_jobs"
    __table_args__ = (db.Index("ix_ephemeral_jobs_queue_due_at", "queue", "due_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    queue: Mapped[str] = mapped_column(String(255))
    due_at: Mapped[float] = mapped_column(Float)
    payload: Mapped[str] = mapped_column(Text)
