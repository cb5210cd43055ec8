"""Property-based attacks (hypothesis) on what turns outside input into decisions: the
configuration loaders, the acr parser, the policy, and the login chain. Two promises
(SPEC 7): never an exception other than our own validation errors, and never an acr the
chain did not earn. tests/unit/test_acr.py and test_policy.py hold the pure-function
properties of the parser and the evaluator; these add the loaders, the chain end to end
and the authorization endpoint."""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import pytest
import requests
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from oidc_provider.authn import chain
from oidc_provider.authn.acr import Level, achieved_acr, counting_factors, levels_from_settings
from oidc_provider.authn.factors import FACTOR_CLASSES
from oidc_provider.authn.session import FactorUse, current_acr
from oidc_provider.oauth.tokens import AuthContext
from oidc_provider.settings import ConfigError, load_settings
from oidc_provider.settings.clients import parse_clients
from oidc_provider.settings.policy import load_policy, parse_policy
from oidc_provider.settings.provider import FACTOR_IDS
from tests.conftest import REDIRECT, UserAgent

clause = pytest.mark.clause
NOW = 1_750_000_000.0
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


def _factor_class(factor_id: str):
    module, _, name = FACTOR_CLASSES[factor_id].partition(":")
    return getattr(importlib.import_module(f"oidc_provider.authn.factors.{module}"), name)


# The flows and amr values the factor modules themselves declare: the chain is fuzzed with the
# real ones, so a factor moved to another flow is checked too.
REAL = {factor_id: (_factor_class(factor_id).flow, _factor_class(factor_id).amr) for factor_id in FACTOR_IDS}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


# -- the loaders: only our own validation error ---------------------------------------------------

SETTING_KEYS = ["issuer", "database_url", "dev_mode", "lifetimes", "resources", "store", "single_factor_acr",
                "scopes_supported", "max_request_bytes", "max_parameter_length", "email", "sms", "voice", "otp",
                "lockout", "encryption_key_ids", "trusted_devices", "factors", "acr", "webauthn", "upstreams",
                "push", "totp_recovery", "par", "jar", "no_such_key"]
BLOCK_KEYS = ["lifetime", "length", "max_failures", "duration", "levels", "value", "flows", "max_age",
              "required_factors", "forbidden_factors", "first_factors", "rp_id", "origins", "attestation",
              "allowed_aaguids", "gateway", "url", "host", "port", "security", "username", "enabled", "required",
              "backend", "redis_url", "preset", "client_id", "discovery_url", "vocabulary", "session", "x"]
plausible = st.sampled_from(["mfa", "phr", "password", "webauthn-key", "passkey", "sms", "https://login.example.com",
                             "http://localhost:8000", "redis", "direct", "none", "webhook", "google", 0, 1, 5, 3600,
                             True, False, None, "", [], {}])
block_values = st.recursive(plausible | json_values, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.sampled_from(BLOCK_KEYS), inner, max_size=5), max_leaves=15)
setting_overrides = st.dictionaries(st.sampled_from(SETTING_KEYS), block_values, max_size=6)


@clause("SPEC 7: the provider.yaml loader raises only ConfigError, whatever the values")
@FUZZ
@given(overrides=setting_overrides)
def test_settings_loader_raises_only_config_error(overrides):
    try:
        load_settings(None, overrides)
    except ConfigError as error:
        assert str(error).startswith("settings: ")


yaml_texts = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=":-[]{}#&*!|>'\"%@`, \n\tab01.?", max_size=120),
    st.builds(lambda data: yaml.safe_dump(data), json_values),
    st.builds(lambda data: yaml.safe_dump({"clients": data}), json_values),
    st.builds(lambda data: yaml.safe_dump({"rules": data}), json_values),
)


@clause("SPEC 7: YAML files of any content (provider, clients, policy) raise only ConfigError")
@FUZZ
@given(text=yaml_texts)
def test_yaml_files_raise_only_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "file.yaml"
    path.write_bytes(text.encode("utf-8", errors="replace"))
    for load in (lambda: load_settings(path), lambda: parse_clients(path, b"k" * 32), lambda: load_policy(path)):
        try:
            load()
        except ConfigError as error:
            assert str(path) in str(error)


CLIENT_KEYS = ["client_id", "client_name", "token_endpoint_auth_method", "client_secret_hash", "jwks",
               "redirect_uris", "post_logout_redirect_uris", "grant_types", "scopes", "first_party",
               "id_token_signed_response_alg", "access_token_lifetime", "mfa_policy", "can_introspect",
               "require_pushed_authorization_requests", "require_signed_request_object", "request_object_signing_alg"]
client_values = st.one_of(json_values, st.sampled_from([
    "web", "none", "client_secret_basic", "private_key_jwt", ["authorization_code"], ["client_credentials"],
    ["https://app.example.com/cb"], ["http://127.0.0.1:9/cb"], {"keys": []}, "RS256", "always", ["openid"]]))
clients_files = st.dictionaries(st.sampled_from(["clients"]), st.lists(
    st.dictionaries(st.sampled_from(CLIENT_KEYS), client_values, max_size=8) | json_values, max_size=3))


@clause("SPEC 7: the clients.yaml loader raises only ConfigError, naming the client and field")
@FUZZ
@given(data=clients_files)
def test_clients_loader_raises_only_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("clients") / "clients.yaml"
    path.write_text(json.dumps(data))
    try:
        parse_clients(path, b"k" * 32)
    except ConfigError as error:
        assert str(error).startswith(f"{path}: ")


RULE_KEYS = ["name", "if", "then", "ip_ranges", "not_ip_ranges", "countries", "not_countries", "time", "new_device",
             "clients", "groups", "attributes", "require_acr", "timezone", "days", "from", "to", "risk_above"]
rule_values = st.recursive(st.sampled_from(["deny", "allow", "require_mfa", "10.0.0.0/8", "::1/128", "FR", "mon",
                                            "09:00", "25:00", "Europe/Paris", "Mars/Base", "phr", True, 0.5])
                           | json_values,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(RULE_KEYS),
                                                                                          inner, max_size=4),
                           max_leaves=12)
policies = st.dictionaries(st.sampled_from(["policy", "rules", "adaptive", "geoip_database", "extra"]),
                           st.sampled_from(["never", "adaptive", "always"]) | rule_values, max_size=4)


@clause("SPEC 7: the policy.yaml loader raises only ConfigError, naming the rule and field")
@FUZZ
@given(data=policies)
def test_policy_loader_raises_only_config_error(data):
    try:
        parse_policy(data, "policy.yaml")
    except ConfigError as error:
        assert str(error).startswith("policy.yaml: ")


# -- the chain: never an acr that was not earned ------------------------------------------------

LEVEL_VALUES = ["mfa", "phr", "loa1", "strong", "gold"]
some_factors = st.lists(st.sampled_from(FACTOR_IDS), unique=True, max_size=4)
level_dicts = st.fixed_dictionaries(
    {"value": st.sampled_from(LEVEL_VALUES), "flows": st.integers(1, 4)},
    optional={"max_age": st.integers(1, 5000), "required_factors": some_factors, "forbidden_factors": some_factors,
              "first_factors": some_factors})


@st.composite
def configured_levels(draw) -> list[Level]:
    """acr levels as an operator could write them: only those the settings accept."""
    raw = draw(st.lists(level_dicts, max_size=4, unique_by=lambda level: level["value"]))
    try:
        settings_ = load_settings(None, {"acr": {"levels": raw}})
    except ConfigError:
        assume(False)
    return levels_from_settings(settings_.acr)


@st.composite
def factor_history(draw) -> list[FactorUse]:
    """What a session recorded: factors with their real flow and amr, done some time ago."""
    ids = draw(st.lists(st.sampled_from(FACTOR_IDS), max_size=6))
    return [FactorUse(factor=f, amr=REAL[f][1], flow=REAL[f][0], at=NOW - draw(st.integers(0, 10_000)))
            for f in ids]


def earned(level: Level, factors: list[FactorUse], now: float) -> bool:
    """The level's rules written out independently: some time-ordered run of fresh factors that
    counts for the level starts with an allowed first factor, spans `flows` distinct flows and
    includes a required factor when the level names some."""
    fresh = sorted((u for u in factors if u.factor not in level.forbidden_factors
                    and (level.max_age is None or now - u.at <= level.max_age)), key=lambda u: u.at)
    for start in range(len(fresh)):
        run = fresh[start:]
        if level.first_factors is not None and run[0].factor not in level.first_factors:
            continue
        if len({u.flow for u in run}) >= level.flows and (
                not level.required_factors or any(u.factor in level.required_factors for u in run)):
            return True
    return False


prompt_sets = st.sets(st.sampled_from(["login", "consent", "select_account"]), max_size=2)


@clause("SPEC 7 / OIDC Core 3.1.2.1: the acr granted counts only factors within prompt=login and max_age")
@FUZZ
@given(levels=configured_levels(), factors=factor_history(), prompts=prompt_sets,
       max_age=st.none() | st.integers(0, 10_000), started=st.none() | st.integers(0, 10_000), data=st.data())
def test_granted_acr_is_earned_by_the_usable_factors(levels, factors, prompts, max_age, started, data):
    interaction_started = None if started is None else NOW - started
    usable, _ = chain.usable_factors(factors, prompts, max_age, interaction_started, NOW)
    requested = data.draw(st.none() | st.sampled_from(levels)) if levels else None
    if not chain.satisfied(requested, usable, NOW):
        return  # the endpoint starts an interaction: nothing is granted
    acr = achieved_acr(levels, usable, NOW, None, requested)
    if requested is not None:
        assert acr == requested.value and earned(requested, usable, NOW)
    by_value = {level.value: level for level in levels}
    assert acr is None or earned(by_value[acr], usable, NOW)
    for use in usable:  # nothing outside the request's freshness bounds counted
        in_interaction = interaction_started is not None and use.at >= interaction_started
        assert "login" not in prompts or in_interaction
        assert max_age is None or NOW - use.at <= max_age or in_interaction


@st.composite
def users(draw):
    """A user and the factors the registry would offer them (the enabled, enrolled ones)."""
    enrolled = draw(st.lists(st.sampled_from([f for f in FACTOR_IDS if f != "fed"]), unique=True, min_size=1))
    user = SimpleNamespace(email=draw(st.sampled_from(["ada@example.com", None])),
                           phone_number=draw(st.sampled_from(["+15550100", None])),
                           phone_number_verified=draw(st.booleans()))
    return user, [SimpleNamespace(id=f, flow=REAL[f][0], amr=REAL[f][1]) for f in enrolled]


@clause("SPEC 2, 7: walking the chain as offered never claims a level before its factors are done")
@FUZZ
@given(levels=configured_levels(), user=users(), data=st.data())
def test_the_offered_chain_never_grants_an_unearned_level(levels, user, data):
    assume(levels)
    person, available = user
    level = data.draw(st.sampled_from(levels))
    done: list[FactorUse] = []
    now = NOW
    for _ in range(len(available) + 1):
        if chain.satisfied(level, done, now):
            break
        choices, _gaps = chain.next_choices(level, available, done, person, now)
        counted_flows = {u.flow for u in counting_factors(level, done, now)}  # still fresh for the level
        for choice in choices:
            assert choice.id not in level.forbidden_factors
            assert choice.flow not in counted_flows or choice.id in level.required_factors
        if not choices:
            break
        picked = data.draw(st.sampled_from(choices))
        now += 1
        done.append(FactorUse(factor=picked.id, amr=picked.amr, flow=picked.flow, at=now))
        available = [factor for factor in available if factor.id != picked.id]
    acr = achieved_acr(levels, done, now, None, level)
    if chain.satisfied(level, done, now):
        assert acr == level.value and earned(level, done, now)
    else:
        assert acr != level.value
        assert acr is None or earned(next(lvl for lvl in levels if lvl.value == acr), done, now)


@clause("SPEC 2 / OIDC Core 12.2: on refresh the acr falls back as factors age, never rises above the first claim")
@FUZZ
@given(levels=configured_levels(), factors=factor_history(), later=st.integers(0, 20_000),
       single=st.none() | st.sampled_from(["loa0", "mfa"]), data=st.data())
def test_refresh_never_claims_more_than_was_earned(levels, factors, later, single, data):
    assume(factors)
    requested = data.draw(st.none() | st.sampled_from(levels)) if levels else None
    first = achieved_acr(levels, factors, NOW, single, requested)
    op = SimpleNamespace(levels=levels, settings=SimpleNamespace(single_factor_acr=single))
    context = AuthContext(auth_time=int(NOW), acr=first, amr=[],
                          factors=[{"factor": u.factor, "amr": u.amr, "flow": u.flow, "at": u.at} for u in factors])
    acr = current_acr(op, context, NOW + later)
    ranks = {level.value: level for level in levels}
    if acr in ranks:
        assert earned(ranks[acr], factors, NOW + later)
        if first in ranks:
            assert ranks[acr].rank <= ranks[first].rank
    else:
        assert acr in (None, single)


# -- the authorization endpoint: the acr parser from the outside --------------------------------------

acr_values = st.one_of(st.text(max_size=30), st.lists(st.sampled_from(
    ["mfa", "phr", "urn:transmit:google_direct", "urn:x:", "gold", "", " "]), max_size=4).map(" ".join))
claims = st.one_of(st.none(), st.text(max_size=40), json_values.map(json.dumps), st.builds(
    lambda essential, values: json.dumps({"id_token": {"acr": {"essential": essential, "values": values}}}),
    json_values, json_values))


@clause("SPEC 7 / OIDC Core 5.5.1.1: any acr_values, claims or require_mfa gets a page or a redirect, never a 500")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(acr=acr_values, claims_parameter=claims, require_mfa=st.none() | st.text(max_size=6))
def test_authorization_endpoint_handles_any_acr_request(sqlite_provider, acr, claims_parameter, require_mfa):
    query = {"client_id": "web", "response_type": "code", "scope": "openid", "redirect_uri": REDIRECT,
             "acr_values": acr, "claims": claims_parameter, "require_mfa": require_mfa}
    answer = requests.get(f"{sqlite_provider.url}/oidc/auth", params={k: v for k, v in query.items() if v is not None},
                          allow_redirects=False, timeout=15)
    assert answer.status_code in (200, 302, 303, 400), answer.status_code
    assert "Traceback" not in answer.text
    if answer.status_code == 200:
        assert 'name="password"' in answer.text  # the login page
    if answer.status_code == 302:  # straight back to the client: an error, never a code without a login
        assert answer.headers["Location"].startswith(REDIRECT) and "code=" not in answer.headers["Location"]


@clause("SPEC 7: a session's acr is never above what its factors earned, whatever the request asks")
def test_signed_in_session_never_gets_an_unearned_acr(sqlite_provider):
    person = sqlite_provider.add_user()
    agent = UserAgent(sqlite_provider)
    agent.sign_in(person["username"], client_id="web")
    for acr in ("mfa", "phr", "mfa phr", "phr mfa", "gold mfa"):
        answer = agent.authorize(client_id="web", acr_values=acr, prompt="none")
        assert "code=" not in answer.headers.get("Location", ""), acr


@clause("SPEC 2 / OIDC Core 12.2: a lapsed level is not kept on refresh because a higher level still holds")
def test_refresh_drops_a_lapsed_level_even_when_a_higher_one_holds():
    levels = levels_from_settings(load_settings(None, {"acr": {"levels": [
        {"value": "mfa", "flows": 2, "max_age": 300},
        {"value": "phr", "required_factors": ["webauthn-key", "webauthn-platform", "passkey"]}]}}).acr)
    done = [FactorUse(factor=f, amr=REAL[f][1], flow=REAL[f][0], at=NOW) for f in ("password", "passkey")]
    op = SimpleNamespace(levels=levels, settings=SimpleNamespace(single_factor_acr=None))
    context = AuthContext(auth_time=int(NOW), acr="mfa", amr=["pwd", "webauthn", "mfa"],
                          factors=[vars(use) for use in done])
    assert current_acr(op, context, NOW + 10) == "mfa"
    assert current_acr(op, context, NOW + 301) is None  # mfa lapsed; phr holds but was never claimed
