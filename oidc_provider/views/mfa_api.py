"""The MFA API, compatible with Auth0's: an application written against Auth0's moves with
only its base URL changed.

    GET    /mfa/authenticators                the caller's authenticators
    DELETE /mfa/authenticators/<id>           remove one (access token only, recent MFA)
    POST   /mfa/associate                     enroll: otp (TOTP app), oob sms|voice|email, oob auth0 (push)
    POST   /mfa/challenge                     start a challenge for an mfa_token's login
    POST   /oauth/token                       the token endpoint under Auth0's path (form or JSON)
    GET    /mfa/openapi.json                  the OpenAPI 3.1 description (oidc_provider/openapi_mfa.py)

The /mfa endpoints take `Authorization: Bearer <token>`, either an mfa_token (during a
sign-in, as Auth0's: list, and enroll a user's first authenticator) or a user's access
token for the MFA API's audience `<issuer>/mfa/` with Auth0's scopes (self-service):
`read:authenticators` to list, `enroll` to add, `remove:authenticators` to delete. A
token only ever reaches its own user's authenticators. Adding to a user who already has
an authenticator, and deleting any, need a recent second factor: the access token's amr
holds `mfa` and its auth_time is at most `mfa_api.reauth_max_age` seconds old (default
300); otherwise 401 `insufficient_user_authentication` with RFC 9470's challenge. An
mfa_token may enroll only a user with no authenticator but email, as at Auth0 ("User is
already enrolled."). /mfa/challenge takes the mfa_token, client_id and client_secret in
its JSON body, as Auth0's. Errors are {"error", "error_description"}.
"""

from __future__ import annotations

import time

from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from ..authn import mfa_authenticators as api
from ..authn.acr import AcrRequestError, mfa_level
from ..authn.mfa_tokens import MfaTokenError, MfaTokens
from ..authn.otp import SendRefused
from ..delivery import DeliveryError
from ..models import record_audit
from ..oauth.server import ALL_AUTH_METHODS
from ..settings.provider import mfa_resource
from .api_common import (ApiError, bearer_token, cached_description, json_error, json_object, log_incident,
                         malformed, server_error, text_member)

bp = Blueprint("mfa_api", __name__)

# Longest accepted strings (characters); openapi_mfa.py documents these very numbers.
TOKEN_MAX, ID_MAX, PHONE_MAX, EMAIL_MAX, CLIENT_MAX, SECRET_MAX, LIST_MAX = 4096, 256, 16, 320, 128, 256, 4
AUTHENTICATOR_TYPES = ("otp", "oob")
CHALLENGE_TYPES = {"otp": ("otp",), "oob": ("oob",), "otp oob": ("otp", "oob"), "oob otp": ("otp", "oob")}
# Members of the JSON bodies that are strings, with their limits: checked whenever present.
ASSOCIATE_TEXT = {"client_id": CLIENT_MAX, "client_secret": SECRET_MAX, "phone_number": PHONE_MAX,
                  "email": EMAIL_MAX}
CHALLENGE_TEXT = {"client_secret": SECRET_MAX, "authenticator_id": ID_MAX}
# Paths of this API and their methods, for the 404/405 answers in JSON.
KNOWN = {"/mfa/authenticators": ("GET",), "/mfa/associate": ("POST",), "/mfa/challenge": ("POST",),
         "/mfa/openapi.json": ("GET",), "/oauth/token": ("POST",)}


@bp.errorhandler(ApiError)
def api_error(exc: ApiError):
    response = json_error(exc)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return api_error(malformed(exc))


@bp.errorhandler(Exception)
def unexpected(exc: Exception):
    return api_error(server_error(log_incident("MFA API")))


def _op():
    return current_app.extensions["op"]


# -- reading requests ------------------------------------------------------------------------------

def _one_of(data: dict, name: str, allowed, required: bool = True) -> str | None:
    """Auth0's list members (authenticator_types, oob_channels) with exactly one value."""
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, list) or len(value) != 1 or value[0] not in allowed:
        raise ApiError(400, "invalid_request", f"'{name}' must be a list of one of: {', '.join(allowed)}.")
    return value[0]


def _members(data: dict, limits: dict) -> None:
    """Every documented string member that is present is checked, used or not."""
    for name, limit in limits.items():
        text_member(data, name, limit, required=False)


class _JsonTokenRequest(OAuth2Request):
    """A JSON body as Authlib's request (Auth0's SDKs post JSON): its string members."""

    def __init__(self, data: dict):
        super().__init__("POST", request.url, headers=request.headers)
        strings = {key: value for key, value in data.items() if isinstance(value, str)}
        self.payload = BasicOAuth2Payload(strings)
        self._form = MultiDict(strings)

    @property
    def form(self):
        return self._form

    @property
    def args(self):
        return MultiDict()


def _authenticate_client(data: dict):
    """The client named in the body, authenticated as at the token endpoint (client_secret in
    the body, HTTP Basic, a client assertion, or none for a public client)."""
    op = _op()
    try:
        return op.server.authenticate_client(_JsonTokenRequest(data), ALL_AUTH_METHODS, endpoint="token")
    except OAuth2Error as exc:
        raise ApiError(401, "invalid_client", exc.description or "Client authentication failed.") from None


# -- who calls -------------------------------------------------------------------------------------

def _holder() -> api.Holder:
    """The caller behind `Authorization: Bearer`: an mfa_token's login or a user's MFA API token."""
    token = bearer_token()
    if not token:
        raise ApiError(401, "invalid_token", "An mfa_token or an access token for the MFA API is required "
                                             "(Authorization: Bearer).")
    if len(token) > TOKEN_MAX:
        raise ApiError(401, "invalid_token", "The token is too long.")
    op = _op()
    try:
        holder = api.resolve_holder(op, token, mfa_resource(op.settings))
    except MfaTokenError as exc:
        raise ApiError(401, "invalid_token", exc.description) from None
    if holder is None:
        raise ApiError(401, "invalid_token", "The token is invalid, expired or revoked, or not a user's access token "
                                             f"for the MFA API (audience {mfa_resource(op.settings)}).")
    return holder


def _scope(holder: api.Holder, scope: str) -> None:
    if holder.login is None and scope not in holder.scopes:
        raise ApiError(403, "insufficient_scope", f"The access token lacks the scope '{scope}'.")


def _recent_mfa(holder: api.Holder) -> None:
    """RFC 9470: a change to the user's authenticators needs a second factor done recently."""
    op = _op()
    max_age = op.settings.mfa_api.reauth_max_age
    claims = holder.claims or {}
    auth_time = claims.get("auth_time")
    if "mfa" in (claims.get("amr") or []) and isinstance(auth_time, int) and time.time() - auth_time <= max_age:
        return
    try:
        acr = mfa_level(op.levels).value
    except AcrRequestError:
        acr = None
    description = f"Sign in again with a second factor (within {max_age} seconds) to change your authenticators."
    challenge = f'Bearer error="insufficient_user_authentication", error_description="{description}"'
    challenge += (f', acr_values="{acr}"' if acr else "") + f", max_age={max_age}"
    record_audit("mfa.reauthentication_required", user_id=holder.user.id, client_id=holder.client_id,
                 ip=request.remote_addr)
    raise ApiError(401, "insufficient_user_authentication", description, {"WWW-Authenticate": challenge})


def _same_client(holder: api.Holder, data: dict) -> None:
    """When the body names a client (as Auth0's SDKs do), it must authenticate and be the
    token's: an mfa_token of client A never serves client B."""
    if data.get("client_id") is None:
        return
    client = _authenticate_client(data)
    if client.client_id != holder.client_id:
        raise ApiError(401, "invalid_token", "The token was not issued to this client.")


def _factor(factor_id: str, label: str):
    factor = _op().factors.get(factor_id)
    if factor is None:
        raise ApiError(400, "invalid_request", f"The {label} authenticator is not enabled.")
    return factor


def _moves(holder: api.Holder, factor, as_user=None) -> None:
    """During a sign-in, only an authenticator that can complete it."""
    if not api.counts_toward(_op(), holder.login, factor, as_user or holder.user):
        raise ApiError(400, "unsupported_challenge_type", "This authenticator cannot complete this sign-in "
                                                          "(its flow is already used, or not allowed here).")


# -- the endpoints ---------------------------------------------------------------------------------

@bp.get("/mfa/authenticators")
def list_authenticators():
    holder = _holder()
    _scope(holder, "read:authenticators")
    response = jsonify([found.to_json() for found in api.authenticators(_op(), holder.user)])
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/mfa/authenticators/<authenticator_id>")
def delete_authenticator(authenticator_id: str):
    holder = _holder()
    if holder.login is not None:
        raise ApiError(403, "insufficient_scope", "Removing an authenticator needs an access token with "
                                                  "remove:authenticators, not an mfa_token.")
    _scope(holder, "remove:authenticators")
    _recent_mfa(holder)
    op = _op()
    found = api.find(op, holder.user, authenticator_id)
    if found is None:
        raise ApiError(404, "authenticator_not_found", "The user has no authenticator with this id.")
    try:
        api.remove(op, holder.user, found)
    except api.CannotRemove as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    record_audit("mfa.authenticator_removed", user_id=holder.user.id, client_id=holder.client_id,
                 ip=request.remote_addr, factor=found.factor, authenticator=found.id, via="mfa_api")
    return Response(status=204, headers={"Cache-Control": "no-store"})


@bp.post("/mfa/associate")
def associate():
    """Start an enrollment; the first code (or the device's enrollment) in the mfa-otp or
    mfa-oob grant confirms it. A user's first enrollment also returns recovery codes."""
    holder = _holder()
    data = json_object()
    _members(data, ASSOCIATE_TEXT)
    kind = _one_of(data, "authenticator_types", AUTHENTICATOR_TYPES)
    channel = _one_of(data, "oob_channels", tuple(api.CHANNELS), required=kind == "oob")
    _same_client(holder, data)
    op = _op()
    user = holder.user
    if holder.login is not None:
        if api.has_enrolled(op, user):
            raise ApiError(403, "access_denied", "User is already enrolled.")
    else:
        _scope(holder, "enroll")
        if api.has_enrolled(op, user):
            _recent_mfa(holder)
    tokens = MfaTokens.of(op)
    if kind == "otp":
        factor = _factor("totp", "otp")
        _moves(holder, factor)
        started = api.start_totp(op, user)
        answer = {"authenticator_type": "otp", "secret": started["secret"], "barcode_uri": started["barcode_uri"]}
        enrollment = {"totp": started["row_id"], "created_at": started["created_at"]}
    else:
        factor = _factor(api.CHANNELS[channel], channel)
        if channel == "auth0":
            answer, enrollment = _associate_push(holder, factor, tokens)
        else:
            answer, enrollment = _associate_contact(holder, factor, channel, data, tokens)
    codes = api.first_recovery_codes(op, user)
    if codes:
        answer["recovery_codes"] = codes
    tokens.remember_enrollment(holder.key, {**enrollment, "recovery_codes": bool(codes)})
    record_audit("mfa.enrollment_started", user_id=user.id, client_id=holder.client_id, ip=request.remote_addr,
                 factor=factor.id, via="mfa_api")
    response = jsonify(answer)
    response.headers["Cache-Control"] = "no-store"
    return response


def _associate_push(holder, factor, tokens):
    _moves(holder, factor)
    started = api.start_push_enrollment(_op(), holder.user)
    oob_code = tokens.new_oob(holder.key, {"kind": "push-enroll", "factor": "push",
                                           "token_digest": started["token_digest"], "known": started["known"]},
                              started["lifetime"])
    answer = {"authenticator_type": "oob", "oob_channel": "auth0", "oob_code": oob_code,
              "barcode_uri": started["barcode_uri"]}
    return answer, {"push": True}


def _associate_contact(holder, factor, channel, data, tokens):
    op, user = _op(), holder.user
    if channel == "email":
        destination = text_member(data, "email", EMAIL_MAX).strip().lower()
        if destination != (user.email or "").lower():
            raise ApiError(400, "invalid_request", "'email' must be the account's primary email address.")
    else:
        destination = text_member(data, "phone_number", PHONE_MAX).strip()
        if not api.E164.fullmatch(destination):
            raise ApiError(400, "invalid_request", "'phone_number' must be in E.164 form, e.g. +14155550100.")
    record = {"kind": "enroll-code", "factor": factor.id, "channel": channel, "destination": destination,
              "binding": f"mfa:{holder.key}"}
    _moves(holder, factor, api.enrolled_user(user, record))
    try:
        record["challenge"] = api.send_enrollment_code(op, user, channel, destination, record["binding"],
                                                       request.remote_addr)
    except SendRefused as refused:
        raise ApiError(429, refused.message_id, "Too many messages; try again later.") from None
    except DeliveryError as exc:
        current_app.logger.warning("MFA API enrollment code over %s failed: %s", channel, exc)
        raise ApiError(503, "delivery_failed", "The message could not be sent; try again.") from None
    oob_code = tokens.new_oob(holder.key, record, op.settings.otp.lifetime)
    answer = {"authenticator_type": "oob", "oob_channel": channel, "oob_code": oob_code, "binding_method": "prompt"}
    return answer, {"oob": channel}


@bp.post("/mfa/challenge")
def challenge():
    """Auth0's challenge: otp needs nothing sent; oob sends a code (binding_method prompt) or
    asks the push devices, and answers the oob_code for the mfa-oob grant."""
    data = json_object()
    op = _op()
    token = text_member(data, "mfa_token", TOKEN_MAX)
    basic = request.authorization is not None and request.authorization.type == "basic"
    text_member(data, "client_id", CLIENT_MAX, required=not basic)  # or HTTP Basic (client_secret_basic)
    _members(data, CHALLENGE_TEXT)
    types = CHALLENGE_TYPES.get(text_member(data, "challenge_type", 16, required=False) or "otp oob")
    if types is None:
        raise ApiError(400, "unsupported_challenge_type", 'challenge_type must be otp, oob or "otp oob".')
    channel = text_member(data, "oob_channel", 16, required=False)
    if channel is not None and channel not in api.CHANNELS:
        raise ApiError(400, "invalid_request", f"'oob_channel' must be one of: {', '.join(api.CHANNELS)}.")
    wanted_id = text_member(data, "authenticator_id", ID_MAX, required=False)
    client = _authenticate_client(data)
    try:
        holder = api.resolve_holder(op, token, mfa_resource(op.settings))
    except MfaTokenError as exc:
        raise ApiError(400, exc.error, exc.description) from None
    if holder is None or holder.login is None or holder.client_id != client.client_id:
        raise ApiError(400, "invalid_grant", "Malformed mfa_token")
    user = holder.user
    candidates = [found for found in api.authenticators(op, user)
                  if found.active and found.authenticator_type in types and found.factor != "recovery-code"
                  and (channel is None or found.oob_channel == channel)
                  and (wanted_id is None or found.id == wanted_id)
                  and api.counts_toward(op, holder.login, op.factors.get(found.factor), user)]
    if not candidates:
        if wanted_id is not None:
            raise ApiError(400, "invalid_authenticator_id", "The user has no such authenticator that can be "
                                                            "challenged here.")
        raise ApiError(400, "unsupported_challenge_type", "User is not enrolled with an authenticator of the "
                                                          "requested challenge types.")
    chosen = min(candidates, key=lambda found: api.API_FACTORS.index(found.factor))
    if chosen.authenticator_type == "otp":
        return _no_store({"challenge_type": "otp"})
    return _no_store(_send_challenge(holder, client, chosen))


def _send_challenge(holder, client, chosen) -> dict:
    op, user = _op(), holder.user
    factor = op.factors.get(chosen.factor)
    binding = f"mfa:{holder.key}"
    context = {"binding": binding, "ip": request.remote_addr,
               "client_name": client.config.client_name or client.client_id}
    try:
        begun = factor.begin(user, context)
    except SendRefused as refused:
        raise ApiError(429, refused.message_id, "Too many requests; try again later.") from None
    except DeliveryError as exc:
        current_app.logger.warning("MFA API challenge over %s failed: %s", factor.id, exc)
        raise ApiError(503, "delivery_failed", "The challenge could not be delivered; try again.") from None
    if not begun.get("challenge"):
        raise ApiError(400, "unsupported_challenge_type", "The authenticator cannot be challenged now.")
    tokens = MfaTokens.of(op)
    if factor.id == "push":
        record = {"kind": "push", "factor": "push", "binding": binding, "pending": {**begun, "user_id": user.id}}
        oob_code = tokens.new_oob(holder.key, record, op.settings.push.challenge_lifetime)
    else:
        record = {"kind": "code", "factor": factor.id, "binding": binding, "challenge": begun["challenge"]}
        oob_code = tokens.new_oob(holder.key, record, factor.lifetime)
    record_audit("mfa.challenge_sent", user_id=user.id, client_id=client.client_id, ip=request.remote_addr,
                 factor=factor.id, authenticator=chosen.id)
    answer = {"challenge_type": "oob", "oob_code": oob_code}
    if factor.id != "push":
        answer["binding_method"] = "prompt"
    return answer


def _no_store(value) -> Response:
    response = jsonify(value)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the token endpoint under Auth0's path ---------------------------------------------------------------

@bp.post("/oauth/token")
def oauth_token():
    """The same token endpoint as /oidc/token, at Auth0's /oauth/token; also takes a JSON body
    (Auth0's SDKs post JSON), whose members must be strings."""
    op = _op()
    limit = op.settings.max_parameter_length
    oauth_request = None
    if request.mimetype == "application/json":
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or not all(isinstance(value, str) for value in data.values()):
            return _token_error("The body must be a JSON object whose members are strings.")
        oauth_request = _JsonTokenRequest(data)
        pairs = list(data.items())
    else:
        pairs = list(request.form.items(multi=True)) + list(request.args.items(multi=True))
    for key, value in pairs:
        if len(key) > 128 or len(value) > limit:
            return _token_error(f"The parameter {key[:40]!r} is too long.")
    response = op.server.create_token_response(oauth_request)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _token_error(description: str) -> Response:
    response = jsonify(error="invalid_request", error_description=description)
    response.status_code = 400
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the description, and JSON answers for every other path and method here ---------------------------

@bp.get("/mfa/openapi.json")
def openapi_document():
    from ..openapi_mfa import document

    return cached_description("openapi-mfa", document)


@bp.route("/mfa/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/oauth/token", methods=["GET", "PUT", "PATCH", "DELETE"])
def elsewhere(rest: str | None = None):
    """404 and 405 in this API's JSON shape (the site's own handlers answer pages)."""
    one_authenticator = request.path.startswith("/mfa/authenticators/") and "/" not in request.path[20:]
    allowed = KNOWN.get(request.path) or (("DELETE",) if one_authenticator else None)
    if allowed is None or request.method in allowed:  # e.g. DELETE /mfa/authenticators/a/b
        raise ApiError(404, "not_found", "Not found.")
    raise ApiError(405, "invalid_request", "Method not allowed.", {"Allow": ", ".join(allowed)})
