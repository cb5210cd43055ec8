from __future__ import annotations

import time

from sqlalchemy import Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class UserDevice(db.Model):
    """A browser a user signed in from, known by the hash of its device cookie.

    Known devices feed the adaptive policy ("new device"); a device the user chose to
    remember is *trusted* until `trusted_until`, unless revoked.
    """

    __tablename__ = "user_devices"
    __table_args__ = (UniqueConstraint("user_id", "device_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    device_hash: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(256))
    first_seen: Mapped[float] = mapped_column(Float, default=time.time)
    last_seen: Mapped[float] = mapped_column(Float, default=time.time)
    last_ip: Mapped[str | None] = mapped_column(String(64))
    trusted_until: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)

    @property
    def trusted(self) -> bool:
        return trusted(self)


def trusted(device) -> bool:
    """Of a UserDevice or a row of its columns: trusted until a time still to come, not revoked."""
    return bool(device.trusted_until and device.trusted_until > time.time() and not device.revoked_at)
