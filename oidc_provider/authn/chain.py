"""What a login still needs: pure functions over plain data (no Flask, no I/O).

The requirement is an acr Level (authn/acr.py) or None (any one factor). The factors
a session may count are those done within the request's freshness bounds
(`prompt=login`, `max_age`); factors done during the current interaction always
count, so a fresh login satisfies even `max_age=0`.
"""

from __future__ import annotations

from .acr import Level, counting_factors, level_met
from .session import FactorUse

CONTACT_FLOWS = frozenset({"email", "phone"})


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


def satisfied(level: Level | None, usable: list[FactorUse], now: float) -> bool:
    if not usable:
        return False
    return level is None or level_met(level, usable, now)


def contact_gaps(user) -> list[str]:
    """The Transmit rule: MFA over email and SMS needs a primary email and a verified phone."""
    gaps = []
    if not user.email:
        gaps.append("a primary email address")
    if not (user.phone_number and user.phone_number_verified):
        gaps.append("a verified phone number")
    return gaps


def next_choices(level: Level, available: list, usable: list[FactorUse], user, now: float) -> tuple[list, list[str]]:
    """Factors that move this login towards the level, and what the user lacks for the email
    and phone ones (other kinds, such as TOTP or WebAuthn, need only themselves).

    Only factors the level still counts (fresh for its max_age, not forbidden) are done; a
    later factor must be of a flow not used yet (an SMS never follows a voice call) unless
    it is one the level requires; factors the level forbids are never offered.
    """
    counted = counting_factors(level, usable, now)
    if level.first_factors is not None and not counted:
        available = [factor for factor in available if factor.id in level.first_factors]
    done_flows = {use.flow for use in counted}
    need_flows = len(done_flows) < level.flows
    need_required = bool(level.required_factors) and not any(
        use.factor in level.required_factors for use in counted)
    choices = [
        factor for factor in available
        if factor.id not in level.forbidden_factors
        and ((need_required and factor.id in level.required_factors)
             or (need_flows and not need_required and factor.flow not in done_flows)
             or (need_flows and need_required and factor.id in level.required_factors))
    ]
    gaps = contact_gaps(user)
    if gaps:
        choices = [factor for factor in choices if factor.flow not in CONTACT_FLOWS]
    return choices, gaps
