"""The MFA API's authenticators: Auth0's view of a user's factors, and the enrollments,
challenges and checks behind /mfa/* and the MFA grants.

Nothing here verifies a secret itself: codes, TOTP values, recovery codes and push answers
go to the factor modules (authn/factors/) under the account lockout (`verify_counted`),
so rate limits, try limits, single use and replay protection are theirs.

How our factors look through Auth0's eyes:

    factor          authenticator_type  oob_channel  id                      what it is
    totp            otp                 -            totp|dev_<tag>          an app (pending: active false)
    sms             oob                 sms          sms|dev_<tag>           the verified phone number
    voice           oob                 voice        voice|dev_<tag>         the same number, called
    email-otp       oob                 email        email|dev_<tag>         the verified primary email address
    push            oob                 auth0        push|dev_<device id>    an enrolled push device
    recovery-code   recovery-code       -            recovery-code|dev_<tag> the set of recovery codes

A holder is who calls: an mfa_token's login (during a sign-in) or a user's access token
for the MFA API (`<issuer>/mfa/`, self-service). Challenges and enrollments are bound to
their holder's key, so one holder's oob_code or pending enrollment is never another's.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from types import SimpleNamespace

from ..i18n import gettext
from ..delivery import spell_digits
from ..extensions import db
from ..models import Authenticator, User, confirmed_authenticators, record_audit
from ..oauth.tokens import audiences
from .chain import next_choices
from .factors import Verification
from .factors.push import ENROLLMENT as PUSH_ENROLLMENT
from .lockout import CountedCheck, verify_counted
from .mfa_tokens import MfaLogin, MfaTokenError, MfaTokens
from .otp import mask_email, mask_phone
from .session import FactorUse

API_FACTORS = ("totp", "sms", "voice", "email-otp", "push", "recovery-code")  # challenge preference order
CHANNELS = {"sms": "sms", "voice": "voice", "email": "email-otp", "auth0": "push"}  # Auth0 oob_channel -> factor
CHANNEL_OF = {factor: channel for channel, factor in CHANNELS.items()}
PREFIX = {"totp": "totp", "sms": "sms", "voice": "voice", "email-otp": "email", "push": "push",
          "recovery-code": "recovery-code"}
TYPE_OF = {"totp": "otp", "recovery-code": "recovery-code"}  # the rest are oob
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
ENROLL_FACTOR = "mfa-enroll-{}"  # the one-time-secret kind of a code that confirms a new phone or email


@dataclass(frozen=True)
class ApiAuthenticator:
    id: str
    factor: str  # factor id
    authenticator_type: str  # otp | oob | recovery-code
    oob_channel: str | None
    name: str
    active: bool
    row_id: int | None = None  # the Authenticator row (TOTP app, push device)

    def to_json(self) -> dict:
        data = {"id": self.id, "authenticator_type": self.authenticator_type, "active": self.active,
                "name": self.name}
        if self.oob_channel:
            data["oob_channel"] = self.oob_channel
        return data


@dataclass
class Holder:
    """Who calls: an mfa_token's login, or a user's access token for the MFA API."""

    key: str  # binds oob codes, enrollments and the attempt counter to this holder
    user: User
    client_id: str
    login: MfaLogin | None = None
    claims: dict | None = None  # the access token's

    @property
    def scopes(self) -> set[str]:
        return set(((self.claims or {}).get("scope") or "").split())


def _tag(*parts) -> str:
    return hashlib.sha256(":".join(str(part) for part in parts).encode()).hexdigest()[:20]


def resolve_holder(op, value, mfa_resource: str) -> Holder | None:
    """An mfa_token's login (MfaTokenError when it is bad), or the user behind an access token
    of ours for the MFA API (None when it is not one)."""
    if not isinstance(value, str) or not value:
        raise MfaTokenError("invalid_grant", "Malformed mfa_token")
    if value.count(".") == 2:  # a JWT: our access tokens; an mfa_token has no dots
        claims = op.tokens.verify_access_token(value)
        if claims is None or claims.get("sub") == claims.get("client_id") or mfa_resource not in audiences(claims):
            return None
        user = db.session.get(User, claims["sub"])
        if user is None or user.disabled:
            return None
        return Holder(key=f"at-{claims['jti']}", user=user, client_id=claims["client_id"], claims=claims)
    login = MfaTokens.of(op).find(value)
    user = db.session.get(User, login.user_id)
    if user is None or user.disabled:
        raise MfaTokenError("invalid_grant", "Malformed mfa_token")
    return Holder(key=login.key, user=user, client_id=login.client_id, login=login)


def level_of(op, value: str | None):
    return next((level for level in op.levels if level.value == value), None)


def counts_toward(op, login: MfaLogin | None, factor, user, now: float | None = None) -> bool:
    """Whether this factor would move the login towards its level (a flow not used yet, not
    forbidden; email and phone only with the contact points the chain rules demand)."""
    level = level_of(op, login.level) if login else None
    if level is None:
        return True
    choices, _ = next_choices(level, [factor], login.uses, user, now or time.time())
    return factor in choices


def enrolled_user(user, record: dict):
    """The user's contact points as they will be once this enrollment code is confirmed (for
    the chain rules, which count email and phone factors only with both contact points)."""
    phone = record["channel"] in ("sms", "voice")
    return SimpleNamespace(id=user.id, email=user.email,
                           phone_number=record["destination"] if phone else user.phone_number,
                           phone_number_verified=True if phone else user.phone_number_verified)


def use_of(factor, at: float | None = None) -> FactorUse:
    return FactorUse(factor=factor.id, amr=factor.amr, flow=factor.flow, at=at or time.time())


# -- the list -------------------------------------------------------------------------------------

def authenticators(op, user) -> list[ApiAuthenticator]:
    """The user's authenticators in Auth0's shape: enabled factors only, pending TOTP included."""
    found: list[ApiAuthenticator] = []
    totp = op.factors.get("totp")
    if totp is not None:
        rows = confirmed_authenticators(user.id, "totp")
        pending = totp.pending(user)
        for row in rows + ([pending] if pending is not None else []):
            found.append(ApiAuthenticator(f"totp|dev_{_tag(user.id, row.id, row.created_at)}", "totp", "otp", None,
                                          row.name or "Authenticator app", bool(row.confirmed), row.id))
    if user.phone_number and user.phone_number_verified:
        for factor_id in ("sms", "voice"):
            if op.factors.get(factor_id) is not None:
                found.append(ApiAuthenticator(f"{factor_id}|dev_{_tag(user.id, user.phone_number)}", factor_id,
                                              "oob", factor_id, mask_phone(user.phone_number), True))
    if user.email and user.email_verified and op.factors.get("email-otp") is not None:
        found.append(ApiAuthenticator(f"email|dev_{_tag(user.id, user.email)}", "email-otp", "oob", "email",
                                      mask_email(user.email), True))
    push = op.factors.get("push")
    if push is not None:
        for device in push.devices(user.id):
            found.append(ApiAuthenticator(f"push|dev_{device.lookup}", "push", "oob", "auth0", device.name, True,
                                          device.id))
    recovery = op.factors.get("recovery-code")
    if recovery is not None and recovery.remaining(user) > 0:
        found.append(ApiAuthenticator(f"recovery-code|dev_{_tag(user.id, 'recovery-codes')}", "recovery-code",
                                      "recovery-code", None, "Recovery codes", True))
    return found


def find(op, user, authenticator_id) -> ApiAuthenticator | None:
    """One of *this user's* authenticators by id: another user's id is simply not found."""
    if not isinstance(authenticator_id, str):
        return None
    return next((found for found in authenticators(op, user) if found.id == authenticator_id), None)


def has_enrolled(op, user) -> bool:
    """Auth0's "already enrolled": an active authenticator other than email (an address every
    account has is not an enrollment), or any enrolled credential the MFA API does not show
    (security keys, passkeys): an mfa_token must never add a factor beside those."""
    if user.phone_number and user.phone_number_verified:
        return True
    if confirmed_authenticators(user.id):
        return True
    return any(found.active and found.factor != "email-otp" for found in authenticators(op, user))


class CannotRemove(Exception):
    """The authenticator is not removable here; the message says why."""


def remove(op, user, authenticator: ApiAuthenticator) -> None:
    """Delete an authenticator of this user. The phone number is one authenticator for SMS and
    voice alike: removing either leaves the number unverified (no longer a factor)."""
    factor = authenticator.factor
    if factor == "totp":
        db.session.execute(db.delete(Authenticator).where(
            Authenticator.id == authenticator.row_id, Authenticator.user_id == user.id,
            Authenticator.kind == "totp"))
        db.session.commit()
    elif factor == "push":
        op.factors.get("push").remove(user, authenticator.id.partition("|dev_")[2])
    elif factor in ("sms", "voice"):
        user.phone_number_verified = False
        db.session.commit()
    elif factor == "recovery-code":
        op.factors.get("recovery-code").remove(user)
    else:  # the primary email address is the account's own: /account/contact manages it
        raise CannotRemove("The email authenticator is the account's address; it cannot be removed here.")


# -- enrollment (/mfa/associate) ------------------------------------------------------------------

def start_totp(op, user) -> dict:
    """A new pending authenticator app; the one in use keeps working until this one is confirmed."""
    totp = op.factors.get("totp")
    pending = totp.start_enrollment(user)
    details = totp.enrollment_details(user, pending)
    return {"secret": details["secret"].replace(" ", ""), "barcode_uri": details["uri"], "row_id": pending.id,
            "created_at": pending.created_at}


def first_recovery_codes(op, user) -> list[str] | None:
    """Auth0 returns recovery codes with a user's first enrollment: a set, unconfirmed until the
    enrollment is (so an abandoned enrollment leaves no working codes), numbered in list order."""
    recovery = op.factors.get("recovery-code")
    if recovery is None or recovery.remaining(user) > 0:
        return None
    return recovery.generate(user, confirmed=False)


def send_enrollment_code(op, user, channel: str, destination: str, binding: str, ip: str | None) -> str:
    """Send a code that proves the new phone number or the email address is the user's; the
    same limits as any code (cool-down, per user/destination/IP). SendRefused and
    DeliveryError propagate. Returns the challenge id."""
    kind = ENROLL_FACTOR.format(channel)
    otp = op.otp
    otp.check_send_allowed(factor=kind, binding=binding, user_id=user.id, destination=destination, ip=ip)
    issued = otp.issue(factor=kind, binding=binding, user_id=user.id, destination=destination,
                       secret=otp.new_code(), lifetime=op.settings.otp.lifetime)
    minutes = max(1, op.settings.otp.lifetime // 60)
    try:
        if channel == "sms":
            op.delivery.send_sms(destination, f"{issued.secret} is your code to add this phone to your account. "
                                              f"It expires in {minutes} minutes. Never share it.")
        elif channel == "voice":
            spoken = spell_digits(issued.secret)
            op.delivery.send_voice(destination, f"Your code to add this phone is {spoken}. Again, {spoken}.")
        else:
            op.delivery.send_email(destination, "otp", {"code": issued.secret, "minutes": minutes,
                                                        "purpose": gettext("add this address as a sign-in method")})
    except Exception:
        otp.undo_send(issued, factor=kind, binding=binding)
        raise
    return issued.challenge


def start_push_enrollment(op, user) -> dict:
    """A device enrollment URL (what /push/enroll's QR code holds) and what tells its use apart."""
    push = op.factors.get("push")
    token, _expires_at = push.new_enrollment(user)
    return {"barcode_uri": f"{op.settings.issuer_url}/push/devices?token={token}",
            "token_digest": hashlib.sha256(token.encode()).hexdigest(),
            "known": [device.lookup for device in push.devices(user.id)],
            "lifetime": op.settings.push.enrollment_lifetime}


def push_enrollment_status(op, user, record: dict) -> str:
    """pending | done | expired: whether a device enrolled with the token /mfa/associate made.
    The token is single use and this user's, so a device of this user that was not there
    before, once the token is used, is the one (the device proved its key by enrolling)."""
    if op.store.get(PUSH_ENROLLMENT.format(record["token_digest"])) is not None:
        return "pending" if time.time() < record["expires_at"] else "expired"
    known = set(record["known"])
    if any(device.lookup not in known for device in op.factors.get("push").devices(user.id)):
        return "done"
    return "expired"


def confirm_totp(op, holder: Holder, enrollment: dict, code: str) -> Verification:
    """The first valid code from the new app confirms it (the TOTP factor's rules: try limit,
    that step used up), under the lockout."""
    totp = op.factors.get("totp")
    user = holder.user

    def check() -> Verification:
        pending = totp.pending(user)
        started = (enrollment.get("totp"), enrollment.get("created_at"))
        if pending is None or (pending.id, pending.created_at) != started:
            return Verification(False, "no pending authenticator app for this holder")
        return totp.confirm_enrollment(user, pending, code)

    result = verify_counted(op, CountedCheck("totp", check), user, {}, {})
    if result.ok:
        enrolled(op, holder, "totp", enrollment)
    return result


def confirm_contact(op, holder: Holder, record: dict, code: str) -> Verification:
    """A code sent to a new phone number or the email address: right, the contact point is
    verified and so becomes the authenticator."""
    user = holder.user
    channel = record["channel"]

    def check() -> Verification:
        result = op.otp.verify(record["challenge"], factor=ENROLL_FACTOR.format(channel), binding=record["binding"],
                               user_id=user.id, secret=code)
        if result.ok and channel == "email" and (user.email or "").lower() != record["destination"]:
            return Verification(False, "the address changed since the code was sent")
        return result

    result = verify_counted(op, CountedCheck(CHANNELS[channel], check), user, {}, {})
    if result.ok:
        if channel == "email":
            user.email_verified = True
        else:
            user.phone_number, user.phone_number_verified = record["destination"], True
        db.session.commit()
        enrolled(op, holder, CHANNELS[channel], MfaTokens.of(op).enrollment(holder.key) or {})
    return result


def enrolled(op, holder: Holder, factor_id: str, enrollment: dict) -> None:
    """An enrollment was confirmed: its recovery codes (a first enrollment's) now work too."""
    if enrollment.get("recovery_codes"):
        recovery = op.factors.get("recovery-code")
        if recovery is not None:
            recovery.confirm_pending(holder.user)
    MfaTokens.of(op).forget_enrollment(holder.key)
    record_audit("mfa.authenticator_enrolled", user_id=holder.user.id, client_id=holder.client_id, factor=factor_id,
                 via="mfa_api")
