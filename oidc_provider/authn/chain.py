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
KNOWLEDGE_FLOW = "knowledge"  # the password


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


# -- second factors: enrollment at login and password reset ---------------------------------

def has_second_factor(user, available: list, done: list[FactorUse]) -> bool:
    """Whether the user has a factor that could follow what was done: one of another flow, not an
    upstream (it has its own buttons), email/phone only when the user meets the contact rule."""
    done_flows = {use.flow for use in done}
    gaps = contact_gaps(user)
    return any(factor.flow not in done_flows and factor.kind != "upstream"
               and not (gaps and factor.flow in CONTACT_FLOWS) for factor in available)


def needs_enrollment(user, available: list, done: list[FactorUse], mfa_needed: bool) -> bool:
    """Whether this login should walk the user through setting up a second factor: when MFA is
    needed or an admin asked for it (`mfa_enrollment_required`), and never while the user has a
    factor that could follow the one done (enrolling would then go around that factor)."""
    if has_second_factor(user, available, done):
        return False
    return mfa_needed or bool(user.mfa_enrollment_required)


def enrollable(level: Level, candidates: list, done: list[FactorUse], user, now: float) -> list:
    """The candidate factors whose setup (which ends with a use of the factor) would bring this
    login to the level; email/phone ones only for a user with a primary email (contact rule)."""
    chosen = []
    for factor in candidates:
        if factor.flow in CONTACT_FLOWS and not user.email:
            continue
        trial = [*done, FactorUse(factor=factor.id, amr=factor.amr, flow=factor.flow, at=now)]
        if level_met(level, trial, now):
            chosen.append(factor)
    return chosen


def reset_factors(available: list) -> list:
    """The factors a password reset must also pass besides the emailed link: anything outside the
    email flow and the password itself (an upstream sign-in has its own pages, so it is left out)."""
    return [factor for factor in available
            if factor.flow not in ("email", KNOWLEDGE_FLOW) and factor.kind != "upstream"]
