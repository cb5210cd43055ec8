"""What a login still needs: pure functions over plain data (no Flask, no I/O).

A request asks for a number of distinct *flows* (`acr_values=mfa` or
`require_mfa=true`: two). The factors a session may count are those done within the
request's freshness bounds (`prompt=login`, `max_age`); factors done during the
current interaction always count, so a fresh login satisfies even `max_age=0`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .session import FactorUse


@dataclass(frozen=True)
class Requirement:
    flows: int = 1  # distinct factor flows that must be done


def requirement_for(params: dict) -> Requirement:
    acr_values = (params.get("acr_values") or "").split()
    if "mfa" in acr_values or str(params.get("require_mfa", "")).lower() == "true":
        return Requirement(flows=2)
    return Requirement()


def usable_factors(factors: list[FactorUse], prompts: set[str], max_age: int | None,
                   interaction_started: float | None, now: float) -> tuple[list[FactorUse], str | None]:
    """Factors that count for this request, and which bound removed some (for the reason)."""

    def in_this_interaction(use: FactorUse) -> bool:
        return interaction_started is not None and use.at >= interaction_started

    usable, bound = list(factors), None
    if "login" in prompts:  # OIDC Core 3.1.2.1: re-authenticate
        usable, bound = [u for u in usable if in_this_interaction(u)], "login:prompt"
    if max_age is not None:
        kept = [u for u in usable if now - u.at <= max_age or in_this_interaction(u)]
        if len(kept) < len(usable):
            bound = bound or "login:max_age"
        usable = kept
    return usable, bound


def missing(requirement: Requirement, usable: list[FactorUse]) -> int:
    """How many more distinct flows the login needs."""
    return max(0, requirement.flows - len({use.flow for use in usable}))


def next_factors(available: list, usable: list[FactorUse]) -> list:
    """Factors the user may do next: only flows not yet used (an SMS never follows a voice call)."""
    done = {use.flow for use in usable}
    return [factor for factor in available if factor.flow not in done]


CONTACT_FLOWS = frozenset({"email", "phone"})


def contact_gaps(user) -> list[str]:
    """The Transmit rule: MFA over email and SMS needs a primary email and a verified phone."""
    gaps = []
    if not user.email:
        gaps.append("a primary email address")
    if not (user.phone_number and user.phone_number_verified):
        gaps.append("a verified phone number")
    return gaps


def mfa_choices(available: list, usable: list[FactorUse], user) -> tuple[list, list[str]]:
    """Factors allowed as the next step of an MFA login, and what the user lacks for the
    email and phone ones (other kinds, such as TOTP or WebAuthn, need only themselves)."""
    choices = next_factors(available, usable)
    gaps = contact_gaps(user)
    if gaps:
        choices = [factor for factor in choices if factor.flow not in CONTACT_FLOWS]
    return choices, gaps
