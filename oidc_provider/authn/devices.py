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
from sqlalchemy import bindparam

from ..extensions import db
from ..models import UserDevice

_FIND = db.select(UserDevice).where(UserDevice.user_id == bindparam("user_id"),
                                    UserDevice.device_hash == bindparam("device_hash"))


def device_hash(device_id: str) -> str:
    return hashlib.sha256(device_id.encode()).hexdigest()


def new_device_id() -> str:
    return secrets.token_urlsafe(24)


class Devices:
    def __init__(self, key: bytes, settings):
        self._key = key
        self.settings = settings.trusted_devices

    def find(self, user_id: str, device_id: str | None) -> UserDevice | None:
        """Looked up once per request: the policy and the sign-in record both ask."""
        if not device_id or len(device_id) > 64:
            return None
        key = (user_id, device_hash(device_id))
        found = g.setdefault("devices_found", {})
        if key not in found:
            found[key] = db.session.execute(_FIND, {"user_id": user_id, "device_hash": key[1]}).scalar_one_or_none()
        return found[key]

    def is_known(self, user_id: str, device_id: str | None) -> bool:
        device = self.find(user_id, device_id)
        return device is not None and device.revoked_at is None

    def seen(self, user_id: str, device_id: str, ip: str | None, user_agent: str | None) -> UserDevice:
        device = self.find(user_id, device_id)
        if device is None:
            device = UserDevice(user_id=user_id, device_hash=device_hash(device_id), first_seen=time.time())
            db.session.add(device)
            g.devices_found[(user_id, device.device_hash)] = device
        device.last_seen, device.last_ip, device.user_agent = time.time(), ip, (user_agent or "")[:256]
        device.revoked_at = None  # signed in again from it: known again (trust stays revoked)
        db.session.commit()
        return device

    # -- trust ------------------------------------------------------------------------
    def _sign(self, user_id: str, hashed: str, until: int) -> str:
        message = f"{user_id}.{hashed}.{until}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def trust(self, device: UserDevice) -> str:
        """Mark the device trusted; returns the token for the trust cookie."""
        until = int(time.time()) + self.settings.days * 86400
        device.trusted_until, device.revoked_at = until, None
        db.session.commit()
        return f"{until}.{self._sign(device.user_id, device.device_hash, until)}"

    def is_trusted(self, user_id: str, device_id: str | None, token: str | None) -> bool:
        if not self.settings.enabled or not token or len(token) > 128:
            return False
        device = self.find(user_id, device_id)
        if device is None or not device.trusted:
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
