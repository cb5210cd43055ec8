"""TOTP authenticator apps: enrollment (QR code), confirmation with a first code, removal.

The pages need the browser's signed-in user (account.signed_in) and exist only when the
`totp` factor is enabled. The rules (one app per user, replay, try limits) live in the
factor (authn/factors/totp.py); these views only show and forward. Starting, showing and
confirming an enrollment, and removing the app, need a fresh sign-in (account.sensitive):
the seed is only ever shown to a session that just proved it is the user's.
"""

from __future__ import annotations


from flask import Blueprint, current_app, redirect, render_template, request, url_for

from ..errors import MESSAGES
from ..models import record_audit
from .account import changed, sensitive, user_and_factor, when

bp = Blueprint("totp", __name__, url_prefix="/account/security/totp")


def _factor():
    return current_app.extensions["op"].factors.get("totp")


def _status(user, factor, status=200, **values):
    app = factor.enrolled(user)
    return render_template("totp_status.html", enrolled=app is not None, app_id=app.id if app else None,
                           since=when(app.created_at) if app else None,
                           last_used=when(app.last_used_at) if app else None, **values), status


def _enroll_page(user, factor, pending, error=None, status=200):
    return render_template("totp_enroll.html", error=MESSAGES[error] if error else None,
                           replacing=factor.enrolled(user) is not None,
                           **factor.enrollment_details(user, pending)), status


@bp.get("")
def show():
    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    return _status(user, factor, done=request.args.get("done"))


@bp.post("/enroll")
@sensitive(back="totp.show")
def enroll():
    """A new seed (the page after shows it); the app in use keeps working until confirmed."""
    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    factor.start_enrollment(user)
    return redirect(url_for("totp.enrollment"), code=303)


@bp.get("/enroll")
@sensitive()
def enrollment():
    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    pending = factor.pending(user)
    if pending is None:
        return redirect(url_for("totp.show"), code=303)
    return _enroll_page(user, factor, pending)


@bp.post("/confirm")
@sensitive(back="totp.enrollment")
def confirm():
    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    pending = factor.pending(user)
    if pending is None:
        return _status(user, factor, 400, error=MESSAGES["totp_setup_expired"])
    replacing = factor.enrolled(user) is not None
    result = factor.confirm_enrollment(user, pending, (request.form.get("code") or "")[:factor.max_response])
    if not result.ok:
        record_audit("totp.enrollment_failed", user_id=user.id, ip=request.remote_addr, reason=result.reason)
        return _enroll_page(user, factor, pending, error="totp_failed", status=401)
    changed(user, "totp.replaced" if replacing else "totp.enrolled")
    return redirect(url_for("totp.show", done="enrolled"), code=303)


@bp.post("/remove")
@sensitive(back="totp.show")
def remove():
    """The same rules as every removal (account_security.remove): never the last second factor
    when the policy demands MFA."""
    from .account_security import REFUSED, remove_authenticator, removal_verdict

    user, factor, failure = user_and_factor("totp")
    if failure:
        return failure
    app = factor.enrolled(user)
    if app is not None:
        if removal_verdict(current_app.extensions["op"], user, app) in REFUSED:
            return redirect(url_for("account_security.confirm_remove", authenticator_id=app.id), code=303)
        remove_authenticator(current_app.extensions["op"], user, app)
    return redirect(url_for("totp.show", done="removed"), code=303)
