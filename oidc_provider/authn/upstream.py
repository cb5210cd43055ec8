"""Upstream OpenID providers (social login): we are their relying party.

One connector per entry of the `upstreams:` settings (a preset such as `google`, or any
provider with a discovery document). It follows OpenID Connect Core 3.1, the
authorization code flow: `state` binds the answer to the browser and the interaction,
`nonce` binds the ID token to this request (3.1.2.1), PKCE S256 binds the code to us
(RFC 7636), and the ID token is validated as 3.1.3.7 says (signature against the
upstream's JWKS, iss, aud/azp, exp, iat, nonce) before anything in it is believed.

Then the upstream account is mapped to a user of ours. A known link (upstream + `sub`)
wins; otherwise an existing user is linked only when both sides have verified the same
email address, so an upstream account with an unverified (or unverified-here) address
can never take over an account; otherwise a new user is created.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

import requests
from flask import current_app, request, url_for
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import FederatedIdentity, User, record_audit
from ..settings import ConfigError
from .factors.federation import UpstreamFactor

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")  # ID token signatures we accept; never none or HMAC
LEEWAY = 60  # seconds of clock difference allowed on exp and iat
DISCOVERY_TTL = 3600  # seconds a discovery document is reused
JWKS_REFRESH_AFTER = 60  # an unknown `kid` fetches the JWKS again, at most this often
PENDING_LIFETIME = 10 * 60  # seconds a user may spend at the upstream
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
# Google's ID tokens carry either form of its issuer (its OpenID Connect documentation).
PRESET_ISSUERS = {"google": ("https://accounts.google.com", "accounts.google.com")}
# urn:<ns>:<idp>_direct skips the login page only when the user has to sign in at all.
DIRECT_NEEDS = ("login:no_session", "login:prompt", "login:max_age")


class UpstreamError(Exception):
    """The upstream sign-in cannot be completed or trusted. The message is for logs only."""


@dataclass(frozen=True)
class Identity:
    """Who the upstream says signed in, after validation and claim mapping."""

    provider: str  # the key in `upstreams:`
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


def secret_variable(name: str) -> str:
    """The environment variable that overrides an upstream's client_secret."""
    return "UPSTREAM_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_CLIENT_SECRET"


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class Upstream:
    """One upstream provider: discovery, the authorization request, the code exchange and
    the ID token validation. Safe to share between threads."""

    def __init__(self, name: str, config):
        self.name = name
        self.config = config
        self._lock = threading.Lock()
        self._metadata: dict | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    @property
    def display_name(self) -> str:
        return self.config.display_name or self.name

    @property
    def client_secret(self) -> str | None:
        return os.environ.get(secret_variable(self.name)) or self.config.client_secret

    @property
    def discovery_url(self) -> str:
        return self.config.discovery_url or self.config.issuer.rstrip("/") + DISCOVERY_SUFFIX

    def _issuer(self) -> str | None:
        """The issuer configured, or implied by where the discovery document lives (Discovery 4)."""
        if self.config.issuer:
            return self.config.issuer
        if self.discovery_url.endswith(DISCOVERY_SUFFIX):
            return self.discovery_url.removesuffix(DISCOVERY_SUFFIX)
        return None

    def issuers(self) -> tuple[str, ...]:
        """The `iss` values accepted in ID tokens and authorization responses (RFC 9207)."""
        return (self.metadata()["issuer"], *PRESET_ISSUERS.get(self.config.preset, ()))

    # -- discovery and keys --------------------------------------------------------------

    def _get_json(self, url: str, what: str, **kwargs) -> dict:
        try:
            response = requests.get(url, timeout=self.config.timeout, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            raise UpstreamError(f"{self.name}: {what} unreachable: {exc}") from None
        if response.status_code != 200:
            raise UpstreamError(f"{self.name}: {what} answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise UpstreamError(f"{self.name}: {what} is not JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"{self.name}: {what} is not a JSON object")
        return data

    def metadata(self) -> dict:
        """The discovery document, fetched once an hour (OpenID Connect Discovery 1.0, 4)."""
        with self._lock:
            if self._metadata is not None and time.time() - self._metadata_at < DISCOVERY_TTL:
                return self._metadata
        data = self._get_json(self.discovery_url, "discovery")
        expected = self._issuer()
        if not isinstance(data.get("issuer"), str) or (expected and data["issuer"] != expected):
            # Discovery 4.3: the issuer must be the one the document was asked for.
            raise UpstreamError(f"{self.name}: discovery names issuer {data.get('issuer')!r}, expected {expected!r}")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(data.get(key), str) or not data[key].startswith(("https://", "http://")):
                raise UpstreamError(f"{self.name}: discovery lacks a usable {key}")
        with self._lock:
            self._metadata, self._metadata_at = data, time.time()
        return data

    def _key_set(self, refresh: bool = False) -> KeySet:
        with self._lock:
            fresh = time.time() - self._keys_at < JWKS_REFRESH_AFTER
            if self._keys is not None and (not refresh or fresh):
                return self._keys
        data = self._get_json(self.metadata()["jwks_uri"], "JWKS")
        keys = [key for key in data.get("keys") or [] if isinstance(key, dict)
                and key.get("kty") in ("RSA", "EC") and key.get("use", "sig") == "sig"]
        try:
            key_set = KeySet.import_key_set({"keys": keys})
        except (JoseError, ValueError, TypeError) as exc:
            raise UpstreamError(f"{self.name}: JWKS unusable: {exc}") from None
        with self._lock:
            self._keys, self._keys_at = key_set, time.time()
        return key_set

    # -- the flow --------------------------------------------------------------------------

    def authorization_request(self, redirect_uri: str, max_age: int | None = None) -> AuthorizationRequest:
        """OIDC Core 3.1.2.1 with PKCE S256 (RFC 7636 4.2). `max_age` passes our request's
        freshness on (prompt=login is max_age=0), so the upstream authenticates afresh."""
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        scopes = ["openid", *(scope for scope in self.config.scopes if scope != "openid")]
        query = {
            "response_type": "code", "client_id": self.config.client_id, "redirect_uri": redirect_uri,
            "scope": " ".join(scopes), "state": state, "nonce": nonce,
            "code_challenge": _s256(verifier), "code_challenge_method": "S256",
        }
        if max_age is not None:
            query["max_age"] = str(max_age)
        endpoint = self.metadata()["authorization_endpoint"]
        url = endpoint + ("&" if urlsplit(endpoint).query else "?") + urlencode(query)
        return AuthorizationRequest(url, state, nonce, verifier)

    def exchange(self, code: str, redirect_uri: str, code_verifier: str) -> dict:
        """OIDC Core 3.1.3.1: the code for tokens, authenticated as the configured client."""
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": code_verifier}
        auth = None
        if self.config.token_endpoint_auth_method == "client_secret_post":
            data.update(client_id=self.config.client_id, client_secret=self.client_secret)
        else:  # RFC 6749 2.3.1: form-encoded before Basic
            auth = (quote(self.config.client_id, safe=""), quote(self.client_secret or "", safe=""))
        try:
            response = requests.post(self.metadata()["token_endpoint"], data=data, auth=auth,
                                     timeout=self.config.timeout, allow_redirects=False,
                                     headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise UpstreamError(f"{self.name}: token endpoint unreachable: {exc}") from None
        try:
            tokens = response.json()
        except ValueError:
            tokens = None
        if response.status_code != 200 or not isinstance(tokens, dict):
            error = tokens.get("error") if isinstance(tokens, dict) else None
            raise UpstreamError(f"{self.name}: token endpoint answered HTTP {response.status_code} {error or ''}")
        if not isinstance(tokens.get("id_token"), str):
            raise UpstreamError(f"{self.name}: the token response has no ID token")
        return tokens

    def validate_id_token(self, id_token: str, nonce: str, max_age: int | None = None,
                          now: float | None = None) -> dict:
        """OIDC Core 3.1.3.7, every step that applies to a signed ID token."""
        try:
            try:
                token = jwt.decode(id_token, self._key_set(), algorithms=list(ALGORITHMS))
            except InvalidKeyIdError:  # the upstream may have rotated its keys since we fetched them
                token = jwt.decode(id_token, self._key_set(refresh=True), algorithms=list(ALGORITHMS))
        except (JoseError, ValueError, TypeError) as exc:
            raise UpstreamError(f"{self.name}: ID token signature or format refused: {exc}") from None
        claims = token.claims
        now = time.time() if now is None else now
        client_id = self.config.client_id
        if claims.get("iss") not in self.issuers():  # step 2
            raise UpstreamError(f"{self.name}: ID token issuer {claims.get('iss')!r} is not the upstream's")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or client_id not in audiences:  # step 3
            raise UpstreamError(f"{self.name}: ID token audience {claims.get('aud')!r} is not this client")
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != client_id:  # steps 3-5
            raise UpstreamError(f"{self.name}: ID token for other parties too (azp {claims.get('azp')!r})")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool) or now > exp + LEEWAY:  # step 9
            raise UpstreamError(f"{self.name}: ID token expired or without exp")
        if not isinstance(iat, (int, float)) or isinstance(iat, bool) or iat > now + LEEWAY:  # step 10
            raise UpstreamError(f"{self.name}: ID token issued in the future or without iat")
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(
                claims["nonce"].encode(), nonce.encode()):  # step 11
            raise UpstreamError(f"{self.name}: ID token nonce does not match this request")
        auth_time = claims.get("auth_time")
        if max_age is not None and (not isinstance(auth_time, (int, float)) or isinstance(auth_time, bool)
                                    or now - auth_time > max_age + LEEWAY):  # step 13
            raise UpstreamError(f"{self.name}: the upstream did not authenticate within max_age {max_age}")
        if not isinstance(claims.get("sub"), str) or not 0 < len(claims["sub"]) <= 255:
            raise UpstreamError(f"{self.name}: ID token without a usable sub")
        return claims

    def userinfo(self, access_token: str, subject: str) -> dict:
        """OIDC Core 5.3; 5.3.2: the answer is about the ID token's sub, or it is ignored."""
        endpoint = self.metadata().get("userinfo_endpoint")
        if not isinstance(endpoint, str) or not access_token:
            return {}
        try:
            claims = self._get_json(endpoint, "userinfo", headers={"Authorization": f"Bearer {access_token}"})
        except UpstreamError as exc:
            log.warning("%s", exc)  # the ID token alone still signs the user in
            return {}
        if claims.get("sub") != subject:
            raise UpstreamError(f"{self.name}: userinfo is about another subject")
        return claims

    def identity(self, tokens: dict, nonce: str, max_age: int | None = None) -> Identity:
        """The validated ID token mapped to our claims; userinfo fills what it lacks."""
        mapping = {claim: self.config.claims.get(claim, claim) for claim in ("sub", "email", "email_verified", "name")}
        id_claims = self.validate_id_token(tokens["id_token"], nonce, max_age)
        subject = id_claims["sub"]
        if mapping["sub"] != "sub":  # e.g. a stable account id under another name
            subject = id_claims.get(mapping["sub"])
            if not isinstance(subject, (str, int)) or isinstance(subject, bool) or not str(subject):
                raise UpstreamError(f"{self.name}: ID token lacks the mapped subject claim {mapping['sub']!r}")
            subject = str(subject)
        claims = dict(id_claims)
        if any(mapping[claim] not in claims for claim in ("email", "name")):
            claims = {**self.userinfo(tokens.get("access_token") or "", id_claims["sub"]), **id_claims}
        email = claims.get(mapping["email"])
        email = email.strip().lower() if isinstance(email, str) and _looks_like_email(email.strip()) else None
        verified = claims.get(mapping["email_verified"])
        name = claims.get(mapping["name"])
        return Identity(
            provider=self.name, subject=subject[:255], email=email,
            # some providers send "true" as a string; anything else is not verified
            email_verified=email is not None and (verified is True or verified == "true"),
            name=name[:256] if isinstance(name, str) and name.strip() else None,
        )


def _looks_like_email(value: str) -> bool:
    return len(value) <= 320 and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value) is not None


# -- the configured upstreams --------------------------------------------------------------

def build_upstreams(settings) -> dict[str, Upstream]:
    """The connectors, checked at start-up: each needs a client secret for its token endpoint."""
    upstreams = {}
    for name, config in settings.upstreams.items():
        upstream = Upstream(name, config)
        if not upstream.client_secret:
            raise ConfigError(f"settings: field 'upstreams.{name}.client_secret': required "
                              f"({config.token_endpoint_auth_method}); or set {secret_variable(name)}")
        upstreams[name] = upstream
    return upstreams


def upstreams(app=None) -> dict[str, Upstream]:
    """This app's connectors (their discovery and key caches live as long as the app)."""
    app = app or current_app
    found = app.extensions.get("op.upstreams")
    if found is None:
        found = app.extensions["op.upstreams"] = build_upstreams(app.extensions["op"].settings)
    return found


def federation_factor():
    """The `fed` factor, or None. Configured upstreams enable it unless a `factors:` list is
    given that leaves it out (the default list does not name it: it needs upstreams)."""
    op = current_app.extensions["op"]
    factor = op.factors.get("fed")
    if factor is None and op.settings.upstreams and "factors" not in op.settings.model_fields_set:
        factor = current_app.extensions.get("op.fed_factor")
        if factor is None:
            factor = current_app.extensions["op.fed_factor"] = UpstreamFactor(op)
    return factor


def enabled(name: str | None) -> Upstream | None:
    """The connector for `name` when it is configured and the `fed` factor is enabled."""
    if not name or federation_factor() is None:
        return None
    return upstreams().get(name)


def goes_direct(upstream: str | None, need: str) -> bool:
    """`urn:<ns>:<idp>_direct` (SPEC 2): a login that has to start goes straight to that
    upstream instead of the login page; an unknown upstream is ignored like any unknown acr value."""
    return need in DIRECT_NEEDS and enabled(upstream) is not None


def direct_start(response, upstream: str | None, need: str):
    """interaction.start()'s redirect to the new interaction, sent to the upstream instead when
    the login goes_direct."""
    if not goes_direct(upstream, need):
        return response
    from . import interaction as interactions

    path = urlsplit(response.headers["Location"]).path.removeprefix(request.script_root)
    endpoint, args = current_app.url_map.bind("").match(path)
    if endpoint != "interaction.show":
        return response
    op = current_app.extensions["op"]
    record = op.store.get(f"interaction:{args['uid']}")
    if record is None:
        return response
    record["upstream"] = upstream
    interactions.save(record)
    response.headers["Location"] = url_for("federation.start", uid=args["uid"], name=upstream)
    return response


# -- account linking ------------------------------------------------------------------------

def _free_username(identity: Identity) -> str:
    base = identity.email.split("@", 1)[0] if identity.email else f"{identity.provider}-{identity.subject}"
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.")[:100] or identity.provider
    name = base
    while db.session.execute(db.select(User.id).filter_by(username=name)).first() is not None:
        name = f"{base}-{secrets.token_hex(3)}"
    return name


def _find_linked(identity: Identity) -> User | None:
    link = db.session.execute(
        db.select(FederatedIdentity).filter_by(provider=identity.provider, subject=identity.subject)
    ).scalar_one_or_none()
    return db.session.get(User, link.user_id) if link else None


def user_for(identity: Identity) -> tuple[User, str]:
    """Our user for this upstream identity and how it was found: "linked" (a link made
    before), "email" (linked now: the same email address verified on both sides) or
    "created". The caller decides whether the user may sign in."""
    user = _find_linked(identity)
    if user is not None:
        return user, "linked"
    existing = None
    if identity.email:
        existing = db.session.execute(db.select(User).filter_by(email=identity.email)).scalar_one_or_none()
    try:
        if existing is not None and identity.email_verified and existing.email_verified:
            user, how = existing, "email"
        else:
            # A new account. The address is copied only when no account has it; it counts as
            # verified only when the upstream says so (the email factors need it verified).
            user, how = User(username=_free_username(identity), name=identity.name, password_hash=None,
                             email=None if existing is not None else identity.email,
                             email_verified=existing is None and identity.email_verified), "created"
            db.session.add(user)
            db.session.flush()
        db.session.add(FederatedIdentity(provider=identity.provider, subject=identity.subject, user_id=user.id))
        db.session.commit()
    except IntegrityError:  # the same upstream account signing in twice at once: one link wins
        db.session.rollback()
        user = _find_linked(identity)
        if user is None:
            raise UpstreamError(f"{identity.provider}: could not link {identity.subject!r}") from None
        return user, "linked"
    record_audit("user.created" if how == "created" else "federation.linked", user_id=user.id,
                 actor=f"upstream:{identity.provider}", provider=identity.provider, subject=identity.subject,
                 by=how)
    return user, how
