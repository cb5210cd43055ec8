"""WebAuthn security keys, device biometrics and passkeys: registration, names, removal.

The pages need the browser's signed-in user (account.signed_in) and exist only when a
WebAuthn factor is enabled. Registering takes two requests: `options` makes a challenge
for this IdP session and answers the creation options as JSON; the browser's answer is
posted with the form to `register`. The rules live in authn/factors/webauthn.py.
Adding (the `add` page, `options`, `register`) and removing need a fresh sign-in
(account.sensitive); renaming does not.
"""

from __future__ import annotations


from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for

from ..i18n import lazy_gettext as _l
from ..authn.factors.webauthn import (KIND_IDS, RegistrationRefused, clean_name, finish_registration,
                                      start_registration, user_credentials)
from ..errors import MESSAGES, error_page
from ..extensions import db
from ..models import record_audit
from .account import changed, json_message, sensitive, signed_in, when

bp = Blueprint("webauthn", __name__, url_prefix="/account/security/webauthn")

KIND_TITLES = {"webauthn-key": _l("Security key"), "webauthn-platform": _l("This device (fingerprint, face, PIN)"),
               "passkey": _l("Passkey")}
MAX_CREDENTIAL = 32_768  # an attestation with its certificate chain stays well below this


def _enabled_kinds() -> list[str]:
    factors = current_app.extensions["op"].factors
    return [kind for kind in KIND_IDS if factors.get(kind) is not None]


@bp.before_request
def _only_when_enabled():
    if not _enabled_kinds():  # routes exist only when the feature is on
        return error_page("not_found", 404)
    return None


def _page(user, error=None, status=200):
    rows = [{"id": a.id, "name": a.name, "kind": KIND_TITLES[a.kind], "created": when(a.created_at),
             "last_used": when(a.last_used_at)} for a in user_credentials(user.id)]
    return render_template("webauthn_credentials.html", rows=rows,
                           error=MESSAGES[error] if error else None), status


def _add_page(error=None, status=200):
    kinds = [{"id": kind, "title": KIND_TITLES[kind]} for kind in _enabled_kinds()]
    return render_template("webauthn_add.html", kinds=kinds, error=MESSAGES[error] if error else None), status


def _own_credential(user, credential_id: int):
    """The user's own WebAuthn credential with this id; another account's is simply not found."""
    return next((a for a in user_credentials(user.id) if a.id == credential_id), None)


@bp.get("")
def show():
    _session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    return _page(user)


@bp.get("/add")
@sensitive()
def add():
    return _add_page()


@bp.post("/options")
@sensitive(json=True)
def options():
    """Creation options for navigator.credentials.create() (JSON, for webauthn.js)."""
    session, user = signed_in()
    if user is None:
        return json_message("signed_out", 401)
    kind = request.form.get("kind", "")
    if kind not in _enabled_kinds():
        return json_message("webauthn_kind", 400)
    op = current_app.extensions["op"]
    response = jsonify(start_registration(op, user, session.sid, kind, request.form.get("name")))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/register")
@sensitive(back="webauthn.add")
def register():
    session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    op = current_app.extensions["op"]
    try:
        credential = finish_registration(op, user, session.sid, (request.form.get("credential") or "")[:MAX_CREDENTIAL])
    except RegistrationRefused as refused:
        record_audit("webauthn.registration_failed", user_id=user.id, ip=request.remote_addr, reason=refused.reason)
        return _add_page("webauthn_registration_failed", 400)
    changed(user, "webauthn.registered", factor=credential.kind, credential=credential.id, name=credential.name,
            aaguid=credential.data.get("aaguid"))
    return redirect(url_for("webauthn.show"), code=303)


@bp.post("/<int:credential_id>/rename")
def rename(credential_id: int):
    _session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    credential = _own_credential(user, credential_id)
    if credential is None:
        return error_page("not_found", 404)
    credential.name = clean_name(request.form.get("name"), credential.kind)
    db.session.commit()
    record_audit("webauthn.renamed", user_id=user.id, ip=request.remote_addr, credential=credential.id,
                 name=credential.name)
    return redirect(url_for("webauthn.show"), code=303)


@bp.post("/<int:credential_id>/remove")
def remove(credential_id: int):
    """The same as account_security.remove (kept for forms that post here)."""
    from .account_security import remove as remove_factor

    _session, user = signed_in()
    if user is None:
        return error_page("signed_out", 401)
    if _own_credential(user, credential_id) is None:
        return error_page("not_found", 404)
    return remove_factor(credential_id)
