"""OpenID Connect Back-Channel Logout 1.0: when an IdP session ends, every client that took
part in it gets a signed logout token, POSTed straight from the provider to the client's
`backchannel_logout_uri`.

A session ends by RP-initiated logout (/oidc/logout), by an operator (`end_session`,
`logout_user`, `oidc-provider sessions end`), when another user signs in on the same
browser, or when it expires. Expiry is silent in the store, so `sweep` (run every
`sweep_interval` seconds by the serving app, or by `oidc-provider sessions sweep` from cron)
finds expired sessions through the index kept by authn/session.py.

Delivery never holds up the user's logout: tokens go through the background queue
(background.py), with a timeout per POST and bounded retries with backoff; each outcome is
audited. The queue is kept in the store: a logout whose process dies before delivering is
delivered by another worker once its lease runs out.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from functools import partial

import requests
from flask import has_request_context, request

from ..background import BackgroundQueue
from ..extensions import db
from ..models import RefreshToken, record_audit

log = logging.getLogger(__name__)

EVENT = "http://schemas.openid.net/event/backchannel-logout"  # spec 2.4
EXTENSION = "op.backchannel"


def advertise(op, document: dict) -> None:
    """Discovery (spec 2.1): advertised exactly when enabled; tokens always carry sid."""
    enabled = op.settings.backchannel_logout.enabled
    document["backchannel_logout_supported"] = enabled
    if enabled:
        document["backchannel_logout_session_supported"] = True


def logout_token(op, client, sub: str, sid: str | None) -> str:
    """Spec 2.4: iss, aud, iat, exp, jti, events, sub and sid; never a nonce; typ logout+jwt."""
    now = int(time.time())
    claims = {
        "iss": op.settings.issuer_url,
        "aud": client.client_id,
        "iat": now,
        "exp": now + op.settings.backchannel_logout.token_lifetime,
        "jti": uuid.uuid4().hex,
        "events": {EVENT: {}},
        "sub": sub,
    }
    if sid:
        claims["sid"] = sid
    alg = client.id_token_signed_response_alg or op.settings.id_token_signing_alg
    return op.keyring.sign(claims, alg, typ="logout+jwt")


# -- ending sessions -------------------------------------------------------------------------

def end_session(op, sid: str, reason: str = "admin") -> bool:
    """End one IdP session by its public id (the `sid` of its ID tokens); False if unknown."""
    session = op.sessions.by_sid(sid)
    return session is not None and op.sessions.end(session, reason)


def logout_user(op, user_id: str, reason: str = "admin") -> int:
    """End every session of a user ("sign out everywhere"); returns how many were ended."""
    return sum(end_session(op, sid, reason) for sid in op.sessions.sids_of(user_id))


def sweep(op) -> int:
    """End the sessions that have expired since the last sweep; returns how many."""
    return op.sessions.sweep()


def revoke_session_refresh_tokens(op, session) -> int:
    """Spec 2.7: refresh tokens of the session are revoked, except offline_access ones, which
    are meant to outlive it."""
    if not session.clients:
        return 0
    rows = db.session.execute(
        db.select(RefreshToken).where(
            RefreshToken.user_id == session.sub, RefreshToken.client_id.in_(session.clients),
            RefreshToken.revoked_at.is_(None))
    ).scalars().all()
    families = {row.family_id for row in rows
                if (row.auth or {}).get("sid") == session.sid and "offline_access" not in (row.scope or "").split()}
    for family in families:
        op.tokens.revoke_family(family)
    return len(families)


def _session_ended(app, op):
    def hook(session, reason: str) -> None:
        revoked = revoke_session_refresh_tokens(op, session)
        notified = []
        if op.settings.backchannel_logout.enabled:
            for client_id in session.clients:
                client = op.clients.get(client_id)
                if client is not None and client.config.backchannel_logout_uri:
                    outbox(app).submit(Delivery(client_id, session.sub, session.sid, reason))
                    notified.append(client_id)
        record_audit("session.ended", user_id=session.sub, ip=request.remote_addr if has_request_context() else None,
                     reason=reason, sid=session.sid, clients=session.clients, notified=notified,
                     refresh_families_revoked=revoked)

    return hook


# -- delivery ----------------------------------------------------------------------------------

@dataclass
class Delivery:
    client_id: str
    sub: str
    sid: str | None
    reason: str
    attempt: int = 0


def _deliver(op, job: Delivery) -> float | None:
    """One POST (spec 2.5); returns the delay before a retry, or None when done."""
    settings = op.settings.backchannel_logout
    client = op.clients.get(job.client_id)
    uri = client.config.backchannel_logout_uri if client else None
    if not uri:
        return None
    job.attempt += 1
    token = logout_token(op, client, job.sub, job.sid)  # a fresh jti for each attempt
    try:
        answer = requests.post(uri, data={"logout_token": token}, timeout=settings.timeout,
                               allow_redirects=False, headers={"Cache-Control": "no-store"})
        outcome, retry = answer.status_code, answer.status_code >= 500 or answer.status_code == 429
        delivered = 200 <= answer.status_code < 300
    except requests.RequestException as exc:
        outcome, retry, delivered = exc.__class__.__name__, True, False
    if delivered:
        record_audit("backchannel_logout.delivered", user_id=job.sub, client_id=job.client_id,
                     sid=job.sid, reason=job.reason, attempts=job.attempt)
        return None
    if retry and job.attempt < settings.attempts:
        log.info("back-channel logout to %s: %s, try %d failed", job.client_id, outcome, job.attempt)
        return settings.backoff * 2 ** (job.attempt - 1)
    record_audit("backchannel_logout.failed", user_id=job.sub, client_id=job.client_id, sid=job.sid,
                 reason=job.reason, attempts=job.attempt, outcome=str(outcome))
    return None


def outbox(app) -> BackgroundQueue:
    return app.extensions[EXTENSION]


# -- wiring ------------------------------------------------------------------------------------

def init_app(app, op) -> None:
    """Every ended session revokes its refresh tokens and, when enabled, notifies its clients;
    the serving app sweeps for expired sessions in a background thread."""
    app.extensions[EXTENSION] = BackgroundQueue(app, "backchannel-logout", op.settings.backchannel_logout.workers,
                                                partial(_deliver, op), asdict, lambda data: Delivery(**data))
    op.sessions.end_hooks.append(_session_ended(app, op))
    interval = op.settings.backchannel_logout.sweep_interval
    if not op.settings.backchannel_logout.enabled or not interval:
        return
    started, lock = [], threading.Lock()

    def start_sweeper():  # only a process that serves requests sweeps (not each CLI command)
        if not started:
            with lock:
                if not started:
                    started.append(threading.Thread(target=_sweeper, args=(app, op, interval),
                                                    name="session-sweeper", daemon=True))
                    started[0].start()

    op.serving_hooks.append(start_sweeper)


def _sweeper(app, op, interval: int) -> None:
    while not outbox(app).wait_stopped(interval):
        try:
            with app.app_context():
                if op.store.add("sess-sweep-lock", 1, interval * 0.9):  # one sweep per interval for all workers
                    sweep(op)
        except Exception:  # noqa: BLE001 - try again next time; the store or database may be back
            log.exception("session sweep failed")
