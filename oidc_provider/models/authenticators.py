from __future__ import annotations

import time

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class Authenticator(db.Model):
    """Something a user enrolled: a TOTP app, a WebAuthn credential, a push device, a set of
    recovery codes. `secret` is encrypted (crypto.SecretBox) when it must be read back, else
    absent; `data` holds the kind's public details (credential id, public key, sign count...)."""

    __tablename__ = "authenticators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # a factor id: totp, webauthn-key, ...
    name: Mapped[str] = mapped_column(String(128), default="")
    secret: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    lookup: Mapped[str | None] = mapped_column(String(255), index=True)  # e.g. a WebAuthn credential id
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)  # enrollment finished
    number: Mapped[int | None] = mapped_column(Integer)  # a recovery code's number in its set (1, 2, ...)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    last_used_at: Mapped[float | None] = mapped_column(Float)


def confirmed_authenticators(user_id: str, kind: str | None = None) -> list[Authenticator]:
    query = db.select(Authenticator).filter_by(user_id=user_id, confirmed=True)
    if kind:
        query = query.filter_by(kind=kind)
    return list(db.session.execute(query.order_by(Authenticator.created_at)).scalars())
