"""Relying parties from `config/clients.yaml`: validated on load, reloaded on change.

Operators edit the file while the provider runs. A change is picked up on the next
request (the file's mtime is checked at most once a second); a file that does not
validate is reported with the file, the client and the field, and the provider keeps
serving the last good version.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from .provider import ConfigError, Strict, read_yaml
from .reloading import ReloadingFile

log = logging.getLogger(__name__)

SECRET_HASH_PREFIX = "hmac-sha256:"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 3.4
# The MFA API's grants (oauth/mfa_grants.py): Auth0's URNs and this provider's own, either
# spelling enabling the same grant. `password` also enables Auth0's password-realm grant.
AUTH0_GRANT = "http://auth0.com/oauth/grant-type/"
OWN_GRANT = "urn:oidc-provider:params:oauth:grant-type:"
PASSWORD_REALM = AUTH0_GRANT + "password-realm"
MFA_GRANTS = {name: (AUTH0_GRANT + name, OWN_GRANT + name) for name in ("mfa-otp", "mfa-oob", "mfa-recovery-code")}
GrantType = Literal[
    "authorization_code", "refresh_token", "client_credentials", "password",
    "http://auth0.com/oauth/grant-type/password-realm",
    "http://auth0.com/oauth/grant-type/mfa-otp", "http://auth0.com/oauth/grant-type/mfa-oob",
    "http://auth0.com/oauth/grant-type/mfa-recovery-code",
    "urn:oidc-provider:params:oauth:grant-type:mfa-otp", "urn:oidc-provider:params:oauth:grant-type:mfa-oob",
    "urn:oidc-provider:params:oauth:grant-type:mfa-recovery-code", DEVICE_CODE_GRANT,
]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


def generate_client_secret() -> str:
    """256 bits from the OS; high entropy is what lets a fast keyed hash protect it."""
    return secrets.token_urlsafe(32)


def hash_client_secret(secret: str, key: bytes) -> str:
    digest = hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()
    return SECRET_HASH_PREFIX + digest


def _check_redirect_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment:  # RFC 6749 3.1.2: absolute, no fragment
        raise ValueError(f"{uri!r} must be an absolute URI without a fragment")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise ValueError(f"{uri!r}: plain http is only allowed for loopback addresses")
    return uri


class ClientConfig(Strict):
    client_id: str = Field(pattern=r"^[A-Za-z0-9._~-]{3,128}$")
    client_name: str | None = None
    token_endpoint_auth_method: AuthMethod = "client_secret_basic"
    client_secret_hash: str | None = None  # made by `oidc-provider clients secret`
    jwks: dict | None = None  # public keys, for private_key_jwt and signed request objects
    redirect_uris: list[str] = []
    post_logout_redirect_uris: list[str] = []
    grant_types: list[GrantType] = ["authorization_code"]
    scopes: list[str] = ["openid"]
    first_party: bool = False  # first-party clients skip the consent page
    id_token_signed_response_alg: Literal["RS256", "ES256"] | None = None
    access_token_lifetime: int | None = Field(None, gt=0)
    refresh_token_lifetime: int | None = Field(None, gt=0)
    can_introspect: bool = False  # resource servers may introspect any client's tokens
    # MFA policy for this client's logins (config/policy.yaml); a user's own policy wins;
    # None: the global policy. Rules in config/policy.yaml take precedence over both.
    mfa_policy: Literal["never", "adaptive", "always"] | None = None
    # RFC 9126 6: authorization requests only through POST /oidc/par (also `par.required`)
    require_pushed_authorization_requests: bool = False
    # RFC 9101 10.5: authorization requests only as request objects signed with a key in `jwks`
    require_signed_request_object: bool = False
    # OIDC Dynamic Client Registration 2: the one alg its request objects use; None: RS256 or ES256
    request_object_signing_alg: Literal["RS256", "ES256"] | None = None
    # RFC 9449 5.2: true: every token request must carry a DPoP proof (DPoP-bound tokens only)
    dpop_bound_access_tokens: bool = False
    dpop_require_nonce: bool = False  # this client's proofs need a nonce even if dpop.require_nonce is off
    # Back-Channel Logout 1.0 2.2: where logout tokens are POSTed, and whether they must carry sid
    backchannel_logout_uri: str | None = None
    backchannel_logout_session_required: bool = False

    @field_validator("redirect_uris", "post_logout_redirect_uris")
    @classmethod
    def _uris(cls, values: list[str]) -> list[str]:
        return [_check_redirect_uri(uri) for uri in values]

    @field_validator("backchannel_logout_uri")
    @classmethod
    def _backchannel_uri(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("https", "http"):
            raise ValueError(f"{value!r} must be an http(s) URL")
        return value if value is None else _check_redirect_uri(value)

    @model_validator(mode="after")
    def _consistent(self) -> ClientConfig:
        method = self.token_endpoint_auth_method
        if method in ("client_secret_basic", "client_secret_post"):
            if not (self.client_secret_hash or "").startswith(SECRET_HASH_PREFIX):
                raise ValueError(
                    f"client_secret_hash: required for {method}, as made by "
                    "'oidc-provider clients secret'"
                )
        elif self.client_secret_hash:
            raise ValueError(f"client_secret_hash: not used with {method}; remove it")
        if method == "private_key_jwt" and not (self.jwks and self.jwks.get("keys")):
            raise ValueError("jwks: a key set with 'keys' is required for private_key_jwt")
        if (self.require_signed_request_object or self.request_object_signing_alg) and not (
                self.jwks and self.jwks.get("keys")):
            raise ValueError("jwks: a key set with 'keys' is required to verify signed request objects")
        if method == "none" and "client_credentials" in self.grant_types:
            raise ValueError("grant_types: a public client cannot use client_credentials")
        if "authorization_code" in self.grant_types and not self.redirect_uris:
            raise ValueError("redirect_uris: required for the authorization_code grant")
        return self


class ClientsFile(Strict):
    clients: list[ClientConfig] = []


class Client:
    """A registered client, in the shape Authlib's grants and endpoints expect."""

    def __init__(self, config: ClientConfig, secret_key: bytes):
        self.config = config
        self.client_id = config.client_id
        self._secret_key = secret_key

    def __repr__(self) -> str:
        return f"<Client {self.client_id}>"

    @property
    def is_public(self) -> bool:
        return self.config.token_endpoint_auth_method == "none"

    @property
    def id_token_signed_response_alg(self) -> str | None:
        return self.config.id_token_signed_response_alg

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # RFC 6749 3.1.2.3: only unambiguous when exactly one is registered
        uris = self.config.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.config.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 9700 2.1: exact string matching
        return redirect_uri in self.config.redirect_uris

    def check_post_logout_redirect_uri(self, uri: str) -> bool:
        return uri in self.config.post_logout_redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.config.client_secret_hash
        if not stored:
            return False
        candidate = hash_client_secret(client_secret, self._secret_key)
        return hmac.compare_digest(candidate, stored)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.config.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.config.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.config.grant_types


def parse_clients(path: Path, secret_key: bytes) -> dict[str, Client]:
    data = read_yaml(path)
    raw_clients = data.get("clients")
    if not isinstance(raw_clients, list):
        raise ConfigError(f"{path}: field 'clients': expected a list of clients")
    clients: dict[str, Client] = {}
    for index, raw in enumerate(raw_clients):
        name = raw.get("client_id", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            config = ClientConfig.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or _field_from_message(first["msg"])
            message = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{path}: client '{name}': field '{field}': {message}") from None
        if config.client_id in clients:
            raise ConfigError(f"{path}: client '{name}': field 'client_id': defined twice")
        clients[config.client_id] = Client(config, secret_key)
    return clients


def _field_from_message(message: str) -> str:
    """Model-level checks name their field before a colon ("jwks: ...")."""
    text = message.removeprefix("Value error, ")
    return text.split(":", 1)[0] if ":" in text else "?"


class ClientRegistry(ReloadingFile[dict]):
    """Clients by id, reloaded when the file changes; the last good set survives a bad edit."""

    def __init__(self, path: Path, secret_key: bytes):
        super().__init__(path, lambda file: parse_clients(file, secret_key))

    def get(self, client_id: str | None) -> Client | None:
        if not isinstance(client_id, str):
            return None
        return self.value.get(client_id)

    def all(self) -> list[Client]:
        return list(self.value.values())
