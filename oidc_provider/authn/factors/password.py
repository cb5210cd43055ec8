"""Password: argon2id (OWASP parameters), the first factor of the classic login."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ...i18n import lazy_gettext as _l
from . import Verification

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Compared against when the account does not exist, so both answers take one hash.
_DUMMY_HASH = HASHER.hash("an unknown account costs the same time")
THROTTLE_WINDOW = 15 * 60
MIN_LENGTH, MAX_LENGTH = 8, 1024  # `users set-password` and the password reset page alike


def acceptable_password(password: str) -> bool:
    return MIN_LENGTH <= len(password) <= MAX_LENGTH


def hash_password(password: str) -> str:
    return HASHER.hash(password)


class PasswordFactor:
    id = "password"
    amr = "pwd"
    flow = "knowledge"
    kind = "password"
    response_field = "password"
    max_response = 1024
    failure_message = "login_failed"
    usernameless = False
    first_factor = True
    label = _l("Password")

    def __init__(self, op):
        self.store = op.store
        self.max_failures = op.settings.password_failures_before_throttle

    def available_for(self, user) -> bool:
        return bool(user and user.password_hash and not user.disabled)

    def begin(self, user, context):
        return {}

    def verify(self, user, response, context) -> Verification:
        password = response.get("password") or ""
        login = (response.get("login") or "").strip().lower()
        counter = f"pwfail:{user.id if user else login}"
        # Counted before comparing, so parallel guesses cannot slip past the limit.
        failures = self.store.incr(counter, THROTTLE_WINDOW)
        stored = user.password_hash if self.available_for(user) else _DUMMY_HASH
        try:
            matched = HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            matched = False
        if failures > self.max_failures:
            return Verification(False, "throttled")
        if not matched or stored is _DUMMY_HASH:
            return Verification(False, "unknown account" if stored is _DUMMY_HASH else "wrong password")
        self.store.delete(counter)
        if HASHER.check_needs_rehash(stored):
            from ...extensions import db

            user.password_hash = HASHER.hash(password)
            db.session.commit()
        return Verification(True)
