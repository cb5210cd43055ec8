"""Contact points: a user proves an email address or phone number is theirs with a code;
and what every account page shares (the signed-in user, step-up, notices).

Only verified contact points serve as factors, so a typo'd or someone else's address
can never receive sign-in codes. The pages need the IdP session of a signed-in user;
`oidc-provider users verify` marks contact points for operators. A new address or number
replaces the old one only once a code sent to it is confirmed, and only after a fresh
sign-in (step-up, authn/reauth.py); the old address is told.
"""

from __future__ import annotations

import functools
import logging
import time

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for

from ..authn import reauth
from ..authn.factors import Verification
from ..authn.otp import SendRefused, mask_email, mask_phone
from .. import cookies
from ..delivery import EMAIL_ADDRESS, PHONE_NUMBER, DeliveryError
from ..errors import MESSAGES, error_page
from ..extensions import db
from ..models import User, record_audit

log = logging.getLogger(__name__)
bp = Blueprint("account", __name__, url_prefix="/account")

CHANNELS = ("email", "phone")


def _op():
    return current_app.extensions["op"]


def signed_in():
    """(IdP session, user) of the browser's signed-in user, or (None, None)."""
    session = _op().sessions.load(cookies.get(cookies.SESSION))
    user = db.session.get(User, session.sub) if session else None
    return (session, user) if user and not user.disabled else (None, None)


def user_and_factor(factor_id: str):
    """For the account pages of one factor: (user, factor, None), or (None, None, an error page)
    when the factor is not enabled (404) or nobody is signed in (401)."""
    factor = _op().factors.get(factor_id)
    if factor is None:
        return None, None, error_page("not_found", 404)
    _session, user = signed_in()
    if user is None:
        return None, None, error_page("signed_out", 401)
    return user, factor, None


def when(at: float | None) -> str | None:
    """A time for the account pages."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at)) if at else None


# -- step-up and notices, for every account page ------------------------------------------------

def step_up(session, user, back: str | None = None, json: bool = False):
    """None when the session is fresh enough for a sensitive change (authn/reauth.py); else the
    answer that starts a step-up returning to `back` (default: this GET page). JSON callers get a
    401 to show instead: a script cannot follow a sign-in."""
    op = _op()
    if reauth.is_fresh(op, session, user):
        return None
    if json:
        return json_message("reauth_required", 401)
    return reauth.start(op, session, user, back or request.full_path.rstrip("?"))


def json_message(message_id: str, status: int):
    """A catalogued message as JSON, for the pages' scripts (webauthn.js)."""
    response = jsonify(error=message_id, message=MESSAGES[message_id])
    response.status_code = status
    return response


def sensitive(back=None, json: bool = False):
    """A view that changes how the account signs in: a signed-in user with a fresh sign-in.
    `back` (an endpoint, given the view's arguments; default: the page itself) is where the
    step-up returns, for the user to do the change again."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            session, user = signed_in()
            if user is None:
                return json_message("signed_out", 401) if json else error_page("signed_out", 401)
            target = url_for(back, **kwargs) if back else None
            return step_up(session, user, target, json) or view(*args, **kwargs)

        return wrapper

    return decorate


def notify(user, event: str, **details) -> None:
    """Tell the account's owner about a security change by email (templates/email/security_change,
    whose wording is chosen by `event`). Only a confirmed address is written to; a failed
    delivery never undoes the change."""
    if not (user.email and user.email_verified):
        return
    context = {"event": event, "person": user.name or user.username, "at": when(time.time()),
               "ip": request.remote_addr, **details}
    try:
        _op().delivery.send_email(user.email, "security_change", context)
    except DeliveryError as exc:
        log.warning("security notice %s for user %s not delivered: %s", event, user.id, exc)


def changed(user, event: str, audit: bool = True, **details) -> None:
    """A sensitive change was made: audited (unless the service did) and mailed to the user."""
    if audit:
        record_audit(event, user_id=user.id, ip=request.remote_addr, **details)
    notify(user, event, **{key: value for key, value in details.items() if isinstance(value, (str, int))})


def _contact(user, channel):
    """(destination, verified) of a channel."""
    if channel == "email":
        return user.email, user.email_verified
    return user.phone_number, user.phone_number_verified


def _render(user, status=200, error=None, sent=None):
    rows = []
    for channel in CHANNELS:
        destination, verified = _contact(user, channel)
        rows.append({"channel": channel, "destination": destination, "verified": verified})
    return render_template("account_contact.html", rows=rows, sent=sent, error_id=error,
                           error=MESSAGES.get(error) if error else None, done=request.args.get("done")), status


@bp.get("/contact")
def contact():
    session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    return _render(user)


@bp.post("/contact/<channel>/send")
def send(channel: str):
    session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    destination, verified = _contact(user, channel) if channel in CHANNELS else (None, True)
    if not destination or verified:
        return redirect(url_for("account.contact"), code=303)
    return _send_code(session, user, channel, destination, "verify")


@bp.post("/contact/<channel>/change")
@sensitive(back="account.contact")
def change(channel: str):
    """A new address or number: a code goes to it; it replaces the old one once confirmed."""
    session, user = signed_in()
    if channel not in CHANNELS:
        return error_page("not_found", 404)
    value = (request.form.get("value") or "").strip()[:320]
    value = value.lower() if channel == "email" else value.replace(" ", "")
    if not (EMAIL_ADDRESS if channel == "email" else PHONE_NUMBER).fullmatch(value):
        return _render(user, 400, "contact_invalid_" + channel)
    if value == _contact(user, channel)[0]:
        return redirect(url_for("account.contact"), code=303)
    if channel == "email" and User.find_by_login(value) is not None:
        # Another account has it: the same page as for a free address, and nothing is sent.
        return _render(user, sent={"channel": channel, "to": mask_email(value), "change": True})
    return _send_code(session, user, channel, value, "change")


def _send_code(session, user, channel: str, destination: str, purpose: str):
    """Send a code to `destination` to confirm it (purpose "verify": the account's own; "change":
    a new one); rate limits and cool-downs as for sign-in codes."""
    op = _op()
    factor = f"{purpose}-{channel}"
    try:
        op.otp.check_send_allowed(factor=factor, binding=session.sid, user_id=user.id, destination=destination,
                                  ip=request.remote_addr)
        issued = op.otp.issue(factor=factor, binding=session.sid, user_id=user.id, destination=destination,
                              secret=op.otp.new_code(), lifetime=op.settings.otp.lifetime)
    except SendRefused as refused:
        return _render(user, 429, refused.message_id)
    minutes = max(1, op.settings.otp.lifetime // 60)
    try:
        if channel == "email":
            op.delivery.send_email(destination, "verify_email", {"code": issued.secret, "minutes": minutes})
        else:
            op.delivery.send_sms(destination, f"{issued.secret} is your code to confirm this phone number.")
    except DeliveryError as exc:
        op.otp.undo_send(issued, factor=factor, binding=session.sid)
        current_app.logger.warning("verification message failed: %s", exc)
        return _render(user, 503, "delivery_failed")
    pending = {"challenge": issued.challenge, "destination": destination}
    op.store.set(f"{purpose}-pending:{session.sid}:{channel}", pending, op.settings.otp.lifetime)
    return _render(user, sent={"channel": channel, "to": _masked(channel, destination), "change": purpose == "change"})


def _check_code(session, user, channel: str, purpose: str) -> tuple[Verification, dict]:
    """The code the user typed, checked against the one _send_code sent for `purpose`:
    (the result, what was pending: its destination)."""
    op = _op()
    pending = op.store.get(f"{purpose}-pending:{session.sid}:{channel}") or {}
    result = op.otp.verify(pending.get("challenge"), factor=f"{purpose}-{channel}", binding=session.sid,
                           user_id=user.id, secret=(request.form.get("code") or "")[:32])
    return result, pending


def _masked(channel: str, destination: str) -> str:
    return mask_email(destination) if channel == "email" else mask_phone(destination)


@bp.post("/contact/<channel>/confirm")
def confirm(channel: str):
    session, user = signed_in()
    if user is None or channel not in CHANNELS:
        return error_page("signed_out", 401)
    result, pending = _check_code(session, user, channel, "verify")
    if result.ok and pending["destination"] != _contact(user, channel)[0]:
        result = Verification(False, "the address changed since the code was sent")
    if not result.ok:
        record_audit("contact.verification_failed", user_id=user.id, ip=request.remote_addr, channel=channel,
                     reason=result.reason)
        return _render(user, 401, "code_failed", sent={"channel": channel, "to": ""})
    if channel == "email":
        user.email_verified = True
    else:
        user.phone_number_verified = True
    db.session.commit()
    record_audit("contact.verified", user_id=user.id, ip=request.remote_addr, channel=channel)
    return redirect(url_for("account.contact"), code=303)


@bp.post("/contact/<channel>/change/confirm")
@sensitive(back="account.contact")
def confirm_change(channel: str):
    session, user = signed_in()
    if channel not in CHANNELS:
        return error_page("not_found", 404)
    result, pending = _check_code(session, user, channel, "change")
    new = pending.get("destination")
    if result.ok and channel == "email" and User.find_by_login(new) is not None:
        result = Verification(False, "the address belongs to another account")
    if not result.ok:
        record_audit("contact.change_failed", user_id=user.id, ip=request.remote_addr, channel=channel,
                     reason=result.reason)
        return _render(user, 401, "code_failed", sent={"channel": channel, "to": "", "change": True})
    shown = _masked(channel, new)
    old = _contact(user, channel)[0]
    notify(user, "contact.changed", channel=channel, shown=shown)  # to the old address, while it is the one
    if channel == "email":
        user.email, user.email_verified = new, True
    else:
        user.phone_number, user.phone_number_verified = new, True
    db.session.commit()
    record_audit("contact.changed", user_id=user.id, ip=request.remote_addr, channel=channel,
                 old=_masked(channel, old) if old else None, new=shown)
    if channel == "email" and old:
        notify(user, "contact.changed", channel=channel, shown=shown)  # and to the new one
    return redirect(url_for("account.contact", done="changed"), code=303)
