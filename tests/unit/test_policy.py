"""The MFA policy engine: rules, conditions, policies and their precedence, as tables.

Times are written as UTC instants with the local time they are in the rule's timezone
beside them, so the tables do not lean on the code's own conversion.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oidc_provider.authn.policy import ACTIONS, Decision, LoginContext, PreviousLogin, evaluate
from oidc_provider.settings.policy import parse_policy

LONDON = (51.5074, -0.1278)
NEW_YORK = (40.7128, -74.0060)
T0 = datetime.fromisoformat("2024-05-06T10:00:00+00:00").timestamp()  # a Monday


def at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def ctx(**changes) -> LoginContext:
    """A calm login: known device, same place as last time, no failures."""
    base = dict(user_id="u-1", username="alice", groups=(), attributes={}, user_policy=None, client_id="web",
                client_policy=None, ip="81.2.69.142", country="GB", latitude=LONDON[0], longitude=LONDON[1],
                now=T0, device_known=True, recent_failures=0,
                previous=PreviousLogin(at=T0 - 86400, ip="81.2.69.142", country="GB",
                                       latitude=LONDON[0], longitude=LONDON[1]))
    base.update(changes)
    return LoginContext(**base)


def config(rules=(), **top):
    return parse_policy({**top, "rules": list(rules)}, "test-policy")


def one_rule(conditions: dict, then="deny", name="r"):
    return config([{"name": name, "if": conditions, "then": then}], policy="never")


# -- every condition, in and out --------------------------------------------------------

CONDITION_CASES = [
    # CIDR, IPv4
    ({"ip_ranges": ["10.0.0.0/8"]}, {"ip": "10.1.2.3"}, "ip 10.1.2.3 in 10.0.0.0/8"),
    ({"ip_ranges": ["10.0.0.0/8"]}, {"ip": "10.255.255.255"}, "in 10.0.0.0/8"),
    ({"ip_ranges": ["10.0.0.0/8"]}, {"ip": "9.255.255.255"}, None),
    ({"ip_ranges": ["10.0.0.0/8"]}, {"ip": "11.0.0.1"}, None),
    ({"ip_ranges": ["10.0.0.0/8"]}, {"ip": "::ffff:10.1.2.3"}, "ip 10.1.2.3 in 10.0.0.0/8"),  # dual-stack socket
    ({"ip_ranges": ["192.0.2.7"]}, {"ip": "192.0.2.7"}, "in 192.0.2.7/32"),
    ({"ip_ranges": ["192.0.2.7"]}, {"ip": "192.0.2.8"}, None),
    ({"ip_ranges": ["10.0.0.0/8", "192.168.0.0/16"]}, {"ip": "192.168.4.4"}, "in 192.168.0.0/16"),
    ({"ip_ranges": ["10.0.0.0/8"]}, {"ip": None}, None),
    ({"ip_ranges": ["10.0.0.0/8"]}, {"ip": "not-an-ip"}, None),
    # CIDR, IPv6
    ({"ip_ranges": ["2001:db8::/32"]}, {"ip": "2001:db8:1::5"}, "ip 2001:db8:1::5 in 2001:db8::/32"),
    ({"ip_ranges": ["2001:db8::/32"]}, {"ip": "2001:db9::1"}, None),
    ({"ip_ranges": ["2001:db8::/32"]}, {"ip": "10.1.2.3"}, None),
    ({"ip_ranges": ["10.0.0.0/8"]}, {"ip": "2001:db8::1"}, None),
    # not_ip_ranges: unknown is never inside, so the condition holds
    ({"not_ip_ranges": ["10.0.0.0/8"]}, {"ip": "10.1.2.3"}, None),
    ({"not_ip_ranges": ["10.0.0.0/8"]}, {"ip": "8.8.8.8"}, "ip 8.8.8.8 not in 10.0.0.0/8"),
    ({"not_ip_ranges": ["10.0.0.0/8", "2001:db8::/32"]}, {"ip": "2001:db8::1"}, None),
    ({"not_ip_ranges": ["10.0.0.0/8", "2001:db8::/32"]}, {"ip": "2001:db9::1"}, "not in 10.0.0.0/8, 2001:db8::/32"),
    ({"not_ip_ranges": ["10.0.0.0/8"]}, {"ip": None}, "ip unknown not in 10.0.0.0/8"),
    # countries
    ({"countries": ["KP"]}, {"country": "KP"}, "country KP in KP"),
    ({"countries": ["kp", "IR"]}, {"country": "ir"}, "country IR in KP, IR"),
    ({"countries": ["KP"]}, {"country": "FR"}, None),
    ({"countries": ["KP"]}, {"country": None}, None),
    ({"not_countries": ["FR", "DE"]}, {"country": "FR"}, None),
    ({"not_countries": ["FR", "DE"]}, {"country": "US"}, "country US not in FR, DE"),
    ({"not_countries": ["FR", "DE"]}, {"country": None}, "country unknown not in FR, DE"),
    # new_device
    ({"new_device": True}, {"device_known": False}, "new device"),
    ({"new_device": True}, {"device_known": True}, None),
    ({"new_device": False}, {"device_known": True}, "known device"),
    ({"new_device": False}, {"device_known": False}, None),
    # clients
    ({"clients": ["payroll", "hr"]}, {"client_id": "payroll"}, "client payroll"),
    ({"clients": ["payroll"]}, {"client_id": "web"}, None),
    # groups: any of
    ({"groups": ["admins", "ops"]}, {"groups": ("users", "ops")}, "group ops"),
    ({"groups": ["admins"]}, {"groups": ("users",)}, None),
    ({"groups": ["admins"]}, {"groups": ()}, None),
    # attributes: all equal, JSON equality
    ({"attributes": {"department": "finance"}}, {"attributes": {"department": "finance", "x": 1}},
     "attribute department = 'finance'"),
    ({"attributes": {"department": "finance"}}, {"attributes": {"department": "sales"}}, None),
    ({"attributes": {"department": "finance"}}, {"attributes": {}}, None),
    ({"attributes": {"department": "finance", "level": 3}}, {"attributes": {"department": "finance"}}, None),
    ({"attributes": {"department": "finance", "level": 3}}, {"attributes": {"department": "finance", "level": 3}},
     "attribute level = 3"),
    ({"attributes": {"vip": True}}, {"attributes": {"vip": True}}, "attribute vip = True"),
    ({"attributes": {"vip": True}}, {"attributes": {"vip": 1}}, None),
    ({"attributes": {"vip": None}}, {"attributes": {}}, None),  # absent is not null
    ({"attributes": {"tags": ["a", "b"]}}, {"attributes": {"tags": ["a", "b"]}}, "attribute tags"),
    ({"attributes": {"tags": ["a", "b"]}}, {"attributes": {"tags": ["b", "a"]}}, None),
    # several conditions: all must hold
    ({"clients": ["payroll"], "new_device": True}, {"client_id": "payroll", "device_known": False},
     "new device, client payroll"),
    ({"clients": ["payroll"], "new_device": True}, {"client_id": "payroll", "device_known": True}, None),
    ({"clients": ["payroll"], "new_device": True}, {"client_id": "web", "device_known": False}, None),
    # no conditions: always
    ({}, {}, "no conditions"),
]


@pytest.mark.parametrize("conditions, changes, phrase", CONDITION_CASES)
def test_condition(conditions, changes, phrase):
    decision = evaluate(one_rule(conditions), ctx(**changes))
    if phrase is None:
        assert decision.action == "allow" and decision.rule is None, decision
    else:
        assert decision.action == "deny" and decision.rule == "r", decision
        assert decision.reason.startswith("rule 'r': ") and phrase in decision.reason, decision.reason


PARIS_NIGHT = {"timezone": "Europe/Paris", "from": "22:00", "to": "06:00"}
BUSINESS_HOURS = {"timezone": "Europe/Paris", "from": "09:00", "to": "17:00", "days": ["mon", "tue", "wed", "thu",
                                                                                      "fri"]}

TIME_CASES = [
    # a window across midnight, winter (CET, UTC+1); 2024-01-13 is a Saturday
    (PARIS_NIGHT, "2024-01-13T21:30Z", True),   # Sat 22:30
    (PARIS_NIGHT, "2024-01-13T21:00Z", True),   # Sat 22:00, from is inclusive
    (PARIS_NIGHT, "2024-01-13T20:59Z", False),  # Sat 21:59
    (PARIS_NIGHT, "2024-01-13T12:00Z", False),  # Sat 13:00
    (PARIS_NIGHT, "2024-01-13T23:30Z", True),   # Sun 00:30
    (PARIS_NIGHT, "2024-01-14T04:59Z", True),   # Sun 05:59
    (PARIS_NIGHT, "2024-01-14T05:00Z", False),  # Sun 06:00, to is exclusive
    (PARIS_NIGHT, "2024-01-14T05:30Z", False),  # Sun 06:30 in Paris although 05:30 in UTC
    # summer (CEST, UTC+2): the same UTC instants are an hour later in Paris
    (PARIS_NIGHT, "2024-07-13T20:30Z", True),   # Sat 22:30 CEST (21:30 in winter: out)
    (PARIS_NIGHT, "2024-07-13T19:30Z", False),  # Sat 21:30 CEST
    (PARIS_NIGHT, "2024-07-14T04:30Z", False),  # Sun 06:30 CEST (05:30 in winter: in)
    (PARIS_NIGHT, "2024-07-14T03:30Z", True),   # Sun 05:30 CEST
    # across the spring-forward night (2024-03-31 02:00 CET -> 03:00 CEST)
    (PARIS_NIGHT, "2024-03-30T04:30Z", True),   # Sat 05:30 CET
    (PARIS_NIGHT, "2024-03-31T00:30Z", True),   # Sun 01:30 CET
    (PARIS_NIGHT, "2024-03-31T01:30Z", True),   # Sun 03:30 CEST
    (PARIS_NIGHT, "2024-03-31T03:30Z", True),   # Sun 05:30 CEST
    (PARIS_NIGHT, "2024-03-31T04:30Z", False),  # Sun 06:30 CEST
    # across the fall-back night (2024-10-27 03:00 CEST -> 02:00 CET)
    (PARIS_NIGHT, "2024-10-26T04:30Z", False),  # Sat 06:30 CEST
    (PARIS_NIGHT, "2024-10-27T00:30Z", True),   # Sun 02:30 CEST, the first of two
    (PARIS_NIGHT, "2024-10-27T01:30Z", True),   # Sun 02:30 CET, the second
    (PARIS_NIGHT, "2024-10-27T04:30Z", True),   # Sun 05:30 CET
    (PARIS_NIGHT, "2024-10-27T05:30Z", False),  # Sun 06:30 CET
    # days name the day a window starts
    ({**PARIS_NIGHT, "days": ["fri"]}, "2024-01-12T21:30Z", True),   # Fri 22:30
    ({**PARIS_NIGHT, "days": ["fri"]}, "2024-01-13T02:00Z", True),   # Sat 03:00, from Friday night
    ({**PARIS_NIGHT, "days": ["fri"]}, "2024-01-12T02:00Z", False),  # Fri 03:00, from Thursday night
    ({**PARIS_NIGHT, "days": ["fri"]}, "2024-01-13T21:30Z", False),  # Sat 22:30
    ({**PARIS_NIGHT, "days": ["sat", "sun"]}, "2024-01-14T21:30Z", True),   # Sun 22:30
    ({**PARIS_NIGHT, "days": ["sat", "sun"]}, "2024-01-15T04:00Z", True),   # Mon 05:00, from Sunday night
    ({**PARIS_NIGHT, "days": ["sat", "sun"]}, "2024-01-15T21:30Z", False),  # Mon 22:30
    # a plain window with week days
    (BUSINESS_HOURS, "2024-01-15T08:30Z", True),   # Mon 09:30 CET
    (BUSINESS_HOURS, "2024-01-15T07:30Z", False),  # Mon 08:30 CET
    (BUSINESS_HOURS, "2024-07-15T07:30Z", True),   # Mon 09:30 CEST
    (BUSINESS_HOURS, "2024-07-15T15:30Z", False),  # Mon 17:30 CEST
    (BUSINESS_HOURS, "2024-01-13T10:00Z", False),  # Sat 11:00
    # the local day differs from the UTC day
    ({"timezone": "Pacific/Auckland", "from": "08:00", "to": "12:00", "days": ["mon"]}, "2024-01-14T20:00Z", True),
    ({"timezone": "Pacific/Auckland", "from": "08:00", "to": "12:00", "days": ["sun"]}, "2024-01-14T20:00Z", False),
    ({"timezone": "America/Los_Angeles", "days": ["fri"]}, "2024-01-13T05:00Z", True),   # Fri 21:00 PST
    ({"timezone": "America/Los_Angeles", "days": ["sat"]}, "2024-01-13T05:00Z", False),
    ({"timezone": "Asia/Tokyo", "days": ["sat", "sun"]}, "2024-01-12T16:00Z", True),     # Sat 01:00 JST
    ({"timezone": "Asia/Tokyo", "days": ["sat", "sun"]}, "2024-01-14T15:00Z", False),    # Mon 00:00 JST
    # the default timezone is UTC
    ({"from": "22:00", "to": "06:00"}, "2024-01-14T05:30Z", True),
    ({"from": "22:00", "to": "06:00"}, "2024-01-14T06:00Z", False),
    # YAML reads an unquoted 22:00 as the base-60 number 1320: still 22:00
    ({"timezone": "Europe/Paris", "from": 1320, "to": "06:00"}, "2024-01-13T21:30Z", True),
    ({"timezone": "Europe/Paris", "from": 1320, "to": "06:00"}, "2024-01-13T20:30Z", False),
]


@pytest.mark.parametrize("window, instant, inside", TIME_CASES)
def test_time_condition(window, instant, inside):
    decision = evaluate(one_rule({"time": window}), ctx(now=at(instant)))
    assert (decision.action == "deny") is inside, (instant, decision)
    if inside:
        assert "local time" in decision.reason and window.get("timezone", "UTC") in decision.reason


def test_time_reason_shows_the_local_time():
    decision = evaluate(one_rule({"time": {**PARIS_NIGHT, "days": ["sat"]}}), ctx(now=at("2024-01-13T23:30Z")))
    assert decision.reason == "rule 'r': local time Sun 00:30 Europe/Paris in 22:00-06:00 (sat)"


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf, 1e300, -1e300])
def test_an_impossible_time_is_in_no_window(now):
    assert evaluate(one_rule({"time": PARIS_NIGHT}), ctx(now=now)).action == "allow"
    assert evaluate(one_rule({"time": {"days": list(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}}),
                    ctx(now=now)).action == "allow"


# -- rules: order and precedence --------------------------------------------------------

RULES = [
    {"name": "office-network", "if": {"ip_ranges": ["10.0.0.0/8", "2001:db8::/32"]}, "then": "allow"},
    {"name": "risky-countries", "if": {"countries": ["KP"]}, "then": "deny"},
    {"name": "admins-always", "if": {"groups": ["admins"]}, "then": "require_mfa"},
    {"name": "night", "if": {"time": {"timezone": "Europe/Paris", "from": "22:00", "to": "06:00",
                                      "days": ["sat", "sun"]}}, "then": {"require_acr": "phr"}},
    {"name": "payroll-app", "if": {"clients": ["payroll"], "new_device": True}, "then": "require_mfa"},
]
SATURDAY_NIGHT = at("2024-01-13T23:30Z")

ORDER_CASES = [
    # (context changes, action, acr, deciding rule)
    ({"ip": "10.1.2.3", "country": "KP", "groups": ("admins",), "now": SATURDAY_NIGHT}, "allow", None,
     "office-network"),
    ({"country": "KP", "groups": ("admins",), "now": SATURDAY_NIGHT}, "deny", None, "risky-countries"),
    ({"groups": ("admins",), "now": SATURDAY_NIGHT}, "require_mfa", None, "admins-always"),
    ({"now": SATURDAY_NIGHT, "client_id": "payroll", "device_known": False}, "require_acr", "phr", "night"),
    ({"client_id": "payroll", "device_known": False}, "require_mfa", None, "payroll-app"),
    ({"client_id": "payroll", "device_known": True}, "allow", None, None),  # the global policy: never
]


@pytest.mark.parametrize("changes, action, acr, rule", ORDER_CASES)
def test_the_first_matching_rule_decides(changes, action, acr, rule):
    decision = evaluate(config(RULES, policy="never"), ctx(**changes))
    assert (decision.action, decision.acr, decision.rule) == (action, acr, rule), decision
    if rule:
        assert decision.reason.startswith(f"rule '{rule}': ")


def test_the_same_conditions_twice_the_first_wins():
    rules = [{"name": "a", "if": {"groups": ["x"]}, "then": "deny"},
             {"name": "b", "if": {"groups": ["x"]}, "then": "allow"}]
    assert evaluate(config(rules), ctx(groups=("x",))).rule == "a"
    assert evaluate(config(rules[::-1]), ctx(groups=("x",))).rule == "b"


def test_unnamed_rules_are_named_by_position():
    rules = [{"if": {"groups": ["x"]}, "then": "deny"}, {"if": {}, "then": {"require_acr": "mfa"}}]
    assert evaluate(config(rules), ctx(groups=("x",))).rule == "#1"
    decision = evaluate(config(rules), ctx())
    assert (decision.action, decision.acr, decision.rule) == ("require_acr", "mfa", "#2")
    assert decision.reason == "rule '#2': no conditions, always applies"


PRECEDENCE_CASES = [
    # a rule beats every policy, at every level and in both directions
    ("allow", {"policy": "always"}, {}, "allow"),
    ("allow", {"policy": "never"}, {"client_policy": "always"}, "allow"),
    ("allow", {"policy": "never"}, {"user_policy": "always"}, "allow"),
    ("allow", {"policy": "adaptive"}, {"device_known": False, "recent_failures": 9}, "allow"),
    ("require_mfa", {"policy": "never"}, {}, "require_mfa"),
    ("require_mfa", {"policy": "never"}, {"user_policy": "never", "client_policy": "never"}, "require_mfa"),
    ("deny", {"policy": "always"}, {"user_policy": "never"}, "deny"),
    ({"require_acr": "phr"}, {"policy": "always"}, {}, "require_acr"),
]


@pytest.mark.parametrize("then, top, changes, action", PRECEDENCE_CASES)
def test_rules_take_precedence_over_policies(then, top, changes, action):
    policy = config([{"name": "rule", "if": {"clients": ["web"]}, "then": then}], **top)
    decision = evaluate(policy, ctx(**changes))
    assert decision.action == action and decision.rule == "rule", decision
    assert decision.risk is None
    assert evaluate(policy, ctx(client_id="other", **changes)).rule is None  # without the rule: a policy


# -- policies ---------------------------------------------------------------------------

RISKY = {"device_known": False, "country": "US", "ip": "175.16.199.1"}  # 0.4 + 0.3 + 0.1
CALM: dict = {}

POLICY_CASES = [
    # (global, client, user, context, action, level in the reason)
    ("never", None, None, RISKY, "allow", "never policy (global)"),
    ("always", None, None, CALM, "require_mfa", "always policy (global)"),
    ("adaptive", None, None, RISKY, "require_mfa", "adaptive policy (global)"),
    ("adaptive", None, None, CALM, "allow", "adaptive policy (global)"),
    # the client's policy beats the global one
    ("never", "always", None, CALM, "require_mfa", "always policy (client 'web')"),
    ("always", "never", None, RISKY, "allow", "never policy (client 'web')"),
    ("never", "adaptive", None, RISKY, "require_mfa", "adaptive policy (client 'web')"),
    ("always", "adaptive", None, CALM, "allow", "adaptive policy (client 'web')"),
    # the user's policy beats both
    ("always", "always", "never", RISKY, "allow", "never policy (user)"),
    ("never", "never", "always", CALM, "require_mfa", "always policy (user)"),
    ("never", "never", "adaptive", RISKY, "require_mfa", "adaptive policy (user)"),
    ("always", "always", "adaptive", CALM, "allow", "adaptive policy (user)"),
    ("never", "always", "ALWAYS ", CALM, "require_mfa", "always policy (user)"),  # case and spaces
    # unset levels fall through
    ("always", None, "", CALM, "require_mfa", "always policy (global)"),
    ("never", "always", "  ", CALM, "require_mfa", "always policy (client 'web')"),
    # a broken per-user value must not lower protection
    ("never", "never", "sometimes", CALM, "require_mfa", "always policy (user, unrecognised value 'sometimes')"),
    ("never", None, 3, CALM, "require_mfa", "always policy (user, unrecognised value 3)"),
    ("never", "nope", None, CALM, "require_mfa", "always policy (client 'web', unrecognised value 'nope')"),
]


@pytest.mark.parametrize("top, client, user, changes, action, level", POLICY_CASES)
def test_policy_levels(top, client, user, changes, action, level):
    decision = evaluate(config(policy=top), ctx(client_policy=client, user_policy=user, **changes))
    assert decision.action == action, decision
    assert decision.reason.startswith(level + ")") or decision.reason.startswith(level), decision.reason
    assert decision.rule is None and decision.acr is None
    assert (decision.risk is not None) == decision.reason.startswith("adaptive"), decision


def test_policy_reasons():
    assert evaluate(config(policy="never"), ctx()).reason == "never policy (global): MFA not required"
    assert evaluate(config(policy="always"), ctx()).reason == "always policy (global): MFA required"


ADAPTIVE_CASES = [
    # (threshold, context changes, action, risk, reason fragment)
    (0.5, {}, "allow", 0.0, "risk 0 < 0.5 (no risk signals)"),
    (0.5, {"device_known": False}, "allow", 0.4, "risk 0.4 < 0.5 (new device +0.4)"),
    (0.5, {"device_known": False, "ip": "81.2.69.1"}, "require_mfa", 0.5,
     "risk 0.5 >= 0.5 (new device +0.4, new ip 81.2.69.1 (last 81.2.69.142) +0.1): low confidence"),
    (0.5, {"device_known": False, "country": "FR"}, "require_mfa", 0.7,
     "risk 0.7 >= 0.5 (new device +0.4, new country FR (last GB) +0.3)"),
    (0.3, {"device_known": False}, "require_mfa", 0.4, "risk 0.4 >= 0.3"),
    (0.8, {"device_known": False, "country": "FR"}, "allow", 0.7, "risk 0.7 < 0.8"),
    (0.5, {"recent_failures": 2}, "allow", 0.2, "(2 recent failures +0.2)"),
    (0.5, {"recent_failures": 9}, "allow", 0.3, "(9 recent failures +0.3)"),  # capped
    (0.5, {"recent_failures": 2, "ip": "81.2.69.1", "country": "FR"}, "require_mfa", 0.6, "risk 0.6 >= 0.5"),
    (0.5, {"latitude": NEW_YORK[0], "longitude": NEW_YORK[1], "previous": PreviousLogin(
        at=T0 - 3600, ip="81.2.69.142", country="GB", latitude=LONDON[0], longitude=LONDON[1])},
     "require_mfa", 0.6, "impossible travel 5570 km at 5570 km/h +0.6"),
    (1.0, {"device_known": False, "country": "US", "ip": "1.1.1.1", "recent_failures": 5,
           "latitude": NEW_YORK[0], "longitude": NEW_YORK[1]}, "require_mfa", 1.0, "risk 1 >= 1"),  # capped at 1
    (0.5, {"device_known": False, "previous": None}, "allow", 0.4, "(new device +0.4)"),  # a first login
]


@pytest.mark.parametrize("threshold, changes, action, risk, fragment", ADAPTIVE_CASES)
def test_adaptive_threshold(threshold, changes, action, risk, fragment):
    decision = evaluate(config(policy="adaptive", adaptive={"threshold": threshold}), ctx(**changes))
    assert decision.action == action, decision
    assert decision.risk == pytest.approx(risk), decision
    assert decision.reason.startswith("adaptive policy (global): risk ")
    assert fragment in decision.reason, decision.reason
    assert decision.reason.endswith("MFA required" if action == "require_mfa" else "MFA not required")


def test_adaptive_weights_come_from_the_config():
    policy = config(policy="adaptive", adaptive={"threshold": 0.5, "weights": {"new_device": 0.9}})
    decision = evaluate(policy, ctx(device_known=False))
    assert (decision.action, decision.risk) == ("require_mfa", 0.9)
    assert "new device +0.9" in decision.reason
    silent = config(policy="adaptive", adaptive={"weights": {"new_device": 0}})
    assert evaluate(silent, ctx(device_known=False)).reason.endswith("(no risk signals): MFA not required")


# -- decisions and contexts as data ------------------------------------------------------

def test_context_and_decision_round_trip_through_json():
    context = ctx(groups=["admins"], attributes={"department": "finance", "tags": ["a"]}, user_policy="adaptive",
                  client_policy="always", device_known=False, recent_failures=2)
    assert context.groups == ("admins",)  # a list from a JSON column becomes the documented tuple
    data = json.loads(json.dumps(context.to_dict()))
    assert LoginContext.from_dict(data) == context
    assert data["previous"] == {"at": T0 - 86400, "ip": "81.2.69.142", "country": "GB",
                                "latitude": LONDON[0], "longitude": LONDON[1]}
    assert LoginContext.from_dict(json.loads(json.dumps(ctx(previous=None).to_dict()))).previous is None

    decision = evaluate(config(RULES), ctx(now=SATURDAY_NIGHT))
    assert Decision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision
    assert decision.to_dict() == {"action": "require_acr", "acr": "phr", "rule": "night", "risk": None,
                                  "reason": decision.reason}


def test_from_dict_tolerates_older_records_and_refuses_broken_ones():
    context = LoginContext.from_dict({"client_id": "web", "now": 5})
    assert (context.groups, context.attributes, context.previous, context.device_known) == ((), {}, None, False)
    for broken in ({"now": 5}, {"client_id": "web"}, [], {"client_id": "web", "now": "later"}):
        with pytest.raises((ValueError, TypeError)):
            LoginContext.from_dict(broken)
    for broken in ({}, {"action": "maybe"}, None):
        with pytest.raises(ValueError):
            Decision.from_dict(broken)


# -- never raises ---------------------------------------------------------------------

RULE_POOL = RULES + [
    {"if": {"not_ip_ranges": ["10.0.0.0/8"], "not_countries": ["FR"]}, "then": "require_mfa"},
    {"if": {"attributes": {"vip": True, "tags": ["a"]}}, "then": {"require_acr": "phr"}},
    {"if": {"time": {"timezone": "Pacific/Chatham", "days": ["mon"]}, "new_device": False}, "then": "allow"},
    {"if": {"time": {"from": "00:00", "to": "23:59"}}, "then": "deny"},
]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=8)
maybe_text = st.none() | st.text(max_size=12)
ips = st.none() | st.text(max_size=40) | st.ip_addresses().map(str)
countries = st.none() | st.text(max_size=3) | st.sampled_from(["GB", "KP", "FR", "gb", ""])
numbers = st.none() | st.floats() | st.integers(min_value=-10**20, max_value=10**20)
policies = st.none() | st.sampled_from(["never", "adaptive", "always", "", "ALWAYS", "bogus"]) | st.integers()
previous_logins = st.none() | st.builds(PreviousLogin, at=st.floats() | st.integers(), ip=ips, country=countries,
                                        latitude=numbers, longitude=numbers)
contexts = st.builds(
    LoginContext, user_id=maybe_text, username=maybe_text,
    groups=st.lists(st.sampled_from(["admins", "ops", ""]) | st.text(max_size=5), max_size=3).map(tuple),
    attributes=st.dictionaries(st.sampled_from(["vip", "tags", "mfa_policy"]) | st.text(max_size=4), json_values,
                               max_size=4),
    user_policy=policies, client_id=st.sampled_from(["web", "payroll", ""]) | st.text(max_size=8),
    client_policy=policies, ip=ips, country=countries, latitude=numbers, longitude=numbers,
    now=st.floats() | st.integers(min_value=-10**20, max_value=10**20) | st.just(SATURDAY_NIGHT),
    device_known=st.booleans(), recent_failures=st.integers(min_value=-5, max_value=10**9),
    previous=previous_logins,
)
configs = st.builds(
    lambda rules, top, threshold: config(rules, policy=top, adaptive={"threshold": threshold}),
    st.lists(st.sampled_from(RULE_POOL), max_size=6, unique_by=lambda rule: json.dumps(rule, sort_keys=True)),
    st.sampled_from(["never", "adaptive", "always"]),
    st.floats(min_value=0.01, max_value=1),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=configs, context=contexts)
def test_evaluate_never_raises_and_always_decides(policy, context):
    decision = evaluate(policy, context)
    assert decision.action in ACTIONS
    assert decision.reason
    assert (decision.acr is not None) == (decision.action == "require_acr")
    assert (decision.rule is not None) == decision.reason.startswith("rule ")
    if decision.risk is not None:
        assert 0 <= decision.risk <= 1
    json.dumps(decision.to_dict())
