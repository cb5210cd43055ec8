"""Who may set up a factor at login, what it may be, and what a password reset must also pass:
pure rules over plain data (authn/chain.py), as tables of cases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from oidc_provider.authn.acr import levels_from_settings
from oidc_provider.authn.chain import enrollable, has_second_factor, needs_enrollment, reset_factors
from oidc_provider.authn.session import FactorUse
from oidc_provider.settings.provider import Acr

NOW = 1_700_000_000
MFA, PHR = levels_from_settings(Acr())


@dataclass(frozen=True)
class F:  # what the rules read of a factor
    id: str
    amr: str
    flow: str
    kind: str = "code"


FACTORS = {f.id: f for f in (
    F("password", "pwd", "knowledge", "password"), F("email-otp", "eml", "email"), F("email", "eml", "email", "link"),
    F("sms", "sms", "phone"), F("voice", "tel", "phone"), F("totp", "otp", "totp-app"),
    F("recovery-code", "rcv", "recovery"), F("push", "push", "push-device", "push"),
    F("webauthn-key", "webauthn", "webauthn", "webauthn"), F("webauthn-platform", "webauthn", "webauthn", "webauthn"),
    F("fed", "fed", "federation", "upstream"),
)}


@dataclass
class User:
    email: str | None = "ada@example.com"
    phone_number: str | None = None
    phone_number_verified: bool = False
    mfa_enrollment_required: bool = False


@dataclass
class FlaggedUser(User):
    mfa_enrollment_required: bool = True


def factors(*ids):
    return [FACTORS[i] for i in ids]


def done(*ids):
    return [FactorUse(factor=i, amr=FACTORS[i].amr, flow=FACTORS[i].flow, at=NOW - 5) for i in ids]


PHONE = User(phone_number="+15550100", phone_number_verified=True)


@pytest.mark.parametrize("user, available, did, expected", [
    (User(), ["password", "email", "email-otp"], ["password"], False),  # email needs a verified phone too
    (PHONE, ["password", "email", "sms"], ["password"], True),  # email + phone: MFA is possible
    (User(email=None, phone_number="+1", phone_number_verified=True), ["password", "sms"], ["password"], False),
    (User(), ["password", "totp"], ["password"], True),
    (User(), ["password", "recovery-code"], ["password"], True),
    (User(), ["password", "push"], ["password"], True),
    (User(), ["password", "fed"], ["password"], False),  # an upstream has its own buttons
    (User(), ["email", "password"], ["email"], True),  # a magic link first: the password follows
    (User(), ["webauthn-key", "totp"], ["webauthn-key"], True),
    (User(), ["password", "totp"], [], True),
])
def test_has_second_factor(user, available, did, expected):
    assert has_second_factor(user, factors(*available), done(*did)) is expected


@pytest.mark.parametrize("user, available, mfa_needed, expected", [
    (User(), ["password"], True, True),
    (User(), ["password"], False, False),  # nothing asks for MFA
    (User(), ["password", "totp"], True, False),  # the app must be used, not gone around
    (FlaggedUser(), ["password"], False, True),  # the admin asked
    (FlaggedUser(), ["password", "totp"], False, False),  # even the admin's flag never goes around a factor
    (FlaggedUser(mfa_enrollment_required=False), ["password"], False, False),
])
def test_needs_enrollment(user, available, mfa_needed, expected):
    assert needs_enrollment(user, factors(*available), done("password"), mfa_needed) is expected


@pytest.mark.parametrize("level, user, candidates, did, expected", [
    (MFA, User(), ["totp", "sms", "webauthn-key"], ["password"], ["totp", "sms", "webauthn-key"]),
    (MFA, User(email=None), ["totp", "sms"], ["password"], ["totp"]),  # SMS MFA needs a primary email
    (PHR, User(), ["totp", "sms", "webauthn-key", "webauthn-platform"], ["password"],
     ["webauthn-key", "webauthn-platform"]),
    (MFA, User(), ["webauthn-key"], ["webauthn-key"], []),  # the same flow again is not MFA
])
def test_enrollable(level, user, candidates, did, expected):
    assert [f.id for f in enrollable(level, factors(*candidates), done(*did), user, NOW)] == expected


def test_reset_factors_leave_out_email_and_password():
    everything = factors(*FACTORS)
    assert [f.id for f in reset_factors(everything)] == [
        "sms", "voice", "totp", "recovery-code", "push", "webauthn-key", "webauthn-platform"]
