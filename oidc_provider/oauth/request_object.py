"""Signed request objects (JAR, RFC 9101; OIDC Core 6.1): `request=<JWT>` at /oidc/auth and /oidc/par.

The object is verified against the client's registered `jwks`. When one is present, only
its parameters count, plus the client_id of the query (RFC 9101 6.3, followed strictly:
query parameters beside it are ignored, even the ones OIDC Core 6.1 repeats there).
Objects fetched from a URL (`request_uri` pointing elsewhere) are not supported.
"""

from __future__ import annotations

import json
import time

from authlib.oauth2.rfc6749 import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwk import KeySet

ALGORITHMS = ["RS256", "ES256"]  # asymmetric only: client secrets are stored hashed, so no HS256
LEEWAY = 30  # seconds of clock skew allowed on exp, nbf and iat
TYPES = (None, "JWT", "oauth-authz-req+jwt")  # RFC 9101 4; other types are other JWTs (at+jwt, dpop+jwt)
JWT_CLAIMS = ("iss", "aud", "exp", "nbf", "iat", "jti")  # about the object, not authorization parameters


class InvalidRequestObjectError(OAuth2Error):
    """RFC 9101 7: the request object is invalid (signature, claims, content)."""

    error = "invalid_request_object"


class RequestNotSupportedError(OAuth2Error):
    """OIDC Core 3.1.2.6: this provider does not accept the `request` parameter (jar disabled)."""

    error = "request_not_supported"


def algorithms_for(client) -> list[str]:
    alg = client.config.request_object_signing_alg
    return [alg] if alg else ALGORITHMS


def metadata(settings) -> dict:
    """Discovery (OIDC Discovery 3, RFC 9101 10.5): request objects by value only."""
    if not settings.jar.enabled:
        return {"request_parameter_supported": False}
    return {"request_parameter_supported": True, "request_object_signing_alg_values_supported": ALGORITHMS}


def parameters(op, client, value: str) -> dict[str, list[str]]:
    """The authorization request a request object carries, as query-style lists of values."""
    if not op.settings.jar.enabled:
        raise RequestNotSupportedError("Request objects are not supported by this provider.")
    if value.count(".") == 4:
        raise InvalidRequestObjectError("Encrypted request objects are not supported; sign it only.")
    if not (client.config.jwks or {}).get("keys"):
        raise InvalidRequestObjectError("The client has no registered keys (jwks) to verify a request object with.")
    try:
        token = jwt.decode(value, KeySet.import_key_set(client.config.jwks), algorithms=algorithms_for(client))
    except UnsupportedAlgorithmError:
        raise InvalidRequestObjectError(
            f"The request object must be signed with {' or '.join(algorithms_for(client))}.") from None
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidRequestObjectError("The request object's signature does not verify "
                                        "with the client's registered keys.") from None
    if token.header.get("typ") not in TYPES:
        raise InvalidRequestObjectError("The JWT is not a request object (typ).")
    _check_claims(token.claims, client.client_id, op.settings.issuer_url, op.settings.jar.max_lifetime)
    params = {name: _values(name, claim) for name, claim in token.claims.items() if name not in JWT_CLAIMS}
    params["client_id"] = [client.client_id]
    return params


def _check_claims(claims: dict, client_id: str, issuer: str, max_lifetime: int) -> None:
    now = time.time()
    if claims.get("iss") != client_id:  # RFC 9101 4: signed by the client
        raise InvalidRequestObjectError("The request object's iss must be the client_id.")
    audiences = claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")]
    if issuer not in audiences:  # RFC 9101 4: for this provider
        raise InvalidRequestObjectError("The request object's aud must be this provider's issuer.")
    if claims.get("client_id", client_id) != client_id:  # RFC 9101 5
        raise InvalidRequestObjectError("The client_id in the request object does not match the request's.")
    for name in ("exp", "nbf", "iat"):
        if name in claims and (isinstance(claims[name], bool) or not isinstance(claims[name], (int, float))):
            raise InvalidRequestObjectError(f"The request object's {name} must be a number.")
    if "exp" not in claims:  # without exp a captured object could be replayed forever
        raise InvalidRequestObjectError("The request object has no exp.")
    if claims["exp"] <= now - LEEWAY:
        raise InvalidRequestObjectError("The request object has expired.")
    if claims["exp"] > now + max_lifetime + LEEWAY:
        raise InvalidRequestObjectError(f"The request object's exp is more than {max_lifetime} s ahead.")
    if claims.get("nbf", 0) > now + LEEWAY or claims.get("iat", 0) > now + LEEWAY:
        raise InvalidRequestObjectError("The request object is not valid yet (nbf or iat).")
    if "request" in claims or "request_uri" in claims:  # RFC 9101 4: no nesting
        raise InvalidRequestObjectError("A request object must not contain request or request_uri.")


def _values(name: str, value) -> list[str]:
    """JSON claim values as the query would carry them (OIDC Core 6.1: claims is an object)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, dict):
        return [json.dumps(value, separators=(",", ":"))]
    if name == "resource" and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value  # RFC 8707 2: several resources
    raise InvalidRequestObjectError(f"The request object's {name!r} has a value of an unsupported type.")
