"""The MFA policy from `config/policy.yaml`: a global policy, adaptive weights, ordered rules.

Policies (never / adaptive / always) say when a login needs a second factor; rules are
exceptions written as data and take precedence over every policy (the first rule whose
conditions all hold decides). `config/policy.yaml` documents every key; this module
validates the file and names the file, the rule (by its name, or #index) and the field
of the first problem. Evaluation is `oidc_provider.authn.policy.evaluate`.
"""

from __future__ import annotations

import ipaddress
from datetime import time
from pathlib import Path
from typing import Annotated, Literal, Union
from zoneinfo import ZoneInfo

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .provider import ConfigError, Strict, read_yaml

PolicyName = Literal["never", "adaptive", "always"]
POLICY_NAMES = ("never", "adaptive", "always")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Weight = Annotated[float, Field(ge=0, le=1)]


class RiskWeights(Strict):
    """What each risk signal adds to the score (0..1); the score is capped at 1."""

    new_device: Weight = 0.4  # this browser's device cookie was never seen for this user
    new_country: Weight = 0.3  # the country differs from the last successful login's
    new_ip: Weight = 0.1  # the IP address differs from the last successful login's
    impossible_travel: Weight = 0.6  # too far from the last login for the time elapsed
    recent_failure: Weight = 0.1  # per failed factor attempt in the last hour ...
    recent_failures_cap: Weight = 0.3  # ... but never more than this in total


class Adaptive(Strict):
    """The adaptive policy: MFA when the risk score reaches the threshold."""

    threshold: float = Field(0.5, gt=0, le=1)
    weights: RiskWeights = RiskWeights()
    max_speed_kmh: float = Field(1000, gt=0)  # faster than an airliner: impossible travel
    # GeoIP coordinates are approximate (often tens of km, up to hundreds): shorter jumps
    # between two logins are noise and never count as travel.
    min_distance_km: float = Field(100, ge=0)


# -- conditions -------------------------------------------------------------------------

def _network(value):
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r}: expected a CIDR string such as 10.0.0.0/8 or 2001:db8::/32")
    try:
        # strict: "10.1.2.3/8" is most likely a typo, so it is refused rather than widened
        return ipaddress.ip_network(value.strip())
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR network ({exc})") from None


def _country(value):
    if isinstance(value, bool):  # YAML 1.1 reads NO (Norway) unquoted as false
        raise ValueError(f"got {str(value).lower()}: quote country codes, e.g. \"NO\" "
                         "(YAML reads NO unquoted as false)")
    if not isinstance(value, str) or len(value.strip()) != 2 or not value.strip().isalpha():
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code such as FR")
    return value.strip().upper()


def _clock(value):
    """"HH:MM" local time. YAML 1.1 reads an unquoted 22:00 as the number 1320 (base 60)."""
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 60 <= value < 24 * 60:
        return time(value // 60, value % 60)
    if isinstance(value, str):
        hours, sep, minutes = value.strip().partition(":")
        if sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2 \
                and int(hours) < 24 and int(minutes) < 60:
            return time(int(hours), int(minutes))
    raise ValueError(f"{value!r}: expected a time \"HH:MM\" from \"00:00\" to \"23:59\" (quote it)")


_DAY_NAMES = {name: name[:3] for name in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                                          "sunday")} | {day: day for day in DAYS}


class TimeWindow(Strict):
    """Local wall-clock time in a timezone; `from`-`to` may wrap midnight.

    `days` name the day a window *starts*: with 22:00-06:00 and [fri], Saturday 03:00
    matches and Friday 03:00 does not.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    timezone: str = "UTC"  # an IANA zone (zoneinfo), e.g. Europe/Paris; DST is followed
    start: time | None = Field(None, alias="from")  # inclusive; None with `to` None: all day
    end: time | None = Field(None, alias="to")  # exclusive
    days: list[Literal[DAYS]] | None = None  # type: ignore[valid-type]  # None: every day

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError, OSError
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Europe/Paris") from None
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _times(cls, value):
        return None if value is None else _clock(value)

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value):
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            value = [_DAY_NAMES.get(day.strip().lower(), day) if isinstance(day, str) else day for day in value]
            if not value:
                raise ValueError("an empty list never matches; leave days out for every day")
        return value

    @model_validator(mode="after")
    def _window(self):
        if (self.start is None) != (self.end is None):
            raise ValueError("from and to: give both, or neither for the whole day")
        if self.start is not None and self.start == self.end:
            raise ValueError("from and to: equal times make an empty window; leave both out for the whole day")
        if self.start is None and self.days is None:
            raise ValueError("from/to or days: a time condition needs at least one")
        return self


_ITEM_CONVERTERS = {"ip_ranges": _network, "not_ip_ranges": _network, "countries": _country,
                    "not_countries": _country}


class Conditions(Strict):
    """All the given conditions must hold; an empty `if: {}` always holds.

    Unknown data (no IP, no GeoIP country) is never inside a list: `ip_ranges` and
    `countries` then fail, `not_ip_ranges` and `not_countries` then hold.
    """

    ip_ranges: list[Network] | None = None  # the IP is in one of these CIDR networks
    not_ip_ranges: list[Network] | None = None  # the IP is in none of them
    countries: list[str] | None = None  # the GeoIP country is one of these (ISO alpha-2)
    not_countries: list[str] | None = None  # the GeoIP country is none of these
    time: TimeWindow | None = None  # the local time is in this window
    new_device: bool | None = None  # true: an unknown browser; false: a known one
    clients: list[str] | None = None  # the client_id is one of these
    groups: list[str] | None = None  # the user is in any of these groups
    attributes: dict[str, object] | None = None  # every user attribute equals its value

    @field_validator("ip_ranges", "not_ip_ranges", "countries", "not_countries", "clients", "groups",
                     mode="before")
    @classmethod
    def _lists(cls, value, info: ValidationInfo):
        if isinstance(value, str):  # a single value for a list
            value = [value]
        if not isinstance(value, list):
            return value  # pydantic says what is wrong
        if not value:
            raise ValueError("an empty list is most likely a mistake; leave the condition out")
        convert = _ITEM_CONVERTERS.get(info.field_name)
        return [convert(item) for item in value] if convert else value

    @field_validator("attributes")
    @classmethod
    def _some_attributes(cls, value):
        if value is not None and not value:
            raise ValueError("an empty mapping is most likely a mistake; leave the condition out")
        return value


# -- actions ----------------------------------------------------------------------------

class RequireAcr(Strict):
    require_acr: str = Field(min_length=1)  # an acr value the login must reach (step-up)


ActionName = Literal["allow", "deny", "require_mfa"]


class Rule(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = Field(None, min_length=1)  # shown in reasons and errors; None: #index
    conditions: Conditions = Field(alias="if")
    then: ActionName | RequireAcr

    @field_validator("then", mode="before")
    @classmethod
    def _action(cls, value):
        if value in ("allow", "deny", "require_mfa"):
            return value
        if isinstance(value, dict) and set(value) == {"require_acr"}:
            acr = value["require_acr"]
            if not isinstance(acr, str) or not acr.strip():
                raise ValueError(f"require_acr: {acr!r} is not an acr value such as phr")
            return RequireAcr(require_acr=acr.strip())
        raise ValueError(f"{value!r}: expected allow, deny, require_mfa or {{require_acr: VALUE}}")


class PolicyConfig(Strict):
    policy: PolicyName = "never"  # the global policy, when no rule matches and no user/client policy
    adaptive: Adaptive = Adaptive()
    geoip_database: str | None = None  # MaxMind .mmdb (country or city); relative: from the base dir
    rules: list[Rule] = []  # in order; the first rule whose conditions all hold decides

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_name(cls, value):
        return value.strip().lower() if isinstance(value, str) else value


def rule_label(rule: Rule, index: int) -> str:
    """How reasons and errors name a rule: its name, or its position from 1 ("#3")."""
    return rule.name or f"#{index + 1}"


def parse_policy(data: dict, source: str = "policy") -> PolicyConfig:
    """Validate already-loaded data; errors name `source`, the rule and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = PolicyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(source, data, exc)) from None
    seen: set[str] = set()
    for rule in config.rules:
        if rule.name is not None:
            if rule.name in seen:
                raise ConfigError(f"{source}: rule '{rule.name}': field 'name': defined twice")
            seen.add(rule.name)
    return config


def load_policy(path: str | Path, missing_ok: bool = False) -> PolicyConfig:
    """Read and validate a policy file; `missing_ok`: no file means the defaults (policy never)."""
    path = Path(path)
    if missing_ok and not path.exists():
        return PolicyConfig()
    return parse_policy(read_yaml(path), str(path))


def _describe(source: str, data: dict, error: ValidationError) -> str:
    first = error.errors()[0]
    loc = list(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    where = ""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        index = loc[1]
        raw = data.get("rules")
        raw_rule = raw[index] if isinstance(raw, list) and index < len(raw) else None
        name = raw_rule.get("name") if isinstance(raw_rule, dict) else None
        where = f"rule '{name if isinstance(name, str) and name else f'#{index + 1}'}': "
        loc = loc[2:]
    # union members and tagged choices add noise such as "literal['allow',...]" to the path
    field = ".".join(str(part) for part in loc if not _is_type_tag(part))
    if not field and where:  # the rule itself is not a mapping
        return f"{source}: {where}expected a mapping with name, if and then"
    return f"{source}: {where}field '{field or '?'}': {message}"


def _is_type_tag(part) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("RequireAcr", "IPv4Network", "IPv6Network",
                                                              "function-after", "function-before"))
