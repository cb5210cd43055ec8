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
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict
from urllib.parse import quote, urlencode

from flask import Blueprint, current_app, jsonify, redirect, render_template, request

from ..authn import chain
from ..authn.acr import level_met, mfa_level
from ..authn.lockout import verify_counted
from ..authn.otp import SendRefused
from ..authn.session import FactorUse, auth_context
from ..authn.signin import decision_level, policy_decision
from ..delivery import DeliveryError
from ..errors import error_page
from ..extensions import db
from ..models import User, record_audit
from ..oauth.server import store_authorization_code

bp = Blueprint("direct_api", __name__, url_prefix="/v1/auth")
MFA_SESSION_LIFETIME = 10 * 60
# The Transmit guide: the second method must be an SMS or email flow; listed in its order.
API_FACTORS = ("email", "sms", "email-otp")


class ApiError(Exception):
    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@bp.errorhandler(ApiError)
def api_error(exc: ApiError):
    response = jsonify(error=exc.error, error_description=exc.description)
    response.status_code = exc.status
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"'
    return response


def _op():
    return current_app.extensions["op"]


def api_client(scope: str):
    """The client whose access token authorizes this call (RFC 6750), with `scope`."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "invalid_token", "A client access token is required (Authorization: Bearer).")
    claims = _op().tokens.verify_access_token(token.strip())
    if claims is None or claims.get("sub") != claims.get("client_id"):
        raise ApiError(401, "invalid_token", "The token is invalid, expired, revoked or not a client token.")
    if scope not in (claims.get("scope") or "").split():
        raise ApiError(403, "insufficient_scope", f"The client token lacks the scope '{scope}'.")
    client = _op().clients.get(claims["client_id"])
    if client is None:
        raise ApiError(401, "invalid_token", "The client is no longer registered.")
    return client


def _body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    return data


def _text(data: dict, name: str, required: bool = True, limit: int = 512) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, "invalid_request", f"'{name}' is required.")
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError(400, "invalid_request", f"'{name}' must be a string of at most {limit} characters.")
    return value


def _flag(data: dict, name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_request", f"'{name}' must be true or false.")
    return value


def _attributes(data: dict) -> dict:
    """client_attributes {user_agent, ip_address}: who the end user is, for policy and audit."""
    attributes = data.get("client_attributes") or {}
    if not isinstance(attributes, dict) or any(
            not isinstance(attributes.get(key, ""), str) or len(attributes.get(key, "")) > 512
            for key in ("user_agent", "ip_address")):
        raise ApiError(400, "invalid_request", "'client_attributes' must hold user_agent and ip_address strings.")
    return {"user_agent": attributes.get("user_agent"), "ip_address": attributes.get("ip_address")}


def _redirect_uri(client, data: dict) -> str:
    uri = _text(data, "redirect_uri")
    if not client.check_redirect_uri(uri):
        raise ApiError(400, "invalid_request", "'redirect_uri' is not registered for this client.")
    return uri


def _binding(client, factor_id: str, identifier: str) -> str:
    """One pending code per client, factor and address: the send and the validation meet here."""
    return f"api:{client.client_id}:{factor_id}:{identifier.strip().lower()}"


# -- sending ------------------------------------------------------------------------------------

def _send_code(client, factor_id: str, user, identifier: str, attributes: dict):
    factor = _op().factors.get(factor_id)
    if factor is None:
        raise ApiError(400, "invalid_request", f"The {factor_id} flow is not enabled.")
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
    data = _body()
    email = _text(data, "email", limit=320)
    return _send_code(client, "email-otp", User.find_by_login(email) if "@" in email else None, email,
                      _attributes(data))


@bp.post("/otp/sms")
def send_sms_otp():
    client = api_client("auth.sms")
    data = _body()
    number = _text(data, "phone_number", limit=32)
    return _send_code(client, "sms", User.find_by_phone(number), number, _attributes(data))


@bp.post("/links/email")
def send_magic_link():
    """Send a sign-in link; following it (and pressing its button) redirects to redirect_uri."""
    client = api_client("auth.email")
    data = _body()
    email = _text(data, "email", limit=320)
    transaction = _transaction(client, data)
    factor = _op().factors.get("email")
    if factor is None:
        raise ApiError(400, "invalid_request", "The email link flow is not enabled.")
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
        "state": _text(data, "state", required=False), "nonce": _text(data, "nonce", required=False),
        "scope": client.get_allowed_scope(_text(data, "scope", required=False) or "openid") or "openid",
        "code_challenge": _text(data, "code_challenge", required=False, limit=128),
        "mfa_session": _text(data, "mfa_session", required=False, limit=128),
    }


def _validate_code(factor_id: str, identifier_field: str, find_user, scope: str):
    client = api_client(scope)
    data = _body()
    identifier = _text(data, identifier_field, limit=320)
    passcode = _text(data, "passcode", limit=32)
    transaction = _transaction(client, data)
    op = _op()
    factor = op.factors.get(factor_id)
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
    return _validate_code("email-otp", "email", lambda email: User.find_by_login(email) if "@" in email else None,
                          "auth.email")


@bp.post("/otp/sms/validation")
def validate_sms_otp():
    return _validate_code("sms", "phone_number", User.find_by_phone, "auth.sms")


@bp.post("/password/login")
def password_login():
    client = api_client("auth.password")
    data = _body()
    login = _text(data, "username", required=False, limit=320) or _text(data, "email", limit=320)
    password = _text(data, "password", limit=1024)
    transaction = _transaction(client, data)
    op = _op()
    factor = op.factors.get("password")
    user = User.find_by_login(login)
    context = {"binding": f"api:{client.client_id}", "ip": transaction["attributes"]["ip_address"]}
    result = verify_counted(op, factor, user, {"login": login, "password": password}, context)
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
    context = {"binding": challenge_record["binding"], "challenge": challenge}
    if transaction is None or user is None or not verify_counted(op, factor, user, {"token": token}, context).ok:
        return error_page("link_invalid", 400)
    client = op.clients.get(transaction["client_id"])
    answer = _factor_done(client, user, factor, transaction)
    return redirect(answer["result"]["url"], code=303)


# -- the outcome -------------------------------------------------------------------------------

def _factor_done(client, user, factor, transaction: dict) -> dict:
    """A factor succeeded: either the code, or mfa_required with what may come next."""
    op = _op()
    now = time.time()
    done = [FactorUse(factor=factor.id, amr=factor.amr, flow=factor.flow, at=now)]
    if transaction.get("mfa_session"):
        earlier = op.store.take(f"api-mfa:{transaction['mfa_session']}")
        if earlier is None or (earlier["client_id"], earlier["user_id"]) != (client.client_id, user.id):
            raise ApiError(400, "invalid_grant", "The mfa_session is unknown, expired, used, or another login's.")
        done = [FactorUse(**use) for use in earlier["factors"]] + done
    level = mfa_level(op.levels) if transaction["require_mfa"] else None
    decision = policy_decision(op, user, client, transaction["attributes"]["ip_address"] or request.remote_addr)
    demanded = decision_level(op.levels, decision)
    if decision.action == "deny" or (decision.action == "require_acr" and demanded is None):
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
