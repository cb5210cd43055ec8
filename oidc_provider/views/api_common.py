"""What the JSON APIs (direct, MFA, admin) share: their error shape `{"error",
"error_description"}`, reading the Bearer token and the JSON body, and serving their
OpenAPI description. Each blueprint keeps its own error handlers, which differ in the
challenge and caching headers they add."""

from __future__ import annotations

import json
import uuid
from typing import Callable

from flask import Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    """An answer in the APIs' error shape; `headers` go on it as they are (an RFC 6750 or
    RFC 9470 challenge, an Allow list)."""

    def __init__(self, status: int, error: str, description: str, headers: dict | None = None):
        super().__init__(description)
        self.status, self.error, self.description, self.headers = status, error, description, headers or {}


def json_error(exc: ApiError, challenge_on: tuple[int, ...] = (401,)) -> Response:
    """The error as JSON; statuses in `challenge_on` get a Bearer challenge (RFC 6750 3)
    unless the error brings its own."""
    response = jsonify(error=exc.error, error_description=exc.description)
    response.status_code = exc.status
    if exc.status in challenge_on:
        response.headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"'
    response.headers.update(exc.headers)
    return response


def malformed(exc: HTTPException) -> ApiError:
    """Werkzeug's refusals inside an API view (a body too large, a form it cannot parse):
    a 400 in the APIs' shape rather than the site's HTML page."""
    description = "The request body is too large." if exc.code == 413 else "The request could not be understood."
    return ApiError(400, "invalid_request", description)


def log_incident(api: str) -> str:
    """Logs the exception being handled under a fresh incident id, which the answer shows
    instead of any detail."""
    incident = uuid.uuid4().hex[:12]
    current_app.logger.exception("unexpected error in the %s, incident %s", api, incident)
    return incident


def server_error(incident: str) -> ApiError:
    return ApiError(500, "server_error", f"Unexpected error (incident {incident}).")


def bearer_token() -> str:
    """The token of `Authorization: Bearer <token>` (RFC 6750 2.1), or "" when none is sent."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def client_token_claims(op) -> dict:
    """The claims of the client access token (client_credentials) sent as the Bearer token;
    a user's token is refused whatever its scope."""
    token = bearer_token()
    if not token:
        raise ApiError(401, "invalid_token", "A client access token is required (Authorization: Bearer).")
    claims = op.tokens.verify_access_token(token)
    if claims is None or claims.get("sub") != claims.get("client_id"):
        raise ApiError(401, "invalid_token", "The token is invalid, expired, revoked or not a client token.")
    if "cnf" in claims:  # RFC 9449 7.2: a DPoP-bound token is never good as a Bearer token
        raise ApiError(401, "invalid_token", "The token is bound to a DPoP key and cannot be used as a Bearer token.")
    return claims


def storable(value: str) -> bool:
    """No NUL (PostgreSQL text refuses it) and no unpaired surrogate (not UTF-8 encodable)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_object() -> dict:
    """The request's JSON body, which must be an object."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    return data


def text_member(data: dict, name: str, limit: int, required: bool = True) -> str | None:
    """A string member of a JSON body; absent, null and "" all mean "not given"."""
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, "invalid_request", f"'{name}' is required.")
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError(400, "invalid_request", f"'{name}' must be a string of at most {limit} characters.")
    if not storable(value):
        raise ApiError(400, "invalid_request", f"'{name}' must not contain NUL characters or unpaired surrogates.")
    return value


def cached_description(key: str, build: Callable[[object], dict]) -> Response:
    """An OpenAPI description, built once per app from its settings and served as bytes."""
    cache = current_app.extensions.setdefault("op.cache", {})
    body = cache.get(key)
    if body is None:
        op = current_app.extensions["op"]
        body = cache[key] = json.dumps(build(op.settings), separators=(",", ":")).encode()
    return Response(body, mimetype="application/json", headers={"Cache-Control": "public, max-age=300"})
