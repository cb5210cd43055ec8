"""The policy's view of a sign-in, and what is recorded when a sign-in ends with a code.

Kept out of the protocol endpoint: the endpoint asks and acts, this gathers and records.
"""

from __future__ import annotations

import time

from flask import request

from .. import cookies
from ..extensions import db, update_at_commit
from ..models import User, record_audit
from .acr import mfa_level
from .geoip import GeoIP
from .lockout import recent_failures
from .policy import Decision, LoginContext, PreviousLogin, evaluate


def geoip(op) -> GeoIP:
    """The GeoIP database the current policy names (opened once per path)."""
    path = op.policy.value.geoip_database
    cache = op.geoip_cache
    if path not in cache:
        from .. import resolve_path

        cache[path] = GeoIP(resolve_path(op.base_dir, path) if path else None)
    return cache[path]


def login_context(user, client, ip, location, now: float, device_known: bool, failures: int) -> LoginContext:
    """What the policy may look at for this user signing in to this client (also for the CLI)."""
    country, latitude, longitude = location
    try:
        previous = PreviousLogin.from_dict(user.last_login) if user.last_login else None
    except (TypeError, ValueError):
        previous = None
    return LoginContext(
        user_id=user.id, username=user.username, groups=tuple(user.groups or ()),
        attributes=dict(user.attributes or {}), user_policy=user.mfa_policy, client_id=client.client_id,
        client_policy=client.config.mfa_policy, ip=ip, country=country, latitude=latitude, longitude=longitude,
        now=now, device_known=device_known, recent_failures=failures, previous=previous,
    )


def policy_decision(op, user, client, ip: str | None = None, commit: bool = True) -> Decision:
    """Evaluate the policy for this sign-in and record the decision with its reason. `ip` is the
    end user's (the direct API's client_attributes), else this request's; `commit` False leaves
    the audit row to the caller's commit.

    A trusted device may relax only the adaptive policy: it never stands in for a factor
    that a rule or an acr level demands.
    """
    ip = ip or request.remote_addr
    device_id = cookies.get(cookies.DEVICE)
    context = login_context(user, client, ip, geoip(op).lookup(ip), time.time(),
                            op.devices.is_known(user.id, device_id), recent_failures(op, user.id))
    decision = evaluate(op.policy.value, context)
    adaptive = decision.risk is not None and decision.rule is None
    if decision.action == "require_mfa" and adaptive and op.devices.is_trusted(
            user.id, device_id, cookies.get(cookies.TRUST)):
        decision = Decision("allow", None, f"trusted device; {decision.reason}", None, decision.risk)
    record_audit("policy.decision", user_id=user.id, client_id=client.client_id, ip=ip,
                 context=context.to_dict(), decision=decision.to_dict(), commit=commit)
    return decision


def decision_level(levels, decision: Decision):
    """The acr level a decision demands (None: none); an acr the levels do not know is None
    here and the caller denies (fail closed)."""
    if decision.action == "require_mfa":
        return mfa_level(levels)
    if decision.action == "require_acr":
        return next((level for level in levels if level.value == decision.acr), None)
    return None


def record_signin(op, user, client, interaction: dict | None, acr: str | None, response) -> None:
    """Remember where the user signed in from (adaptive policy), and trust the device when
    the user asked for it after a multi-factor sign-in and the setting allows it. Commits, also
    what the caller left pending (one transaction instead of several)."""
    ip = request.remote_addr
    country, latitude, longitude = geoip(op).lookup(ip)
    update_at_commit(User.__table__, user.id, last_login={  # no ORM flush of the user
        "at": time.time(), "ip": ip, "country": country, "latitude": latitude, "longitude": longitude})
    device_id = cookies.get(cookies.DEVICE)
    if device_id:
        op.devices.seen(user.id, device_id, ip, request.headers.get("User-Agent"))
    db.session.commit()
    wants_trust = bool(interaction and interaction.get("remember"))
    if device_id and wants_trust and acr == "mfa" and op.settings.trusted_devices.enabled:
        token, device = op.devices.trust(user.id, device_id)
        cookies.put(response, cookies.TRUST, token, op.settings.trusted_devices.days * 86400)
        record_audit("device.trusted", user_id=user.id, client_id=client.client_id, ip=ip, device=device)
