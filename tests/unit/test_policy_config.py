"""config/policy.yaml: the committed default, its documentation, and errors naming file, rule and field."""

from __future__ import annotations

import json
import re
from datetime import time
from pathlib import Path

import pytest
import yaml

from oidc_provider.authn.policy import LoginContext, evaluate
from oidc_provider.settings import ConfigError
from oidc_provider.settings.clients import parse_clients
from oidc_provider.settings.policy import (Adaptive, Conditions, PolicyConfig, RiskWeights, Rule, TimeWindow,
                                           load_policy, parse_policy)

COMMITTED = Path(__file__).resolve().parents[2] / "config" / "policy.yaml"


def any_login(**changes) -> LoginContext:
    base = dict(user_id="u", username="alice", groups=("admins",), attributes={}, user_policy=None,
                client_id="payroll", client_policy=None, ip="175.16.199.1", country="KP", latitude=None,
                longitude=None, now=1_705_185_000.0, device_known=False, recent_failures=3, previous=None)
    base.update(changes)
    return LoginContext(**base)


# -- the committed file -----------------------------------------------------------------

def test_the_committed_default_is_permissive():
    config = load_policy(COMMITTED)
    assert config.policy == "never" and config.rules == [] and config.geoip_database is None
    assert config.adaptive == Adaptive()  # the file spells out the defaults
    decision = evaluate(config, any_login())
    assert decision.action == "allow" and decision.reason == "never policy (global): MFA not required"


def test_every_key_is_documented_in_the_committed_file():
    text = COMMITTED.read_text()
    for model in (PolicyConfig, Adaptive, RiskWeights, Rule, Conditions, TimeWindow):
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert re.search(rf"^\s*#?\s*-?\s*{key}:.*", text, re.M) or f"{{{key}:" in text, (model.__name__, key)
    for action in ("allow", "deny", "require_mfa", "require_acr"):
        assert re.search(rf"#\s+{{?{action}\b", text), action


def test_the_documented_examples_are_valid_and_decide_as_described():
    text = COMMITTED.read_text().split("# Examples:\n", 1)[1].split("\nrules:", 1)[0]
    examples = yaml.safe_load("\n".join(line.removeprefix("#  ") for line in text.splitlines()))
    config = parse_policy({"policy": "never", "rules": examples}, "examples")
    assert [rule.name for rule in config.rules] == ["office-network", "risky-countries", "admins-always", "night",
                                                   "payroll-app"]
    assert evaluate(config, any_login(ip="10.9.9.9")).rule == "office-network"
    assert evaluate(config, any_login(ip="2001:db8::7")).rule == "office-network"
    assert evaluate(config, any_login()).action == "deny"
    assert evaluate(config, any_login(country="FR")).rule == "admins-always"
    night = evaluate(config, any_login(country="FR", groups=(), now=1_705_185_000.0))  # Sat 2024-01-13 23:30 CET
    assert (night.action, night.acr) == ("require_acr", "phr")
    assert evaluate(config, any_login(country="FR", groups=(), now=1_705_320_000.0)).rule == "payroll-app"  # Mon


def test_a_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_policy("/nonexistent/policy.yaml")
    assert load_policy("/nonexistent/policy.yaml", missing_ok=True) == PolicyConfig()


# -- YAML details ----------------------------------------------------------------------

def test_yaml_surprises_are_handled(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - name: night\n    if: {time: {from: 22:00, to: 06:30}}\n    then: allow\n")
    window = load_policy(path).rules[0].conditions.time
    assert (window.start, window.end, window.timezone) == (time(22, 0), time(6, 30), "UTC")

    path.write_text("rules:\n  - name: nordics\n    if: {countries: [SE, NO]}\n    then: allow\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert "rule 'nordics'" in str(caught.value) and "field 'if.countries'" in str(caught.value)
    assert '"NO"' in str(caught.value)
    path.write_text("rules:\n  - name: nordics\n    if: {countries: [SE, \"NO\"]}\n    then: allow\n")
    assert load_policy(path).rules[0].conditions.countries == ["SE", "NO"]


def test_values_are_normalised():
    config = parse_policy({"policy": "Adaptive", "rules": [
        {"if": {"countries": "kp", "groups": "admins", "time": {"days": ["Saturday", "SUN"]}},
         "then": {"require_acr": " phr "}}]})
    rule = config.rules[0]
    assert config.policy == "adaptive"
    assert (rule.conditions.countries, rule.conditions.groups) == (["KP"], ["admins"])
    assert rule.conditions.time.days == ["sat", "sun"]
    assert rule.then.require_acr == "phr"


# -- errors name the file, the rule and the field ---------------------------------------------

def named(**rule) -> dict:
    return {"name": "r1", "if": {}, "then": "allow", **rule}


ERROR_CASES = [
    # (data, rule in the message or None, field, words of the message)
    ({"policy": "sometimes"}, None, "policy", "'never', 'adaptive' or 'always'"),
    ({"polcy": "never"}, None, "polcy", "Extra inputs"),
    ({"adaptive": {"threshold": 0}}, None, "adaptive.threshold", "greater than 0"),
    ({"adaptive": {"threshold": 1.5}}, None, "adaptive.threshold", "less than or equal to 1"),
    ({"adaptive": {"weights": {"new_device": -0.1}}}, None, "adaptive.weights.new_device", "greater than or equal"),
    ({"adaptive": {"weights": {"new_phone": 0.1}}}, None, "adaptive.weights.new_phone", "Extra inputs"),
    ({"adaptive": {"max_speed_kmh": 0}}, None, "adaptive.max_speed_kmh", "greater than 0"),
    ({"rules": "allow"}, None, "rules", "valid list"),
    ({"rules": [named(), "deny"]}, "#2", None, "expected a mapping with name, if and then"),
    ({"rules": [named(**{"if": {"ip_ranges": ["10.1.2.3/8"]}})]}, "r1", "if.ip_ranges", "has host bits set"),
    ({"rules": [named(**{"if": {"ip_ranges": ["10.0.0.0/33"]}})]}, "r1", "if.ip_ranges", "not a CIDR network"),
    ({"rules": [named(**{"if": {"not_ip_ranges": ["office"]}})]}, "r1", "if.not_ip_ranges", "not a CIDR network"),
    ({"rules": [named(**{"if": {"ip_ranges": []}})]}, "r1", "if.ip_ranges", "empty list"),
    ({"rules": [named(**{"if": {"countries": ["France"]}})]}, "r1", "if.countries", "alpha-2"),
    ({"rules": [named(**{"if": {"not_countries": [False]}})]}, "r1", "if.not_countries", "quote country codes"),
    ({"rules": [named(**{"if": {"time": {"timezone": "Mars/Olympus", "days": ["sat"]}}})]}, "r1",
     "if.time.timezone", "unknown timezone"),
    ({"rules": [named(**{"if": {"time": {"from": "25:00", "to": "06:00"}}})]}, "r1", "if.time.from", "HH:MM"),
    ({"rules": [named(**{"if": {"time": {"from": "22:00", "to": "6pm"}}})]}, "r1", "if.time.to", "HH:MM"),
    ({"rules": [named(**{"if": {"time": {"from": "22:00"}}})]}, "r1", "if.time", "give both"),
    ({"rules": [named(**{"if": {"time": {"from": "22:00", "to": "22:00"}}})]}, "r1", "if.time", "empty window"),
    ({"rules": [named(**{"if": {"time": {"timezone": "UTC"}}})]}, "r1", "if.time", "at least one"),
    ({"rules": [named(**{"if": {"time": {"days": ["funday"]}}})]}, "r1", "if.time.days.0", "'mon'"),
    ({"rules": [named(**{"if": {"time": {"days": []}}})]}, "r1", "if.time.days", "empty list"),
    ({"rules": [named(**{"if": {"time": {"days": ["monkey"]}}})]}, "r1", "if.time.days.0", "'mon'"),
    ({"rules": [named(**{"if": {"new_device": "perhaps"}})]}, "r1", "if.new_device", "boolean"),
    ({"rules": [named(**{"if": {"attributes": {}}})]}, "r1", "if.attributes", "empty mapping"),
    ({"rules": [named(**{"if": {"colour": "red"}})]}, "r1", "if.colour", "Extra inputs"),
    ({"rules": [{"name": "r1", "then": "allow"}]}, "r1", "if", "Field required"),
    ({"rules": [{"name": "r1", "if": {}}]}, "r1", "then", "Field required"),
    ({"rules": [named(then="maybe")]}, "r1", "then", "expected allow, deny, require_mfa or {require_acr: VALUE}"),
    ({"rules": [named(then={"require_acr": ""})]}, "r1", "then", "require_acr"),
    ({"rules": [named(then={"require_acr": "phr", "also": 1})]}, "r1", "then", "expected allow"),
    ({"rules": [named(), named(name="r2", then="deny", **{"if": {"groups": ["x"]}, "unless": 1})]}, "r2", "unless",
     "Extra inputs"),
    ({"rules": [{"if": {}, "then": "allow"}, {"if": {"clients": "x"}, "then": "nope"}]}, "#2", "then",
     "expected allow"),
    ({"rules": [named(), named()]}, "r1", "name", "defined twice"),
    ({"rules": [named(name="")]}, "#1", "name", "at least 1 character"),
]


@pytest.mark.parametrize("data, rule, field, words", ERROR_CASES)
def test_errors_name_file_rule_and_field(tmp_path, data, rule, field, words):
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    if rule is None:
        assert "rule '" not in message, message
    else:
        assert f": rule '{rule}': " in message, message
    if field is not None:
        assert f"field '{field}'" in message, message
    assert words in message, message


@pytest.mark.parametrize("text, words", [
    ("rules: [", "not valid YAML"),
    ("- just\n- a list\n", "mapping at the top level"),
])
def test_unreadable_files(tmp_path, text, words):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(str(path))) as caught:
        load_policy(path)
    assert words in str(caught.value)


# -- the client's mfa_policy in clients.yaml --------------------------------------------

def _clients(tmp_path, **fields) -> Path:
    path = tmp_path / "clients.yaml"
    client = {"client_id": "payroll", "token_endpoint_auth_method": "none", "redirect_uris": ["https://p.example/cb"],
              **fields}
    path.write_text(json.dumps({"clients": [client]}))
    return path


@pytest.mark.parametrize("value", ["never", "adaptive", "always", None])
def test_client_mfa_policy(tmp_path, value):
    fields = {} if value is None else {"mfa_policy": value}
    assert parse_clients(_clients(tmp_path, **fields), b"k")["payroll"].config.mfa_policy == value


def test_client_mfa_policy_is_validated(tmp_path):
    path = _clients(tmp_path, mfa_policy="sometimes")
    with pytest.raises(ConfigError) as caught:
        parse_clients(path, b"k")
    assert str(path) in str(caught.value) and "client 'payroll'" in str(caught.value)
    assert "field 'mfa_policy'" in str(caught.value)
