"""The MFA policy: does this login need a second factor? A pure function over plain data.

`evaluate(config, context)` looks at the rules of `config/policy.yaml` in order; the
first rule whose conditions all hold decides (rules take precedence over policies, as
in Auth0's model). Without a matching rule the policy decides, the most specific one
set: the user's, else the client's, else the global one. `never` allows, `always`
requires MFA, `adaptive` requires it when the risk score (risk.py) reaches the
threshold, that is when the login is of low confidence.

No Flask, no database, no clock, no GeoIP here: the caller gathers everything in a
LoginContext (which round-trips through JSON, so decisions can be recorded and replayed
with `oidc-provider policy simulate`). Every Decision says why in `reason`.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from ..settings.policy import DAYS, POLICY_NAMES, Conditions, PolicyConfig, RequireAcr, Rule, TimeWindow, rule_label
from .risk import risk_score, travel

Action = Literal["allow", "require_mfa", "deny", "require_acr"]
ACTIONS = ("allow", "require_mfa", "deny", "require_acr")


@dataclass(frozen=True)
class PreviousLogin:
    """The user's last successful login, as recorded then (GeoIP data of that time)."""

    at: float  # epoch seconds
    ip: str | None
    country: str | None  # ISO 3166-1 alpha-2
    latitude: float | None = None
    longitude: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> PreviousLogin:
        if not isinstance(d, Mapping) or "at" not in d:
            raise ValueError("a previous login needs at least 'at'")
        return cls(at=float(d["at"]), ip=d.get("ip"), country=d.get("country"),
                   latitude=d.get("latitude"), longitude=d.get("longitude"))


@dataclass(frozen=True)
class LoginContext:
    """Everything the policy may look at, gathered by the caller (the login flow, the CLI)."""

    user_id: str | None
    username: str | None
    groups: tuple[str, ...]
    attributes: dict  # user attributes (plain JSON)
    user_policy: str | None  # "never" | "adaptive" | "always" | None: the client's
    client_id: str
    client_policy: str | None  # None: the global policy
    ip: str | None
    country: str | None  # ISO 3166-1 alpha-2 from GeoIP; None: unknown
    latitude: float | None
    longitude: float | None
    now: float  # epoch seconds (UTC)
    device_known: bool  # this browser's device cookie was seen before for this user
    recent_failures: int  # failed factor attempts for this account in the last hour
    previous: PreviousLogin | None  # the user's last successful login

    def __post_init__(self):
        # callers hand over JSON columns (lists, None); keep the documented shapes
        if not isinstance(self.groups, tuple):
            object.__setattr__(self, "groups", tuple(self.groups or ()))
        if not isinstance(self.attributes, dict):
            object.__setattr__(self, "attributes", dict(self.attributes or {}))

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["groups"] = list(self.groups)
        data["attributes"] = dict(self.attributes)
        data["previous"] = self.previous.to_dict() if self.previous else None
        return data

    @classmethod
    def from_dict(cls, d: Mapping) -> LoginContext:
        """The inverse of to_dict; tolerant of missing optional keys (older records)."""
        if not isinstance(d, Mapping):
            raise ValueError("a login context must be a mapping")
        missing = [key for key in ("client_id", "now") if key not in d]
        if missing:
            raise ValueError(f"a login context needs {', '.join(missing)}")
        previous = d.get("previous")
        return cls(
            user_id=d.get("user_id"), username=d.get("username"), groups=tuple(d.get("groups") or ()),
            attributes=dict(d.get("attributes") or {}), user_policy=d.get("user_policy"),
            client_id=d["client_id"], client_policy=d.get("client_policy"), ip=d.get("ip"),
            country=d.get("country"), latitude=d.get("latitude"), longitude=d.get("longitude"),
            now=float(d["now"]), device_known=bool(d.get("device_known", False)),
            recent_failures=int(d.get("recent_failures") or 0),
            previous=PreviousLogin.from_dict(previous) if previous else None,
        )


@dataclass(frozen=True)
class Decision:
    action: Action
    acr: str | None  # with require_acr: the acr value the login must reach
    reason: str  # for people: the rule or policy, and what made it decide
    rule: str | None  # the deciding rule's name (or "#index"); None: a policy decided
    risk: float | None  # the adaptive policy's score; None when it did not decide

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> Decision:
        if not isinstance(d, Mapping) or d.get("action") not in ACTIONS:
            raise ValueError(f"a decision needs an action, one of {', '.join(ACTIONS)}")
        risk = d.get("risk")
        return cls(action=d["action"], acr=d.get("acr"), reason=str(d.get("reason", "")), rule=d.get("rule"),
                   risk=float(risk) if risk is not None else None)


def evaluate(policy_config: PolicyConfig, context: LoginContext) -> Decision:
    """The decision for this login: the first matching rule, else the applicable policy."""
    for index, rule in enumerate(policy_config.rules):
        why = matches(rule.conditions, context)
        if why is not None:
            return _rule_decision(rule, index, why)
    return _policy_decision(policy_config, context)


# -- rules ------------------------------------------------------------------------------

def _rule_decision(rule: Rule, index: int, why: list[str]) -> Decision:
    label = rule_label(rule, index)
    reason = f"rule '{label}': {', '.join(why) if why else 'no conditions, always applies'}"
    if isinstance(rule.then, RequireAcr):
        return Decision("require_acr", rule.then.require_acr, reason, label, None)
    return Decision(rule.then, None, reason, label, None)


def matches(conditions: Conditions, context: LoginContext) -> list[str] | None:
    """Why every condition holds (one phrase each), or None as soon as one does not."""
    why: list[str] = []
    for check in _CHECKS:
        phrase = check(conditions, context)
        if phrase is False:
            return None
        if phrase:
            why.append(phrase)
    return why


def _address(ip) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(ip, str) or not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:  # ::ffff:10.1.2.3 from a dual-stack socket
        return address.ipv4_mapped
    return address


def _ip_ranges(conditions: Conditions, context: LoginContext):
    if conditions.ip_ranges is None:
        return None
    address = _address(context.ip)
    for network in conditions.ip_ranges if address else ():
        if address in network:
            return f"ip {address} in {network}"
    return False


def _not_ip_ranges(conditions: Conditions, context: LoginContext):
    if conditions.not_ip_ranges is None:
        return None
    address = _address(context.ip)
    if address is not None and any(address in network for network in conditions.not_ip_ranges):
        return False
    shown = ", ".join(str(network) for network in conditions.not_ip_ranges)
    return f"ip {address or 'unknown'} not in {shown}"


def _country(context: LoginContext) -> str | None:
    country = context.country
    return country.strip().upper() if isinstance(country, str) and country.strip() else None


def _countries(conditions: Conditions, context: LoginContext):
    if conditions.countries is None:
        return None
    country = _country(context)
    return f"country {country} in {', '.join(conditions.countries)}" if country in conditions.countries else False


def _not_countries(conditions: Conditions, context: LoginContext):
    if conditions.not_countries is None:
        return None
    country = _country(context)
    if country is not None and country in conditions.not_countries:
        return False
    return f"country {country or 'unknown'} not in {', '.join(conditions.not_countries)}"


def local_time_in(window: TimeWindow, now: float) -> str | None:
    """Why `now` falls in the window (local wall clock of its timezone), or None."""
    try:
        local = datetime.fromtimestamp(now, ZoneInfo(window.timezone))
    except Exception:  # noqa: BLE001 - NaN, out-of-range or non-numeric time: not in any window
        return None
    clock, weekday = local.time(), local.weekday()
    start, end = window.start, window.end
    if start is None:
        start_day = weekday
    elif start < end:
        if not start <= clock < end:
            return None
        start_day = weekday
    elif clock >= start:  # a window across midnight, evening part
        start_day = weekday
    elif clock < end:  # ... morning part: it started the day before
        start_day = (weekday - 1) % 7
    else:
        return None
    if window.days is not None and DAYS[start_day] not in window.days:
        return None
    span = f" in {start:%H:%M}-{end:%H:%M}" if start is not None else ""
    days = f" ({', '.join(window.days)})" if window.days is not None else ""
    return f"local time {DAYS[weekday].capitalize()} {clock:%H:%M} {window.timezone}{span}{days}"


def _time(conditions: Conditions, context: LoginContext):
    if conditions.time is None:
        return None
    return local_time_in(conditions.time, context.now) or False


def _new_device(conditions: Conditions, context: LoginContext):
    if conditions.new_device is None:
        return None
    is_new = not context.device_known
    if is_new != conditions.new_device:
        return False
    return "new device" if is_new else "known device"


def _clients(conditions: Conditions, context: LoginContext):
    if conditions.clients is None:
        return None
    return f"client {context.client_id}" if context.client_id in conditions.clients else False


def _groups(conditions: Conditions, context: LoginContext):
    if conditions.groups is None:
        return None
    member = [group for group in conditions.groups if group in context.groups]
    return f"group {member[0]}" if member else False


_ABSENT = object()


def _same(a, b) -> bool:
    """JSON equality: true is not 1, [1] equals (1,)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple, Mapping)) or isinstance(b, (list, tuple, Mapping)):
        return False
    return a == b


def _attributes(conditions: Conditions, context: LoginContext):
    if conditions.attributes is None:
        return None
    attributes = context.attributes if isinstance(context.attributes, Mapping) else {}
    for key, wanted in conditions.attributes.items():
        if not _same(attributes.get(key, _ABSENT), wanted):
            return False
    return ", ".join(f"attribute {key} = {value!r}" for key, value in conditions.attributes.items())


# The order in which conditions are checked and explained.
_CHECKS = (_ip_ranges, _not_ip_ranges, _countries, _not_countries, _time, _new_device, _clients, _groups,
           _attributes)


# -- policies ---------------------------------------------------------------------------

def applicable_policy(config: PolicyConfig, context: LoginContext) -> tuple[str, str, str | None]:
    """(policy, level, note): the user's, else the client's, else the global policy.

    A value that is not never/adaptive/always (a typo in a user attribute) is treated as
    `always`: a broken setting must not silently lower protection.
    """
    for level, value in (("user", context.user_policy), (f"client '{context.client_id}'", context.client_policy)):
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        name = value.strip().lower() if isinstance(value, str) else None
        if name in POLICY_NAMES:
            return name, level, None
        return "always", level, f"unrecognised value {value!r}"
    return config.policy, "global", None


_LABELS = {"new_device": "new device", "new_country": "new country", "new_ip": "new ip",
           "impossible_travel": "impossible travel", "recent_failures": "recent failures"}


def _num(value: float) -> str:
    return f"{round(value, 3):g}"


def _signal_label(signal: str, context: LoginContext) -> str:
    previous = context.previous
    if signal == "new_country" and previous is not None:
        return f"new country {context.country} (last {previous.country})"
    if signal == "new_ip" and previous is not None:
        return f"new ip {context.ip} (last {previous.ip})"
    if signal == "impossible_travel":
        moved = travel(context)
        if moved is not None:
            speed = "at once" if math.isinf(moved[1]) else f"at {moved[1]:.0f} km/h"
            return f"impossible travel {moved[0]:.0f} km {speed}"
    if signal == "recent_failures":
        count = context.recent_failures
        return f"{count} recent failure{'' if count == 1 else 's'}"
    return _LABELS.get(signal, signal)


def _policy_decision(config: PolicyConfig, context: LoginContext) -> Decision:
    policy, level, note = applicable_policy(config, context)
    where = f"{level}, {note}" if note else level
    if policy == "never":
        return Decision("allow", None, f"never policy ({where}): MFA not required", None, None)
    if policy == "always":
        return Decision("require_mfa", None, f"always policy ({where}): MFA required", None, None)
    adaptive = config.adaptive
    score, fired = risk_score(context, adaptive.weights, max_speed_kmh=adaptive.max_speed_kmh,
                              min_distance_km=adaptive.min_distance_km)
    factors = ", ".join(f"{_signal_label(signal, context)} +{_num(part)}" for signal, part in fired)
    factors = factors or "no risk signals"
    if score >= adaptive.threshold:
        reason = (f"adaptive policy ({where}): risk {_num(score)} >= {_num(adaptive.threshold)} ({factors}): "
                  "low confidence, MFA required")
        return Decision("require_mfa", None, reason, None, score)
    reason = f"adaptive policy ({where}): risk {_num(score)} < {_num(adaptive.threshold)} ({factors}): MFA not required"
    return Decision("allow", None, reason, None, score)
