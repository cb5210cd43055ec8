"""Setting up a second factor in the middle of a login, for users who have none.

When a login needs MFA (acr_values, require_mfa, the claims parameter, a rule or a policy) and
the user has no second factor, `enrollment.at_login` turns the refusal ("Missing: ...") into
an offer of the `enrollment.factors` that would bring the login to its level. An admin's
`mfa_enrollment_required` flag asks the same of one user right after the first factor, even
with `at_login` off and when the login itself needs one factor only.

Guards, re-checked at every step (chain.needs_enrollment): only after a factor done in *this*
interaction (an older session confirms its password first); never while the user has a factor
that could follow the one done: enrolling would then go around it (an attacker with only the
password must not add their own app to an account that has one); not while locked.

Each setup ends with a use of the new factor, and that use is what the login counts (the same
amr as any other use): a code from the new TOTP app, the SMS code that confirms the phone
number, a WebAuthn assertion by the new credential (a registration with attestation `none`
signs nothing, so an assertion follows it). The acr is what those factors earn, e.g. `mfa`
for a password and a new app. Trust on first use: the first factor is all that vouches for
the new one, so the audit log records `mfa.enrolled` with `at_login`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import jsonify, redirect, request, url_for

from ..i18n import lazy_gettext as _l
from ..authn import chain
from ..authn import interaction as interactions
from ..authn.acr import mfa_level
from ..authn.factors.webauthn import RegistrationRefused, finish_registration, start_registration
from ..authn.lockout import CountedCheck, verify_counted
from ..authn.otp import SendRefused, mask_phone
from ..authn.signin import policy_decision
from ..delivery import PHONE_NUMBER, DeliveryError
from ..errors import MESSAGES
from ..extensions import db
from ..models import User, record_audit
from . import interaction as steps

bp = steps.bp  # steps of the login interaction: the same blueprint, the same pages' machinery

TITLES = {"totp": _l("An authenticator app"), "sms": _l("Text messages to your phone"),
          "webauthn-key": _l("A security key"), "webauthn-platform": _l("This device (fingerprint, face or PIN)"),
          "passkey": _l("A passkey")}
WEBAUTHN_KINDS = ("webauthn-key", "webauthn-platform", "passkey")
PHONE_CHECK = "verify-phone"  # the same one-time code kind as the account's contact page
MAX_CREDENTIAL = 32_768  # an attestation with its certificate chain stays well below this


@dataclass
class Offer:
    user: User
    session: object  # the IdP session of the first factor
    kinds: list  # factors that may be set up now
    fresh: bool  # a factor of this interaction was done (else the password first)


def offer(record, session=None) -> Offer | None:
    """What this login may set up now, or None when enrollment is not for it. `session`: the IdP
    session, when it is newer than the browser's cookie."""
    op = steps._op()
    session = session or steps._session()
    user = db.session.get(User, session.sub) if session else None
    if user is None or user.disabled or op.lockout.is_locked(user):
        return None
    if not (op.settings.enrollment.at_login or user.mfa_enrollment_required):
        return None
    params = {key: values[0] for key, values in record["params"].items() if values}
    prompts = set((params.get("prompt") or "").split())
    max_age = int(params["max_age"]) if (params.get("max_age") or "").isdigit() else None
    now = time.time()
    usable, _ = chain.usable_factors(session.factors, prompts, max_age, record["created_at"], now)
    level = steps._level(record)
    mfa_needed = level is not None and not chain.satisfied(level, usable, now)
    if not chain.needs_enrollment(user, op.factors.available_for(user), usable, mfa_needed):
        return None
    candidates = [op.factors.get(kind) for kind in op.settings.enrollment.factors if op.factors.get(kind)]
    kinds = chain.enrollable(level or mfa_level(op.levels), candidates, usable, user, now)
    fresh = any(use.at >= record["created_at"] for use in usable)
    password = op.factors.get("password")
    if not kinds or not (fresh or (password and password.available_for(user))):
        return None
    return Offer(user, session, kinds, fresh)


def after_first_factor(record, client, user, session) -> bool:
    """Called when a sign-in factor succeeded: whether the admin's flag sends this login to
    enrollment now (a login that needs MFA gets there by itself, after the policy)."""
    if not user.mfa_enrollment_required:
        return False
    if policy_decision(steps._op(), user, client).action == "deny":
        return False  # the resumed authorization refuses it: nothing to set up
    if offer(record, session) is None:
        return False
    record["enroll"] = {"user_id": user.id, "factor": None}
    interactions.save(record)
    return True


# -- pages ----------------------------------------------------------------------------------------

def page(record, client, error=None, status=200):
    """The enrollment step of this login, or None when it has none (the caller goes on)."""
    state = record.get("enroll") or {}
    if state.get("proving"):  # a WebAuthn credential was registered: its first use comes next
        return steps._page("enroll_prove.html", record, client, status, error,
                           title=TITLES[state["factor"]], kind=state["factor"])
    found = offer(record)
    if found is None or state.get("user_id", found.user.id) != found.user.id:
        if record.pop("enroll", None) is not None:
            interactions.save(record)
        return None
    kind = state.get("factor")
    if kind == "totp":
        factor = steps._op().factors.get("totp")
        pending = factor.pending(found.user)
        if pending is not None:
            return steps._page("enroll_totp.html", record, client, status, error,
                               **factor.enrollment_details(found.user, pending))
        error, status = "totp_setup_expired", 400
    elif kind == "sms":
        return steps._page("enroll_phone.html", record, client, status, error, sent_to=state.get("sent_to"),
                           number=state.get("phone") or found.user.phone_number or "")
    elif kind in WEBAUTHN_KINDS:
        return steps._page("enroll_webauthn.html", record, client, status, error, title=TITLES[kind], kind=kind)
    return steps._page("enroll_choose.html", record, client, status, error, fresh=found.fresh,
                       choices=[(factor.id, TITLES[factor.id]) for factor in found.kinds])


def _show(record):
    return redirect(url_for("interaction.show", uid=record["uid"]), code=303)


def _refused(record, client, error="enrollment_refused", status=403):
    record.pop("enroll", None)
    interactions.save(record)
    return steps._render_step(record, client, error=error, status=status)


def _current(record, kind=None) -> Offer | None:
    """The offer, when this step (of `kind`, if given) belongs to it and its login is fresh."""
    found = offer(record)
    state = record.get("enroll") or {}
    if found is None or not found.fresh or state.get("user_id", found.user.id) != found.user.id:
        return None
    if kind is not None and (state.get("factor") != kind or kind not in {f.id for f in found.kinds}):
        return None
    return found


@bp.post("/interaction/<uid>/enroll/reauth")
@steps.interaction_view
def reauth(record, client):
    """An older session confirms its password before anything is set up in this interaction."""
    found = offer(record)
    factor = steps._op().factors.get("password")
    if found is None or found.fresh:
        return _show(record)
    password = (request.form.get("password") or "")[:factor.max_response]
    result = verify_counted(steps._op(), factor, found.user, {"login": found.user.username, "password": password},
                            steps._context(record))
    if not result.ok:
        steps._failed(record, client, found.user, factor, result.reason)
        return steps._render_step(record, client, error="login_failed", status=401)
    return steps._complete(record, client, found.user, factor)


@bp.post("/interaction/<uid>/enroll")
@steps.interaction_view
def begin(record, client):
    """Start setting up the chosen factor."""
    found = _current(record)
    kind = request.form.get("factor", "")
    if found is None or kind not in {factor.id for factor in found.kinds}:
        return _refused(record, client)
    record["enroll"] = {"user_id": found.user.id, "factor": kind}
    if kind == "totp":
        steps._op().factors.get("totp").start_enrollment(found.user)
    response = _show(record)
    interactions.extend(record, steps._op().settings.lifetimes.interaction, response)  # time to set it up
    return response


@bp.post("/interaction/<uid>/enroll/restart")
@steps.interaction_view
def restart_enrollment(record, _client):
    """Choose another factor to set up."""
    state = record.get("enroll") or {}
    record["enroll"] = {"user_id": state.get("user_id"), "factor": None} if state.get("user_id") else {}
    record.pop("pending", None)
    interactions.save(record)
    return _show(record)


def _lift_flag(user) -> None:
    if user.mfa_enrollment_required:
        user.mfa_enrollment_required = False
        db.session.commit()


def _enrolled(record, client, user, factor, **detail):
    """Audit the new factor, lift the admin's flag, and count its first use for this login."""
    record_audit("mfa.enrolled", user_id=user.id, client_id=client.client_id, ip=request.remote_addr,
                 factor=factor.id, at_login=True, **detail)
    _lift_flag(user)
    record.pop("enroll", None)
    return steps._complete(record, client, user, factor)


# -- TOTP -----------------------------------------------------------------------------------------

@bp.post("/interaction/<uid>/enroll/totp")
@steps.interaction_view
def confirm_totp(record, client):
    """The first code from the new app confirms it and is this login's TOTP factor."""
    found = _current(record, "totp")
    if found is None:
        return _refused(record, client)
    op, user = steps._op(), found.user
    factor = op.factors.get("totp")
    pending = factor.pending(user)
    if pending is None:
        return page(record, client, "totp_setup_expired", 400)
    code = (request.form.get("code") or "")[:factor.max_response]
    check = CountedCheck(factor.id, lambda: factor.confirm_enrollment(user, pending, code))
    result = verify_counted(op, check, user, {}, steps._context(record))
    if not result.ok:
        record_audit("totp.enrollment_failed", user_id=user.id, ip=request.remote_addr, reason=result.reason,
                     at_login=True)
        return page(record, client, "totp_failed", 401)
    return _enrolled(record, client, user, factor)


# -- a phone number, confirmed by SMS --------------------------------------------------------------

@bp.post("/interaction/<uid>/enroll/phone")
@steps.interaction_view
def send_phone_code(record, client):
    """Text a code to the number (the contact page's confirmation, bound to this login)."""
    found = _current(record, "sms")
    if found is None:
        return _refused(record, client)
    op, user, state = steps._op(), found.user, record["enroll"]
    number = "".join((request.form.get("phone") or "").split())[:32]
    if not PHONE_NUMBER.fullmatch(number):
        return page(record, client, "phone_invalid", 400)
    owner = User.find_by_phone(number)
    if owner is not None and owner.id != user.id:  # a verified number of another account
        return page(record, client, "phone_unusable", 400)
    try:
        op.otp.check_send_allowed(factor=PHONE_CHECK, binding=record["uid"], user_id=user.id, destination=number,
                                  ip=request.remote_addr)
        issued = op.otp.issue(factor=PHONE_CHECK, binding=record["uid"], user_id=user.id, destination=number,
                              secret=op.otp.new_code(), lifetime=op.settings.otp.lifetime)
    except SendRefused as refused:
        return page(record, client, refused.message_id, 429)
    try:
        op.delivery.send_sms(number, f"{issued.secret} is your code to confirm this phone number.")
    except DeliveryError:
        op.otp.undo_send(issued, factor=PHONE_CHECK, binding=record["uid"])
        return page(record, client, "delivery_failed", 503)
    state.update(phone=number, challenge=issued.challenge, sent_to=mask_phone(number))
    interactions.save(record)
    return _show(record)


@bp.post("/interaction/<uid>/enroll/sms")
@steps.interaction_view
def confirm_phone(record, client):
    """The code proves the phone: the number becomes verified and this login's SMS factor."""
    found = _current(record, "sms")
    state = record.get("enroll") or {}
    if found is None or not state.get("challenge"):
        return _refused(record, client)
    op, user = steps._op(), found.user
    code = (request.form.get("code") or "")[:32]
    check = CountedCheck("sms", lambda: op.otp.verify(state["challenge"], factor=PHONE_CHECK, binding=record["uid"],
                                                      user_id=user.id, secret=code))
    result = verify_counted(op, check, user, {}, steps._context(record))
    if not result.ok:
        record_audit("contact.verification_failed", user_id=user.id, ip=request.remote_addr, channel="phone",
                     reason=result.reason, at_login=True)
        return page(record, client, "code_failed", 401)
    user.phone_number, user.phone_number_verified = state["phone"], True
    db.session.commit()
    record_audit("contact.verified", user_id=user.id, ip=request.remote_addr, channel="phone", at_login=True)
    return _enrolled(record, client, user, op.factors.get("sms"))


# -- WebAuthn --------------------------------------------------------------------------------------

def _webauthn_kind(record) -> str | None:
    kind = (record.get("enroll") or {}).get("factor")
    return kind if kind in WEBAUTHN_KINDS else None


@bp.post("/interaction/<uid>/enroll/webauthn/options")
@steps.interaction_view
def webauthn_options(record, client):
    """Creation options for navigator.credentials.create() (JSON, for webauthn.js)."""
    kind = _webauthn_kind(record)
    found = _current(record, kind) if kind else None
    if found is None:
        response = jsonify(error="enrollment_refused", message=MESSAGES["enrollment_refused"])
        response.status_code = 403
        return response
    response = jsonify(start_registration(steps._op(), found.user, found.session.sid, kind, None))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/interaction/<uid>/enroll/webauthn")
@steps.interaction_view
def register_webauthn(record, client):
    """Keep the new credential; the login then asks for an assertion by it (the proof)."""
    kind = _webauthn_kind(record)
    found = _current(record, kind) if kind else None
    if found is None:
        return _refused(record, client)
    op, user = steps._op(), found.user
    try:
        credential = finish_registration(op, user, found.session.sid,
                                         (request.form.get("credential") or "")[:MAX_CREDENTIAL])
    except RegistrationRefused as refused:
        record_audit("webauthn.registration_failed", user_id=user.id, ip=request.remote_addr, reason=refused.reason,
                     at_login=True)
        return page(record, client, "webauthn_registration_failed", 400)
    record_audit("webauthn.registered", user_id=user.id, ip=request.remote_addr, factor=kind,
                 credential=credential.id, name=credential.name, aaguid=credential.data.get("aaguid"), at_login=True)
    record["enroll"] = {"user_id": user.id, "factor": kind, "proving": credential.id}
    return steps._send(record, client, op.factors.get(kind), user, user.username)


@bp.post("/interaction/<uid>/enroll/prove")
@steps.interaction_view
def prove(record, client):
    """Ask again for the first assertion by the credential registered in this login."""
    state = record.get("enroll") or {}
    session = steps._session()
    factor = steps._op().factors.get(state.get("factor") or "")
    user = db.session.get(User, state.get("user_id") or "")
    if not state.get("proving") or factor is None or user is None or session is None or session.sub != user.id:
        return _refused(record, client)
    return steps._send(record, client, factor, user, user.username)


def proved(record, client, user, factor) -> None:
    """Called when a sign-in factor succeeded: the first use of a credential registered in this
    login finishes its enrollment."""
    state = record.get("enroll") or {}
    if state.get("proving") and state.get("factor") == factor.id and state.get("user_id") == user.id:
        record_audit("mfa.enrolled", user_id=user.id, client_id=client.client_id, ip=request.remote_addr,
                     factor=factor.id, at_login=True, credential=state["proving"])
        _lift_flag(user)
