"""Account administration (B2E/B2B): a user's factors, resetting them, lockout, MFA policy.

One service for both doors: the `oidc-provider users ...` commands (cli.py) and the admin
API (views/admin_api.py) call these functions and only translate their answers and
`AdminError`s. Every change is audited with the admin's identity (`actor`: "cli" or the
admin client's id), and removing factors mails the user a notice.

A "factor" here is anything that can authenticate the user: the password, a verified
email address or phone number, an enrolled authenticator (TOTP app, WebAuthn credential,
push device), the set of recovery codes, a trusted ("remembered") browser and a linked
upstream account. Each has a stable id for resetting, e.g. `totp:12`, `phone`, `device:3`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from . import i18n
from .delivery import DeliveryError
from .extensions import db
from .models import Authenticator, FederatedIdentity, User, record_audit

log = logging.getLogger(__name__)

MFA_POLICIES = ("never", "adaptive", "always")  # None: the client's, else the global policy
LOCKED_UNTIL_UNLOCKED = 253402300799.0  # 9999-12-31T23:59:59Z: an admin lock with no end
MAX_LOCK_MINUTES = 10 * 366 * 24 * 60
REASON_MAX = 256  # characters of an admin's stated reason kept in the audit log
AUTHENTICATOR_LABELS = {"totp": "Authenticator app", "webauthn-key": "Security key",
                        "webauthn-platform": "Device biometrics", "passkey": "Passkey", "push": "Push device"}


class AdminError(Exception):
    """A refused admin action; `error` is "not_found" or "invalid_request", `description` is
    safe to show the admin."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error, self.description = error, description


@dataclass(frozen=True)
class Actor:
    """Who acts: "cli", or an admin client (its id, and the IP of its request)."""

    name: str
    client_id: str | None = None
    ip: str | None = None

    def audit(self, event: str, user: User, reason: str | None, **detail) -> None:
        record_audit(event, user_id=user.id, client_id=self.client_id, ip=self.ip, actor=self.name,
                     **({"reason": reason} if reason else {}), **detail)


CLI = Actor("cli")


def check_reason(reason) -> str | None:
    """The admin's stated reason, kept in the audit log."""
    if reason is None or reason == "":
        return None
    if not isinstance(reason, str) or len(reason) > REASON_MAX or not reason.isprintable():
        raise AdminError("invalid_request", f"the reason must be at most {REASON_MAX} printable characters")
    return reason


def iso_time(at: float | None, millis: bool = False) -> str | None:
    """RFC 3339 in UTC, e.g. 2024-05-04T21:30:00Z (or ...:00.123Z)."""
    if at is None:
        return None
    moment = datetime.fromtimestamp(at, timezone.utc)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- finding users ----------------------------------------------------------------------------

def user_by_id(user_id: str) -> User:
    user = db.session.get(User, user_id) if isinstance(user_id, str) and len(user_id) <= 36 else None
    if user is None:
        raise AdminError("not_found", "No such user.")
    return user


def user_by_name(name: str) -> User:
    """A username, a primary email address, or a `sub` (as the audit log shows it)."""
    user = User.find_by_login(name) if name.strip() else None
    if user is None and len(name) <= 36:
        user = db.session.get(User, name)
    if user is None:
        raise AdminError("not_found", f"no user {name!r}")
    return user


def find_users(username: str | None = None, email: str | None = None, limit: int = 50,
               after: str | None = None) -> tuple[list[User], str | None]:
    """Users ordered by username, optionally one username or email; (page, next cursor)."""
    query = db.select(User).order_by(User.username).limit(limit + 1)
    if username:
        query = query.filter(User.username == username)
    if email:
        query = query.filter(User.email == email.strip().lower())
    if after:
        query = query.filter(User.username > after)
    rows = list(db.session.execute(query).scalars())
    return rows[:limit], rows[limit - 1].username if len(rows) > limit else None


def summary(op, user: User) -> dict:
    """The account as an admin sees it, lockout state included."""
    locked = op.lockout.is_locked(user)
    return {
        "id": user.id, "username": user.username, "name": user.name,
        "email": user.email, "email_verified": bool(user.email_verified),
        "phone_number": user.phone_number, "phone_number_verified": bool(user.phone_number_verified),
        "disabled": bool(user.disabled), "created_at": iso_time(user.created_at),
        "mfa_policy": user.mfa_policy, "mfa_enrollment_required": bool(user.mfa_enrollment_required),
        "lockout": {
            "locked": locked, "locked_until": iso_time(user.locked_until) if locked else None,
            "failed_attempts": user.failed_attempts or 0, "max_failures": op.lockout.limit,
        },
        "last_login": {"at": iso_time(user.last_login.get("at")), "ip": user.last_login.get("ip"),
                       "country": user.last_login.get("country")} if user.last_login else None,
    }


# -- factors ----------------------------------------------------------------------------------

@dataclass
class Factor:
    """One thing that can authenticate the user, and how an admin removes it (None: not here)."""

    id: str
    type: str
    label: str
    created_at: float | None = None
    last_used_at: float | None = None
    detail: dict = field(default_factory=dict)
    remove: Callable[[], None] | None = field(default=None, repr=False)
    in_reset_all: bool = True  # removed by "reset all"
    kept_because: str = ""  # when it cannot be removed here

    def to_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "label": self.label, "created_at": iso_time(self.created_at),
                "last_used_at": iso_time(self.last_used_at), "resettable": self.remove is not None,
                "detail": self.detail}


def _password(op, user: User) -> list[Factor]:
    if not user.password_hash:
        return []
    return [Factor("password", "password", "Password", kept_because=(
        "a password is changed ('oidc-provider users set-password' or a password reset), not removed"))]


def _contact_points(op, user: User) -> list[Factor]:
    """Verified contact points are factors (email OTP and link; SMS and voice). Resetting one
    marks it unverified: the user confirms it again on the account page. The email address
    stays out of "reset all": it names the account and receives the notice."""
    found = []
    if user.email and user.email_verified:
        def unverify_email():
            user.email_verified = False
        found.append(Factor("email", "email", f"Email address {user.email}", detail={"address": user.email},
                            remove=unverify_email, in_reset_all=False))
    if user.phone_number and user.phone_number_verified:
        def unverify_phone():
            user.phone_number_verified = False
        found.append(Factor("phone", "phone", f"Phone number {user.phone_number}",
                            detail={"number": user.phone_number}, remove=unverify_phone))
    return found


def _authenticators(op, user: User) -> list[Factor]:
    """TOTP apps, WebAuthn credentials and push devices (one row each); recovery codes apart."""
    rows = db.session.execute(db.select(Authenticator).filter(
        Authenticator.user_id == user.id, Authenticator.confirmed.is_(True), Authenticator.kind != "recovery-code",
    ).order_by(Authenticator.created_at, Authenticator.id)).scalars()
    found = []
    for row in rows:
        kind_label = AUTHENTICATOR_LABELS.get(row.kind, row.kind)
        label = kind_label if not row.name or row.name == kind_label else f"{kind_label} \"{row.name}\""
        found.append(Factor(f"{row.kind}:{row.id}", row.kind, label, row.created_at, row.last_used_at,
                            {"name": row.name}, remove=lambda row=row: db.session.delete(row)))
    return found


def _recovery_codes(op, user: User) -> list[Factor]:
    rows = db.session.execute(db.select(Authenticator).filter_by(
        user_id=user.id, kind="recovery-code", confirmed=True)).scalars().all()
    if not rows:
        return []

    def remove():
        db.session.execute(db.delete(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == "recovery-code"))
    return [Factor("recovery-code", "recovery-code", "Recovery codes", min(r.created_at for r in rows),
                   detail={"remaining": len(rows)}, remove=remove)]


def _trusted_devices(op, user: User) -> list[Factor]:
    """"Remembered" browsers: revoking one makes its next sign-in a new device."""
    return [Factor(f"device:{row.id}", "trusted-device", f"Trusted browser ({(row.user_agent or 'unknown')[:60]})",
                   row.first_seen, row.last_seen,
                   {"user_agent": row.user_agent, "last_ip": row.last_ip, "trusted_until": iso_time(row.trusted_until)},
                   remove=lambda row=row: op.devices.revoke(row))
            for row in op.devices.list(user.id) if row.trusted]


def _linked_accounts(op, user: User) -> list[Factor]:
    """Upstream accounts (social login). Unlinking is on request only, never part of "reset
    all": for a federated-only user it may be the one way in."""
    rows = db.session.execute(db.select(FederatedIdentity).filter_by(user_id=user.id)
                              .order_by(FederatedIdentity.id)).scalars()
    return [Factor(f"fed:{row.id}", "fed", f"Linked {row.provider} account", row.created_at, None,
                   {"provider": row.provider, "subject": row.subject},
                   remove=lambda row=row: db.session.delete(row), in_reset_all=False)
            for row in rows]


SOURCES = (_password, _contact_points, _authenticators, _recovery_codes, _trusted_devices, _linked_accounts)


def factors(op, user: User) -> list[Factor]:
    return [factor for source in SOURCES for factor in source(op, user)]


def reset_factor(op, user: User, factor_id: str, actor: Actor, reason: str | None = None) -> dict:
    """Remove one factor (see factors() for ids); the user is told by email."""
    reason = check_reason(reason)
    found = next((factor for factor in factors(op, user) if factor.id == factor_id), None)
    if found is None:
        raise AdminError("not_found", f"{user.username} has no factor {factor_id!r}")
    if found.remove is None:
        raise AdminError("invalid_request", f"{found.label} cannot be reset here: {found.kept_because}")
    return _remove(op, user, [found], actor, reason)


def reset_all(op, user: User, actor: Actor, reason: str | None = None) -> dict:
    """Remove every authenticator, the recovery codes, the phone number's verification and
    device trust, as when a user lost their devices; also unfinished enrollments. Kept: the
    password, the primary email address and linked upstream accounts."""
    reason = check_reason(reason)
    chosen = [factor for factor in factors(op, user) if factor.remove is not None and factor.in_reset_all]
    db.session.execute(db.delete(Authenticator).where(Authenticator.user_id == user.id,
                                                      Authenticator.confirmed.is_(False)))
    return _remove(op, user, chosen, actor, reason)


def _remove(op, user: User, chosen: list[Factor], actor: Actor, reason: str | None) -> dict:
    notify_to = user.email if user.email and user.email_verified else None  # before an email reset
    for factor in chosen:
        factor.remove()
    db.session.commit()
    removed = [factor.to_dict() for factor in chosen]
    notified = bool(chosen) and _notify(op, user, notify_to, chosen)
    for factor in chosen:
        actor.audit("factor.reset", user, reason, factor=factor.id, type=factor.type, notified=notified)
    return {"removed": removed, "notified": notified}


# How the user's notice names each removed factor, in the user's language.
NOTICE_LABELS = {"password": i18n.lazy_gettext("Password"), "totp": i18n.lazy_gettext("Authenticator app"),
                 "webauthn-key": i18n.lazy_gettext("Security key"),
                 "webauthn-platform": i18n.lazy_gettext("Device biometrics"),
                 "passkey": i18n.lazy_gettext("Passkey"), "push": i18n.lazy_gettext("Push device"),
                 "recovery-code": i18n.lazy_gettext("Recovery codes")}


def _notice_label(factor: Factor) -> str:
    if factor.type == "email":
        return i18n.gettext("Email address %(address)s", address=factor.detail.get("address", ""))
    if factor.type == "phone":
        return i18n.gettext("Phone number %(number)s", number=factor.detail.get("number", ""))
    kind = str(NOTICE_LABELS.get(factor.type, factor.label))
    name = (factor.detail or {}).get("name")
    return i18n.gettext('%(kind)s "%(name)s"', kind=kind, name=name) if name and name != kind else kind


def _notify(op, user: User, to: str | None, removed: list[Factor]) -> bool:
    """A notice to the verified address; a failed delivery is logged, the reset stands."""
    if not to:
        return False
    try:
        with i18n.speaking(i18n.user_locale(user)):  # no page of the user's: their last sign-in's language
            listed = "\n".join(f"- {_notice_label(factor)}" for factor in removed)
            text = (i18n.gettext("An administrator removed these sign-in methods from your account %(username)s:",
                                 username=user.username) + f"\n\n{listed}\n\n"
                    + i18n.gettext("You can set up sign-in methods again on your account's security page. "
                                   "If you did not ask for this, contact your administrator."))
            op.delivery.send_email(to, "notice", {"subject": i18n.gettext("Sign-in methods removed from your account"),
                                                  "text": text})
    except DeliveryError as exc:
        log.warning("factor reset notice for user %s not delivered: %s", user.id, exc)
        return False
    return True


# -- lockout, enrollment, policy ---------------------------------------------------------------

def lock(op, user: User, minutes: int | None, actor: Actor, reason: str | None = None) -> dict:
    """Lock the account for `minutes`, or until unlocked (None): every factor then fails, as
    after too many failed attempts (authn/lockout.py)."""
    reason = check_reason(reason)
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int)
                                or not 0 < minutes <= MAX_LOCK_MINUTES):
        raise AdminError("invalid_request", f"minutes must be a whole number from 1 to {MAX_LOCK_MINUTES}")
    user.locked_until = time.time() + minutes * 60 if minutes else LOCKED_UNTIL_UNLOCKED
    db.session.commit()
    actor.audit("account.locked", user, reason, until=iso_time(user.locked_until))
    return summary(op, user)


def unlock(op, user: User, actor: Actor, reason: str | None = None) -> dict:
    """End a lock and forget the failed attempts in a row."""
    reason = check_reason(reason)
    op.lockout.unlock(user.id)
    actor.audit("account.unlocked", user, reason)
    return summary(op, user)


def require_enrollment(op, user: User, required: bool, actor: Actor, reason: str | None = None) -> dict:
    """Make the next sign-in enroll a factor before it completes (or stop asking). The sign-in
    reads `enrollment_required(user)` and calls this with required=False once it is done."""
    reason = check_reason(reason)
    user.mfa_enrollment_required = bool(required)
    db.session.commit()
    actor.audit("user.enrollment_required", user, reason, required=bool(required))
    return summary(op, user)


def enrollment_required(user: User) -> bool:
    return bool(user.mfa_enrollment_required)


def set_mfa_policy(op, user: User, policy: str | None, actor: Actor, reason: str | None = None) -> dict:
    """The user's own MFA policy (wins over the client's); None: the client's or the global."""
    reason = check_reason(reason)
    if policy is not None and policy not in MFA_POLICIES:
        raise AdminError("invalid_request", f"the policy must be one of {', '.join(MFA_POLICIES)} or default")
    user.mfa_policy = policy
    db.session.commit()
    actor.audit("user.mfa_policy_set", user, reason, policy=policy)
    return summary(op, user)
