"""The admin API (B2E/B2B): users, their factors, lockout, MFA policy, and the audit log.

An admin backend calls it with a client access token (client_credentials at /oidc/token)
as a Bearer token. The scope decides what it may do: `admin:users` for accounts and
factors, `admin:audit` to read the audit log; a client gets them only when clients.yaml
lists them for it. A user's token is refused whatever its scope, and so is a token minted
for another resource (RFC 8707 audience). Every change goes through oidc_provider/admin.py,
as the CLI's do, and is audited with the admin client's id and IP.

Answers are JSON; errors are `{"error", "error_description"}` (401 and 403 with an RFC 6750
WWW-Authenticate challenge). The OpenAPI 3.1 description (admin_openapi.py) is served at
`GET /admin/v1/openapi.json`.
"""

from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import admin
from ..audit_query import QueryError, build_filter, event_dict, find_events
from .api_common import (ApiError, cached_description, client_token_claims, json_error, json_object, log_incident,
                         malformed, server_error, storable)

bp = Blueprint("admin_api", __name__, url_prefix="/admin/v1")
USERS_SCOPE, AUDIT_SCOPE = "admin:users", "admin:audit"
USER_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")  # a sub as create_user makes it (a UUID)
# Longest accepted query values (characters); admin_openapi.py documents these very numbers.
USERNAME_MAX, EMAIL_MAX, FILTER_MAX, SINCE_MAX, FACTOR_ID_MAX = 128, 320, 128, 64, 128
USERS_LIMIT_MAX = 500
STATUS = {"not_found": 404, "invalid_request": 400}  # AdminError.error -> HTTP status


@bp.errorhandler(ApiError)
def api_error(exc: ApiError):
    return json_error(exc, challenge_on=(401, 403))


@bp.errorhandler(admin.AdminError)
def refused(exc: admin.AdminError):
    return api_error(ApiError(STATUS[exc.error], exc.error, exc.description))


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    if exc.code == 404:
        return api_error(ApiError(404, "not_found", "Not found."))
    return api_error(malformed(exc))


@bp.errorhandler(Exception)
def unexpected(exc: Exception):
    return api_error(server_error(log_incident("admin API")))


@bp.after_request
def no_store(response):
    response.headers.setdefault("Cache-Control", "no-store")  # account data and the audit log
    return response


def _op():
    return current_app.extensions["op"]


def admin_actor(scope: str) -> admin.Actor:
    """The admin client whose access token authorizes this call (RFC 6750), with `scope`."""
    op = _op()
    claims = client_token_claims(op)
    audiences = claims.get("aud")
    if op.settings.issuer_url not in ([audiences] if isinstance(audiences, str) else audiences or []):
        raise ApiError(401, "invalid_token", "The token was issued for another resource.")
    client = op.clients.get(claims["client_id"])
    if client is None:
        raise ApiError(401, "invalid_token", "The client is no longer registered.")
    # the scope in the token, and still registered for the client (clients.yaml may have changed)
    if scope not in (claims.get("scope") or "").split() or scope not in client.config.scopes:
        raise ApiError(403, "insufficient_scope", f"The client token lacks the scope '{scope}'.",
                       {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})
    return admin.Actor(client.client_id, client.client_id, request.remote_addr)


# -- input ------------------------------------------------------------------------------------

def _once(name: str) -> str | None:
    values = request.args.getlist(name)
    if len(values) > 1:  # as RFC 6749 3.1 has it for OAuth: a parameter at most once
        raise ApiError(400, "invalid_request", f"'{name[:40]}' is included more than once.")
    return values[0] if values else None


def _query(name: str, limit: int) -> str | None:
    """A query parameter, or None when absent; "" is returned as is (for most, not given)."""
    value = _once(name)
    if value is not None and (len(value) > limit or not storable(value)):
        raise ApiError(400, "invalid_request", f"'{name}' must be at most {limit} characters, without U+0000.")
    return value


def _limit(maximum: int, default: int = 50) -> int:
    value = _once("limit")
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= 4 and 1 <= int(value) <= maximum):
        raise ApiError(400, "invalid_request", f"'limit' must be a whole number from 1 to {maximum}.")
    return int(value)


def _body(allowed: set[str], optional: bool = False) -> dict:
    """The JSON object sent; `optional`: an empty body is {}. Unknown fields are refused, so
    a misspelt one is not silently ignored."""
    if optional and not request.get_data(cache=True):
        return {}
    data = json_object()
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApiError(400, "invalid_request", f"Unknown field '{unknown[0][:40]}'.")
    return data


def _reason(data: dict) -> str | None:
    return admin.check_reason(data.get("reason"))


def _user(user_id: str):
    if not USER_ID.match(user_id):
        raise ApiError(404, "not_found", "No such user.")
    return admin.user_by_id(user_id)


# -- users ------------------------------------------------------------------------------------

@bp.get("/users")
def list_users():
    admin_actor(USERS_SCOPE)
    rows, cursor = admin.find_users(_query("username", USERNAME_MAX) or None, _query("email", EMAIL_MAX) or None,
                                    _limit(USERS_LIMIT_MAX), _query("cursor", USERNAME_MAX) or None)
    return jsonify(users=[admin.summary(_op(), user) for user in rows], next_cursor=cursor)


@bp.get("/users/<user_id>")
def show_user(user_id: str):
    admin_actor(USERS_SCOPE)
    return jsonify(admin.summary(_op(), _user(user_id)))


@bp.patch("/users/<user_id>")
def change_user(user_id: str):
    """mfa_policy (null: the default) and mfa_enrollment_required."""
    actor = admin_actor(USERS_SCOPE)
    user = _user(user_id)
    data = _body({"mfa_policy", "mfa_enrollment_required", "reason"})
    reason = _reason(data)  # checked even when nothing else is sent
    if "mfa_policy" in data and data["mfa_policy"] not in (*admin.MFA_POLICIES, None):
        raise ApiError(400, "invalid_request", "'mfa_policy' must be never, adaptive, always or null.")
    required = data.get("mfa_enrollment_required")
    if "mfa_enrollment_required" in data and not isinstance(required, bool):
        raise ApiError(400, "invalid_request", "'mfa_enrollment_required' must be true or false.")
    op = _op()
    answer = admin.summary(op, user)
    if "mfa_policy" in data:
        answer = admin.set_mfa_policy(op, user, data["mfa_policy"], actor, reason)
    if "mfa_enrollment_required" in data:
        answer = admin.require_enrollment(op, user, required, actor, reason)
    return jsonify(answer)


@bp.post("/users/<user_id>/lock")
def lock_user(user_id: str):
    actor = admin_actor(USERS_SCOPE)
    user = _user(user_id)
    data = _body({"minutes", "reason"}, optional=True)
    minutes = data.get("minutes")
    if isinstance(minutes, float) and minutes.is_integer():  # JSON Schema: 5.0 is an integer
        minutes = int(minutes)
    return jsonify(admin.lock(_op(), user, minutes, actor, _reason(data)))


@bp.post("/users/<user_id>/unlock")
def unlock_user(user_id: str):
    actor = admin_actor(USERS_SCOPE)
    user = _user(user_id)
    data = _body({"reason"}, optional=True)
    return jsonify(admin.unlock(_op(), user, actor, _reason(data)))


# -- factors ----------------------------------------------------------------------------------

@bp.get("/users/<user_id>/factors")
def list_factors(user_id: str):
    admin_actor(USERS_SCOPE)
    return jsonify(factors=[factor.to_dict() for factor in admin.factors(_op(), _user(user_id))])


@bp.delete("/users/<user_id>/factors")
def reset_all_factors(user_id: str):
    actor = admin_actor(USERS_SCOPE)
    user = _user(user_id)
    return jsonify(admin.reset_all(_op(), user, actor, _query("reason", admin.REASON_MAX) or None))


@bp.delete("/users/<user_id>/factors/<factor_id>")
def reset_factor(user_id: str, factor_id: str):
    actor = admin_actor(USERS_SCOPE)
    user = _user(user_id)
    if len(factor_id) > FACTOR_ID_MAX:
        raise ApiError(404, "not_found", "No such factor.")
    return jsonify(admin.reset_factor(_op(), user, factor_id, actor, _query("reason", admin.REASON_MAX) or None))


# -- the audit log ----------------------------------------------------------------------------

@bp.get("/audit")
def audit():
    admin_actor(AUDIT_SCOPE)
    try:
        selected = build_filter(_query("user", FILTER_MAX), _query("client", FILTER_MAX), _query("event", FILTER_MAX),
                                _query("since", SINCE_MAX), _limit(1000), _query("cursor", FILTER_MAX))
    except QueryError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    rows, cursor = find_events(selected)
    return jsonify(events=[event_dict(row) for row in rows], next_cursor=cursor)


# -- the description --------------------------------------------------------------------------

@bp.get("/openapi.json")
def openapi_document():
    from ..admin_openapi import document

    return cached_description("admin-openapi", document)
