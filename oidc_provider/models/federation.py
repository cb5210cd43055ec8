from __future__ import annotations

import time

from sqlalchemy import Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class FederatedIdentity(db.Model):
    """An account at an upstream OpenID provider (its `iss` + `sub`, OIDC Core 2: unique and
    never reassigned there) linked to one of our users. Once linked, the upstream subject
    alone finds the user: an email address that changes upstream cannot move the link."""

    __tablename__ = "federated_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))  # the key in the `upstreams:` settings
    subject: Mapped[str] = mapped_column(String(255))  # the upstream's `sub`
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
