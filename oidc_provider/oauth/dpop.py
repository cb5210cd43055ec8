"""DPoP (RFC 9449): access tokens bound to a key the client proves it holds, request by request.

A client signs a short proof JWT (method, URL, time, a unique jti) with its own key and sends it
in the `DPoP` header. At the token endpoint the access token then gets `cnf.jkt`, the key's
RFC 7638 thumbprint, and `token_type: DPoP`; a public client's refresh token is bound to the
key too (RFC 9449 5). Wherever the token is used, a fresh proof by that key must come with it,
carrying `ath`, the token's hash: a stolen token alone is worth nothing.

`ProofChecker` is plain Python (no Flask, no Authlib) so the resource-server helper
(oidc_provider.resource_server) shares it. `DPoP` is the provider's side (settings, nonces,
the jti replay cache in the ephemeral store); `DPoPExtension` plugs it into Authlib's token
grants through their hooks, the way the OpenID Connect extensions ride on the code grant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import string
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, OAuth2Error
from joserfc import jwk, jws
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jws import JWSRegistry

DEFAULT_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")  # asymmetric only (4.3 step 5)
MAX_PROOF_LENGTH = 8192
MIN_RSA_BITS = 2048
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})  # RFC 7518 6; oct's k
JKT = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest, no padding


class DPoPError(Exception):
    """A proof or a DPoP-bound token is refused; `error` is the RFC 9449 code (invalid_dpop_proof,
    use_dpop_nonce, invalid_token), `description` is safe to send, `nonce` the one to use next."""

    def __init__(self, error: str, description: str, nonce: str | None = None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.nonce = nonce


def _invalid(description: str) -> DPoPError:
    return DPoPError("invalid_dpop_proof", description)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token_hash(token: str) -> str:
    """`ath` (RFC 9449 4.2): base64url of the SHA-256 of the token's ASCII bytes."""
    return _b64(hashlib.sha256(token.encode("ascii", "replace")).digest())


# -- htu (RFC 9449 4.3 step 9: RFC 3986 6.2.2 and 6.2.3 normalization) ---------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, for an absolute path."""
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if len(kept) > 1:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")
    return "/".join(kept)


def normalize_url(url: str) -> str | None:
    """scheme://host[:port]/path with case, default port, percent-encoding and dot segments
    normalized, query and fragment dropped; None for what is not an http(s) URL."""
    if not isinstance(url, str) or len(url) > 2048:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"

    def percent(match: re.Match) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    path = _remove_dot_segments(re.sub(r"%([0-9A-Fa-f]{2})", percent, parts.path)) or "/"
    return f"{scheme}://{netloc}{path}"


# -- nonces and the replay cache --------------------------------------------------------------------

class NonceSource:
    """Server nonces (RFC 9449 8 and 9) without state: an HMAC of a time bucket. A nonce is good in
    its bucket and the next, i.e. for `lifetime` to twice that; instances sharing the key agree."""

    def __init__(self, key: bytes, lifetime: int = 300):
        self._key = key
        self.lifetime = lifetime

    def _value(self, bucket: int) -> str:
        return _b64(hmac.new(self._key, b"dpop-nonce:%d" % bucket, hashlib.sha256).digest())

    def issue(self, now: float | None = None) -> str:
        return self._value(int((time.time() if now is None else now) // self.lifetime))

    def check(self, nonce, now: float | None = None) -> bool:
        if not isinstance(nonce, str) or len(nonce) > 128:
            return False
        bucket = int((time.time() if now is None else now) // self.lifetime)
        return any(hmac.compare_digest(nonce.encode(), self._value(b).encode()) for b in (bucket, bucket - 1))


class MemoryReplayCache:
    """Proof jtis seen by this process, for a resource server with one worker. Several workers or
    hosts need a shared store with the same `add(key, value, ttl) -> bool` (e.g. Redis SET NX)."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, key: str, value, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            expires = self._seen.get(key)
            if expires is not None and expires > now:
                return False
            if len(self._seen) >= self.max_entries:
                self._seen = {k: at for k, at in self._seen.items() if at > now}
            self._seen[key] = now + ttl
            return True


# -- the proof checker ---------------------------------------------------------------------------------

class _ProofRegistry(JWSRegistry):
    max_header_length = 4096  # the header carries the public key: an RSA jwk alone is ~400 bytes
    max_payload_length = 4096

    def get_alg(self, name: str):
        """Only the allowed algorithms, and without joserfc's warning on each EdDSA use (RFC 9864
        prefers Ed25519, but RFC 9449 and its clients name EdDSA)."""
        if name not in self.allowed:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


@dataclass(frozen=True)
class Proof:
    jkt: str  # RFC 7638 SHA-256 thumbprint of the proof's key
    claims: dict


class ProofChecker:
    """RFC 9449 4.3: checks one DPoP proof for a request and remembers its jti."""

    def __init__(self, algorithms=DEFAULT_ALGORITHMS, max_age: int = 60, clock_skew: int = 5,
                 replay=None, nonces: NonceSource | None = None):
        unknown = set(algorithms) - set(DEFAULT_ALGORITHMS)
        if unknown or not algorithms:
            raise ValueError(f"DPoP algorithms are among {', '.join(DEFAULT_ALGORITHMS)}")
        self.algorithms = tuple(algorithms)
        self.max_age = max_age
        self.clock_skew = clock_skew
        self.replay = replay if replay is not None else MemoryReplayCache()
        self.nonces = nonces
        self._registry = _ProofRegistry(algorithms=self.algorithms, strict_check_header=False)

    def check(self, values: list[str], method: str, url: str, access_token: str | None = None,
              require_nonce: bool | None = None, now: float | None = None) -> Proof:
        """`values`: every DPoP header of the request; `url`: ours for this endpoint; `access_token`:
        the token presented with it (then `ath` is required). Raises DPoPError."""
        now = time.time() if now is None else now
        if not values:
            raise _invalid("A DPoP proof (the DPoP header) is required.")
        # step 1: one header, one JWT (a server joins repeated headers with commas)
        if len(values) != 1 or not isinstance(values[0], str) or "," in values[0]:
            raise _invalid("Send exactly one DPoP header with one proof.")
        value = values[0].strip()
        if not value or len(value) > MAX_PROOF_LENGTH:
            raise _invalid("The DPoP proof is malformed.")
        key, claims = self._verified(value)
        if claims.get("htm") != method:  # step 8
            raise _invalid(f"The DPoP proof is not for this method (htm must be {method}).")
        htu = claims.get("htu")  # step 9
        if normalize_url(htu) is None or normalize_url(htu) != normalize_url(url):
            raise _invalid("The DPoP proof is not for this URL (htu).")
        needs_nonce = self.nonces is not None if require_nonce is None else require_nonce
        if needs_nonce:  # step 10
            if self.nonces is None or not self.nonces.check(claims.get("nonce"), now):
                fresh = self.nonces.issue(now) if self.nonces else None
                raise DPoPError("use_dpop_nonce", "A DPoP nonce is required: use the one in the DPoP-Nonce header.",
                                fresh)
        iat = claims.get("iat")  # step 11
        if not isinstance(iat, (int, float)) or isinstance(iat, bool):
            raise _invalid("The DPoP proof has no iat.")
        if iat < now - self.max_age:
            raise _invalid("The DPoP proof is too old (iat).")
        if iat > now + self.clock_skew:
            raise _invalid("The DPoP proof is from the future (iat).")
        if access_token is not None:  # step 12
            ath = claims.get("ath")
            if not isinstance(ath, str):
                raise _invalid("The DPoP proof has no ath (the access token's hash).")
            if not hmac.compare_digest(ath.encode(), access_token_hash(access_token).encode()):
                raise _invalid("The DPoP proof's ath does not match the access token.")
        jkt = key.thumbprint()
        # 11.1: a proof is single use; remembered for as long as its iat would be accepted
        digest = hashlib.sha256(f"{jkt}:{claims['jti']}".encode()).hexdigest()
        if not self.replay.add(f"dpop-jti:{digest}", 1, self.max_age + self.clock_skew + 1):
            raise _invalid("The DPoP proof was already used (jti).")
        return Proof(jkt=jkt, claims=claims)

    def _verified(self, value: str):
        """Steps 2 to 7: a JWT with typ dpop+jwt, an allowed asymmetric alg, a public jwk that
        verifies the signature, and the claims every proof has."""
        try:
            header = jws.extract_compact(value.encode(), registry=self._registry).protected
        except (JoseError, ValueError, TypeError):
            raise _invalid("The DPoP proof is not a well-formed JWT.") from None
        if header.get("typ") != "dpop+jwt":
            raise _invalid("The DPoP proof's typ must be dpop+jwt.")
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise _invalid(f"The DPoP proof's alg must be one of {' '.join(self.algorithms)}.")
        data = header.get("jwk")
        if not isinstance(data, dict) or data.get("kty") not in ("EC", "RSA", "OKP"):
            raise _invalid("The DPoP proof's header needs the public key (jwk) that signed it.")
        if PRIVATE_MEMBERS & data.keys():
            raise _invalid("The DPoP proof's jwk must be a public key, never a private one.")
        try:
            key = jwk.import_key(data)
            if key.is_private:
                raise _invalid("The DPoP proof's jwk must be a public key, never a private one.")
            if data["kty"] == "RSA" and key.get_op_key("verify").key_size < MIN_RSA_BITS:
                raise _invalid(f"The DPoP proof's RSA key must have at least {MIN_RSA_BITS} bits.")
        except (JoseError, ValueError, TypeError, KeyError):
            raise _invalid("The DPoP proof's jwk is not a valid public key.") from None
        try:
            payload = jws.deserialize_compact(value, key, algorithms=[alg], registry=self._registry).payload
            claims = json.loads(payload)
        except (JoseError, ValueError, TypeError):
            raise _invalid("The DPoP proof's signature is not valid.") from None
        if not isinstance(claims, dict):
            raise _invalid("The DPoP proof's payload is not a JSON object.")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise _invalid("The DPoP proof needs a jti of at most 256 characters.")
        for name in ("htm", "htu"):
            if not isinstance(claims.get(name), str):
                raise _invalid(f"The DPoP proof has no {name}.")
        return key, claims


def check_resource_request(checker: ProofChecker, claims: dict, scheme: str, token: str, proofs: list[str],
                           method: str, url: str, require_nonce: bool | None = None) -> Proof | None:
    """RFC 9449 7: a DPoP-bound token only with the DPoP scheme and a proof by its key (with ath);
    under the DPoP scheme only a bound token. Raises DPoPError (invalid_token or the proof's error)."""
    cnf = claims.get("cnf")
    if scheme.lower() != "dpop":
        if cnf is not None:
            raise DPoPError("invalid_token", "The token is bound to a key and cannot be used as a Bearer token.")
        return None
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str):
        raise DPoPError("invalid_token", "The token is not DPoP-bound: send it as a Bearer token.")
    proof = checker.check(proofs, method, url, access_token=token, require_nonce=require_nonce)
    if not hmac.compare_digest(proof.jkt.encode(), jkt.encode()):  # step 12
        raise DPoPError("invalid_token", "Invalid DPoP key binding: the proof was not made with the token's key.")
    return proof


def proof_headers(headers) -> list[str]:
    """Every DPoP header of a request (werkzeug headers or a plain mapping)."""
    if hasattr(headers, "getlist"):
        return headers.getlist("DPoP")
    value = headers.get("DPoP")
    return [value] if value is not None else []


def _quote(value) -> str:
    """An RFC 9110 quoted-string (auth-param value)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(scheme: str, **params) -> str:
    """A WWW-Authenticate challenge (RFC 9110 11.6.1): `DPoP error="...", algs="..."`."""
    parts = [f"{name}={_quote(value)}" for name, value in params.items() if value is not None]
    return scheme + (" " + ", ".join(parts) if parts else "")


# -- the provider's side ---------------------------------------------------------------------------------

class InvalidDPoPProofError(OAuth2Error):
    """RFC 9449 5: the token request's proof is missing or not acceptable."""

    error = "invalid_dpop_proof"


class UseDPoPNonceError(OAuth2Error):
    """RFC 9449 8: try again with the nonce in the DPoP-Nonce header."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, nonce: str):
        super().__init__(description)
        self.nonce = nonce

    def get_headers(self):
        return [*super().get_headers(), ("DPoP-Nonce", self.nonce)]


def metadata(settings) -> dict:
    """Discovery (RFC 9449 5.1): advertised exactly when DPoP is enabled."""
    return {"dpop_signing_alg_values_supported": list(settings.dpop.algorithms)} if settings.dpop.enabled else {}


class DPoP:
    """The provider's DPoP: its settings, nonces, and the jti cache in the ephemeral store."""

    def __init__(self, op):
        self.settings = op.settings.dpop
        self.enabled = self.settings.enabled
        self.issuer = op.settings.issuer_url
        self.token_url = f"{self.issuer}/oidc/token"
        self.nonces = NonceSource(op.secret.derive("dpop-nonce"), self.settings.nonce_lifetime)
        self.checker = ProofChecker(self.settings.algorithms, self.settings.proof_max_age, self.settings.clock_skew,
                                    replay=op.store, nonces=self.nonces)

    def nonce_required(self, client) -> bool:
        return self.settings.require_nonce or bool(client is not None and client.config.dpop_require_nonce)

    def token_proof(self, request, client) -> str | None:
        """The key thumbprint a token request proved, or None without DPoP; raises OAuth2Error."""
        required = client.config.dpop_bound_access_tokens  # RFC 9449 5.2
        values = proof_headers(request.headers)
        if not self.enabled:
            if required:
                raise InvalidDPoPProofError("This client needs DPoP, which is not enabled on this provider.")
            return None
        if not values and not required:
            return None
        try:
            return self.checker.check(values, "POST", self.token_url,
                                      require_nonce=self.nonce_required(client)).jkt
        except DPoPError as refused:
            if refused.error == "use_dpop_nonce":
                raise UseDPoPNonceError(refused.description, refused.nonce) from None
            raise InvalidDPoPProofError(refused.description) from None

    def check_resource(self, claims: dict, scheme: str, token: str, request, path: str, client) -> Proof | None:
        """A request to one of our resources (userinfo); raises DPoPError."""
        if scheme.lower() == "dpop" and not self.enabled:
            raise DPoPError("invalid_token", "DPoP is not enabled on this provider.")
        return check_resource_request(self.checker, claims, scheme, token, proof_headers(request.headers),
                                      request.method, self.issuer + path, require_nonce=self.nonce_required(client))

    def challenge(self, scheme: str, **params) -> str:
        """A DPoP challenge names the algorithms we accept (RFC 9449 7.1)."""
        if scheme == "DPoP":
            params["algs"] = " ".join(self.settings.algorithms)
        return challenge(scheme, **params)

    def bare_challenge(self, bearer: str) -> str:
        """No credentials: offer both schemes (RFC 9449 7.2)."""
        return f"{bearer}, {self.challenge('DPoP')}" if self.enabled else bearer


class DPoPExtension:
    """RFC 9449 5 and 10 on a token grant, registered like Authlib's OpenID extensions: the proof
    is checked right after client authentication (before a code or refresh token is spent, so a
    use_dpop_nonce retry can still succeed), the code's and refresh token's bindings before any
    token is issued. `dpop_jkt` on the authorization request binds the code (section 10)."""

    def __init__(self, dpop: DPoP):
        self.dpop = dpop

    def __call__(self, grant):
        grant.register_hook("after_validate_consent_request", self.read_dpop_jkt)
        grant.register_hook("after_authenticate_token_endpoint_client", self.check_proof)
        grant.register_hook("before_create_token_response", self.check_binding)

    def read_dpop_jkt(self, grant, redirect_uri):
        value = grant.request.payload.data.get("dpop_jkt")
        if value is None or not self.dpop.enabled:
            return
        if not JKT.fullmatch(value):
            raise InvalidRequestError("dpop_jkt must be a JWK SHA-256 thumbprint (RFC 7638).",
                                      redirect_uri=redirect_uri)
        grant.request.dpop_jkt = value

    def check_proof(self, grant, client):
        dpop = self.dpop
        jkt = dpop.token_proof(grant.request, client)
        grant.request.dpop_jkt = jkt
        if jkt and dpop.nonce_required(client):  # 8.2: the next nonce comes with the answer
            grant.TOKEN_RESPONSE_HEADER = [*grant.TOKEN_RESPONSE_HEADER, ("DPoP-Nonce", dpop.nonces.issue())]

    def check_binding(self, grant):
        jkt = getattr(grant.request, "dpop_jkt", None)
        for what, record in (("authorization code", grant.request.authorization_code),
                             ("refresh token", grant.request.refresh_token)):
            bound = getattr(record, "dpop_jkt", None)
            if bound is None:
                continue
            if jkt is None:
                raise InvalidDPoPProofError(f"The {what} is bound to a DPoP key: send a proof made with it.")
            if not hmac.compare_digest(bound.encode(), jkt.encode()):
                raise InvalidGrantError(f"The {what} is bound to another DPoP key.")
