"""The pages a person sees during a sign-in: the factors, consent, logout confirmation.

Each step re-renders with a catalogued message on failure and works without
JavaScript. After every completed factor the authorization resumes in the same
request (oauth/endpoints.py `resume_authorization`), which decides whether another
factor, consent, or the code comes next. Two detours are steps of the same interaction, on this blueprint:
a password reset (views/password_reset.py) and setting up a second factor
(views/enrollment.py); their state is kept in the interaction record.
"""

from __future__ import annotations

import functools
import time

from flask import Blueprint, current_app, make_response, redirect, render_template, request, url_for

from ..authn import interaction as interactions
from ..authn.chain import next_choices, usable_factors
from ..authn.factors import Verification
from ..authn.lockout import verify_counted, verify_login
from ..authn.reauth import ACCOUNT_CLIENT_ID
from ..authn.otp import SendRefused
from .. import cookies
from ..authn.session import FactorUse
from ..delivery import DeliveryError
from ..errors import MESSAGES, error_page
from ..extensions import commit_pending, db
from .. import i18n
from ..i18n import gettext
from ..i18n import lazy_gettext as _l
from ..models import User, record_audit
from ..oauth.endpoints import finish_logout, redirect_to_client, resume_authorization

bp = Blueprint("interaction", __name__)

# The page for a pending step, by factor kind; other kinds use factor_<kind>.html.
PAGES = {"code": "code.html", "link": "link_sent.html"}
ANSWERED_KINDS = ("code", "webauthn")  # kinds whose answer is posted to /verify

SCOPE_DESCRIPTIONS = {
    "openid": _l("Sign you in with your account"),
    "profile": _l("See your name and username"),
    "email": _l("See your email address"),
    "phone": _l("See your phone number"),
    "offline_access": _l("Keep access while you are away"),
}
# What an account lacks for MFA over email and phone (authn/chain.py contact_gaps), as shown.
GAPS = {"a primary email address": _l("a primary email address"),
        "a verified phone number": _l("a verified phone number")}


def _op():
    return current_app.extensions["op"]


def _first(record, name):
    values = record["params"].get(name) or [None]
    return values[0]


def _session():
    return _op().sessions.load(cookies.get(cookies.SESSION))


def interaction_view(view):
    """Load the browser's interaction and its client for a view, or answer with an error page."""

    @functools.wraps(view)
    def wrapper(uid: str):
        record, client, failure = _load(uid)
        return failure or view(record, client)

    return wrapper


def _load(uid):
    """The interaction and its client, or an error page."""
    record, problem = interactions.load_for_browser(uid)
    if problem:
        return None, None, error_page(problem, 400)
    client = _op().clients.get(record["client_id"])
    if client is None:
        return None, None, error_page("invalid_client", 400)
    return record, client, None


def _level(record):
    return next((level for level in _op().levels if level.value == record.get("level")), None)


def _choices(record, user, usable):
    """The factors offered for the next step, and what the user lacks for email/phone ones."""
    level = _level(record)
    if level is None:
        return [], []
    return next_choices(level, _op().factors.available_for(user), usable, user, time.time())


def client_name(client) -> str:
    """How the pages name a client; the provider's own account client in the page's language."""
    if client.client_id == ACCOUNT_CLIENT_ID:
        return gettext("your account settings")
    return client.config.client_name or client.client_id


def _signed_in_user(record):
    """The user of an earlier step of this login (step-up), with the factors that count."""
    if record["step"] != "login" or record.get("reason") != "login:mfa":
        return None, []
    session = _session()
    if session is None:
        return None, []
    params = {k: v[0] for k, v in record["params"].items() if v}
    prompts = set((params.get("prompt") or "").split())
    max_age = int(params["max_age"]) if (params.get("max_age") or "").isdigit() else None
    usable, _ = usable_factors(session.factors, prompts, max_age, record["created_at"], time.time())
    user = db.session.get(User, session.sub)
    return (user, usable) if user and usable else (None, [])


def _context(record):
    return {"binding": record["uid"], "ip": request.remote_addr}


# -- rendering ---------------------------------------------------------------------------

def _page(template, record, client, status=200, error=None, **values):
    trust = _op().settings.trusted_devices
    remember = trust.enabled and record.get("reason") == "login:mfa" and not record.get("reset")
    return render_template(
        template, uid=record["uid"], client_name=client_name(client),
        error=MESSAGES[error] if error else None, remember_days=trust.days if remember else None, **values,
    ), status


def _prompt(factor, pending) -> str | None:
    """The lead text of a factor whose user already has the code (TOTP, a recovery code: which one)."""
    if not hasattr(factor, "prompt"):
        return None
    return factor.prompt(db.session.get(User, pending["user_id"]) if pending["user_id"] else None)


def _render_step(record, client, error=None, status=200, login=None):
    pending = record.get("pending")
    if record["step"] == "consent":
        scopes = [s for s in (_first(record, "scope") or "").split() if s in client.config.scopes]
        return _page("consent.html", record, client, scopes=[(s, SCOPE_DESCRIPTIONS.get(s, s)) for s in scopes])
    if pending:
        template = PAGES.get(pending["kind"], f"factor_{pending['kind']}.html")
        factor = _op().factors.get(pending["factor"])
        return _page(template, record, client, status, error, pending=pending, factor=factor,
                     prompt=_prompt(factor, pending))
    if record.get("reset"):
        return password_reset.render(record, client, error, status)
    enrolling = enrollment.page(record, client, error, status) if record.get("enroll") else None
    if enrolling is not None:
        return enrolling
    user, usable = _signed_in_user(record)
    if user is not None:
        choices, gaps = _choices(record, user, usable)
        if not choices:  # set one up when enrollment allows it, else say what is missing
            return enrollment.page(record, client, error, status) or _cannot_meet(record, client, gaps)
        return _page("choose_factor.html", record, client, status, error, choices=choices,
                     done=[use.amr for use in usable])
    passwordless = [f for f in _op().factors if f.first_factor and f.id != "password"]
    return _page("login.html", record, client, status, error, passwordless=passwordless,
                 login=login if login is not None else (_first(record, "login_hint") or ""),
                 can_reset=password_reset.enabled(), notice=MESSAGES.get(record.get("notice", "")))


def first_page(record, client):
    """The page of a new interaction, as the answer to its authorization request (oauth/endpoints.py
    _page_here), in the language the login begins in."""
    i18n.use(record.get("locale"))
    return make_response(*_render_step(record, client))


@bp.get("/interaction/<uid>")
@interaction_view
def show(record, client):
    pending = record.get("pending")
    if pending and pending["kind"] == "link" and record.get("link_confirmed"):
        user = db.session.get(User, pending["user_id"])
        return _complete(record, client, user, _op().factors.get(pending["factor"]))
    factor = _op().factors.get(pending["factor"]) if pending else None
    if factor is not None and hasattr(factor, "poll"):  # e.g. push: the page refreshes until answered
        result = factor.poll(pending, _context(record))
        if result is not None:
            user = db.session.get(User, pending["user_id"]) if pending["user_id"] else None
            if result.ok and user is not None:
                return _complete(record, client, user, factor)
            _failed(record, client, user, factor, result.reason)
            record.pop("pending", None)
            interactions.save(record)
            return _render_step(record, client, error=factor.failure_message, status=401)
    return _render_step(record, client)


# -- completing a factor -----------------------------------------------------------------------

def _complete(record, client, user, factor):
    """A factor passed. Commits what the success recorded, with the lockout reset that
    verify_counted(commit=False) left pending: one transaction."""
    if password_reset.verifying(record):  # a reset's second factor: it signs nobody in
        response = password_reset.factor_passed(record, client, user, factor)
    else:
        response = _sign_in(record, client, user, factor)
    commit_pending()
    return response


def _sign_in(record, client, user, factor):
    op = _op()
    session = op.sessions.record_factor(
        _session(), user.id, FactorUse(factor=factor.id, amr=factor.amr, flow=factor.flow, at=time.time())
    )
    enrollment.proved(record, client, user, factor)
    for key in ("pending", "link_confirmed", "reset", "enroll", "notice"):
        record.pop(key, None)
    record["sub"] = user.id
    if request.form.get("remember") == "on":  # "remember this device", asked on a later step
        record["remember"] = True
    # written with the next commit; the language of notices sent without a page is committed at
    # once when it changed, before a later query could flush it and leave SQLite's write lock held
    record_audit("factor.succeeded", user_id=user.id, client_id=client.client_id, ip=request.remote_addr,
                 factor=factor.id, commit=i18n.remember(user))
    # an admin's mfa_enrollment_required: set up a factor first (the session cookie is needed for it)
    if enrollment.after_first_factor(record, client, user, session):
        response = redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    else:  # what /oidc/auth/resume would do a redirect later: the code, or the next step
        response = resume_authorization(record, session)
    cookies.put(response, cookies.SESSION, session.id, op.settings.lifetimes.session)
    return response


def _failed(record, client, user, factor, reason):
    record_audit("factor.failed", user_id=user.id if user else None, client_id=client.client_id,
                 ip=request.remote_addr, factor=factor.id, reason=reason)


def _cannot_meet(record, client, gaps):
    """No factor of this user can reach the level: an essential acr is an error for the client
    (OIDC Core 5.5.1.1); otherwise the user is told what is missing."""
    if record.get("essential"):
        return _deny(record, client, "unmet_authentication_requirements",
                     "The user has no factor that meets the essential acr.")
    missing = gettext(" and ").join(str(GAPS.get(gap, gap)) for gap in gaps)
    return error_page("mfa_unavailable", 403, detail=gettext("Missing: %(what)s.", what=missing) if gaps else None)


def _leave_reset(record) -> None:
    """Signing in instead: a reset under way in this login is dropped."""
    if record.pop("reset", None) is not None:
        interactions.save(record)


def _deny(record, client, error="access_denied", description="The user declined."):
    record_audit("authorization.denied", user_id=record.get("sub"), client_id=client.client_id,
                 ip=request.remote_addr, error=error, reason=description)
    if record.get("device"):  # a device's sign-in (RFC 8628): the device hears it on its next poll
        from .device import deny

        return deny(record, client, error, description)
    redirect_uri = _first(record, "redirect_uri") or client.get_default_redirect_uri()
    interactions.finish(record)
    if not redirect_uri or not client.check_redirect_uri(redirect_uri):
        return error_page("invalid_redirect_uri", 400)
    return redirect_to_client(redirect_uri, {
        "error": error, "error_description": description, "state": _first(record, "state"),
    })


# -- password -----------------------------------------------------------------------------------

@bp.post("/interaction/<uid>/login")
@interaction_view
def login(record, client):
    if request.form.get("action") == "cancel":
        return _deny(record, client)
    _leave_reset(record)
    factor = _op().factors.get("password")
    signed_in, usable = _signed_in_user(record)
    password = (request.form.get("password") or "")[:1024]
    if signed_in is not None:  # password as a later step: it is this user's password
        user, login_name = signed_in, signed_in.username
        if factor not in _choices(record, signed_in, usable)[0]:
            return _render_step(record, client, error="factor_not_allowed", status=400)
        result = verify_counted(_op(), factor, user, {"login": login_name, "password": password}, _context(record),
                                commit=False)
    else:
        login_name = (request.form.get("login") or "")[:320]
        user, result = verify_login(_op(), factor, {"login": login_name, "password": password}, _context(record),
                                    commit=False)
    if not result.ok:
        _failed(record, client, user, factor, result.reason)
        return _render_step(record, client, error="login_failed", status=401, login=login_name)
    return _complete(record, client, user, factor)


# -- codes and links ----------------------------------------------------------------------------

def _send(record, client, factor, user, login_name):
    """Start the factor's challenge (send a code or a link, make WebAuthn options...)."""
    try:
        result = factor.begin(user, _context(record))
    except SendRefused as refused:
        return _render_step(record, client, error=refused.message_id, status=429)
    except DeliveryError as exc:
        current_app.logger.warning("delivery of %s failed: %s", factor.id, exc)
        return _render_step(record, client, error="delivery_failed", status=503)
    if _signed_in_user(record)[0] is None:
        # Until the person has proven who they are, the page must not show where the code went:
        # a masked address appears only for existing accounts (OWASP ASVS 5.0 V6.3.8).
        result = {**result, "sent_to": None}
    record["pending"] = {
        "challenge": None, "sent_to": None, **result,
        "factor": factor.id, "kind": factor.kind, "login": login_name,
        # only an account that can use the factor is ever bound to the step (no enumeration)
        "user_id": user.id if user is not None and factor.available_for(user) else None,
    }
    interactions.save(record)
    return redirect(url_for("interaction.show", uid=record["uid"]), code=303)


@bp.post("/interaction/<uid>/start")
@interaction_view
def start(record, client):
    """Send a code or a link for the chosen factor."""
    factor = _op().factors.get(request.form.get("factor", ""))
    if factor is None or factor.id == "password":
        return _render_step(record, client, error="factor_not_allowed", status=400)
    if password_reset.verifying(record):
        return password_reset.start_factor(record, client, factor)
    _leave_reset(record)
    signed_in, usable = _signed_in_user(record)
    if signed_in is not None:
        if factor not in _choices(record, signed_in, usable)[0]:
            return _render_step(record, client, error="factor_not_allowed", status=400)
        return _send(record, client, factor, signed_in, signed_in.username)
    if not factor.first_factor:  # a TOTP code or a security key alone never starts a sign-in
        return _render_step(record, client, error="factor_not_allowed", status=400)
    login_name = (request.form.get("login") or "").strip()[:320]
    if factor.usernameless and not login_name:  # a passkey names its user
        return _send(record, client, factor, None, "")
    if not login_name:
        return _render_step(record, client, error="login_missing", status=400)
    return _send(record, client, factor, User.find_by_login(login_name), login_name)


@bp.post("/interaction/<uid>/resend")
@interaction_view
def resend(record, client):
    pending = record.get("pending")
    if not pending:
        return redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    user = db.session.get(User, pending["user_id"]) if pending["user_id"] else User.find_by_login(pending["login"])
    return _send(record, client, _op().factors.get(pending["factor"]), user, pending["login"])


@bp.post("/interaction/<uid>/restart")
@interaction_view
def restart(record, _client):
    """Choose another method."""
    record.pop("pending", None)
    interactions.save(record)
    return redirect(url_for("interaction.show", uid=record["uid"]), code=303)


@bp.post("/interaction/<uid>/verify")
@interaction_view
def verify(record, client):
    pending = record.get("pending")
    if not pending or pending["kind"] not in ANSWERED_KINDS:
        return redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    op = _op()
    factor = op.factors.get(pending["factor"])
    user = db.session.get(User, pending["user_id"]) if pending["user_id"] else None
    answer = {factor.response_field: (request.form.get(factor.response_field) or "")[:factor.max_response]}
    context = {**_context(record), "challenge": pending["challenge"], "pending": pending}
    result = verify_counted(op, factor, user, answer, context, commit=False)
    if result.ok and user is None and result.user_id:  # usernameless: the credential named the user
        user = db.session.get(User, result.user_id)
        if user is None or user.disabled or op.lockout.is_locked(user):
            result = Verification(False, "account unusable or locked")
    if not result.ok or user is None:
        _failed(record, client, user, factor, result.reason)
        return _render_step(record, client, error=factor.failure_message, status=401)
    return _complete(record, client, user, factor)


def _find_link(token: str):
    """(challenge, its record) of a live sign-in link; a code or another kind's link is not one."""
    op = _op()
    found = op.otp.find_by_link(token)
    factor = op.factors.get(found[1]["factor"]) if found else None
    return found if factor is not None and factor.kind == "link" else None


def _speak_as_login(uid: str):
    """The interaction a link belongs to (or None); its pages, opened anywhere, speak its language."""
    record = _op().store.get(f"interaction:{uid}")
    i18n.use((record or {}).get("locale"))
    return record


@bp.get("/interaction/link/<token>")
def link(token: str):
    """A GET only shows a button: mail scanners that fetch links must not use them up."""
    found = _find_link(token)
    if found is None:
        return error_page("link_invalid", 400)
    _speak_as_login(found[1]["binding"])
    return render_template("link_confirm.html", token=token,
                           action=url_for("interaction.confirm_link", token=token))


@bp.post("/interaction/link/<token>")
def confirm_link(token: str):
    op = _op()
    found = _find_link(token)
    if found is None:
        return error_page("link_invalid", 400)
    challenge, challenge_record = found
    record = _speak_as_login(challenge_record["binding"])
    factor = op.factors.get(challenge_record["factor"])
    user = db.session.get(User, challenge_record["user_id"])
    context = {"binding": challenge_record["binding"], "challenge": challenge}
    if record is None or user is None or not verify_counted(op, factor, user, {"token": token}, context).ok:
        record_audit("factor.failed", user_id=user.id if user else None, ip=request.remote_addr, factor=challenge_record["factor"], reason="link refused")
        return error_page("link_invalid", 400)
    record["link_confirmed"] = True
    interactions.save(record)
    own, _ = interactions.load_for_browser(record["uid"])
    if own is not None:  # the browser that asked: carry on here
        return redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    # Another browser or device: the original login continues there; this one stays signed out.
    return render_template("link_done.html")


# -- consent ------------------------------------------------------------------------------------

@bp.post("/interaction/<uid>/consent")
@interaction_view
def consent(record, client):
    if request.form.get("action") != "approve":
        return _deny(record, client)
    op = _op()
    session = _session()
    if session is None:
        return error_page("interaction_expired", 400)
    scopes = set(client.get_allowed_scope(_first(record, "scope")).split())
    key = f"consent:{session.sub}:{client.client_id}"
    op.store.set(key, sorted(scopes | set(op.store.get(key) or [])), op.settings.lifetimes.consent)
    record["consent_done"] = True
    interactions.save(record)
    record_audit("consent.given", user_id=session.sub, client_id=client.client_id, ip=request.remote_addr,
                 scopes=sorted(scopes))
    return redirect(url_for("oidc.resume", uid=record["uid"]), code=303)


# -- logout -------------------------------------------------------------------------------------

@bp.post("/logout/confirm")
def logout_confirm():
    """The user confirmed a logout that came without an id_token_hint."""
    op = _op()
    post_logout = request.form.get("post_logout_redirect_uri")
    client = op.clients.get(request.form.get("client_id"))
    if post_logout and (client is None or not client.check_post_logout_redirect_uri(post_logout)):
        post_logout = None
    if request.form.get("action") != "logout":
        return redirect(post_logout) if post_logout else render_template("logged_out.html", kept=True)
    return finish_logout(_session(), post_logout, request.form.get("state"))


# The detours register their routes on this blueprint (imported last: they use its helpers).
from . import enrollment, password_reset  # noqa: E402
