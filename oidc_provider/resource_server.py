"""A small helper for Flask resource servers that accept this provider's access tokens.

    rs = ResourceServer("https://id.example.com", audience="https://api.example.com")

    @app.post("/payments")
    @rs.require("payments:write", acr_values=["mfa"], max_age=300)
    def pay():
        g.access_token["sub"] ...

It verifies the Bearer JWT access token locally (RFC 9068: typ at+jwt, iss, aud, exp, the
signature with the issuer's published JWKS) and answers as the specs say:
401 invalid_token (RFC 6750 3.1), 403 insufficient_scope, and RFC 9470's step-up
challenge, 401 insufficient_user_authentication with the acr_values and max_age the
route needs, so the client can send the user back to the provider for just that.
A locally verified token can still have been revoked; routes that must know use
introspection (/oidc/introspect) instead.

DPoP-bound tokens (RFC 9449, `cnf.jkt`) are accepted with `Authorization: DPoP <token>` and a
`DPoP` proof by the token's key (with `ath`), never as Bearer. Proofs are single use: the
default replay cache lives in the process; with several workers pass a shared one, e.g.
`ResourceServer(..., dpop=ProofChecker(replay=store))` where `store.add(key, value, ttl)`
sets a key only if absent (Redis SET NX). `ProofChecker(nonces=NonceSource(secret))` also
demands server nonces (401 use_dpop_nonce with a DPoP-Nonce header).
"""

from __future__ import annotations

import functools
import logging
import threading
import time

import requests
from flask import Response, g, jsonify, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from .oauth.dpop import DPoPError, ProofChecker, challenge, check_resource_request, proof_headers

ALGORITHMS = ("RS256", "ES256")  # what the provider signs with (RS256 for access tokens)
AT_JWT_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 2.1
MAX_TOKEN_LENGTH = 8192

log = logging.getLogger(__name__)


class JwksUnavailable(Exception):
    """The issuer's JWKS could not be fetched: the token can be neither accepted nor refused."""


class TokenRejected(Exception):
    """The token is not acceptable; `description` is safe to send back (error_description)."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


def _challenge(status: int, error: str | None, description: str | None, scheme: str = "Bearer",
               extra: dict | None = None, nonce: str | None = None, **params) -> Response:
    """An error answer: WWW-Authenticate (RFC 6750 3, RFC 9449 7.1) and the same as JSON.
    `extra`: challenge-only params (a DPoP challenge's algs); `nonce`: a DPoP-Nonce to use."""
    parts = {}
    if error:  # RFC 6750 3.1: a request without a token gets a bare challenge
        parts["error"] = error
        if description:
            parts["error_description"] = description
    parts.update({name: value for name, value in params.items() if value is not None})
    body = {"error": error or "unauthorized", **({"error_description": description} if description else {}),
            **{name: value for name, value in params.items() if value is not None}}
    response = jsonify(body)
    response.status_code = status
    response.headers["WWW-Authenticate"] = challenge(scheme, **parts, **(extra or {}))
    response.headers["Cache-Control"] = "no-store"
    if nonce:
        response.headers["DPoP-Nonce"] = nonce
    return response


class ResourceServer:
    """Verifies access tokens issued by `issuer` for `audience` (the RFC 8707 resource)."""

    refetch_interval = 10  # seconds between JWKS fetches triggered by an unknown kid
    timeout = 10  # seconds for fetching the JWKS

    def __init__(self, issuer: str, audience: str, jwks_uri: str | None = None, leeway: int = 30,
                 dpop: ProofChecker | bool = True, public_url: str | None = None):
        """`dpop`: True accepts DPoP-bound tokens with default proof checks, a ProofChecker tunes
        them, False takes Bearer tokens only. `public_url`: scheme://host[:port] clients use to
        reach this server (for the proofs' htu) when a proxy hides it; None: the request's own."""
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.jwks_uri = jwks_uri or f"{self.issuer}/oidc/jwks"
        self.leeway = leeway
        self.dpop = ProofChecker() if dpop is True else (dpop or None)
        self.public_url = public_url.rstrip("/") if public_url else None
        self.http = requests.Session()
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    # -- keys ---------------------------------------------------------------------------------
    def _fetch_keys(self) -> KeySet:
        try:
            answer = self.http.get(self.jwks_uri, timeout=self.timeout)
            answer.raise_for_status()
            keys = KeySet.import_key_set(answer.json())
        except (requests.RequestException, ValueError, JoseError) as exc:
            raise JwksUnavailable(f"{self.jwks_uri}: {exc}") from exc
        self._keys, self._fetched_at = keys, time.monotonic()
        return keys

    def _key_for(self, kid: str | None):
        """The issuer's key with this kid. An unknown kid fetches the JWKS once more (the
        provider rotated its keys), but not more often than refetch_interval: random kids
        must not turn the resource server into a flood of requests to the provider."""
        with self._lock:
            keys = self._keys or self._fetch_keys()
            try:
                return keys.get_by_kid(kid)
            except (JoseError, ValueError):
                pass
            if time.monotonic() - self._fetched_at < self.refetch_interval:
                raise TokenRejected("The token was signed with an unknown key.")
            try:
                return self._fetch_keys().get_by_kid(kid)
            except (JoseError, ValueError):
                raise TokenRejected("The token was signed with an unknown key.") from None

    # -- tokens -------------------------------------------------------------------------------
    def verify(self, token: str) -> dict:
        """The claims of a valid Bearer access token for this audience; raises TokenRejected."""
        claims = self._verify_jwt(token)
        if "cnf" in claims:  # RFC 9449 7.1: a DPoP-bound token is never accepted as Bearer
            raise TokenRejected("The token is bound to a key and cannot be used as a Bearer token.")
        return claims

    def _verify_jwt(self, token: str) -> dict:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenRejected("The access token is malformed.")
        try:
            header = extract_compact(token.encode()).protected
        except (JoseError, ValueError, TypeError):
            raise TokenRejected("The access token is malformed.") from None
        if str(header.get("typ", "")).lower() not in AT_JWT_TYPES:
            raise TokenRejected("The token is not a JWT access token (RFC 9068).")
        if header.get("alg") not in ALGORITHMS:
            raise TokenRejected("The token's signing algorithm is not accepted.")
        key = self._key_for(header.get("kid"))
        try:
            claims = jwt.decode(token, key, algorithms=list(ALGORITHMS)).claims
        except (JoseError, ValueError, TypeError):
            raise TokenRejected("The token's signature is not valid.") from None
        now = time.time()
        if claims.get("iss") != self.issuer:
            raise TokenRejected("The token was issued by another issuer.")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise TokenRejected("The token is not meant for this resource.")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool) or exp + self.leeway <= now:
            raise TokenRejected("The token has expired.")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf - self.leeway > now:
            raise TokenRejected("The token is not valid yet.")
        return claims

    def _verify_dpop(self, token: str) -> dict:
        """A DPoP-bound token with a proof of this request by its key; raises DPoPError."""
        claims = self._verify_jwt(token)
        url = f"{self.public_url}{request.path}" if self.public_url else request.base_url
        check_resource_request(self.dpop, claims, "DPoP", token, proof_headers(request.headers), request.method, url)
        return claims

    # -- the decorator ------------------------------------------------------------------------
    def require(self, scope: str | None = None, acr_values: list[str] | None = None, max_age: int | None = None):
        """A view decorator: a valid token, with `scope` (space-separated: all of them), an acr
        among `acr_values` and an auth_time at most `max_age` seconds old. The claims are in
        flask.g.access_token."""
        needed_scopes = set((scope or "").split())
        acr_values = list(acr_values or [])

        def decorator(view):
            @functools.wraps(view)
            def wrapper(*args, **kwargs):
                refused = self._check(needed_scopes, scope, acr_values, max_age)
                if refused is not None:
                    return refused
                return view(*args, **kwargs)

            return wrapper

        return decorator

    def _check(self, needed_scopes: set[str], scope: str | None, acr_values: list[str], max_age: int | None):
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        scheme = {"bearer": "Bearer", "dpop": "DPoP"}.get(scheme.lower())
        algs = {"algs": " ".join(self.dpop.algorithms)} if self.dpop else {}
        if scheme is None or (scheme == "DPoP" and not self.dpop):  # RFC 6750 3.1: no error code
            response = _challenge(401, None, "A Bearer access token is required.")
            if self.dpop:  # RFC 9449 7.2: both schemes are offered
                response.headers["WWW-Authenticate"] = f"Bearer, {challenge('DPoP', **algs)}"
            return response
        respond = functools.partial(_challenge, scheme=scheme, extra=algs if scheme == "DPoP" else None)
        token = token.strip()
        if not token or " " in token:
            return respond(400, "invalid_request", "The Authorization header is malformed.")
        try:
            claims = self.verify(token) if scheme == "Bearer" else self._verify_dpop(token)
        except TokenRejected as rejected:
            return respond(401, "invalid_token", rejected.description)
        except DPoPError as refused:
            return respond(401, refused.error, refused.description, nonce=refused.nonce)
        except JwksUnavailable as exc:  # neither valid nor invalid: say so, details to the log
            log.warning("cannot verify access tokens: %s", exc)
            response = jsonify({"error": "temporarily_unavailable",
                                "error_description": "The issuer's keys cannot be fetched."})
            response.status_code = 503
            return response
        granted = set(str(claims.get("scope") or "").split())
        if not needed_scopes <= granted:  # RFC 6750 3.1
            return respond(403, "insufficient_scope", "The token lacks the scope this request needs.", scope=scope)
        # RFC 9470 3: name what the route needs so the client can ask for just that
        step_up = {"acr_values": " ".join(acr_values) or None, "max_age": max_age}
        if acr_values and claims.get("acr") not in acr_values:
            return respond(401, "insufficient_user_authentication",
                           "A different authentication level is required.", **step_up)
        if max_age is not None:
            auth_time = claims.get("auth_time")
            if not isinstance(auth_time, (int, float)) or isinstance(auth_time, bool) \
                    or time.time() - auth_time > max_age:
                return respond(401, "insufficient_user_authentication",
                               "More recent authentication is required.", **step_up)
        g.access_token = claims
        return None
