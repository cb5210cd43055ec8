"""Contact points: a user proves an email address or phone number is theirs with a code.

Only verified contact points serve as factors, so a typo'd or someone else's address
can never receive sign-in codes. The pages need the IdP session of a signed-in user;
`oidc-provider users verify` marks contact points for operators.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from ..authn.factors import Verification
from ..authn.otp import SendRefused, mask_email, mask_phone
from ..authn.session import COOKIE as SESSION_COOKIE
from ..delivery import DeliveryError
from ..errors import MESSAGES, error_page
from ..extensions import db
from ..models import User, record_audit

bp = Blueprint("account", __name__, url_prefix="/account")

CHANNELS = ("email", "phone")


def _op():
    return current_app.extensions["op"]


def signed_in():
    """(IdP session, user) of the browser's signed-in user, or (None, None)."""
    session = _op().sessions.load(request.cookies.get(SESSION_COOKIE))
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
    return render_template("account_contact.html", rows=rows, sent=sent,
                           error=MESSAGES[error] if error else None), status


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
    op = _op()
    factor = f"verify-{channel}"
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
    op.store.set(f"verify-pending:{session.sid}:{channel}", pending, op.settings.otp.lifetime)
    shown = mask_email(destination) if channel == "email" else mask_phone(destination)
    return _render(user, sent={"channel": channel, "to": shown})


@bp.post("/contact/<channel>/confirm")
def confirm(channel: str):
    session, user = signed_in()
    if user is None or channel not in CHANNELS:
        return error_page("signed_out", 401)
    op = _op()
    pending = op.store.get(f"verify-pending:{session.sid}:{channel}") or {}
    result = op.otp.verify(pending.get("challenge"), factor=f"verify-{channel}", binding=session.sid,
                           user_id=user.id, secret=(request.form.get("code") or "")[:32])
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
