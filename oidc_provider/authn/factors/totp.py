"""TOTP authenticator apps (RFC 6238): a second factor the user holds on a device.

One app per user: enrolling again keeps the old app working until the new one is
confirmed with a first valid code, then replaces it in the same transaction. The seed
is encrypted at rest (crypto.SecretBox, bound to the user) and never logged; a pending
enrollment is an unconfirmed Authenticator row, which never verifies a sign-in.

A code is accepted within `drift` time steps of now, and each time step at most once:
the last used step is kept in the authenticator's data and moved forward by one
conditional UPDATE, so of two requests with the same code exactly one wins and no
earlier code is accepted after a later one (RFC 6238 5.2). Tries are counted per user
before comparing, besides the account lockout that counts every factor's failures.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from sqlalchemy import func

from ...i18n import gettext, lazy_gettext as _l
from ...extensions import db
from ...models import Authenticator, confirmed_authenticators, record_audit
from .. import totp_codes
from . import Verification

PENDING_LIFETIME = 15 * 60  # seconds to confirm a new app with its first code


class TotpFactor:
    id = "totp"
    amr = "otp"
    flow = "totp-app"  # a device the user holds: its own flow, distinct from email and phone
    kind = "code"
    response_field = "code"
    max_response = 16
    failure_message = "totp_failed"
    usernameless = False
    first_factor = False  # a code alone does not say whose account it is
    label = _l("Use your authenticator app")
    pattern = "[0-9 ]*"

    def __init__(self, op):
        self.store = op.store
        self.box = op.secret_box
        self.settings = op.settings.totp_recovery
        self.issuer = self.settings.issuer_name or urlsplit(op.settings.issuer_url).hostname or "OpenID Provider"

    # -- the Factor protocol ---------------------------------------------------------------

    def available_for(self, user) -> bool:
        return bool(user and not user.disabled and self.enrolled(user))

    def begin(self, user, context) -> dict:
        return {}  # nothing is sent: the app already shows the code

    def prompt(self, user) -> str:
        return gettext("Open your authenticator app and enter the code it shows for this account.")

    def verify(self, user, response, context) -> Verification:
        if user is None or user.disabled:
            return Verification(False, "no account")
        authenticator = self.enrolled(user)
        if authenticator is None:
            return Verification(False, "no authenticator app")
        if not self._count_try(user):
            return Verification(False, "throttled")
        step = self._match(user, authenticator, str(response.get(self.response_field) or ""))
        if step is None:
            return Verification(False, "wrong code")
        if not self._use_step(authenticator, step):
            return Verification(False, "code already used")
        self.store.delete(self._tries_key(user))
        return Verification(True)

    # -- enrollment ------------------------------------------------------------------------

    def enrolled(self, user) -> Authenticator | None:
        found = confirmed_authenticators(user.id, self.id)
        return found[-1] if found else None

    def start_enrollment(self, user) -> Authenticator:
        """A new pending app with a fresh seed; an earlier pending one is dropped."""
        db.session.execute(db.delete(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id, Authenticator.confirmed.is_(False)))
        pending = Authenticator(user_id=user.id, kind=self.id, name="Authenticator app", confirmed=False,
                                secret=self.box.encrypt(totp_codes.new_secret().encode(), self._context(user)),
                                data={}, created_at=time.time())
        db.session.add(pending)
        db.session.commit()
        return pending

    def pending(self, user) -> Authenticator | None:
        return db.session.execute(db.select(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id, Authenticator.confirmed.is_(False),
            Authenticator.created_at > time.time() - PENDING_LIFETIME,
        ).order_by(Authenticator.created_at.desc()).limit(1)).scalar_one_or_none()

    def enrollment_details(self, user, pending: Authenticator) -> dict:
        """What the enrollment page shows: the otpauth:// URI, its QR code, the seed in groups."""
        secret = self._secret(user, pending)
        uri = totp_codes.provisioning_uri(secret, account=user.email or user.username, issuer=self.issuer,
                                          digits=self.settings.digits, period=self.settings.period)
        return {"uri": uri, "qr_svg": totp_codes.qr_svg(uri), "secret": totp_codes.grouped(secret),
                "digits": self.settings.digits, "period": self.settings.period, "issuer": self.issuer}

    def confirm_enrollment(self, user, pending: Authenticator, code: str) -> Verification:
        """The first valid code confirms the app and replaces the one enrolled before; that
        code's step counts as used, so it cannot also sign in."""
        if not self._count_try(user):
            return Verification(False, "throttled")
        step = self._match(user, pending, code)
        if step is None:
            return Verification(False, "wrong code")
        claimed = db.session.execute(
            db.update(Authenticator)
            .where(Authenticator.id == pending.id, Authenticator.secret == pending.secret,
                   Authenticator.confirmed.is_(False))
            .values(confirmed=True, data={"last_step": step}, last_used_at=time.time())
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:  # confirmed by a parallel request, or replaced meanwhile
            db.session.rollback()
            return Verification(False, "enrollment already finished")
        db.session.execute(db.delete(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id, Authenticator.id != pending.id))
        db.session.commit()
        self.store.delete(self._tries_key(user))
        return Verification(True)

    def remove(self, user) -> bool:
        removed = db.session.execute(db.delete(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id)).rowcount
        db.session.commit()
        return bool(removed)

    # -- internals -------------------------------------------------------------------------

    def _context(self, user) -> str:
        return seed_context(user.id)

    def _secret(self, user, authenticator: Authenticator) -> str:
        return self.box.decrypt(authenticator.secret, self._context(user)).decode()

    def _match(self, user, authenticator: Authenticator, code: str) -> int | None:
        return totp_codes.matching_step(self._secret(user, authenticator), code, digits=self.settings.digits,
                                        period=self.settings.period, drift=self.settings.drift)

    def _tries_key(self, user) -> str:
        return f"totp-tries:{user.id}"

    def _count_try(self, user) -> bool:
        """Counted before comparing: a 6-digit code gets few guesses per window."""
        tries = self.store.incr(self._tries_key(user), self.settings.try_window)
        if tries > self.settings.max_tries:
            if tries == self.settings.max_tries + 1:
                record_audit("totp.throttled", user_id=user.id, tries=tries)
            return False
        return True

    def _use_step(self, authenticator: Authenticator, step: int) -> bool:
        """Move the last used step forward to `step`, only if it is behind (one statement)."""
        last_step = func.coalesce(Authenticator.data["last_step"].as_integer(), -1)
        used = db.session.execute(
            db.update(Authenticator)
            # the same seed too: SQLite may give a removed row's id to a new one
            .where(Authenticator.id == authenticator.id, Authenticator.secret == authenticator.secret,
                   Authenticator.confirmed.is_(True), last_step < step)
            .values(data={**(authenticator.data or {}), "last_step": step}, last_used_at=time.time())
            .execution_options(synchronize_session=False)
        ).rowcount
        db.session.commit()
        return used == 1


def seed_context(user_id: str) -> str:
    """Bound into each encrypted seed: a seed copied to another user's row does not decrypt."""
    return f"totp-seed:{user_id}"
