"""Password: argon2id (OWASP parameters), the first factor of the classic login.

Hashed and verified by argon2-cffi, whose C library `make install` compiles for the CPU it
runs on (AVX2 or AVX-512 instead of the portable wheel's SSE2: about 1.6x less CPU per hash).
Its 19 MiB come from malloc, which keeps them for the next hash; libsodium, as fast in
computation, maps them afresh every time and the kernel's page faults cost as much again
(README, Decisions).

A process computes its hashes on HASH_SLOTS threads of its own, the others wait their turn: the
server's cores shared among its workers (`serve` sets OIDC_PROVIDER_HASH_SLOTS), else one per
core. More at once only take turns on the same cores, each evicting the others' 19 MiB from
the caches and holding 19 MiB more: a flood of password posts costs more CPU per login and more
memory, not more logins (README, Production). Dedicated threads also bound what malloc keeps:
it holds the 19 MiB in the arena of each thread that hashed, so slots x 19 MiB, not one block
per request thread.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ...i18n import lazy_gettext as _l
from . import Verification

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1
TIME_COST, MEMORY_KIB = 2, 19 * 1024
PASSWORDS = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_KIB, parallelism=1)
THROTTLE_WINDOW = 15 * 60
MIN_LENGTH, MAX_LENGTH = 8, 1024  # `users set-password` and the password reset page alike
HASH_SLOTS = int(os.environ.get("OIDC_PROVIDER_HASH_SLOTS") or os.cpu_count() or 1)


def _new_hashing_threads() -> None:
    """The pool starts its threads on first use; a forked child inherits none, so it gets a new one."""
    global _hashing
    _hashing = ThreadPoolExecutor(HASH_SLOTS, "argon2id")


_new_hashing_threads()
os.register_at_fork(after_in_child=_new_hashing_threads)


def _on_hash_slot(function, *args):
    """Runs function on one of this process's HASH_SLOTS hashing threads and waits for it."""
    return _hashing.submit(function, *args).result()


def acceptable_password(password: str) -> bool:
    return MIN_LENGTH <= len(password) <= MAX_LENGTH


def hash_password(password: str) -> str:
    return _on_hash_slot(PASSWORDS.hash, password)


def password_matches(stored: str, password: str) -> bool:
    try:
        return _on_hash_slot(PASSWORDS.verify, stored, password)
    except (VerificationError, InvalidHashError):  # a wrong password, or no argon2 hash at all
        return False


def needs_rehash(stored: str) -> bool:
    try:
        return PASSWORDS.check_needs_rehash(stored)
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
