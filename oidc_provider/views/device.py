"""The pages where a person connects a device (RFC 8628 3.3): enter the user code, sign in
with the same factor chain as any browser login, then approve or deny what the device asks.

The sign-in is an ordinary interaction (authn/interaction.py) marked with the device
request's key: the login pages are the usual ones, and when they are done
/oidc/auth/resume sends the browser back here instead of to a redirect_uri.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, render_template, request

from ..authn import interaction as interactions
from ..authn import upstream as upstreams
from ..authn.acr import AcrRequestError, parse_acr_request
from .. import cookies
from ..authn.session import auth_context
from ..authn.signin import decision_level, policy_decision, record_signin
from ..errors import MESSAGES, error_page
from ..extensions import db
from ..models import User, record_audit
from ..oauth.device import TooManyAttempts, device_requests, format_user_code, normalize_user_code
from .interaction import SCOPE_DESCRIPTIONS

bp = Blueprint("device", __name__)


def _op():
    return current_app.extensions["op"]


def _code_page(error: str | None = None, status: int = 200, typed: str = ""):
    return render_template("device_code.html", error=MESSAGES[error] if error else None, typed=typed), status


@bp.get("/device")
def enter_code():
    """verification_uri, or verification_uri_complete with the code filled in: either way the
    person submits it, so a link alone never connects a device (RFC 8628 5.4)."""
    typed = normalize_user_code(request.args.get("user_code", "")[:32])
    return _code_page(typed=format_user_code(typed) if typed else "")


@bp.post("/device")
def submit_code():
    typed = (request.form.get("user_code") or "")[:32]
    try:
        found = device_requests().find(typed, request.remote_addr)
    except TooManyAttempts:
        return _code_page("device_code_rate_limited", 429)
    if found is None:
        record_audit("device.code_failed", ip=request.remote_addr)
        return _code_page("device_code_invalid", 400, typed)
    key, device = found
    client = _op().clients.get(device["client_id"])
    if client is None:
        return error_page("invalid_client", 400)
    code = normalize_user_code(typed)
    record = interactions.create(device["params"], client, device=key,
                                 user_code=_op().secret_box.encrypt(code.encode(), key))
    return _decide(record, client)


@bp.get("/device/resume/<uid>")
def resume(uid: str):
    """Back from the login pages (via /oidc/auth/resume): more factors, or the approval page."""
    record, client, failure = _load(uid)
    return failure or _decide(record, client)


def _load(uid: str):
    record, problem = interactions.load_for_browser(uid)
    if problem:
        return None, None, error_page(problem, 400)
    if not record.get("device"):
        return None, None, error_page("interaction_expired", 400)
    client = _op().clients.get(record["client_id"])
    if client is None:
        return None, None, error_page("invalid_client", 400)
    return record, client, None


def _decide(record: dict, client):
    """What `_authorize` decides for a browser login, for a device: the policy, the acr the
    device asked for, then login (the usual pages) or the approval page."""
    op = _op()
    if device_requests().pending(record["device"]) is None:
        return error_page("device_code_invalid", 400)
    session = op.sessions.load(cookies.get(cookies.SESSION))
    user = db.session.get(User, session.sub) if session else None
    if user is not None and user.disabled:
        user = None
    params = {key: values[0] for key, values in record["params"].items() if values}
    try:
        asked = parse_acr_request(params.get("acr_values"), params.get("claims"), params.get("require_mfa"),
                                  op.levels)
    except AcrRequestError:  # checked when the device asked; kept here for safety
        return deny(record, client, "invalid_request", "The acr request is invalid.")
    level = asked.level
    if user is not None:
        decision = policy_decision(op, user, client)
        demanded = decision_level(op.levels, decision)
        if decision.action == "deny" or (decision.action == "require_acr" and demanded is None):
            return deny(record, client, "access_denied", "Sign-in refused by policy.")
        if demanded is not None and (level is None or demanded.rank > level.rank):
            level = demanded
    now = time.time()
    need, usable = interactions.login_needed(session if user else None, level, set(), None, record, now)
    if need is not None:
        response = interactions.start(record["params"], client, need, record, level, asked.essential)
        return upstreams.direct_start(response, asked.upstream, need)
    record["sub"] = user.id
    record["device_auth"] = auth_context(op, usable, session.sid, level, now).to_dict()
    return interactions.start(record["params"], client, "device:approve", record, level, asked.essential,
                              page="device.approve")


def _approval_state(record):
    """The signed-in session that earned the approval page (the same one still), or None."""
    auth = record.get("device_auth")
    session = _op().sessions.load(cookies.get(cookies.SESSION))
    if not auth or session is None or session.sid != auth["sid"] or session.sub != record.get("sub"):
        return None
    return session


@bp.get("/device/approve/<uid>")
def approve(uid: str):
    record, client, failure = _load(uid)
    if failure:
        return failure
    if _approval_state(record) is None or device_requests().pending(record["device"]) is None:
        return error_page("device_code_invalid", 400)
    scope = [s for s in (record["params"].get("scope") or [""])[0].split() if s]
    user_code = _op().secret_box.decrypt(record["user_code"], record["device"]).decode()
    return render_template("device_approve.html", uid=uid, user_code=format_user_code(user_code),
                           client_name=client.config.client_name or client.client_id,
                           scopes=[(s, SCOPE_DESCRIPTIONS.get(s, s)) for s in scope])


@bp.post("/device/approve/<uid>")
def answer(uid: str):
    record, client, failure = _load(uid)
    if failure:
        return failure
    if request.form.get("action") != "approve":
        return deny(record, client)
    op = _op()
    session = _approval_state(record)
    if session is None:
        return error_page("device_code_invalid", 400)
    auth = record["device_auth"]
    if not device_requests().decide(record["device"], True, session.sub, auth):
        return error_page("device_code_invalid", 400)
    op.sessions.add_client(session, client.client_id)  # its logout reaches the device too
    interactions.finish(record)
    record_audit("device.approved", user_id=session.sub, client_id=client.client_id, ip=request.remote_addr,
                 acr=auth["acr"], amr=auth["amr"])
    response = current_app.make_response(render_template(
        "device_done.html", approved=True, client_name=client.config.client_name or client.client_id))
    user = db.session.get(User, session.sub)
    record_signin(op, user, client, record, auth["acr"], response)
    return response


def deny(record: dict, client, error: str = "access_denied", description: str = "The user declined."):
    """The person (or the policy) said no: the device hears access_denied on its next poll.
    Also what the login pages' Cancel does for a device's sign-in."""
    decided = device_requests().decide(record["device"], False)
    interactions.finish(record)
    if not decided:  # expired, or already answered
        return error_page("device_code_invalid", 400)
    record_audit("device.denied", user_id=record.get("sub"), client_id=client.client_id,
                 ip=request.remote_addr, error=error, reason=description)
    return render_template("device_done.html", approved=False, description=description,
                           client_name=client.config.client_name or client.client_id)

