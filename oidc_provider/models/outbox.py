"""The development outbox: every message sent in dev_mode, readable without a mail server."""

from __future__ import annotations

import time

from sqlalchemy import Float, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class OutboxMessage(db.Model):
    """A copy of an email, text message or voice call, kept only when dev_mode is on."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True, default=time.time)
    channel: Mapped[str] = mapped_column(String(16))  # email, sms, voice
    to: Mapped[str] = mapped_column(String(320))  # an email address or an E.164 number
    subject: Mapped[str | None] = mapped_column(Text)  # email only
    body: Mapped[str] = mapped_column(Text)  # an email's text part; the words of a text or call


def keep_in_outbox(channel: str, to: str, subject: str | None, body: str, at: float) -> None:
    """Commits the session, as record_audit does, so the copy survives a later rollback."""
    db.session.add(OutboxMessage(at=at, channel=channel, to=to, subject=subject, body=body))
    db.session.commit()


def recent_outbox(limit: int = 50, to: str | None = None) -> list[OutboxMessage]:
    """Newest first, optionally only those sent to one address (any case) or number."""
    newest_first = (OutboxMessage.at.desc(), OutboxMessage.id.desc())
    query = db.select(OutboxMessage).order_by(*newest_first).limit(limit)
    if to:
        query = query.where(func.lower(OutboxMessage.to) == to.strip().lower())
    return list(db.session.execute(query).scalars())
