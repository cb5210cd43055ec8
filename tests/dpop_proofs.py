"""A DPoP client for the tests, built on PyJWT and cryptography: an implementation independent
of the provider's (joserfc), so the tests check the protocol, not our code against itself."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

_JWK_OF = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "PS256": RSAAlgorithm, "EdDSA": OKPAlgorithm}
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(public_jwk: dict) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, no whitespace."""
    members = {name: public_jwk[name] for name in _THUMBPRINT_MEMBERS[public_jwk["kty"]]}
    return b64url(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())


def ath(access_token: str) -> str:
    return b64url(hashlib.sha256(access_token.encode()).digest())


class DPoPKey:
    """A client's DPoP key pair; `proof(...)` makes a proof for one request."""

    def __init__(self, alg: str = "ES256", rsa_bits: int = 2048):
        self.alg = alg
        if alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
        elif alg in ("RS256", "PS256"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(alg)
        self.jwk = _JWK_OF[alg].to_jwk(self.private.public_key(), as_dict=True)
        self.private_jwk = _JWK_OF[alg].to_jwk(self.private, as_dict=True)
        self.jkt = thumbprint(self.jwk)

    def proof(self, method: str, url: str, access_token: str | None = None, nonce: str | None = None,
              iat: float | None = None, jti: str | None = None, header: dict | None = None,
              drop: tuple[str, ...] = (), **claims) -> str:
        payload = {"jti": jti or uuid.uuid4().hex, "htm": method, "htu": url,
                   "iat": int(time.time()) if iat is None else iat}
        if access_token is not None:
            payload["ath"] = ath(access_token)
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(claims)
        for name in drop:
            payload.pop(name, None)
        headers = {"typ": "dpop+jwt", "jwk": self.jwk, **(header or {})}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=headers)


def unsigned_proof(method: str, url: str, alg: str = "none", key=None, jwk: dict | None = None) -> str:
    """Proofs an attacker would try: alg none, or HS256 with a shared secret."""
    payload = {"jti": uuid.uuid4().hex, "htm": method, "htu": url, "iat": int(time.time())}
    headers = {"typ": "dpop+jwt", "jwk": jwk or {"kty": "oct", "k": b64url(b"secret")}}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)
