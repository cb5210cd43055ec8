"""My MFA settings: one page that lists how the account signs in and leads to every change.

GET /account/security shows the enrolled factors (name, added, last used), the email and
phone, the recovery codes left (warned when few), the remembered devices ("remember this
device" trust) and links to the pages that add each kind of factor (totp.py, webauthn.py,
push.py, account.py). Removing a factor goes through one confirmation page for every kind.

Sensitive changes need a fresh sign-in (authn/reauth.py); GET /account/security/reauth is
where that step-up comes back. Forgetting a remembered device only ever takes trust away,
so it needs no step-up. Every change is audited and mailed to the user (account.changed).

The last second factor: when the user's policy (their own, else the global one) is
`always`, removing the factor without which they could no longer do MFA is refused (they
would be locked out of every sign-in); otherwise the confirmation page warns that the
account is then protected by one factor only. Removing the last way to start a sign-in is
always refused.
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from .. import cookies
from ..authn import reauth
from ..authn.devices import device_hash
from ..authn.factors.webauthn import KIND_IDS
from ..errors import error_page
from ..extensions import db
from ..models import Authenticator, UserDevice, confirmed_authenticators, record_audit
from .account import changed, signed_in, step_up, when

bp = Blueprint("account_security", __name__, url_prefix="/account/security")

REMOVABLE = ("totp", "push", *KIND_IDS)  # recovery codes go as a set, on their own page
REFUSED = ("last_sign_in", "mfa_required")
# The page that manages each kind (rename, replace, add another).
MANAGE = {"totp": "totp.show", "push": "push.devices", **{kind: "webauthn.show" for kind in KIND_IDS}}


def _op():
    return current_app.extensions["op"]


# -- removing a factor (every kind the same way) ---------------------------------------------------

def removal_verdict(op, user, what) -> str | None:
    """Whether removing `what` (an Authenticator, or a factor id) is refused or warned about."""
    if not reauth.can_sign_in(op, user, without=what):
        return "last_sign_in"
    if reauth.can_do_mfa(op, user) and not reauth.can_do_mfa(op, user, without=what):
        return "mfa_required" if reauth.mfa_required(op, user) else "last_second_factor"
    return None


def remove_authenticator(op, user, authenticator: Authenticator) -> None:
    """Remove one of the user's factors; audited and mailed like every change."""
    details = {"factor": authenticator.kind, "name": authenticator.name, "credential": authenticator.id}
    if authenticator.kind == "totp":
        op.factors.get("totp").remove(user)
        changed(user, "totp.removed", **details)
    elif authenticator.kind == "push":
        op.factors.get("push").remove(user, authenticator.lookup)  # audits push.device_removed
        changed(user, "push.device_removed", audit=False, **details)
    else:
        db.session.delete(authenticator)
        db.session.commit()
        changed(user, "webauthn.removed", **details)


def own_authenticator(user, authenticator_id: int) -> Authenticator | None:
    """The user's own removable factor with this id; another account's is simply not found."""
    found = db.session.get(Authenticator, authenticator_id)
    if found is None or found.user_id != user.id or not found.confirmed or found.kind not in REMOVABLE:
        return None
    return found if _op().factors.get(found.kind) is not None else None


def _confirm_page(user, authenticator, status=200):
    verdict = removal_verdict(_op(), user, authenticator)
    return render_template("account_remove.html", factor=authenticator, verdict=verdict, refused=verdict in REFUSED,
                           created=when(authenticator.created_at),
                           last_used=when(authenticator.last_used_at)), status


def _removal(authenticator_id: int):
    """(session, user, the factor, None) for the removal pages, or (None, None, None, an error
    page): nobody signed in (401), or not this user's removable factor (404)."""
    session, user = signed_in()
    if user is None:
        return None, None, None, error_page("signed_out", 401)
    authenticator = own_authenticator(user, authenticator_id)
    if authenticator is None:
        return None, None, None, error_page("not_found", 404)
    return session, user, authenticator, None


@bp.get("/factors/<int:authenticator_id>/remove")
def confirm_remove(authenticator_id: int):
    session, user, authenticator, failure = _removal(authenticator_id)
    return failure or step_up(session, user) or _confirm_page(user, authenticator)


@bp.post("/factors/<int:authenticator_id>/remove")
def remove(authenticator_id: int):
    session, user, authenticator, failure = _removal(authenticator_id)
    if failure:
        return failure
    back = url_for("account_security.confirm_remove", authenticator_id=authenticator_id)
    failure = step_up(session, user, back)
    if failure:
        return failure
    if removal_verdict(_op(), user, authenticator) in REFUSED:
        record_audit("factor.removal_refused", user_id=user.id, ip=request.remote_addr, factor=authenticator.kind,
                     credential=authenticator.id)
        return _confirm_page(user, authenticator, 409)
    remove_authenticator(_op(), user, authenticator)
    return redirect(url_for("account_security.show", done="removed"), code=303)


# -- the page ---------------------------------------------------------------------------------------

def _methods(op, user) -> list[dict]:
    rows = []
    for authenticator in confirmed_authenticators(user.id):
        if authenticator.kind not in REMOVABLE or op.factors.get(authenticator.kind) is None:
            continue
        rows.append({"id": authenticator.id, "kind": authenticator.kind, "name": authenticator.name,
                     "created": when(authenticator.created_at), "last_used": when(authenticator.last_used_at),
                     "manage": url_for(MANAGE[authenticator.kind])})
    return rows


def _remembered(op, user) -> list[dict]:
    here = cookies.get(cookies.DEVICE)
    here = device_hash(here) if here and len(here) <= 64 else None
    return [{"id": device.id, "browser": device.user_agent, "ip": device.last_ip, "last_seen": when(device.last_seen),
             "until": when(device.trusted_until), "here": device.device_hash == here}
            for device in op.devices.list(user.id) if device.trusted]


@bp.get("")
def show():
    session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    op = _op()
    recovery = op.factors.get("recovery-code")
    left = recovery.remaining(user) if recovery else 0
    return render_template(
        "account_security.html", hub=True, user=user, methods=_methods(op, user), remembered=_remembered(op, user),
        recovery={"enabled": recovery is not None, "left": left, "low": recovery is not None and recovery.is_low(left)},
        has_password=bool(user.password_hash), totp=op.factors.get("totp") is not None,
        totp_enrolled=bool(confirmed_authenticators(user.id, "totp")),
        webauthn=any(op.factors.get(kind) for kind in KIND_IDS), push=op.factors.get("push") is not None,
        trust_enabled=op.settings.trusted_devices.enabled, can_do_mfa=reauth.can_do_mfa(op, user),
        mfa_required=reauth.mfa_required(op, user), fresh=reauth.is_fresh(op, session, user),
        reauth_minutes=max(1, op.settings.account.reauth_max_age // 60), done=request.args.get("done"),
    )


# -- the step-up's way back ---------------------------------------------------------------------

@bp.get("/reauth")
def reauth_done():
    """The redirect_uri of the account client: the step-up's authorization response."""
    session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    try:
        target = reauth.finish(_op(), session, user, request.args)
    except reauth.StepUpFailed as failed:
        return render_template("account_step_up_failed.html", problem=failed.message_id), 400
    return redirect(target, code=303)


# -- remembered devices ------------------------------------------------------------------------------

@bp.post("/devices/<int:device_id>/forget")
def forget_device(device_id: int):
    """Take "remember this device" trust away: only ever makes sign-ins stricter, so no step-up."""
    _session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    device = db.session.get(UserDevice, device_id)
    if device is None or device.user_id != user.id:
        return error_page("not_found", 404)
    _op().devices.revoke(device)
    record_audit("device.revoked", user_id=user.id, ip=request.remote_addr, actor="user", device=device.id)
    return redirect(url_for("account_security.show", done="forgotten"), code=303)


@bp.post("/devices/forget")
def forget_all_devices():
    _session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    op = _op()
    trusted = [device for device in op.devices.list(user.id) if device.trusted]
    for device in trusted:
        op.devices.revoke(device)
    record_audit("device.revoked", user_id=user.id, ip=request.remote_addr, actor="user",
                 devices=[device.id for device in trusted])
    return redirect(url_for("account_security.show", done="forgotten"), code=303)

