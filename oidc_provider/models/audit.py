"""The audit log: one row per authentication decision and change, and one log line each.

Rows are what `oidc-provider audit` and `GET /admin/v1/audit` read (audit_query.py).
Each record also goes to the standard logger `oidc_provider.audit` as one line, its
fields as JSON in the message and as `extra["audit"]`, so a log pipeline gets the same
record without reading the database. Event names are listed in the README.
"""

from __future__ import annotations

import json
import logging
import time

from sqlalchemy import JSON, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Int64, db, write_at_commit
from ..observability import observe_audit

log = logging.getLogger("oidc_provider.audit")


class AuditEvent(db.Model):
    """Every authentication decision and change: who, what, from where, why."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Int64, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True, default=time.time)
    event: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    client_id: Mapped[str | None] = mapped_column(String(128))
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


_INSERT = AuditEvent.__table__.insert()


def record_audit(event: str, *, user_id=None, client_id=None, ip=None, commit=True, **detail) -> None:
    """One row, a plain INSERT (no ORM object to flush) written with the session's next commit,
    together with the request's other audit rows; `commit` False leaves that commit to the caller."""
    at = time.time()
    write_at_commit(_INSERT, {"at": at, "event": event, "user_id": user_id, "client_id": client_id,
                              "ip": ip, "detail": detail})
    if commit:
        db.session.commit()
    record = {"at": round(at, 3), "event": event, "user_id": user_id, "client_id": client_id, "ip": ip,
              "detail": detail}
    log.info("audit %s", json.dumps(record, separators=(",", ":"), default=str), extra={"audit": record})
    observe_audit(event, detail)  # metrics that follow the audit log
