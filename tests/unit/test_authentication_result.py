"""acr and amr from the factors a session completed: `mfa` only for two distinct flows."""

from __future__ import annotations

import pytest

from oidc_provider.authn.session import FactorUse, authentication_result


def use(factor: str, amr: str, flow: str, at: int = 1_700_000_000) -> FactorUse:
    return FactorUse(factor=factor, amr=amr, flow=flow, at=at)


PASSWORD = use("password", "pwd", "knowledge")
PIN = use("pin", "pin", "knowledge")
OTP = use("totp", "otp", "possession")
SMS = use("sms", "sms", "possession")
EMAIL = use("email", "eml", "possession")
WEBAUTHN = use("webauthn", "hwk", "possession")
FACE = use("face", "face", "inherence")


@pytest.mark.parametrize("factors, single_factor_acr, expected", [
    # one factor: never mfa, the configured single-factor acr (or none)
    ([PASSWORD], None, (None, ["pwd"])),
    ([PASSWORD], "urn:example:loa:1", ("urn:example:loa:1", ["pwd"])),
    ([OTP], "1", ("1", ["otp"])),
    # two factors of one flow are still one kind of proof: not mfa
    ([PASSWORD, PIN], None, (None, ["pwd", "pin"])),
    ([PASSWORD, PIN], "1", ("1", ["pwd", "pin"])),
    ([OTP, SMS], None, (None, ["otp", "sms"])),
    ([EMAIL, SMS, OTP], "1", ("1", ["eml", "sms", "otp"])),
    # two distinct flows: mfa, each method once in the order done, then "mfa"
    ([PASSWORD, OTP], None, ("mfa", ["pwd", "otp", "mfa"])),
    ([PASSWORD, OTP], "1", ("mfa", ["pwd", "otp", "mfa"])),
    ([OTP, PASSWORD], None, ("mfa", ["otp", "pwd", "mfa"])),
    ([WEBAUTHN, EMAIL, PASSWORD], None, ("mfa", ["hwk", "eml", "pwd", "mfa"])),
    ([PASSWORD, OTP, FACE], None, ("mfa", ["pwd", "otp", "face", "mfa"])),
    # the same method twice (e.g. an OTP by SMS and by another SMS provider) is listed once
    ([use("sms-a", "sms", "possession"), use("sms-b", "sms", "possession")], None, (None, ["sms"])),
    ([use("sms-a", "sms", "possession"), PASSWORD, use("sms-b", "sms", "possession")], None,
     ("mfa", ["sms", "pwd", "mfa"])),
    # nothing done: no acr to claim beyond the configured one, no methods
    ([], None, (None, [])),
])
def test_authentication_result(factors, single_factor_acr, expected):
    assert authentication_result(factors, single_factor_acr) == expected


def test_mfa_is_never_listed_twice_and_is_last():
    acr, amr = authentication_result([PASSWORD, OTP, FACE, PIN, SMS], None)
    assert acr == "mfa"
    assert amr.count("mfa") == 1 and amr[-1] == "mfa"
    assert len(amr) == len(set(amr))


def test_the_input_is_not_changed():
    factors = [PASSWORD, OTP]
    authentication_result(factors, None)
    assert factors == [PASSWORD, OTP]
