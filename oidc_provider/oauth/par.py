"""Pushed authorization requests (RFC 9126), and which parameters /oidc/auth acts on.

A client posts its authorization request to `/oidc/par`, authenticated as at the token
endpoint; it is validated as /oidc/auth would, kept in the ephemeral store for a short
while and answered with an opaque `request_uri`. /oidc/auth then resolves that
request_uri, once, for the client that pushed it; a request object (`request`) is
unpacked the same way. The login interaction stores the resolved parameters, never the
request_uri, so the request survives the login.
"""

from __future__ import annotations

import secrets

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error
from flask import abort, jsonify, request

from ..authn.reauth import ACCOUNT_CLIENT_ID
from ..authn.acr import AcrRequestError, parse_acr_request
from ..errors import oauth_error
from . import request_object
from .server import ALL_AUTH_METHODS, requested_resources
from .tokens import sha256_hex

URN = "urn:ietf:params:oauth:request_uri:"  # RFC 9126 2.2
CLIENT_AUTH_PARAMS = ("client_secret", "client_assertion", "client_assertion_type")


class InvalidRequestUriError(OAuth2Error):
    """RFC 9101 7: the request_uri is unknown, expired, already used or another client's."""

    error = "invalid_request_uri"


class RequestUriNotSupportedError(OAuth2Error):
    """OIDC Core 3.1.2.6: request_uri values we did not issue are never fetched."""

    error = "request_uri_not_supported"


def metadata(settings) -> dict:
    """Discovery (RFC 9126 5); request_uri_parameter_supported stays false: we fetch nothing."""
    if not settings.par.enabled:
        return {}
    return {"pushed_authorization_request_endpoint": f"{settings.issuer_url}/oidc/par",
            "require_pushed_authorization_requests": settings.par.required}


def push(op):
    """POST /oidc/par (RFC 9126 2): 201 with a request_uri, or a JSON OAuth error."""
    if not op.settings.par.enabled:
        abort(404)
    server = op.server
    try:  # RFC 9126 2: client authentication exactly as at the token endpoint
        client = server.authenticate_client(server.create_oauth2_request(request), ALL_AUTH_METHODS,
                                            endpoint="pushed_authorization_request")
    except OAuth2Error as error:
        response = server.handle_error_response(None, error)
        response.headers["Cache-Control"] = "no-store"
        return response
    datalist = {key: request.form.getlist(key) for key in request.form.keys() if key not in CLIENT_AUTH_PARAMS}
    try:
        if "request_uri" in datalist:  # RFC 9126 2.1
            raise InvalidRequestError("request_uri is not allowed in a pushed authorization request.")
        if datalist.get("client_id", [client.client_id]) != [client.client_id]:
            raise InvalidRequestError("client_id does not match the authenticated client.")
        signed = "request" in datalist
        if signed:  # RFC 9126 3: then only the object's parameters count
            if len(datalist["request"]) > 1:
                raise InvalidRequestError("'request' is included more than once.")
            datalist = request_object.parameters(op, client, datalist["request"][0])
        elif client.config.require_signed_request_object:
            raise InvalidRequestError("This client must send its request as a signed request object.")
        datalist["client_id"] = [client.client_id]
        _validate(op, datalist)
    except OAuth2Error as error:
        return oauth_error(error.error, error.description or error.error, 400)
    opaque = secrets.token_urlsafe(32)
    lifetime = op.settings.par.lifetime
    op.store.set(f"par:{sha256_hex(opaque)}", {"client_id": client.client_id, "params": datalist,
                                               "signed": signed}, lifetime)
    response = jsonify(request_uri=URN + opaque, expires_in=lifetime)
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


def _validate(op, datalist: dict[str, list[str]]) -> None:
    """RFC 9126 2.1: as /oidc/auth will (client, redirect_uri, response_type, scope, PKCE, acr...)."""
    from .endpoints import _int_param, build_oauth_request  # endpoints imports this module

    repeated = [key for key, values in datalist.items() if len(values) > 1 and key != "resource"]
    if repeated:  # RFC 6749 3.1
        raise InvalidRequestError(f"'{repeated[0]}' is included more than once.")
    op.server.get_consent_grant(request=build_oauth_request(datalist), end_user=None)
    data = {key: values[0] for key, values in datalist.items() if values}
    requested_resources(datalist.get("resource", []), op.settings)
    _int_param(data.get("max_age"), "max_age")
    try:
        parse_acr_request(data.get("acr_values"), data.get("claims"), data.get("require_mfa"), op.levels)
    except AcrRequestError as exc:
        raise InvalidRequestError(str(exc)) from None


def authorization_parameters(op, datalist: dict[str, list[str]]) -> dict[str, list[str]]:
    """What /oidc/auth acts on: the pushed request, a request object's parameters, or the query.

    Errors are redirected (RFC 6749 4.1.2.1) to the query's redirect_uri when it is registered,
    else to the client's only one; otherwise shown. Unknown clients are left to /oidc/auth."""
    query = {key: values[0] for key, values in datalist.items() if values}
    client = op.clients.get(query.get("client_id"))
    if client is None:
        return datalist
    try:
        for name in ("request", "request_uri"):
            if len(datalist.get(name, [])) > 1:
                raise InvalidRequestError(f"'{name}' is included more than once.")
        if "request_uri" in query:
            if "request" in query:
                raise InvalidRequestError("Send either request or request_uri, not both.")
            record = take(op, client, query["request_uri"])
            params, signed = record["params"], record["signed"]
        elif (op.settings.par.required and client.client_id != ACCOUNT_CLIENT_ID) \
                or client.config.require_pushed_authorization_requests:  # the built-in account client is ours
            raise InvalidRequestError("This client must push its authorization requests to "
                                      "the pushed authorization request endpoint first.")  # RFC 9126 5
        elif "request" in query:
            params, signed = request_object.parameters(op, client, query["request"]), True
        else:
            params, signed = datalist, False
        if client.config.require_signed_request_object and not signed:
            raise InvalidRequestError("This client must send its request as a signed request object.")
    except OAuth2Error as error:
        error.redirect_uri = _error_redirect_uri(client, query.get("redirect_uri"))
        raise
    return params


def take(op, client, request_uri: str) -> dict:
    """The pushed request, once (RFC 9126 4): of concurrent uses exactly one gets it."""
    if not op.settings.par.enabled or not request_uri.startswith(URN) or len(request_uri) > 200:
        raise RequestUriNotSupportedError("Only request_uri values issued by this provider's "
                                          "pushed authorization request endpoint are accepted.")
    key = f"par:{sha256_hex(request_uri[len(URN):])}"
    record = op.store.get(key)
    if record is not None and record["client_id"] == client.client_id:
        record = op.store.take(key)  # another client's attempt does not burn it
    else:
        record = None
    if record is None:
        raise InvalidRequestUriError("The request_uri is unknown, expired or already used.")
    return record


def _error_redirect_uri(client, redirect_uri: str | None) -> str | None:
    if redirect_uri:
        return redirect_uri if client.check_redirect_uri(redirect_uri) else None
    return client.get_default_redirect_uri()
