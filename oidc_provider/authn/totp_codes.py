"""TOTP (RFC 6238) over pyotp, wrapped once: the rest of the provider never imports pyotp.

Codes are HMAC-SHA1 (what every authenticator app supports), `digits` long, one per
`period` seconds. `matching_step` says *which* time step a code belongs to, so the
caller can refuse a step that was already used (RFC 6238 5.2: a verifier must not
accept the second attempt of a valid OTP).
"""

from __future__ import annotations

import hmac
import re
import time

import pyotp
import segno
from markupsafe import Markup

_DIGITS = re.compile(r"[0-9]+")
SECRET_CHARACTERS = 32  # base32: 32 x 5 = 160 bits, the HMAC-SHA1 key size (RFC 4226 4 R6)


def new_secret() -> str:
    """A fresh random seed, base32 without padding (what otpauth:// URIs carry)."""
    return pyotp.random_base32(SECRET_CHARACTERS)


def normalize_code(code: str) -> str:
    """Spaces and dashes people type between the digit groups do not count."""
    return re.sub(r"[\s-]", "", code or "")


def matching_step(secret: str, code: str, *, at: float | None = None, digits: int = 6, period: int = 30,
                  drift: int = 1) -> int | None:
    """The time step (RFC 6238 counter T) within `drift` steps of `at` whose code is `code`;
    None when none is. Every candidate is compared in constant time and none returns early,
    so the timing says nothing about which step matched."""
    code = normalize_code(code)
    if len(code) != digits or not _DIGITS.fullmatch(code):  # ASCII only: "１" is a digit to isdigit()
        return None
    totp = pyotp.TOTP(secret, digits=digits, interval=period)
    now = totp.timecode(time.time() if at is None else at)
    found = None
    for step in range(now - drift, now + drift + 1):
        if step >= 0 and hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    return found


def code_at(secret: str, at: float, *, digits: int = 6, period: int = 30) -> str:
    """The code for a moment (for tooling and self-checks; tests use their own implementation)."""
    return pyotp.TOTP(secret, digits=digits, interval=period).at(at)


def provisioning_uri(secret: str, *, account: str, issuer: str, digits: int = 6, period: int = 30) -> str:
    """The otpauth:// URI apps import (Key Uri Format): otpauth://totp/Issuer:account?secret=..."""
    return pyotp.TOTP(secret, digits=digits, interval=period, name=account, issuer=issuer).provisioning_uri()


def qr_svg(uri: str) -> Markup:
    """The URI as an inline SVG QR code, made here (no external service ever sees the seed).
    Dark modules on a white square, so it scans in a dark colour scheme too."""
    svg = segno.make(uri, error="m").svg_inline(scale=4, border=4, dark="#000", light="#fff",
                                                title="QR code for your authenticator app")
    return Markup(svg)


def grouped(secret: str) -> str:
    """ABCD EFGH ...: easier to type into an app by hand."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


__all__ = ["code_at", "grouped", "matching_step", "new_secret", "normalize_code", "provisioning_uri", "qr_svg"]
