"""The direct API (Transmit style) for backends and mobile apps.

A backend authenticates with a client access token (client_credentials) as a Bearer
token; each endpoint family needs a scope (`auth.email`, `auth.sms`, `auth.password`).
A successful factor answers 200 with the redirect URL carrying a `code` for
`/oidc/token`. When a second factor is needed (`require_mfa`, or the policy) the answer
is the Transmit guide's: a URL with `error=mfa_required` and `error_description=A second
factor is required: email,sms,email-otp`. The JSON answer also carries `mfa_session`, an
opaque single-use value the second call must send back: it binds the two calls to one
user, one client and the first factor, so a second factor cannot complete someone
else's first. Also served under `/cis`, so the guide's URLs work with only the host changed.

`GET /v1/auth/webauthn` is the browser's way in: it checks the client and redirect_uri and
sends the browser into the ordinary authorization flow with an acr level that requires
WebAuthn. The API's OpenAPI 3.1 description (oidc_provider/openapi.py) is served at
`GET /v1/openapi.json`; tests keep it and the routes here in step.

Every answer of these endpoints is either documented success or the JSON error shape
`{"error", "error_description"}` (the two browser pages answer an HTML error page unless
the browser prefers JSON); nothing raised here becomes an HTML or a traceback answer.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict
from urllib.parse import quote, urlencode

from flask import Blueprint, current_app, jsonify, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from ..authn import chain
from ..authn.acr import AcrRequestError, level_met, mfa_level
from ..authn.lockout import verify_counted, verify_login
from ..authn.otp import SendRefused
from ..authn.session import FactorUse, auth_context
from ..authn.signin import decision_level, policy_decision
from ..delivery import DeliveryError
from ..errors import error_page
from ..extensions import db
from ..models import User, record_audit
from ..oauth.server import store_authorization_code
from .api_common import (ApiError, cached_description, client_token_claims, json_error, json_object, log_incident,
                         malformed, server_error, storable, text_member)

bp = Blueprint("direct_api", __name__, url_prefix="/v1/auth")
MFA_SESSION_LIFETIME = 10 * 60
# The Transmit guide: the second method must be an SMS or email flow; listed in its order.
API_FACTORS = ("email", "sms", "email-otp")
WEBAUTHN_FACTORS = frozenset({"webauthn-key", "webauthn-platform", "passkey"})
# Longest accepted strings (characters); openapi.py documents these very numbers.
EMAIL_MAX, PHONE_MAX, PASSCODE_MAX, PASSWORD_MAX, USERNAME_MAX = 320, 32, 32, 1024, 320
TEXT_MAX, CODE_CHALLENGE_MAX, MFA_SESSION_MAX, LINK_TOKEN_MAX = 512, 128, 128, 128
USER_AGENT_MAX, IP_ADDRESS_MAX = 512, 64  # the audit table's ip column holds 64
# Pages a browser sees; every other endpoint here is a JSON API.
BROWSER_ENDPOINTS = frozenset({"magic_link_landing", "magic_link_confirm", "webauthn_start"})


@bp.errorhandler(ApiError)
def api_error(exc: ApiError):
    return json_error(exc)


def _browser_page() -> bool:
    return (request.endpoint or "").rpartition(".")[2] in BROWSER_ENDPOINTS


def _wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"], "text/html") == "application/json"


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    """The browser pages answer Werkzeug's refusals as the site's HTML page."""
    if _browser_page() and not _wants_json():
        return error_page("invalid_request", 400)
    return api_error(malformed(exc))


@bp.errorhandler(Exception)
def unexpected(exc: Exception):
    incident = log_incident("direct API")
    if _browser_page() and not _wants_json():
        return error_page("server_error", 500, detail=f"Incident {incident}")
    return api_error(server_error(incident))


def _op():
    return current_app.extensions["op"]


def api_client(scope: str):
    """The client whose access token authorizes this call (RFC 6750), with `scope`."""
    claims = client_token_claims(_op())
    if scope not in (claims.get("scope") or "").split():
        raise ApiError(403, "insufficient_scope", f"The client token lacks the scope '{scope}'.")
    client = _op().clients.get(claims["client_id"])
    if client is None:
        raise ApiError(401, "invalid_token", "The client is no longer registered.")
    return client


def _flag(data: dict, name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_request", f"'{name}' must be true or false.")
    return value


def _attributes(data: dict) -> dict:
    """client_attributes {user_agent, ip_address}: who the end user is, for policy and audit.
    An object or null; other members of it are ignored."""
    attributes = data.get("client_attributes")
    if attributes is None:
        attributes = {}
    limits = {"user_agent": USER_AGENT_MAX, "ip_address": IP_ADDRESS_MAX}
    if not isinstance(attributes, dict) or any(
            not isinstance(attributes.get(key, ""), str) or len(attributes.get(key, "")) > limit
            or not storable(attributes.get(key, "")) for key, limit in limits.items()):
        raise ApiError(400, "invalid_request", "'client_attributes' must be an object whose user_agent (at most "
                       f"{USER_AGENT_MAX} characters) and ip_address (at most {IP_ADDRESS_MAX}) are strings.")
    return {"user_agent": attributes.get("user_agent"), "ip_address": attributes.get("ip_address")}


def _redirect_uri(client, data: dict) -> str:
    uri = text_member(data, "redirect_uri", TEXT_MAX)
    if not client.check_redirect_uri(uri):
        raise ApiError(400, "invalid_request", "'redirect_uri' is not registered for this client.")
    return uri


def _binding(client, factor_id: str, identifier: str) -> str:
    """One pending code per client, factor and address: the send and the validation meet here.
    The address is hashed: store keys stay short (the SQL store's key column holds 255)."""
    address = hashlib.sha256(identifier.strip().lower().encode()).hexdigest()
    return f"api:{client.client_id}:{factor_id}:{address}"


def _factor(factor_id: str, label: str):
    factor = _op().factors.get(factor_id)
    if factor is None:
        raise ApiError(400, "invalid_request", f"The {label} flow is not enabled.")
    return factor


# -- sending ------------------------------------------------------------------------------------

def _send_code(client, factor_id: str, user, identifier: str, attributes: dict):
    factor = _factor(factor_id, factor_id)
    try:
        factor.begin(user, {"binding": _binding(client, factor_id, identifier), "ip": attributes["ip_address"]})
    except SendRefused as refused:
        raise ApiError(429, refused.message_id, "Too many messages; try again later.") from None
    except DeliveryError as exc:
        current_app.logger.warning("direct API delivery of %s failed: %s", factor_id, exc)
        raise ApiError(503, "delivery_failed", "The message could not be sent; try again.") from None
    record_audit("api.code_sent", user_id=user.id if user else None, client_id=client.client_id,
                 ip=attributes["ip_address"], factor=factor_id, user_agent=attributes["user_agent"])
    # the same answer whether or not the address belongs to an account (no enumeration)
    return jsonify(message="If the address belongs to an account that can use it, a code was sent.")


@bp.post("/otp/email")
def send_email_otp():
    client = api_client("auth.email")
    data = json_object()
    email = text_member(data, "email", EMAIL_MAX)
    return _send_code(client, "email-otp", User.find_by_login(email) if "@" in email else None, email,
                      _attributes(data))


@bp.post("/otp/sms")
def send_sms_otp():
    client = api_client("auth.sms")
    data = json_object()
    number = text_member(data, "phone_number", PHONE_MAX)
    return _send_code(client, "sms", User.find_by_phone(number), number, _attributes(data))


@bp.post("/links/email")
def send_magic_link():
    """Send a sign-in link; following it (and pressing its button) redirects to redirect_uri."""
    client = api_client("auth.email")
    data = json_object()
    email = text_member(data, "email", EMAIL_MAX)
    transaction = _transaction(client, data)
    factor = _factor("email", "email link")
    op = _op()
    binding = f"api-link:{secrets.token_urlsafe(16)}"
    op.store.set(binding, transaction, factor.lifetime)
    user = User.find_by_login(email) if "@" in email else None
    try:
        factor.begin(user, {"binding": binding, "ip": transaction["attributes"]["ip_address"],
                            "link_url": f"{op.settings.issuer_url}/v1/auth/links/email/verify?token={{token}}"})
    except SendRefused as refused:
        raise ApiError(429, refused.message_id, "Too many messages; try again later.") from None
    except DeliveryError:
        raise ApiError(503, "delivery_failed", "The message could not be sent; try again.") from None
    return jsonify(message="If the address belongs to an account that can use it, a link was sent.")


# -- validating ---------------------------------------------------------------------------------

def _transaction(client, data: dict) -> dict:
    """What the final redirect needs, taken from the request body."""
    return {
        "client_id": client.client_id, "redirect_uri": _redirect_uri(client, data),
        "require_mfa": _flag(data, "require_mfa"), "attributes": _attributes(data),
        "state": text_member(data, "state", TEXT_MAX, required=False),
        "nonce": text_member(data, "nonce", TEXT_MAX, required=False),
        "scope": client.get_allowed_scope(text_member(data, "scope", TEXT_MAX, required=False) or "openid") or "openid",
        "code_challenge": text_member(data, "code_challenge", CODE_CHALLENGE_MAX, required=False),
        "mfa_session": text_member(data, "mfa_session", MFA_SESSION_MAX, required=False),
    }


def _validate_code(factor_id: str, identifier_field: str, limit: int, find_user, scope: str):
    client = api_client(scope)
    data = json_object()
    identifier = text_member(data, identifier_field, limit)
    passcode = text_member(data, "passcode", PASSCODE_MAX)
    transaction = _transaction(client, data)
    op = _op()
    factor = _factor(factor_id, factor_id)
    user = find_user(identifier)
    binding = _binding(client, factor_id, identifier)
    challenge = op.store.get(f"otp-current:{binding}:{factor_id}")
    result = verify_counted(op, factor, user, {"code": passcode}, {"binding": binding, "challenge": challenge})
    if not result.ok or user is None:
        record_audit("factor.failed", user_id=user.id if user else None, client_id=client.client_id,
                     ip=transaction["attributes"]["ip_address"], factor=factor_id, reason=result.reason, via="api")
        raise ApiError(400, "invalid_grant", "The passcode is wrong, expired or already used.")
    return jsonify(_factor_done(client, user, factor, transaction))


@bp.post("/otp/email/validation")
def validate_email_otp():
    return _validate_code("email-otp", "email", EMAIL_MAX,
                          lambda email: User.find_by_login(email) if "@" in email else None, "auth.email")


@bp.post("/otp/sms/validation")
def validate_sms_otp():
    return _validate_code("sms", "phone_number", PHONE_MAX, User.find_by_phone, "auth.sms")


@bp.post("/password/login")
def password_login():
    client = api_client("auth.password")
    data = json_object()
    login = text_member(data, "username", USERNAME_MAX, required=False) or text_member(data, "email", EMAIL_MAX)
    password = text_member(data, "password", PASSWORD_MAX)
    transaction = _transaction(client, data)
    op = _op()
    factor = _factor("password", "password")
    context = {"binding": f"api:{client.client_id}", "ip": transaction["attributes"]["ip_address"]}
    user, result = verify_login(op, factor, {"login": login, "password": password}, context)
    if not result.ok:
        record_audit("factor.failed", user_id=user.id if user else None, client_id=client.client_id,
                     ip=transaction["attributes"]["ip_address"], factor="password", reason=result.reason, via="api")
        raise ApiError(400, "invalid_grant", "The username or password is not right.")
    return jsonify(_factor_done(client, user, factor, transaction))


@bp.get("/links/email/verify")
def magic_link_landing():
    """A GET only shows a button: mail scanners that fetch links must not use them up."""
    token = request.args.get("token", "")
    if _op().otp.find_by_link(token) is None:
        return error_page("link_invalid", 400)
    return render_template("link_confirm.html", token=token, action=request.path)


@bp.post("/links/email/verify")
def magic_link_confirm():
    op = _op()
    token = request.form.get("token", "")
    found = op.otp.find_by_link(token)
    if found is None:
        return error_page("link_invalid", 400)
    challenge, challenge_record = found
    transaction = op.store.get(challenge_record["binding"])
    user = db.session.get(User, challenge_record["user_id"])
    factor = op.factors.get("email")
    # the client may have been removed, or its redirect_uri unregistered, since the link was sent
    client = op.clients.get(transaction["client_id"]) if isinstance(transaction, dict) else None
    if client is None or not client.check_redirect_uri(transaction["redirect_uri"]) or None in (user, factor):
        return error_page("link_invalid", 400)
    context = {"binding": challenge_record["binding"], "challenge": challenge}
    if not verify_counted(op, factor, user, {"token": token}, context).ok:
        record_audit("factor.failed", user_id=user.id, client_id=client.client_id, ip=request.remote_addr, factor=factor.id, reason="link refused", via="api")
        return error_page("link_invalid", 400)
    answer = _factor_done(client, user, factor, transaction)
    return redirect(answer["result"]["url"], code=303)


# -- WebAuthn: into the browser flow --------------------------------------------------------------

WEBAUTHN_PARAMETERS = ("client_id", "redirect_uri", "require_mfa", "state", "nonce", "code_challenge",
                       "code_challenge_method")
CODE_CHALLENGE_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def webauthn_level(levels, require_mfa: bool):
    """The acr level GET /webauthn asks the browser flow for; None when no level fits.

    Only a level whose `required_factors` are all WebAuthn factors makes WebAuthn
    required. Without require_mfa: the weakest such level (phr by default). With it: the
    weakest such level that needs two flows, else the weakest one ranked at or above the
    require_mfa level. The default levels rank phr (one WebAuthn flow) above mfa, so there
    require_mfa still asks for phr, one WebAuthn flow: acr_values takes one level, the
    highest-ranked wins, and "WebAuthn and a second flow" exists only as a configured level
    (required_factors: the WebAuthn factors, flows: 2), which is then preferred. Never a
    level that does not require WebAuthn: "phr mfa" would become mfa if mfa ranked higher.
    """
    webauthn = sorted((level for level in levels
                       if level.required_factors and level.required_factors <= WEBAUTHN_FACTORS),
                      key=lambda level: level.rank)
    if not require_mfa:
        return webauthn[0] if webauthn else None
    two_flows = [level for level in webauthn if level.flows >= 2]
    if two_flows:
        return two_flows[0]
    try:
        floor = mfa_level(levels)
    except AcrRequestError:
        return None
    return next((level for level in webauthn if level.rank >= floor.rank), None)


def _browser_error(status: int, error: str, message_id: str, description: str):
    """An HTML error page for a person; the JSON error shape when the caller prefers JSON."""
    if _wants_json():
        raise ApiError(status, error, description)
    return error_page(message_id, status, detail=description)


@bp.get("/webauthn")
def webauthn_start():
    """Send the browser into the authorization flow with an acr level that requires WebAuthn.

    The client and redirect_uri are checked here, so an error is never sent to an address
    the client has not registered: it is a 400 page (JSON when the caller prefers it). The
    authorization endpoint then checks everything again and answers as it always does.
    """
    op = _op()
    limit = op.settings.max_parameter_length
    values = {}
    for name in WEBAUTHN_PARAMETERS:
        given = request.args.getlist(name)
        if len(given) > 1:
            return _browser_error(400, "invalid_request", "invalid_request", f"'{name}' is included more than once.")
        if given and len(given[0]) > limit:
            return _browser_error(400, "invalid_request", "invalid_request", f"'{name}' is too long.")
        values[name] = given[0] if given and given[0] != "" else None
    if values["client_id"] is None:
        return _browser_error(400, "invalid_request", "invalid_request", "'client_id' is required.")
    client = op.clients.get(values["client_id"])
    if client is None:
        return _browser_error(400, "invalid_client", "invalid_client", "The client is not registered.")
    if values["redirect_uri"] is None:
        return _browser_error(400, "invalid_request", "invalid_redirect_uri", "'redirect_uri' is required.")
    if not client.check_redirect_uri(values["redirect_uri"]):
        return _browser_error(400, "invalid_request", "invalid_redirect_uri",
                              "'redirect_uri' is not registered for this client.")
    if values["require_mfa"] not in (None, "true", "false"):
        return _browser_error(400, "invalid_request", "invalid_request", "'require_mfa' must be true or false.")
    challenge, method = values["code_challenge"], values["code_challenge_method"]
    if method not in (None, "S256") or (method and not challenge):
        return _browser_error(400, "invalid_request", "invalid_request",
                              "'code_challenge_method' must be S256, with a code_challenge.")
    if challenge is not None and not (43 <= len(challenge) <= 128 and set(challenge) <= CODE_CHALLENGE_CHARACTERS):
        return _browser_error(400, "invalid_request", "invalid_request",
                              "'code_challenge' must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636).")
    level = webauthn_level(op.levels, values["require_mfa"] == "true")
    if level is None:
        return _browser_error(400, "unmet_authentication_requirements", "invalid_request",
                              "No acr level of this provider requires WebAuthn"
                              + (" and multi-factor authentication." if values["require_mfa"] == "true" else "."))
    query = [("client_id", client.client_id), ("redirect_uri", values["redirect_uri"]), ("response_type", "code"),
             ("scope", "openid"), ("acr_values", level.value)]
    query += [(name, values[name]) for name in ("state", "nonce", "code_challenge") if values[name] is not None]
    if challenge is not None:
        query.append(("code_challenge_method", "S256"))
    response = redirect(f"{op.settings.issuer_url}/oidc/auth?{urlencode(query, quote_via=quote)}", code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the description ---------------------------------------------------------------------------

def openapi_document():
    """The OpenAPI 3.1 description of this API, built once per app and served as cached bytes."""
    from ..openapi import document

    return cached_description("openapi", document)


def _serve_description(state) -> None:
    """GET /v1/openapi.json sits beside the /v1/auth prefix, so it is an app route (endpoint
    direct_api.openapi, so this blueprint's error handlers apply); added on the first
    registration only: the /cis copy of the API is described by the same document."""
    state.app.add_url_rule("/v1/openapi.json", endpoint=f"{bp.name}.openapi", view_func=openapi_document,
                           methods=["GET"])


bp.record_once(_serve_description)


# -- the outcome -------------------------------------------------------------------------------

def _factor_done(client, user, factor, transaction: dict) -> dict:
    """A factor succeeded: either the code, or mfa_required with what may come next."""
    record_audit("factor.succeeded", user_id=user.id, client_id=client.client_id, ip=transaction["attributes"]["ip_address"] or request.remote_addr, factor=factor.id, via="api")
    op = _op()
    now = time.time()
    done = [FactorUse(factor=factor.id, amr=factor.amr, flow=factor.flow, at=now)]
    if transaction.get("mfa_session"):
        earlier = op.store.take(f"api-mfa:{transaction['mfa_session']}")
        if earlier is None or (earlier["client_id"], earlier["user_id"]) != (client.client_id, user.id):
            raise ApiError(400, "invalid_grant", "The mfa_session is unknown, expired, used, or another login's.")
        done = [FactorUse(**use) for use in earlier["factors"]] + done
    try:
        level = mfa_level(op.levels) if transaction["require_mfa"] else None
    except AcrRequestError as exc:  # the configured levels have none needing two flows
        raise ApiError(400, "invalid_request", str(exc)) from None
    decision = policy_decision(op, user, client, transaction["attributes"]["ip_address"] or request.remote_addr)
    try:
        demanded = decision_level(op.levels, decision)
    except AcrRequestError:  # the policy asks for MFA that no level expresses: fail closed
        demanded, decision = None, None
    if decision is None or decision.action == "deny" or (decision.action == "require_acr" and demanded is None):
        raise ApiError(403, "access_denied", "Sign-in refused by policy.")
    if demanded is not None and (level is None or demanded.rank > level.rank):
        level = demanded
    if level is not None and not level_met(level, done, now):
        choices, gaps = chain.next_choices(level, op.factors.available_for(user), done, user, now)
        offered = {factor.id for factor in choices}
        allowed = [factor_id for factor_id in API_FACTORS if factor_id in offered]
        if not allowed:
            raise ApiError(400, "mfa_unavailable",
                           "A second factor is required but the user has none: missing " + " and ".join(gaps or ["a factor"]))
        session = secrets.token_urlsafe(32)
        op.store.set(f"api-mfa:{session}", {"client_id": client.client_id, "user_id": user.id,
                                            "factors": [asdict(use) for use in done]}, MFA_SESSION_LIFETIME)
        # mfa_session rides along in the URL too: a magic link's answer reaches the client only there
        url = _with_query(transaction["redirect_uri"], [
            ("error", "mfa_required"), ("error_description", "A second factor is required: " + ",".join(allowed)),
            ("mfa_session", session)])
        return {"result": {"url": url}, "mfa_session": session}
    context = auth_context(op, done, None, level, now)
    code = secrets.token_urlsafe(36)
    store_authorization_code(
        op, code, client_id=client.client_id, redirect_uri=transaction["redirect_uri"], scope=transaction["scope"],
        sub=user.id, auth=context.to_dict(), nonce=transaction.get("nonce"),
        code_challenge=transaction.get("code_challenge"),
        code_challenge_method="S256" if transaction.get("code_challenge") else None,
    )
    record_audit("authorization.code_issued", user_id=user.id, client_id=client.client_id,
                 ip=transaction["attributes"]["ip_address"], acr=context.acr, amr=context.amr, via="api",
                 user_agent=transaction["attributes"]["user_agent"])
    params = [("code", code)] + ([("state", transaction["state"])] if transaction.get("state") else [])
    return {"result": {"url": _with_query(transaction["redirect_uri"], params)}}


def _with_query(uri: str, params: list[tuple[str, str]]) -> str:
    """Add query parameters, spaces as %20 as in the Transmit guide's example URL."""
    return uri + ("&" if "?" in uri else "?") + urlencode(params, quote_via=quote)
