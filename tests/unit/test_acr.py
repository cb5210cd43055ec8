"""The acr parser and the level rules: tables of cases over plain data, plus properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from oidc_provider.authn.acr import (AcrRequest, AcrRequestError, Level, achieved_acr, amr_values,
                                     level_met, levels_from_settings, parse_acr_request)
from oidc_provider.authn.session import FactorUse
from oidc_provider.settings.provider import Acr, load_settings

NOW = 1_700_000_000


def use(factor: str, ago: float = 10) -> FactorUse:
    amr, flow = {
        "password": ("pwd", "knowledge"), "email-otp": ("eml", "email"), "email": ("eml", "email"),
        "sms": ("sms", "phone"), "voice": ("tel", "phone"), "totp": ("otp", "app"),
        "webauthn-key": ("webauthn", "webauthn"), "webauthn-platform": ("webauthn", "webauthn"),
        "passkey": ("webauthn", "webauthn"), "recovery-code": ("rcv", "recovery"), "push": ("push", "device"),
    }[factor]
    return FactorUse(factor=factor, amr=amr, flow=flow, at=NOW - ago)


def level(value: str, rank: int, flows: int = 1, required=(), forbidden=(), first=None, max_age=None) -> Level:
    return Level(value=value, rank=rank, flows=flows, required_factors=frozenset(required),
                 forbidden_factors=frozenset(forbidden), first_factors=None if first is None else frozenset(first),
                 max_age=max_age)


DEFAULTS = levels_from_settings(Acr())
MFA, PHR = DEFAULTS
# A richer ladder for the rules the defaults do not exercise.
LOA1 = level("loa1", 0)
MFA_FRESH = level("mfa", 1, flows=2, max_age=300)
STRONG = level("strong", 2, flows=2, forbidden=["sms", "voice"], first=["password", "passkey"])
PHR_ONLY = level("phr", 3, required=["webauthn-key", "webauthn-platform", "passkey"])
LADDER = [LOA1, MFA_FRESH, STRONG, PHR_ONLY]


def test_the_default_levels_are_mfa_then_phr():
    assert MFA == level("mfa", 0, flows=2)
    assert PHR == level("phr", 1, required=["webauthn-key", "webauthn-platform", "passkey"])


# -- parse_acr_request ------------------------------------------------------------------------

@pytest.mark.parametrize("acr_values, claims, require_mfa, expected", [
    # nothing asked
    (None, None, None, AcrRequest(None, False, None, ())),
    ("", "", False, AcrRequest(None, False, None, ())),
    ("   ", None, "false", AcrRequest(None, False, None, ())),
    # acr_values: space-separated, mfa means the mfa level
    ("mfa", None, None, AcrRequest(MFA, False, None, ("mfa",))),
    ("  mfa  ", None, None, AcrRequest(MFA, False, None, ("mfa",))),
    ("phr", None, None, AcrRequest(PHR, False, None, ("phr",))),
    # several: the highest-ranked known level, whatever the order
    ("mfa phr", None, None, AcrRequest(PHR, False, None, ("mfa", "phr"))),
    ("phr mfa", None, None, AcrRequest(PHR, False, None, ("phr", "mfa"))),
    ("mfa mfa", None, None, AcrRequest(MFA, False, None, ("mfa",))),
    # unknown non-essential values are ignored, but kept as asked
    ("gold", None, None, AcrRequest(None, False, None, ("gold",))),
    ("gold mfa silver", None, None, AcrRequest(MFA, False, None, ("gold", "mfa", "silver"))),
    ("MFA", None, None, AcrRequest(None, False, None, ("MFA",))),  # acr values are case-sensitive
    # urn:<ns>:<idp>_direct names the upstream provider, not a level (the Transmit guide's example)
    ("mfa urn:transmit:google_direct", None, None,
     AcrRequest(MFA, False, "google", ("mfa", "urn:transmit:google_direct"))),
    ("urn:transmit:google_direct", None, None, AcrRequest(None, False, "google", ("urn:transmit:google_direct",))),
    ("urn:acme:corp-sso_direct", None, None, AcrRequest(None, False, "corp-sso", ("urn:acme:corp-sso_direct",))),
    ("urn:a:first_direct urn:a:second_direct", None, None,
     AcrRequest(None, False, "first", ("urn:a:first_direct", "urn:a:second_direct"))),
    ("urn:transmit:_direct", None, None, AcrRequest(None, False, None, ("urn:transmit:_direct",))),
    ("urn:google_direct", None, None, AcrRequest(None, False, None, ("urn:google_direct",))),
    # require_mfa: the same as acr_values=mfa, as a JSON boolean or a query string
    (None, None, True, AcrRequest(MFA, False, None, ())),
    (None, None, "true", AcrRequest(MFA, False, None, ())),
    (None, None, "TRUE", AcrRequest(MFA, False, None, ())),
    (None, None, False, AcrRequest(None, False, None, ())),
    ("phr", None, True, AcrRequest(PHR, False, None, ("phr",))),  # still the highest
    # the claims parameter (OIDC Core 5.5.1.1), as JSON text or already parsed
    (None, '{"id_token": {"acr": {"essential": true, "value": "mfa"}}}', None, AcrRequest(MFA, True, None, ("mfa",))),
    (None, {"id_token": {"acr": {"essential": True, "values": ["mfa", "phr"]}}}, None,
     AcrRequest(PHR, True, None, ("mfa", "phr"))),
    (None, {"id_token": {"acr": {"values": ["phr"]}}}, None, AcrRequest(PHR, False, None, ("phr",))),
    (None, {"id_token": {"acr": {"essential": False, "value": "mfa"}}}, None, AcrRequest(MFA, False, None, ("mfa",))),
    (None, {"id_token": {"acr": None}}, None, AcrRequest(None, False, None, ())),
    (None, {"id_token": {"auth_time": {"essential": True}}}, None, AcrRequest(None, False, None, ())),
    (None, {"userinfo": {"email": None}}, None, AcrRequest(None, False, None, ())),
    (None, "{}", None, AcrRequest(None, False, None, ())),
    # essential with only unknown values stays essential: the caller answers an error
    (None, {"id_token": {"acr": {"essential": True, "values": ["gold"]}}}, None,
     AcrRequest(None, True, None, ("gold",))),
    (None, {"id_token": {"acr": {"essential": True}}}, None, AcrRequest(None, True, None, ())),
    # acr_values and claims together: both count, the highest wins
    ("mfa", {"id_token": {"acr": {"essential": True, "value": "phr"}}}, None,
     AcrRequest(PHR, True, None, ("mfa", "phr"))),
    ("phr", {"id_token": {"acr": {"value": "mfa"}}}, None, AcrRequest(PHR, False, None, ("phr", "mfa"))),
])
def test_parse_acr_request(acr_values, claims, require_mfa, expected):
    assert parse_acr_request(acr_values, claims, require_mfa, DEFAULTS) == expected


@pytest.mark.parametrize("acr_values, claims, require_mfa, message", [
    (None, "{not json", None, "claims is not valid JSON."),
    (None, '{"id_token": ', None, "claims is not valid JSON."),
    (None, "[" * 100_000, None, "claims is not valid JSON."),  # nesting deep enough to blow the stack
    (None, b"\xff\xfe", None, "claims is not valid JSON."),
    (None, "[]", None, "claims must be a JSON object."),
    (None, '"mfa"', None, "claims must be a JSON object."),
    (None, 42, None, "claims must be a JSON object."),
    (None, {"id_token": "acr"}, None, "claims.id_token must be a JSON object."),
    (None, {"id_token": {"acr": "mfa"}}, None, "claims.id_token.acr must be null or a JSON object."),
    (None, {"id_token": {"acr": {"essential": "yes"}}}, None, "claims.id_token.acr.essential must be true or false."),
    (None, {"id_token": {"acr": {"value": ["mfa"]}}}, None, "claims.id_token.acr.value must be a string."),
    (None, {"id_token": {"acr": {"values": "mfa"}}}, None, "claims.id_token.acr.values must be an array of strings."),
    (None, {"id_token": {"acr": {"values": ["mfa", 2]}}}, None,
     "claims.id_token.acr.values must be an array of strings."),
    (42, None, None, "acr_values must be a space-separated string."),
    (None, None, "yes", "require_mfa must be true or false."),
    (None, None, 1, "require_mfa must be true or false."),
])
def test_malformed_requests_are_refused_with_a_safe_message(acr_values, claims, require_mfa, message):
    with pytest.raises(AcrRequestError) as raised:
        parse_acr_request(acr_values, claims, require_mfa, DEFAULTS)
    assert str(raised.value) == message


def test_require_mfa_without_an_mfa_level_uses_the_weakest_two_flow_level():
    ladder = [LOA1, level("two", 1, flows=2), level("three", 2, flows=3)]
    assert parse_acr_request(None, None, True, ladder).level == ladder[1]
    with pytest.raises(AcrRequestError, match="no acr level requires two factors"):
        parse_acr_request(None, None, True, [LOA1])
    assert parse_acr_request(None, None, False, [LOA1]).level is None


# -- level_met --------------------------------------------------------------------------------

@pytest.mark.parametrize("lvl, factors, expected", [
    # mfa: two distinct flows
    (MFA, [], False),
    (MFA, [use("password")], False),
    (MFA, [use("password"), use("email-otp")], True),
    (MFA, [use("email-otp"), use("password")], True),
    (MFA, [use("sms"), use("email")], True),
    # the same flow twice is not mfa: email link + email code, SMS + voice
    (MFA, [use("email"), use("email-otp")], False),
    (MFA, [use("sms"), use("voice")], False),
    # phr: one factor, which must be WebAuthn
    (PHR, [use("password")], False),
    (PHR, [use("password"), use("email-otp"), use("sms")], False),
    (PHR, [use("passkey")], True),
    (PHR, [use("password"), use("webauthn-key")], True),
    (PHR, [use("webauthn-platform")], True),
    # max_age: factors older than the level's max_age no longer count
    (MFA_FRESH, [use("password", ago=300), use("sms", ago=1)], True),
    (MFA_FRESH, [use("password", ago=301), use("sms", ago=1)], False),
    (MFA_FRESH, [use("password", ago=3600), use("sms", ago=1), use("totp", ago=2)], True),
    # forbidden factors never count
    (STRONG, [use("password"), use("sms")], False),
    (STRONG, [use("password"), use("voice"), use("sms")], False),
    (STRONG, [use("password"), use("email-otp")], True),
    # first_factors: the login must start with one of them; earlier others are left out
    (STRONG, [use("email-otp", ago=20), use("totp", ago=10)], False),
    (STRONG, [use("email-otp", ago=30), use("password", ago=20), use("totp", ago=10)], True),
    (STRONG, [use("email-otp", ago=30), use("password", ago=20)], False),
    (STRONG, [use("passkey", ago=30), use("email", ago=20)], True),
    (STRONG, [use("sms", ago=30), use("password", ago=20), use("voice", ago=10)], False),
    # a flows=1 level with no other rule: any one factor
    (LOA1, [use("email")], True),
    (LOA1, [], False),
])
def test_level_met(lvl, factors, expected):
    assert level_met(lvl, factors, NOW) is expected


# -- achieved_acr -----------------------------------------------------------------------------

@pytest.mark.parametrize("levels, factors, single_factor_acr, requested, expected", [
    (DEFAULTS, [], None, None, None),
    (DEFAULTS, [], "1", None, None),  # nothing done: nothing claimed
    (DEFAULTS, [use("password")], None, None, None),
    (DEFAULTS, [use("password")], "urn:example:loa:1", None, "urn:example:loa:1"),
    (DEFAULTS, [use("password"), use("sms")], None, None, "mfa"),
    (DEFAULTS, [use("email"), use("email-otp")], "1", None, "1"),
    (DEFAULTS, [use("passkey")], None, None, "phr"),
    # both met: the highest, unless the request named a level that is met
    (DEFAULTS, [use("passkey"), use("email-otp")], None, None, "phr"),
    (DEFAULTS, [use("passkey"), use("email-otp")], None, MFA, "mfa"),
    (DEFAULTS, [use("passkey")], None, MFA, "phr"),  # mfa asked but not met: what is met
    # max_age: the acr falls back to what is still fresh
    (LADDER, [use("password", ago=200), use("totp", ago=100)], None, None, "strong"),
    (LADDER, [use("password", ago=400), use("totp", ago=100)], None, None, "strong"),  # no max_age on strong
    (LADDER, [use("sms", ago=400), use("totp", ago=100)], None, None, "loa1"),
    (LADDER, [use("sms", ago=200), use("totp", ago=100)], None, None, "mfa"),
    (LADDER, [use("passkey", ago=10_000)], None, None, "phr"),
    # a single-factor acr that names a level is never claimed unmet
    (DEFAULTS, [use("password")], "mfa", None, None),
])
def test_achieved_acr(levels, factors, single_factor_acr, requested, expected):
    assert achieved_acr(levels, factors, NOW, single_factor_acr, requested) == expected


# -- amr_values -------------------------------------------------------------------------------

@pytest.mark.parametrize("factors, transmit, rfc8176", [
    ([], [], []),
    ([use("password")], ["pwd"], ["pwd"]),
    ([use("password"), use("email-otp")], ["pwd", "eml", "mfa"], ["pwd", "otp", "mfa"]),
    ([use("password"), use("email")], ["pwd", "eml", "mfa"], ["pwd", "eml", "mfa"]),
    ([use("password"), use("sms")], ["pwd", "sms", "mfa"], ["pwd", "sms", "otp", "mfa"]),
    ([use("voice"), use("email-otp")], ["tel", "eml", "mfa"], ["tel", "otp", "mfa"]),
    ([use("email"), use("email-otp")], ["eml"], ["eml", "otp"]),  # one flow: no mfa
    ([use("webauthn-key"), use("email"), use("password")], ["webauthn", "eml", "pwd", "mfa"],
     ["hwk", "eml", "pwd", "mfa"]),
    ([use("webauthn-platform")], ["webauthn"], ["hwk", "user"]),
    ([use("passkey")], ["webauthn"], ["hwk"]),
    ([use("totp"), use("password")], ["otp", "pwd", "mfa"], ["otp", "pwd", "mfa"]),
    ([use("recovery-code")], ["rcv"], ["kba"]),
    ([use("push"), use("password")], ["push", "pwd", "mfa"], ["swk", "pwd", "mfa"]),
    # an upstream provider's factor carries its own Transmit name
    ([FactorUse("upstream:google", "fed", "federation", NOW), use("sms")], ["fed", "sms", "mfa"],
     ["fed", "sms", "otp", "mfa"]),
])
def test_amr_values(factors, transmit, rfc8176):
    assert amr_values(factors, "transmit") == transmit
    assert amr_values(factors, "rfc8176") == rfc8176


def test_amr_vocabulary_is_checked():
    with pytest.raises(ValueError):
        amr_values([use("password")], "saml")


# -- the settings block -----------------------------------------------------------------------

def test_levels_come_from_yaml_settings(tmp_path):
    path = tmp_path / "provider.yaml"
    path.write_text(
        "acr:\n  vocabulary: rfc8176\n  levels:\n"
        "    - {value: loa1}\n"
        "    - {value: mfa, flows: 2, max_age: 600, forbidden_factors: [sms], first_factors: [password]}\n"
    )
    settings = load_settings(path)
    assert settings.acr.vocabulary == "rfc8176"
    assert levels_from_settings(settings.acr) == [
        level("loa1", 0), level("mfa", 1, flows=2, forbidden=["sms"], first=["password"], max_age=600)]


@pytest.mark.parametrize("acr, problem", [
    ({"levels": [{"value": "mfa"}, {"value": "mfa", "flows": 2}]}, "defined twice"),
    ({"levels": [{"value": "mfa", "flows": 0}]}, "greater than or equal to 1"),
    ({"levels": [{"value": "mfa", "flow": 2}]}, "Extra inputs are not permitted"),
    ({"levels": [{"value": "mfa", "required_factors": ["fingerprint"]}]}, "unknown factor 'fingerprint'"),
    ({"levels": [{"value": "mfa", "required_factors": ["sms"], "forbidden_factors": ["sms"]}]},
     "both required and forbidden"),
    ({"levels": [{"value": "mfa", "first_factors": ["sms"], "forbidden_factors": ["sms"]}]},
     "first_factors allows no factor"),
    ({"levels": [{"value": "two words"}]}, "no spaces"),
    ({"levels": [{"value": "urn:transmit:google_direct"}]}, "upstream provider"),
    ({"levels": [{"value": "mfa", "max_age": 0}]}, "greater than 0"),
    ({"vocabulary": "saml"}, "'transmit' or 'rfc8176'"),
    ({"level": []}, "Extra inputs are not permitted"),
])
def test_bad_acr_settings_are_refused(acr, problem):
    with pytest.raises(ValidationError, match=problem):
        Acr.model_validate(acr)


# -- properties -------------------------------------------------------------------------------

FACTOR_IDS = ["password", "email-otp", "email", "sms", "voice", "totp", "webauthn-key", "webauthn-platform",
              "passkey", "recovery-code", "push"]
factor_uses = st.builds(lambda factor, ago: use(factor, ago), st.sampled_from(FACTOR_IDS),
                        st.integers(min_value=0, max_value=10_000))
factor_sets = st.lists(factor_uses, max_size=6)


@st.composite
def ladders(draw) -> list[Level]:
    values = draw(st.lists(st.sampled_from(["mfa", "phr", "loa1", "loa2", "gold"]), unique=True, max_size=4))
    some = st.frozensets(st.sampled_from(FACTOR_IDS), max_size=3)
    return [Level(value=value, rank=rank, flows=draw(st.integers(1, 4)), required_factors=draw(some),
                  forbidden_factors=draw(some), first_factors=draw(st.none() | some),
                  max_age=draw(st.none() | st.integers(1, 5000)))
            for rank, value in enumerate(values)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
claims_like = st.fixed_dictionaries({}, optional={"id_token": st.fixed_dictionaries({}, optional={
    "acr": st.none() | st.fixed_dictionaries({}, optional={
        "essential": json_values, "value": json_values | st.sampled_from(["mfa", "phr", "urn:x:y_direct"]),
        "values": st.lists(st.sampled_from(["mfa", "phr", "gold"]) | st.text(max_size=5), max_size=3) | json_values,
    }) | json_values}) | json_values})
any_claims = (st.none() | st.text(max_size=40) | st.binary(max_size=20) | json_values | claims_like
              | claims_like.map(json.dumps))
any_acr_values = st.none() | st.text(max_size=40) | st.lists(st.sampled_from(["mfa", "phr", "urn:t:g_direct"])
                                                                   | st.text(max_size=6), max_size=4) | json_values
any_require_mfa = st.none() | st.booleans() | st.sampled_from(["true", "false", "TRUE", ""]) | json_values


@settings(max_examples=400, deadline=None)
@given(any_acr_values, any_claims, any_require_mfa, ladders())
def test_parse_acr_request_only_ever_raises_acr_request_error(acr_values, claims, require_mfa, levels):
    try:
        result = parse_acr_request(acr_values, claims, require_mfa, levels)
    except AcrRequestError:
        return
    # whatever it chose is a configured level, and none of those asked ranks higher
    assert result.level is None or result.level in levels
    asked = [lvl for lvl in levels if lvl.value in result.requested]
    if result.level is not None and asked:
        assert result.level.rank >= max(lvl.rank for lvl in asked)


def independently_met(lvl: Level, factors, now: float) -> bool:
    """The level's rules written out the slow way: some time-ordered tail of the fresh,
    counting factors starts with an allowed first factor and meets flows and required."""
    fresh = sorted((u for u in factors if u.factor not in lvl.forbidden_factors
                    and (lvl.max_age is None or now - u.at <= lvl.max_age)), key=lambda u: u.at)
    for start in range(len(fresh)):
        tail = fresh[start:]
        if lvl.first_factors is not None and tail[0].factor not in lvl.first_factors:
            continue
        if len({u.flow for u in tail}) >= lvl.flows and (
                not lvl.required_factors or any(u.factor in lvl.required_factors for u in tail)):
            return True
    return False


@settings(max_examples=400, deadline=None)
@given(ladders(), factor_sets, st.none() | st.sampled_from(["mfa", "loa1", "single"]), st.data())
def test_achieved_acr_never_claims_a_level_that_was_not_done(levels, factors, single_factor_acr, data):
    requested = data.draw(st.none() | st.sampled_from(levels)) if levels else None
    acr = achieved_acr(levels, factors, NOW, single_factor_acr, requested)
    by_value = {lvl.value: lvl for lvl in levels}
    if acr in by_value:
        assert independently_met(by_value[acr], factors, NOW)
    else:
        assert acr in (None, single_factor_acr)
    if acr is not None:
        assert factors  # nothing done, nothing claimed
    for lvl in levels:
        assert level_met(lvl, factors, NOW) == independently_met(lvl, factors, NOW)


@settings(max_examples=300, deadline=None)
@given(ladders(), factor_sets, factor_sets)
def test_doing_more_never_lowers_a_level(levels, factors, more):
    for lvl in levels:
        if level_met(lvl, factors, NOW):
            assert level_met(lvl, factors + more, NOW)


@settings(max_examples=300, deadline=None)
@given(factor_sets, st.sampled_from(["transmit", "rfc8176"]))
def test_amr_lists_each_method_once_and_mfa_only_for_two_flows(factors, vocabulary):
    amr = amr_values(factors, vocabulary)
    assert len(amr) == len(set(amr))
    assert ("mfa" in amr) == (len({u.flow for u in factors}) >= 2)
    if "mfa" in amr:
        assert amr[-1] == "mfa"
