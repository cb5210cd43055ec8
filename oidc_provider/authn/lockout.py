"""Account lockout: failed attempts of every factor count toward one limit per account.

An attempt is counted *before* the answer is checked, in one atomic UPDATE that also
refuses it when the account is locked; so parallel guesses cannot slip past the
limit, and once locked even a correct answer gets the same generic failure. A
success resets the count (NIST SP 800-63B 5.2.2: consecutive failures). The state is
durable, in the users table: a Redis restart does not unlock anyone.
"""

from __future__ import annotations

import time
from typing import Callable

from sqlalchemy import text

from ..extensions import db, update_at_commit
from ..observability import counts_answers

_ATTEMPT = text(
    "UPDATE users SET "
    "failed_attempts = CASE WHEN locked_until IS NOT NULL AND locked_until <= :now THEN 1 "
    "ELSE failed_attempts + 1 END, "
    "locked_until = CASE WHEN (CASE WHEN locked_until IS NOT NULL AND locked_until <= :now THEN 1 "
    "ELSE failed_attempts + 1 END) >= :limit THEN :until ELSE NULL END "
    "WHERE id = :id AND (locked_until IS NULL OR locked_until <= :now) "
    "RETURNING failed_attempts"
)
RECENT_WINDOW = 3600  # seconds


def _forget_loaded_state(user_id: str) -> None:
    """These UPDATEs bypass the ORM, and sessions keep loaded values after a commit: a User
    already loaded in this request must read its lockout columns afresh."""
    from ..models import User

    user = db.session.identity_map.get(db.session.identity_key(User, user_id))
    if user is not None:
        db.session.expire(user, ["failed_attempts", "locked_until"])


class Lockout:
    def __init__(self, settings):
        self.limit = settings.lockout.max_failures
        self.duration = settings.lockout.duration

    def begin_attempt(self, user_id: str) -> int | None:
        """Count an attempt; None when the account is locked (the attempt must fail)."""
        now = time.time()
        row = db.session.execute(_ATTEMPT, {"now": now, "limit": self.limit, "until": now + self.duration,
                                            "id": user_id}).first()
        db.session.commit()
        _forget_loaded_state(user_id)
        return row[0] if row else None

    @staticmethod
    def is_locked(user) -> bool:
        return bool(user.locked_until and user.locked_until > time.time())

    def succeeded(self, user_id: str, commit: bool = True) -> None:
        """Reset the count; `commit` False leaves the reset to the caller's next commit."""
        from ..models import User

        update_at_commit(User.__table__, user_id, failed_attempts=0, locked_until=None)
        if commit:
            db.session.commit()
        _forget_loaded_state(user_id)

    def unlock(self, user_id: str) -> None:
        self.succeeded(user_id)


class CountedCheck:
    """A one-off check (a new factor's first code) under the account lockout: shaped as a
    factor for verify_counted, and counted as `factor_id`'s answers in the metrics."""

    kind = "enrollment"  # the metrics ask every answered factor its kind

    def __init__(self, factor_id: str, check: Callable):
        self.id, self._check = factor_id, check

    def verify(self, user, response, context):
        return self._check()


@counts_answers  # success or failure per factor, for the metrics
def verify_counted(op, factor, user, response: dict, context: dict, commit: bool = True):
    """A factor's check under the account lockout: the one place views verify answers.
    `commit` False: a success's reset of the count waits for the caller's commit of what it
    records of that success (one transaction instead of two); never committed, the attempt
    stays counted, which errs on the safe side."""
    from ..models import record_audit
    from .factors import Verification

    if user is None:
        return factor.verify(user, response, context)
    count = op.lockout.begin_attempt(user.id)
    if count is None:
        return Verification(False, "account locked")
    result = factor.verify(user, response, context)
    if result.ok:
        op.lockout.succeeded(user.id, commit)
        return result
    # the adaptive policy looks at failures of the last hour, successes or not
    op.store.incr(f"recent-failures:{user.id}", RECENT_WINDOW)
    if count >= op.lockout.limit:
        record_audit("account.locked", user_id=user.id, factor=factor.id, failures=count)
    return result


def recent_failures(op, user_id: str) -> int:
    return int(op.store.get(f"recent-failures:{user_id}") or 0)
