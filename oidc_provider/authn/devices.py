"""Devices: a random id in a long-lived cookie tells a known browser from a new one.

"Remember this device" (off unless enabled) marks a device trusted for a while with a
signed token in a second cookie; the token names the user, the device and the expiry,
and the database row can revoke it at any time. A trusted device is an input to the
adaptive policy only: it never stands in for a factor a rule or an acr level demands.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from flask import g
from sqlalchemy import bindparam, text

from ..extensions import db, write_at_commit
from ..models import UserDevice
from ..models.devices import trusted

_DEVICES = UserDevice.__table__
# The columns the policy reads, not the ORM object: a sign-in asks on every password post.
_FIND = db.select(_DEVICES.c.device_hash, _DEVICES.c.trusted_until, _DEVICES.c.revoked_at).where(
    _DEVICES.c.user_id == bindparam("user_id"), _DEVICES.c.device_hash == bindparam("device_hash"))
# One statement for a new device and a known one (PostgreSQL and SQLite alike)
_SEEN = text(
    "INSERT INTO user_devices (user_id, device_hash, user_agent, first_seen, last_seen, last_ip) "
    "VALUES (:user_id, :device_hash, :user_agent, :now, :now, :ip) "
    "ON CONFLICT (user_id, device_hash) DO UPDATE SET last_seen = excluded.last_seen, "
    "last_ip = excluded.last_ip, user_agent = excluded.user_agent, revoked_at = NULL"
)
_TRUST = text("UPDATE user_devices SET trusted_until = :until, revoked_at = NULL "
              "WHERE user_id = :user_id AND device_hash = :device_hash RETURNING id")


def device_hash(device_id: str) -> str:
    return hashlib.sha256(device_id.encode()).hexdigest()


def new_device_id() -> str:
    return secrets.token_urlsafe(24)


class Devices:
    def __init__(self, key: bytes, settings):
        self._key = key
        self.settings = settings.trusted_devices

    def find(self, user_id: str, device_id: str | None):
        """Looked up once per request: the policy and the sign-in record both ask."""
        if not device_id or len(device_id) > 64:
            return None
        key = (user_id, device_hash(device_id))
        found = g.setdefault("devices_found", {})
        if key not in found:
            found[key] = db.session.execute(_FIND, {"user_id": user_id, "device_hash": key[1]}).first()
        return found[key]

    def is_known(self, user_id: str, device_id: str | None) -> bool:
        device = self.find(user_id, device_id)
        return device is not None and device.revoked_at is None

    def seen(self, user_id: str, device_id: str, ip: str | None, user_agent: str | None) -> None:
        """A sign-in from this device, new or known: written with the caller's next commit. A
        revoked device is known again (its trust stays revoked)."""
        write_at_commit(_SEEN, {"user_id": user_id, "device_hash": device_hash(device_id), "now": time.time(),
                                "ip": ip, "user_agent": (user_agent or "")[:256]})

    # -- trust ------------------------------------------------------------------------
    def _sign(self, user_id: str, hashed: str, until: int) -> str:
        message = f"{user_id}.{hashed}.{until}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def trust(self, user_id: str, device_id: str) -> tuple[str, int]:
        """Mark a device already `seen` and committed trusted: the token for the trust cookie,
        and the device's id."""
        until = int(time.time()) + self.settings.days * 86400
        hashed = device_hash(device_id)
        row_id = db.session.execute(_TRUST, {"until": until, "user_id": user_id, "device_hash": hashed}).scalar_one()
        db.session.commit()
        return f"{until}.{self._sign(user_id, hashed, until)}", row_id

    def is_trusted(self, user_id: str, device_id: str | None, token: str | None) -> bool:
        if not self.settings.enabled or not token or len(token) > 128:
            return False
        device = self.find(user_id, device_id)
        if device is None or not trusted(device):
            return False
        until, _, signature = token.partition(".")
        if not until.isdigit() or int(until) != int(device.trusted_until):
            return False
        expected = self._sign(user_id, device.device_hash, int(until))
        return hmac.compare_digest(signature, expected)

    def list(self, user_id: str) -> list[UserDevice]:
        return list(db.session.execute(
            db.select(UserDevice).filter_by(user_id=user_id).order_by(UserDevice.last_seen.desc())
        ).scalars())

    def revoke(self, device: UserDevice) -> None:
        device.trusted_until, device.revoked_at = None, time.time()
        db.session.commit()
