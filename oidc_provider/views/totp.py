"""TOTP authenticator apps: enrollment (QR code), confirmation with a first code, removal.

The pages need the browser's signed-in user (account.signed_in) and exist only when the
`totp` factor is enabled. The rules (one app per user, replay, try limits) live in the
factor (authn/factors/totp.py); these views only show and forward.
"""

from __future__ import annotations


from flask import Blueprint, current_app, redirect, render_template, request, url_for

from ..errors import MESSAGES
from ..models import record_audit
from .account import user_and_factor, when

bp = Blueprint("totp", __name__, url_prefix="/account/security/totp")


def _factor():
    return current_app.extensions["op"].factors.get("totp")


def _enroll_page(user, factor, pending, error=None, status=200):
    return render_template("totp_enroll.html", error=MESSAGES[error] if error else None,
                           replacing=factor.enrolled(user) is not None,
                           **factor.enrollment_details(user, pending)), status


@bp.get("")
def show():
    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    app = factor.enrolled(user)
    return render_template("totp_status.html", enrolled=app is not None,
                           since=when(app.created_at) if app else None,
                           last_used=when(app.last_used_at) if app else None,
                           done=request.args.get("done"))


@bp.post("/enroll")
def enroll():
    """A new seed (the page after shows it); the app in use keeps working until confirmed."""
    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    factor.start_enrollment(user)
    return redirect(url_for("totp.enrollment"), code=303)


@bp.get("/enroll")
def enrollment():
    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    pending = factor.pending(user)
    if pending is None:
        return redirect(url_for("totp.show"), code=303)
    return _enroll_page(user, factor, pending)


@bp.post("/confirm")
def confirm():
    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    pending = factor.pending(user)
    if pending is None:
        return render_template("totp_status.html", enrolled=factor.enrolled(user) is not None,
                               error=MESSAGES["totp_setup_expired"]), 400
    replacing = factor.enrolled(user) is not None
    result = factor.confirm_enrollment(user, pending, (request.form.get("code") or "")[:factor.max_response])
    if not result.ok:
        record_audit("totp.enrollment_failed", user_id=user.id, ip=request.remote_addr, reason=result.reason)
        return _enroll_page(user, factor, pending, error="totp_failed", status=401)
    record_audit("totp.replaced" if replacing else "totp.enrolled", user_id=user.id, ip=request.remote_addr)
    return redirect(url_for("totp.show", done="enrolled"), code=303)


@bp.post("/remove")
def remove():
    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    if factor.remove(user):
        record_audit("totp.removed", user_id=user.id, ip=request.remote_addr)
    return redirect(url_for("totp.show", done="removed"), code=303)
