"""Authentication factors: one module each, behind one small interface.

A factor names the `amr` value it contributes and the *flow* it belongs to. Two
factors of the same flow never add up to multi-factor authentication (an email link
and an email OTP are one flow), so the orchestration counts distinct flows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Verification:
    """The outcome of a factor's check; `reason` is for logs only, never shown to the user.
    A usernameless factor (a passkey) names the user it identified in `user_id`."""

    ok: bool
    reason: str = ""
    user_id: str | None = None


class Factor(Protocol):
    id: str  # stable name used in URLs, config and audit ("password", "email-otp", ...)
    amr: str  # RFC 8176 / Transmit method reference it contributes to the ID token
    flow: str  # delivery channel or kind; distinct flows make MFA
    # How the sign-in pages drive it: "password" | "code" (an answer typed in) | "link" (a link
    # followed) | "webauthn" (a browser ceremony whose result is posted) | "push" (polled).
    kind: str
    response_field: str  # the form field that carries the answer (code, webauthn)
    max_response: int  # longest answer accepted, in characters
    failure_message: str  # catalogued message id shown when the answer is refused
    usernameless: bool  # may start without a login name (passkeys)
    first_factor: bool  # offered on the sign-in page before the user is known
    label: str  # the button that chooses it, e.g. "Text me a code"

    def available_for(self, user) -> bool:
        """Whether this user can use the factor now (enrolled, verified contact point...)."""

    def begin(self, user, context: dict[str, Any]) -> dict[str, Any]:
        """Start a challenge (send a code...); returns what the page needs to show."""

    def verify(self, user, response: dict[str, Any], context: dict[str, Any]) -> Verification:
        """Check the user's answer. Implementations count the attempt before comparing."""

    # Optional, for a code the user already has (nothing is sent, so the page offers no resend):
    # def prompt(self, user) -> str: the code page's lead text.


class FactorRegistry:
    """The enabled factors by id, built once from settings."""

    def __init__(self, factors: list[Factor]):
        self._factors = {factor.id: factor for factor in factors}

    def get(self, factor_id: str) -> Factor | None:
        return self._factors.get(factor_id)

    def __iter__(self):
        return iter(self._factors.values())

    def available_for(self, user) -> list[Factor]:
        return [factor for factor in self._factors.values() if factor.available_for(user)]


# Factor id -> "module:Class" in this package; each class is built as Class(op).
FACTOR_CLASSES = {
    "password": "password:PasswordFactor",
    "email-otp": "email_otp:EmailOtpFactor",
    "sms": "sms_otp:SmsOtpFactor",
    "voice": "voice_otp:VoiceOtpFactor",
    "email": "magic_link:MagicLinkFactor",
    "totp": "totp:TotpFactor",
    "recovery-code": "recovery_codes:RecoveryCodeFactor",
    "webauthn-key": "webauthn:SecurityKeyFactor",
    "webauthn-platform": "webauthn:PlatformFactor",
    "passkey": "webauthn:PasskeyFactor",
    "push": "push:PushFactor",
    "fed": "federation:UpstreamFactor",
}


def build_registry(op) -> FactorRegistry:
    """The factors enabled in settings, in their configured order."""
    import importlib

    from ...observability import instrument_factors

    factors = []
    for factor_id in op.settings.factors:
        module, _, name = FACTOR_CLASSES[factor_id].partition(":")
        factors.append(getattr(importlib.import_module(f"{__name__}.{module}"), name)(op))
    return FactorRegistry(instrument_factors(factors, op))  # challenges counted for the metrics
