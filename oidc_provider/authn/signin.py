"""What happens when a sign-in ends with a code: the user's last login and devices.

Kept out of the protocol endpoint: the endpoint decides, this records.
"""

from __future__ import annotations

import time

from flask import request

from ..extensions import db
from ..models import record_audit
from .devices import DEVICE_COOKIE, TRUST_COOKIE


def record_signin(op, user, client, interaction: dict | None, acr: str | None, response) -> None:
    """Remember where the user signed in from (adaptive policy), and trust the device when
    the user asked for it after a multi-factor sign-in and the setting allows it."""
    ip = request.remote_addr
    country, latitude, longitude = op.geoip.lookup(ip) if op.geoip else (None, None, None)
    user.last_login = {"at": time.time(), "ip": ip, "country": country, "latitude": latitude,
                       "longitude": longitude}
    db.session.commit()
    device_id = request.cookies.get(DEVICE_COOKIE)
    if not device_id:
        return
    device = op.devices.seen(user.id, device_id, ip, request.headers.get("User-Agent"))
    wants_trust = bool(interaction and interaction.get("remember"))
    if wants_trust and acr == "mfa" and op.settings.trusted_devices.enabled:
        token = op.devices.trust(device)
        response.set_cookie(TRUST_COOKIE, token, httponly=True, samesite="Lax", path="/",
                            secure=request.is_secure or op.settings.issuer_url.startswith("https://"),
                            max_age=op.settings.trusted_devices.days * 86400)
        record_audit("device.trusted", user_id=user.id, client_id=client.client_id, ip=ip, device=device.id)
