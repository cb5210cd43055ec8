"""Self-service password reset from the sign-in page: an emailed link that never goes around MFA.

"Forgot password?" asks for a username or email address and answers the same whether or not
an account matches: the limits only a real account can reach (per account and address) are
silent, a failed delivery too. An account with a confirmed email address gets a single-use
link: an opaque token, keyed-hashed at rest in the ephemeral store (authn/otp.py), valid
`password_reset.link_lifetime`, bound to this login *and to this browser*: opened in another
browser it changes nothing and says where to open it (unlike a magic link, whose other browser
may confirm for the original: a reset has to go on where the new password is typed).

Following the link proves the mailbox, nothing more: a user with any factor outside the email
flow (TOTP, SMS, WebAuthn, push, recovery codes...) must then pass one of them, through the
sign-in's own factor steps, before a new password can be chosen. Setting it ends every
refresh token (and the access tokens issued with them), every IdP session and every trusted
device of the user; the reset is audited and the user told by email. It signs nobody in: the
login page comes back and asks for the new password (and what the login needs besides). A
locked account cannot be reset until the lock ends, and no step of a reset unlocks it.
"""

from __future__ import annotations

import logging
import secrets
import time

from flask import current_app, redirect, render_template, request, url_for

from ..authn import interaction as interactions
from ..authn.chain import reset_factors
from ..authn.factors.password import acceptable_password, hash_password
from ..authn.otp import SendRefused
from .. import cookies
from ..delivery import DeliveryError
from ..errors import error_page
from ..extensions import db
from ..models import RefreshToken, User, record_audit
from . import interaction as steps

log = logging.getLogger(__name__)

FACTOR = "password-reset"  # the one-time secret's kind in the store (never a sign-in factor)
bp = steps.bp  # steps of the login interaction: the same blueprint, the same pages' machinery


def enabled() -> bool:
    op = steps._op()
    return op.settings.password_reset.enabled and op.factors.get("password") is not None


def verifying(record) -> bool:
    """Whether the login's factor steps serve a reset now (the link was followed)."""
    return (record.get("reset") or {}).get("state") == "verify"


def _user(record):
    user = db.session.get(User, record["reset"].get("user_id") or "")
    return user if user is not None and not user.disabled else None


def _choices(user) -> list:
    return reset_factors(steps._op().factors.available_for(user))


# -- the pages ---------------------------------------------------------------------------------

def render(record, client, error=None, status=200):
    """The page of the reset under way in this login."""
    reset = record["reset"]
    minutes = steps._op().settings.password_reset.link_lifetime // 60
    if reset["state"] == "sent":
        return steps._page("reset_sent.html", record, client, status, error, login=reset["login"], minutes=minutes)
    user = _user(record)
    if user is None:
        return error_page("reset_link_invalid", 400)
    choices = _choices(user) if reset["state"] == "verify" else []
    if choices:  # (a factor removed since the link leaves none: then the password comes next)
        return steps._page("reset_verify.html", record, client, status, error, choices=choices)
    return steps._page("reset_password.html", record, client, status, error, username=user.username)


def _ask(record, client, login="", error=None, status=200):
    return steps._page("reset_request.html", record, client, status, error, login=login)


@bp.get("/interaction/<uid>/reset")
@steps.interaction_view
def reset_ask(record, client):
    if not enabled():
        return error_page("not_found", 404)
    return _ask(record, client, steps._first(record, "login_hint") or "")


@bp.post("/interaction/<uid>/reset")
@steps.interaction_view
def reset_send(record, client):
    """Send a link if an account matches; the answer is the same either way."""
    if not enabled():
        return error_page("not_found", 404)
    op = steps._op()
    login = (request.form.get("login") or "").strip()[:320]
    if not login:
        return _ask(record, client, error="login_missing", status=400)
    try:  # the cool-down and the per-IP limit: the same for every name asked about
        op.otp.check_send_allowed(factor=FACTOR, binding=record["uid"], user_id=None, destination=None,
                                  ip=request.remote_addr)
    except SendRefused as refused:
        return _ask(record, client, login, refused.message_id, 429)
    user = User.find_by_login(login)
    challenge = _send_link(op, record, client, user)
    for key in ("pending", "link_confirmed"):
        record.pop(key, None)
    record["reset"] = {"state": "sent", "login": login, "challenge": challenge,
                       "user_id": user.id if challenge else None}
    response = redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    interactions.extend(record, op.settings.password_reset.link_lifetime, response)
    return response


def _send_link(op, record, client, user) -> str | None:
    """Email the link; the challenge's id, or None when nothing was sent (no such account, no
    confirmed address, locked, over a per-account limit, delivery failed: all silent)."""
    if user is None or user.disabled or not (user.email and user.email_verified) or op.lockout.is_locked(user):
        return None
    try:
        op.otp.check_send_allowed(factor=f"{FACTOR}:account", binding=record["uid"], user_id=user.id,
                                  destination=user.email, ip=None)
    except SendRefused as refused:
        log.info("password reset for user %s not sent: %s", user.id, refused.message_id)
        return None
    lifetime = op.settings.password_reset.link_lifetime
    issued = op.otp.issue(factor=FACTOR, binding=record["uid"], user_id=user.id, destination=user.email,
                          secret=op.otp.new_link_token(), lifetime=lifetime)
    url = f"{op.settings.issuer_url}{url_for('interaction.reset_link', token=issued.secret)}"
    try:
        op.delivery.send_email(user.email, "password_reset",
                               {"url": url, "minutes": lifetime // 60, "username": user.username})
    except DeliveryError as exc:
        op.otp.undo_send(issued, factor=FACTOR, binding=record["uid"])
        current_app.logger.warning("password reset link not delivered: %s", exc)
        return None
    record_audit("password_reset.requested", user_id=user.id, client_id=client.client_id, ip=request.remote_addr)
    return issued.challenge


@bp.post("/interaction/<uid>/reset/cancel")
@steps.interaction_view
def reset_cancel(record, _client):
    """Back to signing in."""
    for key in ("reset", "pending"):
        record.pop(key, None)
    interactions.save(record)
    return redirect(url_for("interaction.show", uid=record["uid"]), code=303)


# -- the emailed link ----------------------------------------------------------------------------

def _link_target(token: str):
    """((interaction, challenge, its record), None) for a live link of a reset under way in this
    browser, else (None, an error page). Consumes nothing."""
    if not enabled():
        return None, error_page("not_found", 404)
    found = steps._op().otp.find_by_link(token)
    if found is None or found[1]["factor"] != FACTOR:
        return None, error_page("reset_link_invalid", 400)
    challenge, issued = found
    record, problem = interactions.load_for_browser(issued["binding"])
    if problem == "interaction_browser":
        return None, error_page("reset_other_browser", 400)
    reset = (record or {}).get("reset") or {}
    if problem or reset.get("state") != "sent" or reset.get("challenge") != challenge:
        return None, error_page("reset_link_invalid", 400)
    return (record, challenge, issued), None


@bp.get("/password-reset/<token>")
def reset_link(token: str):
    """A GET only shows a button: mail scanners that fetch links must not use them up."""
    _target, failure = _link_target(token)
    return failure or render_template("reset_link.html", action=url_for("interaction.reset_link_confirm", token=token))


@bp.post("/password-reset/<token>")
def reset_link_confirm(token: str):
    target, failure = _link_target(token)
    if failure:
        return failure
    record, challenge, issued = target
    op = steps._op()
    user = db.session.get(User, issued["user_id"])
    if user is None or user.disabled:
        return error_page("reset_link_invalid", 400)
    if op.lockout.is_locked(user):  # checked before the link is used: it still works once the lock ends
        return error_page("reset_locked", 403)
    result = op.otp.verify(challenge, factor=FACTOR, binding=record["uid"], user_id=user.id, secret=token)
    if not result.ok:
        record_audit("password_reset.link_refused", user_id=user.id, client_id=record["client_id"],
                     ip=request.remote_addr, reason=result.reason)
        return error_page("reset_link_invalid", 400)
    second = [factor.id for factor in _choices(user)]
    record.pop("pending", None)
    # the right to set the password once: taken atomically, so two submits cannot both apply
    ticket = secrets.token_urlsafe(16)
    op.store.set(f"password-reset:{ticket}", user.id, op.settings.lifetimes.interaction + 3600)
    record["reset"] = {"state": "verify" if second else "password", "user_id": user.id, "factors": [],
                       "ticket": ticket}
    record_audit("password_reset.link_followed", user_id=user.id, client_id=record["client_id"],
                 ip=request.remote_addr, second_factors=second)
    response = redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    interactions.extend(record, op.settings.lifetimes.interaction, response)
    return response


# -- the second factor: the sign-in's own steps ---------------------------------------------------

def start_factor(record, client, factor):
    """`/start` while a reset is verifying: only the user's factors outside the email flow."""
    user = _user(record)
    if user is None or factor not in _choices(user):
        return steps._render_step(record, client, error="factor_not_allowed", status=400)
    return steps._send(record, client, factor, user, user.username)


def factor_passed(record, client, user, factor):
    """A factor step of the reset succeeded (called instead of signing in)."""
    record.pop("pending", None)
    record.pop("link_confirmed", None)
    reset = record["reset"]
    if user.id != reset["user_id"] or factor not in _choices(user):
        interactions.save(record)
        return steps._render_step(record, client, error="factor_not_allowed", status=400)
    reset.update(state="password", factors=[factor.id])
    interactions.save(record)
    record_audit("factor.succeeded", user_id=user.id, client_id=client.client_id, ip=request.remote_addr,
                 factor=factor.id, purpose="password_reset")
    return redirect(url_for("interaction.show", uid=record["uid"]), code=303)


# -- the new password ----------------------------------------------------------------------------

@bp.post("/interaction/<uid>/reset/password")
@steps.interaction_view
def set_password(record, client):
    reset = record.get("reset") or {}
    if reset.get("state") not in ("verify", "password"):  # the link was not followed in this login
        return redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    op = steps._op()
    user = _user(record)
    if user is None:
        return error_page("reset_link_invalid", 400)
    if op.lockout.is_locked(user):
        return error_page("reset_locked", 403)
    if _choices(user) and not reset.get("factors"):  # a factor set up since the link: it must be passed too
        reset["state"] = "verify"
        interactions.save(record)
        return redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    password = request.form.get("password") or ""
    if not acceptable_password(password):
        return render(record, client, "password_length", 400)
    if password != (request.form.get("repeat") or ""):
        return render(record, client, "password_mismatch", 400)
    if op.store.take(f"password-reset:{reset.get('ticket')}") != user.id:
        return error_page("reset_link_invalid", 400)  # applied already (a concurrent submit)
    user.password_hash = hash_password(password)
    db.session.commit()
    ended = end_sign_ins(op, user)
    record_audit("password.reset", user_id=user.id, client_id=client.client_id, ip=request.remote_addr,
                 factors=["email", *reset.get("factors", [])], **ended)
    _tell(op, user)
    record.pop("reset")
    record["notice"] = "password_changed"
    interactions.save(record)
    response = redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    cookies.delete(response, cookies.SESSION)
    return response


def end_sign_ins(op, user) -> dict:
    """Whoever knew the old password may be signed in somewhere: end the user's refresh tokens
    (and the access tokens issued with them), IdP sessions and trusted devices."""
    families = db.session.execute(
        db.select(RefreshToken.family_id).filter_by(user_id=user.id).where(RefreshToken.revoked_at.is_(None))
        .distinct()).scalars().all()
    for family in families:
        op.tokens.revoke_family(family)
    op.sessions.end_all(user.id)
    trusted = [device for device in op.devices.list(user.id) if device.trusted_until]
    for device in trusted:
        op.devices.revoke(device)
    return {"token_families_revoked": len(families), "trusted_devices_revoked": len(trusted)}


def _tell(op, user) -> None:
    """The security notice; a failed delivery is logged and changes nothing."""
    if not user.email:
        return
    try:
        op.delivery.send_email(user.email, "password_changed", {
            "username": user.username, "ip": request.remote_addr or "unknown",
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    except DeliveryError as exc:
        log.warning("password change notice for user %s not delivered: %s", user.id, exc)
