"""Protocol endpoints: discovery, authorization, token, userinfo, JWKS, revocation,
introspection and RP-initiated logout.

The authorization endpoint never renders a login page itself: when the user must act
it stores an *interaction* and redirects to it; the interaction pages send the browser
back to `/oidc/auth/resume/<uid>`, which decides again with what the user just did.
"""

from __future__ import annotations

import json
import time

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error, OAuth2Payload, OAuth2Request
from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for
from joserfc import jwt
from joserfc.errors import JoseError

from ..authn import interaction as interactions
from ..authn import upstream as upstreams
from .. import cookies
from ..authn.acr import AcrRequestError, parse_acr_request
from ..authn.session import auth_context
from ..authn.signin import decision_level, policy_decision, record_signin
from ..errors import error_page, oauth_error, outage_errors
from ..i18n import SUPPORTED as SUPPORTED_LOCALES
from ..extensions import commit_pending, db
from ..models import User, record_audit
from ..models.users import claims_for_scope
from . import backchannel, device, par, request_object
from .dpop import DPoPError, metadata as dpop_metadata
from .keys import JWKS_CACHE_SECONDS
from ..observability import authorization_error, readiness, step_up_met
from .server import (ALL_AUTH_METHODS, CONFIDENTIAL_AUTH_METHODS, REPEATABLE_TOKEN_PARAMETERS,
                     requested_resources)
from .tokens import audiences

OUTAGES = outage_errors()  # a database or store that cannot be reached (a 503, errors.py)
bp = Blueprint("oidc", __name__)


def current_op():
    return current_app.extensions["op"]


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")  # what Werkzeug parses


@bp.before_request
def reject_oversized_parameters():
    limit = current_op().settings.max_parameter_length
    sources = (request.args, request.form) if request.mimetype in FORM_TYPES else (request.args,)
    for source in sources:
        for key, value in source.items(multi=True):
            if len(key) > 128 or len(value) > limit:
                if request.path == "/oidc/auth" or request.path.startswith("/oidc/logout"):
                    return error_page("invalid_request", 400, detail=f"The parameter {key[:40]!r} is too long.")
                return oauth_error("invalid_request", f"The parameter {key[:40]!r} is too long.")


# -- discovery and keys ----------------------------------------------------------------

def discovery_document(op) -> dict:
    """Advertises exactly what works (OpenID Connect Discovery 1.0, RFC 8414)."""
    issuer = op.settings.issuer_url
    document = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oidc/auth",
        "token_endpoint": f"{issuer}/oidc/token",
        "userinfo_endpoint": f"{issuer}/oidc/userinfo",
        "jwks_uri": f"{issuer}/oidc/jwks",
        "end_session_endpoint": f"{issuer}/oidc/logout",
        "revocation_endpoint": f"{issuer}/oidc/revoke",
        "introspection_endpoint": f"{issuer}/oidc/introspect",
        "scopes_supported": op.settings.scopes_supported,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
                                  *(mfa_grant_types() if op.settings.mfa_api.enabled else ())],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "token_endpoint_auth_methods_supported": ALL_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256", "PS256", "EdDSA"],
        "revocation_endpoint_auth_methods_supported": ALL_AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": CONFIDENTIAL_AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        **dpop_metadata(op.settings),
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "at_hash",
            "name", "preferred_username", "email", "email_verified", "phone_number", "phone_number_verified",
        ],
        "prompt_values_supported": ["none", "login", "consent"],
        "ui_locales_supported": list(SUPPORTED_LOCALES),  # the pages' languages (i18n.py)
        "claims_parameter_supported": False,
        "request_uri_parameter_supported": False,  # only PAR's own request_uri values (oauth/par.py)
        "authorization_response_iss_parameter_supported": True,
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": False,
        **par.metadata(op.settings),
        **request_object.metadata(op.settings),
    }
    for feature in (backchannel, device):  # each advertises itself only when enabled
        feature.advertise(op, document)
    return document


def mfa_grant_types() -> tuple[str, ...]:
    """password, password-realm and the MFA grants, under Auth0's URNs and ours (mfa_grants.py)."""
    from .mfa_grants import GRANT_TYPES

    return GRANT_TYPES


# path: the view's name; Flask's views and the fast path (fast_path.py) answer with `published`
PUBLISHED = {"/.well-known/openid-configuration": "discovery",
             "/.well-known/oauth-authorization-server": "oauth_metadata", "/oidc/jwks": "jwks"}


def published(op, path: str) -> tuple[bytes, list[tuple[str, str]]]:
    """The bytes and headers of a published document: JWKS as the key ring keeps them, the
    discovery document serialized once (the settings it shows do not change while we run)."""
    if path == "/oidc/jwks":
        return op.keyring.jwks_bytes, [("Content-Type", "application/jwk-set+json"),
                                       ("Cache-Control", f"public, max-age={JWKS_CACHE_SECONDS}")]
    if "discovery" not in op.documents:
        op.documents["discovery"] = json.dumps(discovery_document(op), separators=(",", ":")).encode()
    return op.documents["discovery"], [("Content-Type", "application/json"), ("Cache-Control", "public, max-age=300")]


def _published():
    body, headers = published(current_op(), request.path)
    return Response(body, headers=headers)


for _path, _name in PUBLISHED.items():
    bp.add_url_rule(_path, _name, _published)


# -- authorization -----------------------------------------------------------------------

class _Payload(OAuth2Payload):
    """Request parameters for Authlib, from the query/form or from a stored interaction."""

    def __init__(self, datalist: dict[str, list[str]]):
        self._datalist = datalist
        self._data = {key: values[0] for key, values in datalist.items() if values}

    @property
    def data(self):
        return self._data

    @property
    def datalist(self):
        return self._datalist


def build_oauth_request(datalist: dict[str, list[str]]) -> OAuth2Request:
    oauth_request = OAuth2Request("GET", current_op().settings.issuer_url + "/oidc/auth", headers=request.headers)
    oauth_request.payload = _Payload(datalist)
    return oauth_request


def redirect_to_client(redirect_uri: str, params: dict) -> Response:
    """The authorization response; `iss` per RFC 9207 so clients can detect mix-up."""
    params = {key: value for key, value in params.items() if value is not None}
    params["iss"] = current_op().settings.issuer_url
    authorization_error(params.get("error"))  # metrics: step-up unmet
    response = redirect(add_params_to_uri(redirect_uri, list(params.items())), code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


def _error_response(error: OAuth2Error, state: str | None):
    if error.redirect_uri:
        return redirect_to_client(
            error.redirect_uri,
            {"error": error.error, "error_description": error.description or None, "state": state},
        )
    # RFC 6749 4.1.2.1: never redirect to an unverified redirect_uri; tell the user.
    if error.error == "invalid_client":
        message = "invalid_client"
    elif "redirect" in (error.description or "").lower():
        message = "invalid_redirect_uri"
    else:
        message = "invalid_request"
    return error_page(message, 400, detail=error.description or error.error)


def _load_session():
    return current_op().sessions.load(cookies.get(cookies.SESSION))


def _int_param(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 10:
        raise InvalidRequestError(f"'{name}' must be a non-negative integer.")
    return int(value)


@bp.route("/oidc/auth", methods=["GET", "POST"])
def authorize():
    datalist = {key: request.values.getlist(key) for key in request.values.keys()}
    try:  # PAR's request_uri or a signed request object (RFC 9126 4, RFC 9101 5)
        datalist = par.authorization_parameters(current_op(), datalist)
    except OAuth2Error as error:
        return _error_response(error, request.values.get("state"))
    return _authorize(datalist, interaction=None)


@bp.post("/oidc/par")
def pushed_authorization_request():
    return par.push(current_op())


@bp.get("/oidc/auth/resume/<uid>")
def resume(uid: str):
    record, problem = interactions.load_for_browser(uid)
    if problem:
        return error_page(problem, 400)
    return resume_authorization(record)


def resume_authorization(record: dict, session=None):
    """Decide again with what the user did. Views call it right after a completed factor with
    the session they just wrote: the same request goes on, instead of a redirect here that
    reads the interaction and the session back."""
    if record.get("device"):  # a device's sign-in (RFC 8628) continues on the device pages
        interactions.save(record)
        return redirect(url_for("device.resume", uid=record["uid"]), code=303)
    return _authorize(record["params"], interaction=record, session=session)


def _authorize(datalist: dict[str, list[str]], interaction: dict | None, session=None):
    """Decide and answer; commits what it recorded (the policy decision's audit row among them)."""
    response = _decide(datalist, interaction, session or _load_session())
    commit_pending()
    return response


def _page_here(interaction: dict | None, upstream: str | None, need: str) -> bool:
    """A new login's first page answers a GET authorization request itself: one redirect (a
    round trip on the user's network) fewer. Reloading it starts the login afresh, so a pushed
    request (its request_uri is spent) and a POST (reloading would post again) are still sent to
    /interaction/<uid>, as are a login resumed after a factor and one that goes to an upstream."""
    return (interaction is None and request.method == "GET" and "request_uri" not in request.args
            and not upstreams.goes_direct(upstream, need))


def _decide(datalist: dict[str, list[str]], interaction: dict | None, session):
    op = current_op()
    user = db.session.get(User, session.sub) if session else None
    if user is not None and user.disabled:
        user = None
    oauth_request = build_oauth_request(datalist)
    state = oauth_request.payload.data.get("state")
    try:
        duplicated = [key for key, values in datalist.items() if len(values) > 1 and key != "resource"]
        grant = op.server.get_consent_grant(request=oauth_request, end_user=user)
        if duplicated:  # RFC 6749 3.1: parameters must not be included more than once
            raise InvalidRequestError(f"'{duplicated[0]}' is included more than once.", redirect_uri=grant.redirect_uri)
        redirect_uri = grant.redirect_uri
        try:
            resources = requested_resources(datalist.get("resource", []), op.settings)
            max_age = _int_param(oauth_request.payload.data.get("max_age"), "max_age")
        except OAuth2Error as error:
            error.redirect_uri = redirect_uri
            raise
    except OAuth2Error as error:
        return _error_response(error, state)

    params = oauth_request.payload.data
    prompts = set((params.get("prompt") or "").split())
    if "none" in prompts and len(prompts) > 1:  # OIDC Core 3.1.2.1: none must stand alone
        return redirect_to_client(redirect_uri, {"error": "invalid_request", "state": state,
                                                 "error_description": "prompt=none cannot be combined with other values."})
    client = grant.client
    try:
        asked = parse_acr_request(params.get("acr_values"), params.get("claims"), params.get("require_mfa"),
                                  op.levels)
    except AcrRequestError as exc:
        return redirect_to_client(redirect_uri, {"error": "invalid_request", "error_description": str(exc),
                                                 "state": state})
    if asked.essential and asked.level is None:  # OIDC Core 5.5.1.1: no weaker token instead
        record_audit("authorization.denied", user_id=user.id if user else None, client_id=client.client_id, ip=request.remote_addr, error="unmet_authentication_requirements", reason="essential acr not offered")
        return redirect_to_client(redirect_uri, {"error": "unmet_authentication_requirements", "state": state,
                                                 "error_description": "The essential acr is not offered here."})
    level = asked.level
    if user is not None:  # rules and policies take part as soon as the user is known
        decision = policy_decision(op, user, client, commit=False)
        demanded = decision_level(op.levels, decision)
        if decision.action == "deny" or (decision.action == "require_acr" and demanded is None):
            record_audit("authorization.denied", user_id=user.id, client_id=client.client_id, ip=request.remote_addr, error="access_denied", reason=decision.reason)
            return redirect_to_client(redirect_uri, {"error": "access_denied", "state": state,
                                                     "error_description": "Sign-in refused by policy."})
        if demanded is not None and (level is None or demanded.rank > level.rank):
            level = demanded
    now = time.time()
    need, usable = interactions.login_needed(session if user else None, level, prompts, max_age, interaction, now)
    if need is None:
        need = interactions.consent_needed(op, client, user, grant.request.scope, prompts, interaction)
    if need is not None:
        if "none" in prompts:  # OIDC Core 3.1.2.6; Unmet Authentication Requirements 1.0
            error = {"login:mfa": "unmet_authentication_requirements"}.get(
                need, "login_required" if need.startswith("login") else "consent_required")
            record_audit("authorization.denied", user_id=user.id if user else None, client_id=client.client_id, ip=request.remote_addr, error=error, reason=need)
            return redirect_to_client(redirect_uri, {"error": error, "error_description": need, "state": state})
        if _page_here(interaction, asked.upstream, need):
            from ..views.interaction import first_page  # the pages import this module

            return interactions.start(datalist, client, need, None, level, asked.essential, render=first_page)
        response = interactions.start(datalist, client, need, interaction, level, asked.essential)
        return upstreams.direct_start(response, asked.upstream, need)  # urn:<ns>:<idp>_direct

    context = auth_context(op, usable, session.sid, level, now)
    acr, amr = context.acr, context.amr
    grant.request.user = user
    grant.request.auth_context = context
    grant.request.resources = resources
    code = grant.generate_authorization_code()
    batch = op.store.batch()  # the code, the session's new client, the interaction's end: one round trip
    grant.save_authorization_code(code, grant.request, batch)
    op.sessions.add_client(session, client.client_id, batch)
    if interaction:
        interactions.finish(interaction, batch)
    batch.run()
    record_audit("authorization.code_issued", user_id=user.id, client_id=client.client_id,
                 ip=request.remote_addr, acr=acr, amr=amr, commit=False)
    step_up_met(interaction)  # metrics
    response = redirect_to_client(redirect_uri, {"code": code, "state": state})
    try:
        record_signin(op, user, client, interaction, acr, response)  # commits the audit row too
    except OUTAGES:  # the code never reaches the client: the login's page may be submitted again
        if interaction:
            interactions.save(interaction)
        raise
    return response


# -- token, revocation, introspection ------------------------------------------------------

@bp.post("/oidc/token")
def token():
    repeated = [name for name, values in request.form.lists()
                if len(values) > 1 and name not in REPEATABLE_TOKEN_PARAMETERS]
    if repeated:  # RFC 6749 3.2
        return oauth_error("invalid_request", f"'{repeated[0][:40]}' is included more than once.")
    response = current_op().server.create_token_response()
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _authenticate_client(methods):
    server = current_op().server
    oauth_request = server.create_oauth2_request(request)
    return server.authenticate_client(oauth_request, methods, endpoint="revocation")


@bp.post("/oidc/revoke")
def revoke():
    """RFC 7009: always 200 for a well-formed request, whether or not the token was valid."""
    op = current_op()
    try:
        client = _authenticate_client(ALL_AUTH_METHODS)
    except OAuth2Error as error:
        return op.server.handle_error_response(None, error)
    value = request.form.get("token")
    if not value:
        return oauth_error("invalid_request", "Missing 'token'.")
    claims = op.tokens.verify_access_token(value)
    if claims and claims.get("client_id") == client.client_id:
        op.tokens.revoke_access_token(claims["jti"], claims["exp"])
        record_audit("token.revoked", user_id=claims.get("sub"), client_id=client.client_id, kind="access_token")
    else:
        row = op.tokens.find_refresh_token(value)
        if row is not None and row.client_id == client.client_id:
            op.tokens.revoke_family(row.family_id)  # RFC 7009 2.1: and its access tokens
            record_audit("token.revoked", user_id=row.user_id, client_id=client.client_id, kind="refresh_token")
    return Response("", status=200, headers={"Cache-Control": "no-store"})


def may_introspect(client, claims: dict) -> bool:
    """An access token is shown to its own client, to its audiences, and to clients allowed all."""
    return (client.config.can_introspect or claims["client_id"] == client.client_id
            or client.client_id in audiences(claims))


def access_token_introspection(claims: dict) -> dict:
    return {"active": True, "token_type": "DPoP" if "cnf" in claims else "Bearer", **claims}


@bp.post("/oidc/introspect")
def introspect():
    """RFC 7662, with acr, amr and auth_time so resource servers can judge the login."""
    op = current_op()
    try:
        client = _authenticate_client(CONFIDENTIAL_AUTH_METHODS)
    except OAuth2Error as error:
        return op.server.handle_error_response(None, error)
    value = request.form.get("token")
    if not value:
        return oauth_error("invalid_request", "Missing 'token'.")
    answer = {"active": False}
    claims = op.tokens.verify_access_token(value)
    if claims:
        if may_introspect(client, claims):
            answer = access_token_introspection(claims)
    else:
        row = op.tokens.find_refresh_token(value)
        if row is not None and op.tokens.refresh_token_is_live(row) and (
            client.config.can_introspect or row.client_id == client.client_id
        ):
            answer = {
                "active": True, "token_type": "refresh_token", "iss": op.settings.issuer_url,
                "client_id": row.client_id, "sub": row.user_id, "scope": row.scope,
                "exp": row.expires_at, "iat": row.issued_at,
                **{k: v for k, v in row.auth.items() if k in ("auth_time", "acr", "amr") and v is not None},
                **({"cnf": {"jkt": row.dpop_jkt}} if row.dpop_jkt else {}),
            }
    response = jsonify(answer)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- userinfo ----------------------------------------------------------------------------------

def _bearer_error(error: str, description: str, status: int = 401, scheme: str = "Bearer", nonce=None):
    response = oauth_error(error, description, status)
    response.headers["WWW-Authenticate"] = current_op().server.dpop.challenge(
        scheme, error=error, error_description=description)
    if nonce:  # RFC 9449 9: use_dpop_nonce
        response.headers["DPoP-Nonce"] = nonce
    return response


@bp.route("/oidc/userinfo", methods=["GET", "POST"])
def userinfo():
    op = current_op()
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = {"bearer": "Bearer", "dpop": "DPoP"}.get(scheme.lower())
    if scheme is None or not value:  # RFC 6750 3.1, RFC 9449 7.1
        response = Response(status=401)
        response.headers["WWW-Authenticate"] = op.server.dpop.bare_challenge('Bearer realm="userinfo"')
        return response
    claims = op.tokens.verify_access_token(value.strip())
    if claims is None:
        return _bearer_error("invalid_token", "The access token is invalid, expired or revoked.", scheme=scheme)
    try:  # RFC 9449 7: a bound token only with a proof by its key
        op.server.dpop.check_resource(claims, scheme, value.strip(), request, "/oidc/userinfo",
                                      op.clients.get(claims.get("client_id")))
    except DPoPError as refused:
        return _bearer_error(refused.error, refused.description, scheme=scheme, nonce=refused.nonce)
    scopes = set((claims.get("scope") or "").split())
    if op.settings.issuer_url not in audiences(claims):  # RFC 6750 3.1: a token for another resource is invalid here
        return _bearer_error("invalid_token", "The token is not for the userinfo endpoint.", scheme=scheme)
    if "openid" not in scopes:
        return _bearer_error("insufficient_scope", "The token was not issued with the openid scope.", 403, scheme)
    user = db.session.get(User, claims["sub"])
    if user is None or user.disabled:
        return _bearer_error("invalid_token", "The user is no longer active.", scheme=scheme)
    response = jsonify({"sub": user.id, **claims_for_scope(user, scopes)})
    response.headers["Cache-Control"] = "no-store"
    return response


# -- RP-initiated logout -----------------------------------------------------------------------

def _verify_id_token_hint(op, hint: str) -> dict | None:
    """An ID token we issued; it may have expired (RP-Initiated Logout 1.0, 2)."""
    try:
        decoded = jwt.decode(hint, op.keyring.public_keys, algorithms=["RS256", "ES256"])
    except (JoseError, ValueError):
        return None
    if decoded.header.get("typ") == "at+jwt" or decoded.claims.get("iss") != op.settings.issuer_url:
        return None
    return decoded.claims


@bp.route("/oidc/logout", methods=["GET", "POST"])
def logout():
    op = current_op()
    params = request.values
    hint = params.get("id_token_hint")
    claims = None
    if hint:
        claims = _verify_id_token_hint(op, hint)
        if claims is None:
            return error_page("invalid_id_token_hint", 400)
    client_id = params.get("client_id") or (claims or {}).get("aud")
    if isinstance(client_id, list):
        client_id = client_id[0] if client_id else None
    if claims and params.get("client_id") and params.get("client_id") != claims.get("aud"):
        return error_page("invalid_request", 400, detail="client_id does not match the id_token_hint.")
    client = op.clients.get(client_id) if client_id else None
    post_logout = params.get("post_logout_redirect_uri")
    if post_logout and (client is None or not client.check_post_logout_redirect_uri(post_logout)):
        return error_page("logout_redirect", 400)
    session = _load_session()
    confirmed = claims is not None and (session is None or claims.get("sid") in (None, session.sid))
    if session is not None and not confirmed:
        # No proof the request comes from a client of this session: ask (RP-Initiated Logout 2).
        kept = {k: v for k, v in params.items() if k not in ("csrf_token", "id_token_hint")}
        kept["client_id"] = client.client_id if client else ""
        return render_template("logout_confirm.html", params=kept,
                               client_name=client.config.client_name if client else None)
    return finish_logout(session, post_logout, params.get("state"))


def finish_logout(session, post_logout: str | None, state: str | None):
    op = current_op()
    if session is not None:  # audited, refresh tokens revoked, clients told: oauth/backchannel.py
        op.sessions.end(session, "logout")
    if post_logout:
        response = redirect(add_params_to_uri(post_logout, [("state", state)] if state else []), code=302)
    else:
        response = Response(render_template("logged_out.html"))
    cookies.delete(response, cookies.SESSION)
    return response


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Ready for traffic: the database and the ephemeral store answer (200), else 503."""
    return readiness(current_op())

