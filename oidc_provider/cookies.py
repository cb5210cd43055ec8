"""The provider's cookies: every one named, flagged, read and deleted here.

Under an https issuer every name carries the `__Host-` prefix (OWASP ASVS 4.0.3 3.4.4;
RFC 6265bis 4.1.3.2): a browser accepts such a cookie only if it is Secure, has Path=/ and
no Domain, so neither a sibling subdomain nor a plain-http page can plant or overwrite it.
Under an http issuer (the local demo) a Secure cookie would be lost: names stay plain.
"""

from __future__ import annotations

from flask import current_app, request

SESSION = "op_session"  # the IdP session id (authn/session.py)
INTERACTION = "op_interaction"  # binds an interaction to the browser that started it
DEVICE = "op_device"  # tells a known browser from a new one (authn/devices.py)
TRUST = "op_trust"  # a device the user chose to trust
CSRF = "op_csrf"  # Flask's own session, which holds only the CSRF secret

HOST_PREFIX = "__Host-"


def secure_name(base: str, secure: bool) -> str:
    """The name a cookie goes by: `__Host-` prefixed when it is Secure (https issuer)."""
    return HOST_PREFIX + base if secure else base


def _secure() -> bool:
    return current_app.config["SESSION_COOKIE_SECURE"]  # set once from the issuer in create_app


def name(base: str) -> str:
    return secure_name(base, _secure())


def get(base: str, default: str | None = None) -> str | None:
    return request.cookies.get(name(base), default)


def put(response, base: str, value: str, max_age: float) -> None:
    response.set_cookie(name(base), value, max_age=int(max_age), path="/", secure=_secure(), httponly=True,
                        samesite="Lax")


def delete(response, base: str) -> None:
    """A browser ignores a `__Host-` deletion that is not Secure with Path=/ too."""
    response.delete_cookie(name(base), path="/", secure=_secure(), httponly=True, samesite="Lax")
