"""The pages a person sees during a sign-in: login, consent, logout confirmation."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from ..authn import interaction as interactions
from ..authn.session import COOKIE as SESSION_COOKIE
from ..authn.session import FactorUse
from ..errors import MESSAGES, error_page
from ..extensions import db
from ..models import User, record_audit
from ..oauth.endpoints import finish_logout, redirect_to_client

bp = Blueprint("interaction", __name__)

SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in with your account",
    "profile": "See your name and username",
    "email": "See your email address",
    "phone": "See your phone number",
    "offline_access": "Keep access while you are away",
}


def _op():
    return current_app.extensions["op"]


def _client(record):
    return _op().clients.get(record["client_id"])


def _first(record, name):
    values = record["params"].get(name) or [None]
    return values[0]


@bp.get("/interaction/<uid>")
def show(uid: str):
    record, problem = interactions.load_for_browser(uid)
    if problem:
        return error_page(problem, 400)
    client = _client(record)
    if client is None:
        return error_page("invalid_client", 400)
    if record["step"] == "consent":
        return _render_consent(record, client)
    return _render_login(record, client)


def _render_login(record, client, error: str | None = None, login: str | None = None, status: int = 200):
    return (
        render_template(
            "login.html",
            uid=record["uid"],
            client_name=client.config.client_name or client.client_id,
            login=login if login is not None else (_first(record, "login_hint") or ""),
            error=MESSAGES[error] if error else None,
        ),
        status,
    )


def _render_consent(record, client):
    scopes = (_first(record, "scope") or "").split()
    allowed = [s for s in scopes if s in client.config.scopes]
    return render_template(
        "consent.html",
        uid=record["uid"],
        client_name=client.config.client_name or client.client_id,
        scopes=[(s, SCOPE_DESCRIPTIONS.get(s, s)) for s in allowed],
    )


def _deny(record, client):
    redirect_uri = _first(record, "redirect_uri") or client.get_default_redirect_uri()
    interactions.finish(record)
    if not redirect_uri or not client.check_redirect_uri(redirect_uri):
        return error_page("invalid_redirect_uri", 400)
    return redirect_to_client(redirect_uri, {
        "error": "access_denied", "error_description": "The user declined.", "state": _first(record, "state"),
    })


@bp.post("/interaction/<uid>/login")
def login(uid: str):
    record, problem = interactions.load_for_browser(uid)
    if problem:
        return error_page(problem, 400)
    client = _client(record)
    if client is None:
        return error_page("invalid_client", 400)
    if request.form.get("action") == "cancel":
        return _deny(record, client)
    op = _op()
    login_name = (request.form.get("login") or "")[:320]
    password = (request.form.get("password") or "")[:1024]
    user = User.find_by_login(login_name) if login_name else None
    factor = op.factors.get("password")
    result = factor.verify(user, {"login": login_name, "password": password}, {})
    if not result.ok:
        record_audit("login.failed", user_id=user.id if user else None, client_id=client.client_id,
                     ip=request.remote_addr, factor=factor.id, reason=result.reason)
        return _render_login(record, client, error="login_failed", login=login_name, status=401)
    current = op.sessions.load(request.cookies.get(SESSION_COOKIE))
    session = op.sessions.record_factor(
        current, user.id, FactorUse(factor=factor.id, amr=factor.amr, flow=factor.flow, at=int(time.time()))
    )
    record.update(login_done=True, sub=user.id)
    interactions.save(record)
    record_audit("login.succeeded", user_id=user.id, client_id=client.client_id, ip=request.remote_addr,
                 factor=factor.id)
    response = redirect(url_for("oidc.resume", uid=uid), code=303)
    response.set_cookie(
        SESSION_COOKIE, session.id, httponly=True, samesite="Lax", path="/",
        secure=current_app.config["SESSION_COOKIE_SECURE"], max_age=op.settings.lifetimes.session,
    )
    return response


@bp.post("/interaction/<uid>/consent")
def consent(uid: str):
    record, problem = interactions.load_for_browser(uid)
    if problem:
        return error_page(problem, 400)
    client = _client(record)
    if client is None:
        return error_page("invalid_client", 400)
    if request.form.get("action") != "approve":
        return _deny(record, client)
    op = _op()
    if not record.get("sub"):
        session = op.sessions.load(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return error_page("interaction_expired", 400)
        record["sub"] = session.sub
    scopes = set(client.get_allowed_scope(_first(record, "scope")).split())
    key = f"consent:{record['sub']}:{client.client_id}"
    op.store.set(key, sorted(scopes | set(op.store.get(key) or [])), op.settings.lifetimes.consent)
    record["consent_done"] = True
    interactions.save(record)
    record_audit("consent.given", user_id=record["sub"], client_id=client.client_id, ip=request.remote_addr,
                 scopes=sorted(scopes))
    return redirect(url_for("oidc.resume", uid=uid), code=303)


@bp.post("/logout/confirm")
def logout_confirm():
    """The user confirmed a logout that came without an id_token_hint."""
    op = _op()
    session = op.sessions.load(request.cookies.get(SESSION_COOKIE))
    post_logout = request.form.get("post_logout_redirect_uri")
    client = op.clients.get(request.form.get("client_id"))
    if post_logout and (client is None or not client.check_post_logout_redirect_uri(post_logout)):
        post_logout = None
    if request.form.get("action") != "logout":
        return redirect(post_logout) if post_logout else render_template("logged_out.html", kept=True)
    return finish_logout(session, post_logout, request.form.get("state"))
