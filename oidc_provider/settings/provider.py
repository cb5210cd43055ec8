"""The provider's settings: every key, its default and why, in one place.

`config/provider.yaml` overrides these defaults; the environment variables ISSUER,
DATABASE_URL, REDIS_URL, SECRET_KEY, METRICS_TOKEN and LOG_FORMAT override the file, and so do
the secrets SMTP_PASSWORD, SMS_GATEWAY_TOKEN, VOICE_GATEWAY_TOKEN, TWILIO_AUTH_TOKEN and
REDIS_SENTINEL_PASSWORD.
Loading validates the whole file and names the file and key of the first problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator,
                      model_validator)


class ConfigError(Exception):
    """A configuration file is invalid; the message names the file and the field."""


def http_url(value: str | None) -> str | None:
    """A gateway URL: http or https only (no file:, ftp: or bare hosts)."""
    if value is not None and not value.startswith(("https://", "http://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lifetimes(Strict):
    """Lifetimes in seconds."""

    authorization_code: int = Field(60, gt=0, le=600)  # RFC 6749 4.1.2: short, 10 min at most
    access_token: int = Field(600, gt=0)  # used when neither resource nor client sets one
    id_token: int = Field(3600, gt=0)
    refresh_token: int = Field(30 * 24 * 3600, gt=0)  # absolute lifetime of a family
    session: int = Field(8 * 3600, gt=0)  # IdP session: how long a login is reused
    interaction: int = Field(15 * 60, gt=0)  # a login page left open expires
    consent: int = Field(365 * 24 * 3600, gt=0)  # remembered consent


class Resource(Strict):
    """A protected resource (RFC 8707 `resource`): the access token's audience and lifetime."""

    access_token_lifetime: int | None = Field(None, gt=0)
    scopes: list[str] | None = None  # scopes this resource accepts; None: any


class Sentinel(Strict):
    """Redis Sentinel: the sentinels to ask which server is the master of `service_name`."""

    hosts: list[str] = Field(min_length=1)  # "host:port" of each sentinel (usually 26379)
    service_name: str = Field(min_length=1)  # the master's name in the sentinels' configuration
    password: str | None = Field(None, repr=False)  # the sentinels' own AUTH; env REDIS_SENTINEL_PASSWORD

    @field_validator("hosts")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for host in value:
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{host!r} is not host:port")
        return value

    def addresses(self) -> list[tuple[str, int]]:
        return [(host.rpartition(":")[0].strip("[]"), int(host.rpartition(":")[2])) for host in self.hosts]


class Store(Strict):
    """Ephemeral state (IdP sessions, codes, consent, rate limits)."""

    backend: Literal["sql", "redis"] = "sql"  # sql: the embedded default, same database
    # redis://[user:password@]host:port/db (rediss:// for TLS). Required with backend redis; with
    # `sentinel` only its credentials, db and TLS are used (the sentinels name the host).
    redis_url: str | None = None
    prefix: str = "op:"  # key prefix, so several deployments can share one Redis
    cluster: bool = False  # Redis Cluster: redis_url names any node, the others are discovered
    sentinel: Sentinel | None = None  # Redis Sentinel: the master is found through the sentinels
    timeout: float = Field(5, gt=0)  # seconds to connect or wait for an answer; /readyz fails after it

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _redis_is_complete(self):
        if self.cluster and self.sentinel:
            raise ValueError("cluster and sentinel exclude each other: a cluster has no sentinels")
        if self.backend == "sql" and (self.cluster or self.sentinel):
            raise ValueError("cluster and sentinel need backend redis")
        return self


class Metrics(Strict):
    """Prometheus metrics at /metrics, for a scraper holding the bearer token."""

    # The scraper sends "Authorization: Bearer <token>"; None: no /metrics route at all.
    # Better in the environment: METRICS_TOKEN.
    token: str | None = Field(None, min_length=16, repr=False)


class Logging(Strict):
    """Log lines on standard error: one JSON object per line, each with the request id."""

    format: Literal["json", "text"] = "json"  # json for log collectors; text for a person reading
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    requests: bool = False  # one line per request (method, endpoint, status, duration)


class Email(Strict):
    """Outgoing email over SMTP (codes, sign-in links, security notices)."""

    host: str | None = None  # SMTP server; None: no email goes out (dev_mode: outbox only)
    port: int | None = Field(None, gt=0, lt=65536)  # None: 465 tls, 587 starttls, 25 none
    security: Literal["none", "starttls", "tls"] = "starttls"  # tls: TLS from the first byte
    username: str | None = None  # SMTP AUTH login; None: no AUTH
    password: str | None = Field(None, repr=False)  # better in the environment: SMTP_PASSWORD
    from_address: str = "no-reply@localhost"  # From header, e.g. "Example <no-reply@example.com>"
    timeout: float = Field(10, gt=0)  # seconds for connecting and each SMTP command
    ca_file: str | None = None  # CA bundle for the server certificate; None: the system's CAs

    @model_validator(mode="after")
    def _no_password_in_clear(self):
        if self.username and self.security == "none":
            raise ValueError("username needs security starttls or tls: the password would travel in clear")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or {"tls": 465, "starttls": 587, "none": 25}[self.security]


class Gateway(Strict):
    """An HTTP gateway for text messages or voice calls (the `sms:` and `voice:` blocks)."""

    gateway: Literal["none", "webhook", "twilio"] = "none"  # none: nothing goes out (dev: outbox)
    url: str | None = None  # webhook: where to POST; twilio: API base, None: https://api.twilio.com
    token: str | None = Field(None, repr=False)  # webhook bearer token; env SMS/VOICE_GATEWAY_TOKEN
    account_sid: str | None = None  # twilio: account SID, also the basic-auth user name
    auth_token: str | None = Field(None, repr=False)  # twilio: API password; env TWILIO_AUTH_TOKEN
    from_number: str | None = None  # twilio: the sending number, E.164 (+14155550100)
    timeout: float = Field(10, gt=0)  # seconds to connect and to wait for the answer

    _url_is_http = field_validator("url")(http_url)

    @model_validator(mode="after")
    def _gateway_is_complete(self):
        if self.gateway == "webhook" and not self.url:
            raise ValueError("a webhook gateway needs url")
        if self.gateway == "twilio":
            needed = ("account_sid", "auth_token", "from_number")
            missing = [key for key in needed if not getattr(self, key)]
            if missing:
                raise ValueError(f"a twilio gateway needs {', '.join(missing)}")
        return self


class Delivery(Strict):
    """How messages to people (codes, links, notices) go out: queued in the store by the request,
    which answers at once, and sent by background threads of any worker sharing the store (ASVS
    5.0 6.3.8: a known account's answer must not wait for the SMTP server or a gateway). Each try waits at most the
    transport's own `timeout` (email:, sms:, voice:)."""

    attempts: int = Field(3, ge=1, le=10)  # tries per message before its failure is logged and counted
    backoff: float = Field(1, ge=0, le=60)  # seconds before the second try; doubles after each failure
    workers: int = Field(4, ge=1, le=64)  # background threads per process sending messages


class Otp(Strict):
    """One-time codes and links sent by email, SMS or voice (NIST SP 800-63B 5.1.3)."""

    length: int = Field(6, ge=6, le=10)  # digits of a code
    lifetime: int = Field(5 * 60, gt=0, le=3600)  # a code expires after this
    link_lifetime: int = Field(15 * 60, gt=0, le=3600)  # a magic link expires after this
    max_attempts: int = Field(5, gt=0, le=10)  # wrong tries before a code is dead
    resend_cooldown: int = Field(30, ge=0)  # seconds before another code for the same login
    rate_window: int = Field(15 * 60, gt=0)  # the window of the three limits below
    per_user_limit: int = Field(5, gt=0)  # codes and links sent to one account per window
    per_destination_limit: int = Field(5, gt=0)  # ... to one address or number per window
    per_ip_limit: int = Field(30, gt=0)  # ... asked for from one IP address per window


class LockoutSettings(Strict):
    """One limit across all factors (NIST SP 800-63B 5.2.2 allows at most 100 in a row)."""

    max_failures: int = Field(10, gt=0, le=100)  # failed attempts in a row before the account locks
    duration: int = Field(15 * 60, gt=0)  # seconds the lock lasts; an admin can unlock sooner


class TrustedDevices(Strict):
    """"Remember this device": off by default; only ever relaxes the adaptive policy."""

    enabled: bool = False
    days: int = Field(30, gt=0, le=365)  # how long a device stays trusted


class AccountSettings(Strict):
    """The account's security page, "My MFA settings" (views/account_security.py)."""

    # Seconds a sign-in stays fresh enough for a sensitive change (adding or removing a factor,
    # new recovery codes, a new email or phone); older: the user signs in again first (step-up).
    reauth_max_age: int = Field(300, ge=0, le=86400)


class TotpAndRecoveryCodes(Strict):
    """Authenticator apps (TOTP, RFC 6238) and recovery codes: the `totp_recovery:` block."""

    issuer_name: str | None = Field(None, min_length=1, max_length=64)  # shown in the app; None: issuer host
    digits: int = Field(6, ge=6, le=8)  # digits of a code; most apps only show 6
    period: int = Field(30, ge=15, le=120)  # seconds per code (RFC 6238 5.2 recommends 30)
    drift: int = Field(1, ge=0, le=2)  # steps accepted either side of now (RFC 6238 5.2: one)
    max_tries: int = Field(5, gt=0, le=20)  # code tries per user and try_window, besides the lockout
    try_window: int = Field(5 * 60, gt=0)  # seconds
    recovery_codes: int = Field(10, ge=5, le=20)  # codes in a set (60 bits each)
    recovery_codes_low: int = Field(3, ge=0, le=20)  # the account page warns at this many left


class PushSettings(Strict):
    """Push approval (the `push` factor): how long a device may answer, and how it is told."""

    challenge_lifetime: int = Field(120, gt=0, le=900)  # seconds a device may approve or deny
    enrollment_lifetime: int = Field(10 * 60, gt=0, le=3600)  # seconds an enrollment QR code is valid
    gateway: Literal["none", "webhook"] = "none"  # none: nothing is sent, devices poll for challenges
    url: str | None = None  # webhook: where to POST {device, challenge_id, client, ip, place, expires_at}
    token: str | None = Field(None, repr=False)  # webhook: sent as "Authorization: Bearer <token>"
    timeout: float = Field(10, gt=0)  # seconds to connect and to wait for the webhook's answer
    # Against push bombing (approve-to-make-it-stop): requests one account may get per window.
    per_user_limit: int = Field(5, gt=0)
    rate_window: int = Field(15 * 60, gt=0)  # seconds

    _url_is_http = field_validator("url")(http_url)

    @model_validator(mode="after")
    def _webhook_has_url(self):
        if self.gateway == "webhook" and not self.url:
            raise ValueError("a webhook gateway needs url")
        return self


class WebAuthnSettings(Strict):
    """WebAuthn: security keys, device biometrics and passkeys (W3C WebAuthn Level 2)."""

    # The relying party id: the domain credentials are scoped to, e.g. example.com; None: the
    # issuer's host. Every origin must be this domain or a subdomain of it (WebAuthn 5.1.3).
    rp_id: str | None = None
    rp_name: str = Field("OpenID Provider", min_length=1, max_length=64)  # shown by the browser
    # Origins the ceremonies may run on (scheme://host[:port]); []: the issuer's origin. https,
    # except on localhost: browsers offer WebAuthn only in a secure context.
    origins: list[str] = []
    # none: no attestation asked for or checked. direct: registration demands a certificate-based
    # attestation statement from an authenticator model listed in allowed_aaguids.
    attestation: Literal["none", "direct"] = "none"
    allowed_aaguids: list[str] = []  # AAGUIDs (8-4-4-4-12 hex) accepted with attestation: direct
    timeout: int = Field(120, ge=15, le=600)  # seconds a ceremony may take; its challenge lives as long

    @field_validator("rp_id")
    @classmethod
    def _rp_id_is_a_host(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(ch in value for ch in "/:@ ") or value != value.lower()):
            raise ValueError("rp_id is a lower-case domain name, without scheme, port or path")
        return value

    @field_validator("origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        import re

        for origin in value:
            match = re.fullmatch(r"(https?)://([a-z0-9.-]+)(:[0-9]{1,5})?", origin)
            if not match:
                raise ValueError(f"{origin!r} is not an origin such as https://login.example.com")
            host = match.group(2)
            if match.group(1) == "http" and host != "localhost" and not host.endswith(".localhost"):
                raise ValueError(f"{origin!r}: WebAuthn needs https (http only on localhost)")
        return value

    @field_validator("allowed_aaguids")
    @classmethod
    def _aaguids(cls, value: list[str]) -> list[str]:
        import uuid

        try:
            return [str(uuid.UUID(aaguid)) for aaguid in value]
        except ValueError:
            raise ValueError("an AAGUID is written as 8-4-4-4-12 hex digits") from None

    @model_validator(mode="after")
    def _direct_needs_aaguids(self):
        if self.attestation == "direct" and not self.allowed_aaguids:
            raise ValueError("attestation: direct needs allowed_aaguids")
        return self


class ParSettings(Strict):
    """Pushed authorization requests (RFC 9126): the `par:` block."""

    enabled: bool = True  # POST /oidc/par exists and discovery advertises it
    # every client must push its requests (RFC 9126 5); one client: require_pushed_authorization_requests
    required: bool = False
    lifetime: int = Field(60, gt=0, le=600)  # seconds a request_uri stays usable (RFC 9126 2.2: short)

    @model_validator(mode="after")
    def _required_needs_enabled(self):
        if self.required and not self.enabled:
            raise ValueError("required: PAR cannot be required while it is not enabled")
        return self


class JarSettings(Strict):
    """Signed request objects (JAR, RFC 9101; OIDC Core 6.1): the `jar:` block."""

    enabled: bool = True  # `request=<JWT>` accepted at /oidc/auth and /oidc/par
    max_lifetime: int = Field(3600, gt=0, le=24 * 3600)  # seconds exp may lie ahead: bounds replay


class DPoPSettings(Strict):
    """DPoP (RFC 9449): access tokens bound to a key the client proves it holds, per request.
    Clients opt in by sending proofs (or must: `dpop_bound_access_tokens` in clients.yaml)."""

    enabled: bool = True  # off: DPoP headers are ignored, tokens are Bearer, discovery is silent
    # proof algorithms accepted and advertised; asymmetric only (RFC 9449 4.3 step 5)
    algorithms: list[Literal["ES256", "RS256", "PS256", "EdDSA"]] = Field(
        ["ES256", "RS256", "PS256", "EdDSA"], min_length=1)
    proof_max_age: int = Field(60, gt=0, le=600)  # seconds a proof's iat may lie in the past
    clock_skew: int = Field(5, ge=0, le=60)  # seconds a proof's iat may lie in the future
    # RFC 9449 8/9: every proof must carry a nonce we issued (answer use_dpop_nonce otherwise);
    # clients may also ask for it alone with `dpop_require_nonce` in clients.yaml
    require_nonce: bool = False
    nonce_lifetime: int = Field(300, ge=10, le=3600)  # a nonce is good for this to twice this


class BackchannelLogout(Strict):
    """OpenID Connect Back-Channel Logout 1.0: logout tokens POSTed to clients' backchannel_logout_uri."""

    enabled: bool = False  # off: no logout tokens, nothing advertised in discovery
    timeout: float = Field(5, gt=0, le=60)  # seconds per POST to a client; slow RPs never hold a logout up
    attempts: int = Field(4, ge=1, le=10)  # tries per client before the failure is audited
    backoff: float = Field(2, ge=0, le=300)  # seconds before the second try; doubles after each failure
    workers: int = Field(4, ge=1, le=64)  # background threads delivering logout tokens
    token_lifetime: int = Field(120, gt=0, le=600)  # exp - iat of a logout token (spec 2.4: short)
    # Seconds between sweeps for expired IdP sessions (their clients get logout tokens);
    # 0: only `oidc-provider sessions sweep` (cron) notices expiry.
    sweep_interval: int = Field(60, ge=0)


class DeviceFlow(Strict):
    """The device authorization grant (RFC 8628): TVs and CLIs sign in through a browser elsewhere."""

    enabled: bool = False  # off: no /oidc/device_authorization, no /device, grant not advertised
    lifetime: int = Field(600, ge=1, le=3600)  # seconds a device_code / user_code lives (expires_in)
    interval: int = Field(5, ge=1, le=60)  # seconds between polls; each slow_down adds 5 (RFC 8628 3.5)
    # user codes tried from one IP address per window (RFC 8628 5.1: brute force must be bounded)
    user_code_attempts: int = Field(20, ge=1)
    user_code_window: int = Field(15 * 60, gt=0)  # seconds


class MfaApiSettings(Strict):
    """The MFA API compatible with Auth0's (`/mfa/*`, `mfa_required` and the MFA grants)."""

    enabled: bool = True  # routes, grants and the <issuer>/mfa/ resource exist only when enabled
    mfa_token_lifetime: int = Field(600, gt=0, le=3600)  # seconds an mfa_token lives (Auth0: 10 minutes)
    max_attempts: int = Field(5, gt=0, le=20)  # wrong answers one mfa_token takes before it is dead
    # Deleting an authenticator, or adding one to a user who has one, with an access token needs
    # a recent second factor: amr holding mfa and auth_time at most this many seconds ago.
    reauth_max_age: int = Field(300, gt=0, le=3600)
    access_token_lifetime: int = Field(600, gt=0)  # tokens for <issuer>/mfa/ (Auth0: 10 minutes)
    # `realm` values of the password-realm grant that name this provider's user database
    # (Auth0's default database connection is Username-Password-Authentication).
    realms: list[str] = Field(["Username-Password-Authentication"], min_length=1)


class PasswordReset(Strict):
    """Self-service password reset by an emailed link ("Forgot password?" on the sign-in page).
    The link proves the mailbox only: a user with another factor must pass it too (README)."""

    enabled: bool = True  # off: no link on the sign-in page and the reset pages answer 404
    # Seconds the single-use link works: 15 to 30 minutes leaves time to reach the mailbox, not more.
    link_lifetime: int = Field(20 * 60, gt=0, le=30 * 60)


# Factors a user may set up in the middle of a login (views/enrollment.py): each one's setup
# ends with a proof of possession (a TOTP code, an SMS code, a WebAuthn assertion).
ENROLLABLE_FACTORS = ("totp", "sms", "webauthn-key", "webauthn-platform", "passkey")


class Enrollment(Strict):
    """Setting up a second factor at login, for users who have none (the `enrollment:` block)."""

    # off: a login that needs MFA from a user without a second factor is refused with what is
    # missing; on: the user sets one up there (trust on first use: the first factor is all that
    # vouches for the new one, so it is off by default). The admin flag mfa_enrollment_required
    # asks it of one user either way.
    at_login: bool = False
    factors: list[Literal[ENROLLABLE_FACTORS]] = ["totp", "webauthn-key", "webauthn-platform", "sms"]  # type: ignore[valid-type]


# Every factor id (authn/factors FACTOR_CLASSES); "email" is the magic link, "fed" an upstream.
FACTOR_IDS = ("password", "email-otp", "sms", "voice", "email", "totp", "recovery-code",
              "webauthn-key", "webauthn-platform", "passkey", "push", "fed")
# Enabled unless `factors:` says otherwise; federation comes with configured upstreams.
DEFAULT_FACTORS = tuple(factor for factor in FACTOR_IDS if factor != "fed")


# Every factor id an acr level may name: today's and the ones planned (SPEC section 2), so a
# level written for a factor that is not enabled yet still loads, while a typo does not.
ACR_FACTOR_IDS = FACTOR_IDS


class AcrLevel(Strict):
    """One authentication level (an `acr` value) and what a login must have done to reach it."""

    value: str = Field(min_length=1, max_length=200)  # the acr value, e.g. mfa, phr
    flows: int = Field(1, ge=1)  # distinct factor flows required (email, phone, knowledge, ...)
    max_age: int | None = Field(None, gt=0)  # seconds; older factors stop counting for this level
    required_factors: list[str] = []  # at least one of these must be among the factors; []: any
    forbidden_factors: list[str] = []  # these never count towards this level
    first_factors: list[str] | None = None  # the factors a login may start with; None: any

    @field_validator("value")
    @classmethod
    def _value_is_one_token(cls, value: str) -> str:
        # acr_values is space-separated (OIDC Core 3.1.2.1); urn:<ns>:<idp>_direct names an upstream
        if any(ch.isspace() for ch in value) or not value.isprintable():
            raise ValueError("an acr value has no spaces or control characters")
        if value.startswith("urn:") and value.endswith("_direct"):
            raise ValueError("urn:<ns>:<idp>_direct names an upstream provider, not a level")
        return value

    @field_validator("required_factors", "forbidden_factors", "first_factors")
    @classmethod
    def _known_factors(cls, value: list[str] | None) -> list[str] | None:
        for factor in value or []:
            if factor not in ACR_FACTOR_IDS:
                raise ValueError(f"unknown factor {factor!r}; known: {', '.join(ACR_FACTOR_IDS)}")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a factor is listed twice")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if set(self.required_factors) & set(self.forbidden_factors):
            raise ValueError("a factor cannot be both required and forbidden")
        if self.first_factors is not None and not set(self.first_factors) - set(self.forbidden_factors):
            raise ValueError("first_factors allows no factor that counts")
        if self.required_factors and not set(self.required_factors) - set(self.forbidden_factors):
            raise ValueError("required_factors names no factor that counts")
        return self


class Acr(Strict):
    """acr levels as data: what `acr_values`, the claims parameter and require_mfa ask for."""

    vocabulary: Literal["transmit", "rfc8176"] = "transmit"  # amr names; see authn/acr.py
    # Weakest first; when several are requested the highest wins. A level is met by its own
    # rules, not by rank: a passkey alone reaches phr but not mfa.
    levels: list[AcrLevel] = [
        AcrLevel(value="mfa", flows=2),
        AcrLevel(value="phr", flows=1, required_factors=["webauthn-key", "webauthn-platform", "passkey"]),
    ]

    @field_validator("levels")
    @classmethod
    def _unique_values(cls, value: list[AcrLevel]) -> list[AcrLevel]:
        seen: set[str] = set()
        for level in value:
            if level.value in seen:
                raise ValueError(f"acr value {level.value!r} is defined twice")
            seen.add(level.value)
        return value


class UpstreamSettings(Strict):
    """An upstream OpenID provider users may sign in with (social login, factor `fed`): its key
    in `upstreams:` is the name in `urn:<ns>:<name>_direct` and in /v1/auth/social/<name>."""

    preset: Literal["google"] | None = None  # google: Google's discovery URL, scopes and name
    display_name: str | None = Field(None, max_length=64)  # "Continue with <display_name>"; None: the key
    # OpenID Connect Discovery document; None: <issuer>/.well-known/openid-configuration
    discovery_url: str | None = None
    issuer: str | None = None  # the issuer expected in discovery and ID tokens; None: the discovery URL's
    client_id: str = Field(min_length=1)  # this provider's client id at the upstream
    # better in the environment: UPSTREAM_<NAME>_CLIENT_SECRET (the key upper-cased, - and . as _)
    client_secret: str | None = Field(None, repr=False)
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    scopes: list[str] = ["openid", "email", "profile"]  # openid is always sent
    # our claim -> the upstream's claim that carries it; unset ones keep the standard name
    claims: dict[Literal["sub", "email", "email_verified", "name"], str] = {}
    timeout: float = Field(10, gt=0)  # seconds for each call to the upstream

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        if isinstance(data, dict) and data.get("preset") == "google":
            data = {"discovery_url": "https://accounts.google.com/.well-known/openid-configuration",
                    "scopes": ["openid", "email", "profile"], "display_name": "Google", **data}
        return data

    @field_validator("discovery_url", "issuer")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _locatable(self):
        if not self.discovery_url and not self.issuer:
            raise ValueError("an upstream needs discovery_url, issuer or preset")
        return self


# urn:<ns>:<name>_direct must be able to name it (authn/acr.py UPSTREAM)
UpstreamName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class Settings(Strict):
    issuer: HttpUrl = "http://127.0.0.1:5000"  # type: ignore[assignment]
    database_url: str = "sqlite:///instance/oidc.db"  # relative paths are from the base dir
    keys_dir: str = "keys"
    clients_file: str = "config/clients.yaml"
    policy_file: str = "config/policy.yaml"  # MFA policy and rules; missing: policy never
    dev_mode: bool = True  # development conveniences (dev outbox, demo data); off in production
    lifetimes: Lifetimes = Lifetimes()
    resources: dict[str, Resource] = {}
    store: Store = Store()
    id_token_signing_alg: Literal["RS256", "ES256"] = "RS256"  # default; clients may override
    # acr claimed for a single-factor login; None omits acr, as the Transmit guide does
    single_factor_acr: str | None = None
    scopes_supported: list[str] = ["openid", "profile", "email", "phone", "offline_access"]
    max_request_bytes: int = Field(64 * 1024, gt=1024)  # larger bodies get invalid_request
    max_parameter_length: int = Field(4096, gt=64)  # longer parameters get invalid_request
    password_failures_before_throttle: int = Field(10, gt=0)  # per account, per 15 minutes
    email: Email = Email()  # how email reaches users; unset: dev outbox only
    sms: Gateway = Gateway()  # how text messages reach users; unset: dev outbox only
    voice: Gateway = Gateway()  # how voice calls reach users; unset: dev outbox only
    delivery: Delivery = Delivery()  # tries, backoff and threads of the background sending queue
    otp: Otp = Otp()
    lockout: LockoutSettings = LockoutSettings()
    # Keys that encrypt reversible secrets (TOTP seeds...), derived from the master secret by id;
    # the first encrypts, all decrypt. Rotate: put a new id first, then `keys reencrypt`.
    encryption_key_ids: list[str] = Field(["m1"], min_length=1)
    trusted_devices: TrustedDevices = TrustedDevices()
    # Enabled factors, in the order the sign-in page offers them ("email" is the magic link).
    factors: list[Literal[FACTOR_IDS]] = list(DEFAULT_FACTORS)  # type: ignore[valid-type]
    acr: Acr = Acr()  # acr levels (mfa, phr, ...) and the amr vocabulary
    webauthn: WebAuthnSettings = WebAuthnSettings()  # security keys, device biometrics, passkeys
    upstreams: dict[UpstreamName, UpstreamSettings] = {}  # upstream OpenID providers (social login)
    push: PushSettings = PushSettings()  # push approval: challenge lifetime, enrollment, gateway
    totp_recovery: TotpAndRecoveryCodes = TotpAndRecoveryCodes()  # authenticator apps, recovery codes
    par: ParSettings = ParSettings()  # pushed authorization requests: POST /oidc/par
    jar: JarSettings = JarSettings()  # signed request objects (`request` parameter)
    dpop: DPoPSettings = DPoPSettings()  # DPoP-bound access tokens (RFC 9449)
    backchannel_logout: BackchannelLogout = BackchannelLogout()  # logout tokens to relying parties
    device_flow: DeviceFlow = DeviceFlow()  # RFC 8628 device authorization grant
    account: AccountSettings = AccountSettings()  # My MFA settings: how fresh a sign-in must be for changes
    mfa_api: MfaApiSettings = MfaApiSettings()  # the Auth0-compatible MFA API and password grant
    password_reset: PasswordReset = PasswordReset()  # "Forgot password?": an emailed single-use link
    enrollment: Enrollment = Enrollment()  # setting up a second factor during a login that needs one
    metrics: Metrics = Metrics()  # Prometheus metrics; /metrics needs a token
    logging: Logging = Logging()  # JSON log lines with request ids

    @field_validator("resources")
    @classmethod
    def _resources_are_absolute_uris(cls, value: dict[str, Resource]) -> dict[str, Resource]:
        for uri in value:
            if "://" not in uri or "#" in uri:  # RFC 8707 2: absolute URI, no fragment
                raise ValueError(f"resource {uri!r} must be an absolute URI without a fragment")
        return value

    @property
    def issuer_url(self) -> str:
        return str(self.issuer).rstrip("/")

    def max_token_lifetime(self, client_lifetimes: list[int]) -> int:
        """The longest a signed token can live; retired keys stay published that long."""
        resource = [r.access_token_lifetime for r in self.resources.values() if r.access_token_lifetime]
        return max([self.lifetimes.id_token, self.lifetimes.access_token, *resource, *client_lifetimes])


def format_validation_error(path: str, error: ValidationError, prefix: str = "") -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return f"{path}: {prefix}field '{field}': {first['msg']}"


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


# Environment variables that set a delivery secret: (variable, settings block, key).
SECRET_VARIABLES = (
    ("SMTP_PASSWORD", "email", "password"),
    ("SMS_GATEWAY_TOKEN", "sms", "token"),
    ("VOICE_GATEWAY_TOKEN", "voice", "token"),
    ("TWILIO_AUTH_TOKEN", "sms", "auth_token"),
    ("TWILIO_AUTH_TOKEN", "voice", "auth_token"),
)


def load_settings(path: str | Path | None = None, overrides: dict | None = None) -> Settings:
    """Defaults, then the YAML file, then the environment, then explicit overrides (tests)."""
    data: dict = {}
    if path is not None:
        data = read_yaml(Path(path))
    env = os.environ
    if env.get("ISSUER"):
        data["issuer"] = env["ISSUER"]
    if env.get("DATABASE_URL"):
        data["database_url"] = env["DATABASE_URL"]
    if env.get("REDIS_URL"):
        data["store"] = {**data.get("store", {}), "backend": "redis", "redis_url": env["REDIS_URL"]}
    if env.get("REDIS_SENTINEL_PASSWORD") and isinstance((data.get("store") or {}).get("sentinel"), dict):
        data["store"]["sentinel"] = {**data["store"]["sentinel"], "password": env["REDIS_SENTINEL_PASSWORD"]}
    if env.get("METRICS_TOKEN"):
        data["metrics"] = {**(data.get("metrics") or {}), "token": env["METRICS_TOKEN"]}
    if env.get("LOG_FORMAT"):
        data["logging"] = {**(data.get("logging") or {}), "format": env["LOG_FORMAT"]}
    # Delivery secrets belong in the environment rather than in a file that gets copied around.
    for variable, block, key in SECRET_VARIABLES:
        if env.get(variable):
            data[block] = {**(data.get(block) or {}), key: env[variable]}
    data.update(overrides or {})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path or "settings"), exc)) from None
    if settings.store.backend == "redis" and not settings.store.redis_url and not settings.store.sentinel:
        raise ConfigError(f"{path}: field 'store.redis_url': required when store.backend is redis (or store.sentinel)")
    return with_mfa_resource(settings)


MFA_API_SCOPES = ("enroll", "read:authenticators", "remove:authenticators")  # Auth0's MFA API scopes


def mfa_resource(settings: Settings) -> str:
    """The MFA API's audience, as Auth0's https://<domain>/mfa/."""
    return f"{settings.issuer_url}/mfa/"


def with_mfa_resource(settings: Settings) -> Settings:
    """The MFA API is a resource of its own, registered by default (unless configured already)."""
    uri = mfa_resource(settings)
    if not settings.mfa_api.enabled or uri in settings.resources:
        return settings
    resource = Resource(access_token_lifetime=settings.mfa_api.access_token_lifetime, scopes=list(MFA_API_SCOPES))
    return settings.model_copy(update={"resources": {**settings.resources, uri: resource}})
