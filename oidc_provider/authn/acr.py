"""acr and amr: pure functions over plain data (no Flask, no I/O).

Levels come from the `acr:` settings block (weakest first). A request names a level
with `acr_values` (OIDC Core 3.1.2.1), the `claims` parameter (5.5.1.1) or Transmit's
`require_mfa`; `urn:<ns>:<idp>_direct` is not a level but the upstream provider to start
with. When several levels are asked for the highest-ranked one wins, never the weakest.

A level is met by its own rules, not by its rank: the factors that count for it (not
forbidden, done within its max_age) must span `flows` distinct flows, include one of
its `required_factors` when it names some, and start with one of its `first_factors`
when it names those. `achieved_acr` never claims a level whose rules the factors do
not meet; what it claims otherwise is the configured single-factor acr (None: omitted).

amr vocabularies (RFC 8176 section 2 lets parties agree on values; 'mfa' is added to
both when two distinct flows were done):

    factor             transmit   rfc8176
    password           pwd        pwd
    email-otp          eml        otp            the code is a one-time password
    email (magic link) eml        eml            no registered value fits (see below)
    sms                sms        sms, otp
    voice              tel        tel, otp
    totp               otp        otp
    webauthn-key       webauthn   hwk
    webauthn-platform  webauthn   hwk, user      user verification is required
    passkey            webauthn   hwk
    recovery-code      rcv        kba            RFC 8176 has nothing closer
    push               push       swk            the approving device signs with its key
    (upstream OIDC)    fed        fed

A magic link proves control of a mailbox through a single-use link. RFC 8176 registers
no email method, and `otp` promises a one-time password the user enters (its
references are HOTP and TOTP), so claiming it would say more than happened; leaving
the factor out would hide it. We keep the Transmit name `eml`, an unregistered value
RFC 8176 section 2 allows by agreement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MFA = "mfa"

# Factor id -> amr values, per vocabulary. A factor id not listed here falls back to the
# Transmit name it carries itself (FactorUse.amr), translated through AMR_TO_RFC8176.
TRANSMIT_AMR: dict[str, tuple[str, ...]] = {
    "password": ("pwd",),
    "email-otp": ("eml",),
    "email": ("eml",),
    "sms": ("sms",),
    "voice": ("tel",),
    "totp": ("otp",),
    "webauthn-key": ("webauthn",),
    "webauthn-platform": ("webauthn",),
    "passkey": ("webauthn",),
    "recovery-code": ("rcv",),
    "push": ("push",),
}
RFC8176_AMR: dict[str, tuple[str, ...]] = {
    "password": ("pwd",),
    "email-otp": ("otp",),
    "email": ("eml",),
    "sms": ("sms", "otp"),
    "voice": ("tel", "otp"),
    "totp": ("otp",),
    "webauthn-key": ("hwk",),
    "webauthn-platform": ("hwk", "user"),
    "passkey": ("hwk",),
    "recovery-code": ("kba",),
    "push": ("swk",),
}
AMR_TO_RFC8176: dict[str, tuple[str, ...]] = {
    "pwd": ("pwd",), "eml": ("eml",), "sms": ("sms", "otp"), "tel": ("tel", "otp"), "otp": ("otp",),
    "webauthn": ("hwk",), "rcv": ("kba",), "push": ("swk",), "fed": ("fed",),
}
VOCABULARIES = {"transmit": TRANSMIT_AMR, "rfc8176": RFC8176_AMR}

# urn:<ns>:<idp>_direct, e.g. urn:transmit:google_direct: start with that upstream provider.
UPSTREAM = re.compile(r"urn:[A-Za-z0-9][A-Za-z0-9.-]*:([A-Za-z0-9][A-Za-z0-9._-]*)_direct")


@dataclass(frozen=True)
class Level:
    value: str  # the acr value
    rank: int  # position in the settings, weakest first
    flows: int  # distinct factor flows required
    required_factors: frozenset[str]  # at least one of these; empty: any
    forbidden_factors: frozenset[str]  # never count
    first_factors: frozenset[str] | None  # a login must start with one of these; None: any
    max_age: int | None  # seconds; older factors no longer count for this level


@dataclass(frozen=True)
class AcrRequest:
    level: Level | None  # the highest known level requested (acr_values, claims, require_mfa)
    essential: bool  # claims id_token.acr.essential: unmet is an error, not a weaker token
    upstream: str | None  # "google" from urn:transmit:google_direct
    requested: tuple[str, ...]  # the acr values as asked, each once, in order


class AcrRequestError(ValueError):
    """The request's acr part is malformed; the message is safe for error_description."""


def levels_from_settings(acr_settings) -> list[Level]:
    """The `acr:` settings block (oidc_provider.settings.provider.Acr) as Levels."""
    return [
        Level(
            value=level.value,
            rank=rank,
            flows=level.flows,
            required_factors=frozenset(level.required_factors),
            forbidden_factors=frozenset(level.forbidden_factors),
            first_factors=None if level.first_factors is None else frozenset(level.first_factors),
            max_age=level.max_age,
        )
        for rank, level in enumerate(acr_settings.levels)
    ]


# -- the request ------------------------------------------------------------------------------

def _acr_values(acr_values) -> list[str]:
    if acr_values is None:
        return []
    if isinstance(acr_values, str):
        return acr_values.split()  # OIDC Core 3.1.2.1: space-separated, in order of preference
    if isinstance(acr_values, (list, tuple)) and all(isinstance(value, str) for value in acr_values):
        return [part for value in acr_values for part in value.split()]  # a JSON body may send a list
    raise AcrRequestError("acr_values must be a space-separated string.")


def _require_mfa(require_mfa) -> bool:
    """Transmit's flag: `"require_mfa": true` in JSON, `require_mfa=true` in a query."""
    if require_mfa is None or isinstance(require_mfa, bool):
        return bool(require_mfa)
    if isinstance(require_mfa, str) and require_mfa.strip().lower() in ("true", "false", ""):
        return require_mfa.strip().lower() == "true"
    raise AcrRequestError("require_mfa must be true or false.")


def _claims_acr(claims) -> tuple[list[str], bool]:
    """OIDC Core 5.5.1.1: the values and essential flag of claims.id_token.acr."""
    if claims is None or claims == "":
        return [], False
    if isinstance(claims, (str, bytes)):
        try:
            claims = json.loads(claims)
        except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, absurd nesting
            raise AcrRequestError("claims is not valid JSON.") from None
    if not isinstance(claims, dict):
        raise AcrRequestError("claims must be a JSON object.")
    id_token = claims.get("id_token")
    if id_token is None:
        return [], False
    if not isinstance(id_token, dict):
        raise AcrRequestError("claims.id_token must be a JSON object.")
    acr = id_token.get("acr")
    if acr is None:  # null: the default way of asking for the claim (5.5.1)
        return [], False
    if not isinstance(acr, dict):
        raise AcrRequestError("claims.id_token.acr must be null or a JSON object.")
    essential = acr.get("essential", False)
    if not isinstance(essential, bool):
        raise AcrRequestError("claims.id_token.acr.essential must be true or false.")
    values: list[str] = []
    if "value" in acr:
        if not isinstance(acr["value"], str):
            raise AcrRequestError("claims.id_token.acr.value must be a string.")
        values.append(acr["value"])
    if "values" in acr:
        if not isinstance(acr["values"], list) or not all(isinstance(v, str) for v in acr["values"]):
            raise AcrRequestError("claims.id_token.acr.values must be an array of strings.")
        values.extend(acr["values"])
    return values, essential


def mfa_level(levels: Sequence[Level]) -> Level:
    """What require_mfa asks for: the level named mfa, else the weakest needing two flows."""
    by_value = {level.value: level for level in levels}
    if MFA in by_value:
        return by_value[MFA]
    for level in sorted(levels, key=lambda level: level.rank):
        if level.flows >= 2:
            return level
    raise AcrRequestError("require_mfa cannot be honoured: no acr level requires two factors.")


def parse_acr_request(acr_values, claims, require_mfa, levels: Sequence[Level]) -> AcrRequest:
    """What the request asks of the login. Raises only AcrRequestError."""
    asked = _acr_values(acr_values)
    claimed, essential = _claims_acr(claims)
    by_value = {level.value: level for level in levels}
    candidates: list[Level] = []
    upstream: str | None = None
    requested: list[str] = []
    for value in [*asked, *claimed]:
        if value not in requested:
            requested.append(value)
        direct = UPSTREAM.fullmatch(value)
        if direct:
            upstream = upstream or direct.group(1)  # the first named upstream provider wins
        elif value in by_value:
            candidates.append(by_value[value])
        # anything else is unknown: ignored here; when essential the caller answers an error
    if _require_mfa(require_mfa):
        candidates.append(mfa_level(levels))
    level = max(candidates, key=lambda level: level.rank) if candidates else None
    return AcrRequest(level=level, essential=essential, upstream=upstream, requested=tuple(requested))


# -- what the factors achieve -------------------------------------------------------------------

def counting_factors(level: Level, factors: Iterable, now: float) -> list:
    """The factors this level counts, oldest first, from the first allowed first factor on."""
    counted = sorted(
        (use for use in factors
         if use.factor not in level.forbidden_factors and (level.max_age is None or now - use.at <= level.max_age)),
        key=lambda use: use.at,
    )
    if level.first_factors is not None:
        # Factors done before an allowed first factor are left out rather than spoiling the
        # login: doing more than asked never lowers the level.
        starts = [i for i, use in enumerate(counted) if use.factor in level.first_factors]
        counted = counted[starts[0]:] if starts else []
    return counted


def level_met(level: Level, factors: Iterable, now: float) -> bool:
    """Whether the factors (objects with .factor, .flow, .at) reach this level at `now`."""
    counted = counting_factors(level, factors, now)
    if len({use.flow for use in counted}) < level.flows:
        return False
    if level.required_factors and not any(use.factor in level.required_factors for use in counted):
        return False
    return bool(counted)


def achieved_acr(levels: Sequence[Level], factors: Iterable, now: float, single_factor_acr: str | None,
                 requested: Level | None = None) -> str | None:
    """The acr these factors earn: the requested level when met (OIDC Core 5.5.1.1: an
    essential acr is one of those asked; RFC 9470 resource servers compare values), else the
    highest level met, else `single_factor_acr` (None: no acr claimed). Never more."""
    factors = list(factors)
    if not factors:
        return None
    if requested is not None and level_met(requested, factors, now):
        return requested.value
    for level in sorted(levels, key=lambda level: level.rank, reverse=True):
        if level_met(level, factors, now):
            return level.value
    if any(level.value == single_factor_acr for level in levels):
        return None  # a misconfigured single-factor acr naming a level is still not claimed
    return single_factor_acr


def amr_values(factors: Iterable, vocabulary: str = "transmit") -> list[str]:
    """Each method once, in the order done, plus `mfa` after two distinct flows (RFC 8176 2)."""
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"unknown amr vocabulary {vocabulary!r}")
    table = VOCABULARIES[vocabulary]
    amr: list[str] = []
    flows: set[str] = set()
    for use in factors:
        flows.add(use.flow)
        methods = table.get(use.factor)
        if methods is None:  # a factor this module does not know: trust the name it carries
            own = getattr(use, "amr", None)
            methods = (own,) if vocabulary == "transmit" else AMR_TO_RFC8176.get(own, (own,))
        for method in methods:
            if method and method not in amr:
                amr.append(method)
    if len(flows) >= 2:
        amr.append(MFA)
    return amr
