"""The device authorization grant (RFC 8628): a device without a browser gets a user code,
the person enters it at /device on another screen and signs in there (views/device.py),
while the device polls the token endpoint.

Store keys (the device_code and user_code themselves are never stored):
  device:{sha256(device_code)}         the request (client, scope, acr request, expiry)
  device-user:{hmac(user_code)}        -> the request's key, until it is decided
  device-result:{key}                  the person's decision; written once (first decision wins)
  device-poll:{key}, device-slow:{key} polling pace (slow_down, RFC 8628 3.5)
  device-used:{key}                    counts token responses: exactly one poll gets tokens
  device-tries:{ip}                    user codes tried from one address (RFC 8628 5.1)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from authlib.oauth2.rfc6749 import (AccessDeniedError, InvalidGrantError, InvalidRequestError, OAuth2Error,
                                    UnauthorizedClientError)
from authlib.oauth2.rfc8628 import AuthorizationPendingError, DeviceCodeGrant as _DeviceCodeGrant
from authlib.oauth2.rfc8628 import ExpiredTokenError, SlowDownError
from flask import Blueprint, current_app, jsonify, request

from ..authn.acr import AcrRequestError, parse_acr_request
from ..extensions import db
from ..models import User, record_audit
from ..settings.clients import DEVICE_CODE_GRANT
from .server import ALL_AUTH_METHODS, _Issuing, requested_resources, token_resources
from .tokens import AuthContext, Issue, sha256_hex

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 6.1: no vowels (no words), case-insensitive, unambiguous
USER_CODE_LENGTH = 8  # 20^8: about 34.5 bits, shown as XXXX-XXXX
SLOW_DOWN_STEP = 5  # seconds added to the interval by each slow_down (RFC 8628 3.5)
POLL_TOLERANCE = 0.8  # a poll this fraction of the interval after the last one is not "too fast"
# Request parameters kept for the sign-in that the person does at /device.
KEPT_PARAMETERS = ("scope", "acr_values", "claims", "require_mfa", "resource")


class TooManyAttempts(Exception):
    """Too many user codes were tried from this address; try again later."""


def format_user_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def normalize_user_code(typed: str) -> str | None:
    """What a person typed, as the code: case, spaces and dashes do not matter (RFC 8628 6.1)."""
    code = re.sub(r"[\s-]", "", typed or "").upper()
    if len(code) != USER_CODE_LENGTH or any(ch not in ALPHABET for ch in code):
        return None
    return code


@dataclass
class DeviceGrant:
    """What an approved device_code stands for: the token endpoint's credential."""

    key: str
    client_id: str
    scope: str
    resources: tuple[str, ...]
    sub: str
    auth: dict

    def get_scope(self) -> str:
        return self.scope


class DeviceRequests:
    """Device requests in the ephemeral store: created, found by user code, decided, polled."""

    def __init__(self, op):
        self.op = op
        self.store = op.store
        self.settings = op.settings.device_flow
        self._key = op.secret.derive("device-user-code")

    def _user_code_hash(self, code: str) -> str:
        return hmac.new(self._key, code.encode(), hashlib.sha256).hexdigest()

    def create(self, client, scope: str, params: dict, resources: tuple[str, ...]) -> tuple[str, str]:
        """A new request; returns (device_code, user_code)."""
        now = time.time()
        device_code = secrets.token_urlsafe(32)
        key = sha256_hex(device_code)
        lifetime = self.settings.lifetime
        for _ in range(10):  # a collision with a live code is rare; draw again
            user_code = "".join(secrets.choice(ALPHABET) for _ in range(USER_CODE_LENGTH))
            user_hash = self._user_code_hash(user_code)
            if self.store.add(f"device-user:{user_hash}", key, lifetime):
                break
        else:  # 10 live collisions in a row: the store is not what we think it is
            raise RuntimeError("could not allocate a user code")
        self.store.set(f"device:{key}", {
            "client_id": client.client_id, "scope": scope, "params": params, "resources": list(resources),
            "expires_at": now + lifetime, "interval": self.settings.interval, "user_code_hash": user_hash,
            "created_at": now,
        }, 2 * lifetime)  # kept past expiry so a late poll hears expired_token, not invalid_grant
        return device_code, user_code

    def find(self, typed: str, ip: str | None) -> tuple[str, dict] | None:
        """The pending request for a typed user code. Every try counts against the address
        before anything is compared, so guessing is bounded (RFC 8628 5.1)."""
        tries = self.store.incr(f"device-tries:{ip}", self.settings.user_code_window)
        if tries > self.settings.user_code_attempts:
            raise TooManyAttempts()
        code = normalize_user_code(typed)
        if code is None:
            return None
        key = self.store.get(f"device-user:{self._user_code_hash(code)}")
        record = self.pending(key) if key else None
        return (key, record) if record else None

    def pending(self, key: str) -> dict | None:
        """The request, if it is neither expired nor decided."""
        record = self.store.get(f"device:{key}")
        if record is None or record["expires_at"] <= time.time():
            return None
        if self.store.get(f"device-result:{key}") is not None:
            return None
        return record

    def decide(self, key: str, approved: bool, sub: str | None = None, auth: dict | None = None) -> bool:
        """Record the person's answer; only the first decision counts. False: too late."""
        record = self.store.get(f"device:{key}")
        if record is None or record["expires_at"] <= time.time():
            return False
        result = {"approved": approved, "sub": sub, "auth": auth}
        if not self.store.add(f"device-result:{key}", result, 2 * self.settings.lifetime):
            return False
        self.store.delete(f"device-user:{record['user_code_hash']}")  # the code cannot be entered again
        return True

    def poll(self, device_code: str, client) -> DeviceGrant:
        """RFC 8628 3.4-3.5: the answer to one poll, or the OAuth error that says why not yet."""
        if not isinstance(device_code, str) or len(device_code) > 256:
            raise InvalidGrantError("The device_code is invalid.")
        key = sha256_hex(device_code)
        record = self.store.get(f"device:{key}")
        if record is None or record["client_id"] != client.client_id:  # RFC 6749 5.2: another client's
            raise InvalidGrantError("The device_code is invalid.")
        if record["expires_at"] <= time.time():
            raise ExpiredTokenError()
        result = self.store.get(f"device-result:{key}")
        if result is None:
            interval = record["interval"] + SLOW_DOWN_STEP * (self.store.get(f"device-slow:{key}") or 0)
            if not self.store.add(f"device-poll:{key}", 1, interval * POLL_TOLERANCE):
                # "for this and all subsequent requests": the longer wait starts now
                self.store.incr(f"device-slow:{key}", 2 * self.settings.lifetime)
                self.store.set(f"device-poll:{key}", 1, (interval + SLOW_DOWN_STEP) * POLL_TOLERANCE)
                raise SlowDownError()
            raise AuthorizationPendingError()
        if not result["approved"]:
            raise AccessDeniedError("The user denied the request.")
        if self.store.incr(f"device-used:{key}", 2 * self.settings.lifetime) > 1:  # one poll wins
            raise InvalidGrantError("The device_code was already used.")
        return DeviceGrant(key, record["client_id"], record["scope"], tuple(record["resources"]),
                           result["sub"], result["auth"])


def device_requests() -> DeviceRequests:
    return current_app.extensions["op.device"]


# -- the token endpoint ---------------------------------------------------------------------

class DeviceCodeGrant(_Issuing, _DeviceCodeGrant):
    """grant_type urn:ietf:params:oauth:grant-type:device_code (RFC 8628 3.4)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    def validate_token_request(self):
        device_code = self.request.payload.data.get("device_code")
        if not device_code:
            raise InvalidRequestError("Missing 'device_code'.")
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(f"The client may not use {self.GRANT_TYPE}.")
        self.request.client = client
        grant = device_requests().poll(device_code, client)
        user = db.session.get(User, grant.sub)
        if user is None or user.disabled:
            raise InvalidGrantError("The user can no longer sign in.")
        self.request.credential = grant
        self.request.user = user

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        grant: DeviceGrant = self.request.credential
        token = self.op.tokens.issue(Issue(
            client=self.client, grant_type=DEVICE_CODE_GRANT, sub=user.id, scope=scope,
            auth=AuthContext.from_dict(grant.auth),
            resources=token_resources(self.asked_resources, grant.resources, self.op.settings),
            include_refresh=include_refresh_token, dpop_jkt=self.dpop_jkt,
        ))
        record_audit("device.token_issued", user_id=user.id, client_id=self.client.client_id,
                     acr=grant.auth.get("acr"), amr=grant.auth.get("amr"))
        return token


class OpenIDDeviceExtension:
    """An ID token with the acr/amr/auth_time the person earned at /device (no nonce)."""

    def __call__(self, grant):
        grant.register_hook("after_create_token_response", self.add_id_token)

    def add_id_token(self, grant, response):
        _, token, _ = response
        credential: DeviceGrant = grant.request.credential
        if "openid" in (credential.scope or "").split():
            token["id_token"] = grant.op.tokens.id_token(
                grant.client, credential.sub, AuthContext.from_dict(credential.auth), token.get("access_token"), None)


# -- the device authorization endpoint ---------------------------------------------------------

bp = Blueprint("device_authorization", __name__)


@bp.before_request
def _bounded_parameters():
    from .endpoints import reject_oversized_parameters  # endpoints imports this module

    return reject_oversized_parameters()


def _error(error: OAuth2Error):
    return current_app.extensions["op"].server.handle_error_response(None, error)


@bp.post("/oidc/device_authorization")
def device_authorization():
    """RFC 8628 3.1-3.2: client authentication as at the token endpoint; public clients too."""
    op = current_app.extensions["op"]
    server = op.server
    try:
        oauth_request = server.create_oauth2_request(request)
        client = server.authenticate_client(oauth_request, ALL_AUTH_METHODS, endpoint="device_authorization")
        if not client.check_grant_type(DEVICE_CODE_GRANT):
            raise UnauthorizedClientError(f"The client may not use {DEVICE_CODE_GRANT}.")
        repeated = [name for name in request.form if name != "resource" and len(request.form.getlist(name)) > 1]
        if repeated:
            raise InvalidRequestError(f"'{repeated[0]}' is included more than once.")
        resources = requested_resources(request.form.getlist("resource"), op.settings)
        try:
            asked = parse_acr_request(request.form.get("acr_values"), request.form.get("claims"),
                                      request.form.get("require_mfa"), op.levels)
        except AcrRequestError as exc:
            raise InvalidRequestError(str(exc)) from None
        if asked.essential and asked.level is None:  # OIDC Core 5.5.1.1: no weaker token instead
            raise InvalidRequestError("The essential acr is not offered here.")
    except OAuth2Error as error:
        return _error(error)
    scope = client.get_allowed_scope(request.form.get("scope"))
    params = {name: request.form.getlist(name) for name in KEPT_PARAMETERS if name in request.form}
    params["scope"] = [scope]
    params["client_id"] = [client.client_id]
    device_code, user_code = device_requests().create(client, scope, params, resources)
    record_audit("device.requested", client_id=client.client_id, ip=request.remote_addr, scope=scope)
    shown = format_user_code(user_code)
    verification_uri = f"{op.settings.issuer_url}/device"
    response = jsonify({
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": verification_uri,
        "verification_uri_complete": f"{verification_uri}?user_code={shown}",
        "expires_in": op.settings.device_flow.lifetime,
        "interval": op.settings.device_flow.interval,
    })
    response.headers["Cache-Control"] = "no-store"
    return response


def advertise(op, document: dict) -> None:
    """Discovery (RFC 8628 4): the endpoint and the grant type exactly when enabled."""
    if op.settings.device_flow.enabled:
        document["device_authorization_endpoint"] = f"{op.settings.issuer_url}/oidc/device_authorization"
        document["grant_types_supported"] = [*document["grant_types_supported"], DEVICE_CODE_GRANT]


def init_app(app, op) -> None:
    """Routes exist only when the feature is enabled (the grant: oauth/server.py)."""
    if not op.settings.device_flow.enabled:
        return
    from ..extensions import csrf
    from ..views import device as pages

    app.extensions["op.device"] = DeviceRequests(op)
    app.register_blueprint(bp)
    csrf.exempt(bp)  # clients authenticate; no browser form
    app.register_blueprint(pages.bp)
