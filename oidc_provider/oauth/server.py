"""Authlib's authorization server, wired to our clients, store and token service.

Grants only fill in storage and issuance; OpenID Connect rides on the code grant as an
extension, as Authlib intends. Nothing here renders HTML.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, replace

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (InvalidGrantError, InvalidRequestError, OAuth2Error, OAuth2Request,
                                    UnsupportedResponseTypeError, grants)
from authlib.oauth2.rfc6749.hooks import hooked
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc.jwk import KeySet

from ..authn.session import current_acr
from ..models import User, record_audit
from .dpop import DPoP, DPoPExtension
from .tokens import AuthContext, Issue, sha256_hex

# RFC 6749 3.2: a token request's parameters appear once; RFC 8707 2 lets `resource` repeat
REPEATABLE_TOKEN_PARAMETERS = {"resource"}
ALL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
CONFIDENTIAL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


class InvalidTargetError(OAuth2Error):
    """RFC 8707 2: the requested resource is unknown or not allowed here."""

    error = "invalid_target"


@dataclass
class AuthorizationCode:
    """What a code stands for; stored in the ephemeral store under the code's hash."""

    code_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    sub: str
    auth: dict
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    resources: tuple[str, ...] = ()
    dpop_jkt: str | None = None  # RFC 9449 10: the key the code is bound to

    # The accessors Authlib's grant and extensions call.
    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    @property
    def auth_context(self) -> AuthContext:
        return AuthContext.from_dict(self.auth)

    @property
    def access_jti(self) -> str:
        return access_jti_for(self.code_hash)


def access_jti_for(code_hash: str) -> str:
    """Derived from the code, so a replay can revoke what the first use was given."""
    return "c" + code_hash[:31]


def store_authorization_code(op, code: str, batch=None, **fields) -> AuthorizationCode:
    """Keep what a code stands for, under its hash, for the code's short lifetime (in `batch`,
    a store batch, when given)."""
    record = AuthorizationCode(code_hash=sha256_hex(code), **fields)
    # vars, not asdict: serialized at once, nothing needs a deep copy first
    (batch or op.store).set(f"code:{record.code_hash}", vars(record), op.settings.lifetimes.authorization_code)
    return record


def requested_resources(payload_values: list[str], settings) -> tuple[str, ...]:
    """RFC 8707 2: each `resource` must be an absolute URI we know."""
    unknown = [value for value in payload_values if value not in settings.resources]
    if unknown:
        raise InvalidTargetError(description=f"Unknown resource: {unknown[0]}")
    return tuple(dict.fromkeys(payload_values))


def token_resources(asked_values: list[str], granted: tuple[str, ...], settings) -> tuple[str, ...]:
    """RFC 8707 2.2: a token request may narrow the grant's resources, never widen them."""
    asked = requested_resources(asked_values, settings)
    if not asked:
        return granted
    if granted and not set(asked) <= set(granted):
        raise InvalidTargetError(description="resource was not part of the grant")
    return asked


# -- what the two hot grants issue: shared by their Authlib grants and the fast path (fast_path.py)

def client_credentials_issue(op, client, scope: str | None, asked_resources: list[str], dpop_jkt=None) -> Issue:
    # RFC 6749 3.3: grant what the client is registered for, never more
    scope = " ".join(s for s in client.get_allowed_scope(scope).split() if s != "openid")
    return Issue(client=client, grant_type="client_credentials", sub=client.client_id, scope=scope, auth=None,
                 resources=token_resources(asked_resources, (), op.settings), dpop_jkt=dpop_jkt)


def refresh_issue(op, client, row, scope: str, asked_resources: list[str], dpop_jkt=None) -> Issue:
    """The successor of a claimed refresh token: the family, scope and end of the original."""
    stored = AuthContext.from_dict(row.auth)
    # a level with a max_age falls back once its factors age out, refresh or not
    auth = replace(stored, acr=current_acr(op, stored))
    return Issue(client=client, grant_type="refresh_token", sub=row.user_id, scope=scope, auth=auth,
                 resources=token_resources(asked_resources, tuple(row.resources), op.settings),
                 include_refresh=True, family_id=row.family_id, refresh_scope=row.scope,
                 refresh_expires_at=row.expires_at, dpop_jkt=dpop_jkt)


def refresh_id_token(op, client, row, issued: Issue, token: dict) -> None:
    """OIDC Core 12.2: a refreshed ID token keeps auth_time, acr and amr, and has no nonce."""
    if "openid" in (token.get("scope") or row.scope).split():
        token["id_token"] = op.tokens.id_token(client, row.user_id, issued.auth, token.get("access_token"), None)


def load_authorization_code(op, code_hash: str) -> AuthorizationCode | None:
    """What a live code stands for, else None (never issued, spent or expired)."""
    data = op.store.get(f"code:{code_hash}")
    return AuthorizationCode(**{**data, "resources": tuple(data["resources"])}) if data is not None else None


def code_issue(op, client, code: AuthorizationCode, asked_resources: list[str], include_refresh: bool,
               dpop_jkt=None) -> Issue:
    """The tokens a code stands for; its refresh family is named after it, so a replay of the
    code can revoke them (RFC 6749 4.1.2)."""
    return Issue(client=client, grant_type="authorization_code", sub=code.sub, scope=code.scope,
                 auth=code.auth_context, resources=token_resources(asked_resources, code.resources, op.settings),
                 include_refresh=include_refresh, family_id=code.code_hash, refresh_scope=code.scope,
                 access_jti=code.access_jti, dpop_jkt=dpop_jkt)


def code_id_token(op, client, code: AuthorizationCode, token: dict) -> None:
    """OIDC Core 3.1.3.3: the ID token, with the authorization request's nonce."""
    if "openid" in (code.scope or "").split():
        token["id_token"] = op.tokens.id_token(client, code.sub, code.auth_context, token.get("access_token"),
                                               code.nonce)


def revoke_code_grant(op, code_hash: str, resources: tuple[str, ...], client, sql=None) -> None:
    """What a code's use was given: its refresh family, and the access token named after it
    (on `sql`, the fast path's connection, else the request's session)."""
    tokens = op.tokens
    tokens.revoke_family(code_hash, sql)
    lifetime = tokens.access_token_lifetime(client, resources)
    tokens.revoke_access_token(access_jti_for(code_hash), int(time.time()) + lifetime)


def count_code_use(op, code: AuthorizationCode) -> int:
    """Uses of the code so far, this one included: the first use is the one that counts 1."""
    return op.store.incr(f"code-uses:{code.code_hash}", op.settings.lifetimes.refresh_token)


def spend_authorization_code(op, code: AuthorizationCode) -> int:
    """Once the tokens are stored: drop the code, keep what a replay must revoke, and count the
    uses again (one round trip); over 2, a replay raced the exchange and may have missed them."""
    lifetime = op.settings.lifetimes.refresh_token
    spent = {"client_id": code.client_id, "resources": list(code.resources)}
    batch = op.store.batch().set(f"code-spent:{code.code_hash}", spent, lifetime).delete(f"code:{code.code_hash}")
    *_, uses = batch.incr(f"code-uses:{code.code_hash}", lifetime).run()
    return uses


class S256Only(CodeChallenge):
    """RFC 7636 with S256 only, required for public clients (RFC 9700 2.1.1)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256", redirect_uri=redirect_uri)
        if grant.request.client.is_public and not data.get("code_challenge"):
            raise InvalidRequestError("PKCE (code_challenge, S256) is required for public clients")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant, result):
        code = grant.request.authorization_code
        if code.code_challenge and not grant.request.form.get("code_verifier"):
            raise InvalidGrantError("Missing 'code_verifier'")  # RFC 7636 4.6
        super().validate_code_verifier(grant, result)

    def get_authorization_code_challenge(self, authorization_code):
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code):
        return authorization_code.code_challenge_method


class PrivateKeyJwt(JWTBearerClientAssertion):
    """private_key_jwt (OIDC Core 9, RFC 7523) against the client's registered JWKS."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, issuer: str, store):
        super().__init__(token_url=None, validate_jti=True)
        self.issuer = issuer
        self.store = store

    def get_audiences(self):
        return [f"{self.issuer}/oidc/token", self.issuer, f"{self.issuer}/oidc/par"]  # RFC 9126 2

    def validate_jti(self, claims, jti):
        ttl = max(int(claims.get("exp", 0) - time.time()), 0) + self.leeway
        return self.store.add(f"assertion-jti:{claims['sub']}:{jti}", 1, ttl)

    def resolve_client_public_key(self, client):
        return KeySet.import_key_set(client.config.jwks)


class _Issuing:
    """Grants issue through the token service, with the request's auth context."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    @property
    def op(self):
        return self.server.op

    @hooked  # DPoPExtension checks the proof right after the client is known (oauth/dpop.py)
    def authenticate_token_endpoint_client(self):
        return super().authenticate_token_endpoint_client()

    @property
    def dpop_jkt(self) -> str | None:
        return getattr(self.request, "dpop_jkt", None)

    @property
    def asked_resources(self) -> list[str]:
        return self.request.payload.datalist.get("resource", [])


class AuthorizationCodeGrant(_Issuing, grants.AuthorizationCodeGrant):
    @staticmethod
    def validate_no_multiple_request_parameter(request):
        """RFC 6749 3.1 and 4.1.2.1: a repeated client_id or redirect_uri leaves nothing verified
        to redirect to, so it is refused here; other repeats are refused by the endpoint with a
        redirect to the verified redirect_uri."""
        for name in ("client_id", "redirect_uri"):
            if len(request.payload.datalist.get(name, [])) > 1:
                raise InvalidRequestError(f"'{name}' is included more than once.")

    def generate_authorization_code(self):
        """256 random bits from one call (Authlib draws each of 48 characters from the OS apart)."""
        return secrets.token_urlsafe(32)

    def save_authorization_code(self, code, request, batch=None):
        store_authorization_code(
            self.op, code, batch,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri or request.client.get_default_redirect_uri(),
            scope=request.scope,
            sub=request.user.id,
            auth=request.auth_context.to_dict(),
            nonce=request.payload.data.get("nonce"),
            code_challenge=request.payload.data.get("code_challenge"),
            code_challenge_method=request.payload.data.get("code_challenge_method"),
            resources=request.resources,
            dpop_jkt=getattr(request, "dpop_jkt", None),
        )

    def query_authorization_code(self, code, client):
        if not isinstance(code, str) or len(code) > 256:
            return None
        code_hash = sha256_hex(code)
        record = load_authorization_code(self.op, code_hash)
        if record is None:
            spent = self.op.store.get(f"code-spent:{code_hash}")
            if spent is not None and spent["client_id"] == client.client_id:
                revoke_code_grant(self.op, code_hash, tuple(spent["resources"]), client)
            return None
        if record.client_id != client.client_id:
            return None
        # RFC 6749 4.1.2: single use; a second use revokes what the first was given.
        if count_code_use(self.op, record) > 1:
            revoke_code_grant(self.op, record.code_hash, record.resources, client)
            return None
        return record

    def delete_authorization_code(self, authorization_code):
        """Spent, not forgotten: a later replay must still find what to revoke (RFC 6749 4.1.2).
        Called once the tokens are stored; a replay that raced this exchange may have missed
        them, so the use count is read again (one round trip for the three commands)."""
        if spend_authorization_code(self.op, authorization_code) > 2:
            revoke_code_grant(self.op, authorization_code.code_hash, authorization_code.resources, self.client)

    def authenticate_user(self, authorization_code):
        """The user's id while the account is active (the grant needs no more of it)."""
        return authorization_code.sub if User.is_active(authorization_code.sub) else None

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        return self.op.tokens.issue(code_issue(self.op, self.client, self.request.authorization_code,
                                               self.asked_resources, include_refresh_token, self.dpop_jkt))


class OpenIDCodeExtension:
    """OpenID Connect on the code grant: the ID token (OIDC Core 3.1.3.3)."""

    def __call__(self, grant):
        grant.register_hook("after_create_token_response", self.add_id_token)

    def add_id_token(self, grant, response):
        code_id_token(grant.op, grant.client, grant.request.authorization_code, response[1])


class RefreshTokenGrant(_Issuing, grants.RefreshTokenGrant):
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        tokens = self.op.tokens
        row, self.user_active = tokens.claim_refresh_token(refresh_token)
        if row is not None:
            return row
        known = tokens.find_refresh_token(refresh_token)
        if known is not None and (known.rotated_at is not None or known.revoked_at is not None):
            tokens.revoke_family(known.family_id)  # RFC 9700 4.14.2: reuse (or a concurrent use) revokes the family
            record_audit("token.reuse_detected", user_id=known.user_id, client_id=known.client_id,
                         family=known.family_id)
        return None  # unknown or expired

    def authenticate_user(self, refresh_token):
        """The user's id while the account is active (read with the token; the grant needs no more)."""
        return refresh_token.user_id if self.user_active else None

    def revoke_old_credential(self, refresh_token):
        """Already marked rotated, atomically, before the new token was issued."""

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        row = self.request.refresh_token  # already claimed, in this transaction
        self.request.issued = refresh_issue(self.op, self.client, row, scope, self.asked_resources, self.dpop_jkt)
        return self.op.tokens.issue(self.request.issued)


class OpenIDRefreshExtension:
    """OIDC Core 12.2 on the refresh grant (refresh_id_token)."""

    def __call__(self, grant):
        grant.register_hook("after_create_token_response", self.add_id_token)

    def add_id_token(self, grant, response):
        _, token, _ = response
        refresh_id_token(grant.op, grant.client, grant.request.refresh_token, grant.request.issued, token)


class ClientCredentialsGrant(_Issuing, grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        return self.op.tokens.issue(client_credentials_issue(self.op, self.client, scope, self.asked_resources,
                                                             self.dpop_jkt))


RESPONSE_TYPE = re.compile(r"[A-Za-z0-9_]+(?: [A-Za-z0-9_]+)*")  # RFC 6749 3.1.1


class Server(AuthorizationServer):
    def get_authorization_grant(self, request):
        """Authlib quotes an unsupported response_type in error_description, where RFC 6749 5.2
        allows no quote, control or non-ASCII character (Authlib then raises ValueError: a 500).
        A value outside the response-type syntax gets the same error without the quote."""
        response_type = request.payload.response_type
        if not response_type or RESPONSE_TYPE.fullmatch(response_type):
            return super().get_authorization_grant(request)
        client = self.query_client(request.payload.client_id) if request.payload.client_id else None
        redirect_uri = None  # RFC 6749 4.1.2.1: redirect only to a redirect_uri checked for the client
        if client is not None:
            asked = request.payload.redirect_uri
            redirect_uri = (asked if client.check_redirect_uri(asked) else None) if asked \
                else client.get_default_redirect_uri()
        raise UnsupportedResponseTypeError("The response type is not supported by the server.",
                                           redirect_uri=redirect_uri)

    def create_oauth2_request(self, request):
        """Also accept an already built request: a resumed interaction has no query string."""
        if isinstance(request, OAuth2Request):
            return request
        return super().create_oauth2_request(request)

    def validate_requested_scope(self, scope):
        """Scopes are checked per client (Client.get_allowed_scope), not against one global list."""


def create_authorization_server(app, op) -> AuthorizationServer:
    server = Server(app, query_client=op.clients.get, save_token=lambda token, request: None)
    server.op = op
    server.register_client_auth_method("private_key_jwt", PrivateKeyJwt(op.settings.issuer_url, op.store))
    server.dpop = DPoP(op)
    dpop = DPoPExtension(server.dpop)
    server.register_grant(AuthorizationCodeGrant, [S256Only(required=True), OpenIDCodeExtension(), dpop])
    server.register_grant(RefreshTokenGrant, [OpenIDRefreshExtension(), dpop])
    server.register_grant(ClientCredentialsGrant, [dpop])
    if op.settings.device_flow.enabled:  # RFC 8628
        from .device import DeviceCodeGrant, OpenIDDeviceExtension

        server.register_grant(DeviceCodeGrant, [OpenIDDeviceExtension(), dpop])
    if op.settings.mfa_api.enabled:  # the password grant and Auth0's MFA grants (oauth/mfa_grants.py)
        from .mfa_grants import GRANTS

        for grant in GRANTS:
            server.register_grant(grant)
    return server
