"""Password: argon2id (OWASP parameters), the first factor of the classic login.

Hashed and verified by libsodium (PyNaCl), which picks its AVX2 or AVX-512 code on the CPU
at run time: the same PHC strings as argon2-cffi writes and reads, at about half the CPU of
its portable build. argon2-cffi still reads a stored hash's parameters (check_needs_rehash).

A process computes at most HASH_SLOTS hashes at once, the others wait their turn: the server's
cores shared among its workers (`serve` sets OIDC_PROVIDER_HASH_SLOTS), else one per core.
More at once only take turns on the same cores, each evicting the others' 19 MiB from the
caches and holding 19 MiB more: a flood of password posts costs more CPU per login and more
memory, not more logins (README, Production).
"""

from __future__ import annotations

import os
import threading

import nacl.pwhash.argon2id as argon2id
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError
from nacl.exceptions import CryptoError

from ...i18n import lazy_gettext as _l
from . import Verification

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1 (libsodium's only p)
TIME_COST, MEMORY_KIB = 2, 19 * 1024
PARAMETERS = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_KIB, parallelism=1)
THROTTLE_WINDOW = 15 * 60
MIN_LENGTH, MAX_LENGTH = 8, 1024  # `users set-password` and the password reset page alike
HASH_SLOTS = int(os.environ.get("OIDC_PROVIDER_HASH_SLOTS") or os.cpu_count() or 1)
_hashing = threading.BoundedSemaphore(HASH_SLOTS)


def acceptable_password(password: str) -> bool:
    return MIN_LENGTH <= len(password) <= MAX_LENGTH


def hash_password(password: str) -> str:
    with _hashing:
        return argon2id.str(password.encode(), opslimit=TIME_COST, memlimit=MEMORY_KIB * 1024).decode()


def password_matches(stored: str, password: str) -> bool:
    try:
        with _hashing:
            return argon2id.verify(stored.encode(), password.encode())
    except CryptoError:  # a wrong password, or a stored value that is no argon2id hash
        return False


def needs_rehash(stored: str) -> bool:
    try:
        return PARAMETERS.check_needs_rehash(stored)
    except InvalidHashError:
        return True


# Compared against when the account does not exist, so both answers take one hash.
_DUMMY_HASH = hash_password("an unknown account costs the same time")


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
        matched = password_matches(stored, password)
        if failures > self.max_failures:
            return Verification(False, "throttled")
        if not matched or stored is _DUMMY_HASH:
            return Verification(False, "unknown account" if stored is _DUMMY_HASH else "wrong password")
        self.store.delete(counter)
        if needs_rehash(stored):
            from ...extensions import db

            user.password_hash = hash_password(password)
            db.session.commit()
        return Verification(True)
