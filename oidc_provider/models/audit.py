from __future__ import annotations

import logging
import time

from sqlalchemy import JSON, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db

log = logging.getLogger("oidc_provider.audit")


class AuditEvent(db.Model):
    """Every authentication decision and change: who, what, from where, why."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True, default=time.time)
    event: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    client_id: Mapped[str | None] = mapped_column(String(128))
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


_INSERT = AuditEvent.__table__.insert()


def record_audit(event: str, *, user_id=None, client_id=None, ip=None, commit=True, **detail) -> None:
    """One row (a plain INSERT in the caller's transaction: no ORM object to flush); `commit`
    False leaves it to the caller's next commit."""
    db.session.execute(_INSERT, {"at": time.time(), "event": event, "user_id": user_id, "client_id": client_id,
                                 "ip": ip, "detail": detail})
    if commit:
        db.session.commit()
    log.info("audit %s user=%s client=%s ip=%s %s", event, user_id, client_id, ip, detail)
