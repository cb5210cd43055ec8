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

from ..extensions import db, single_statement_transaction, update_at_commit
from ..models.users import User, login_key
from ..observability import counts_answers

_UNLOCKED = "(locked_until IS NULL OR locked_until <= :now)"
_COUNT = (
    "UPDATE users SET "
    "failed_attempts = CASE WHEN locked_until IS NOT NULL AND locked_until <= :now THEN 1 "
    "ELSE failed_attempts + 1 END, "
    "locked_until = CASE WHEN (CASE WHEN locked_until IS NOT NULL AND locked_until <= :now THEN 1 "
    "ELSE failed_attempts + 1 END) >= :limit THEN :until ELSE NULL END "
)
_ATTEMPT = text(f"{_COUNT} WHERE id = :id AND {_UNLOCKED} RETURNING failed_attempts")
# A sign-in by login name: the account found and the attempt counted by the same statement
_COLUMNS = User.__table__.c  # named: a table's columns are in the order its migrations added them
_FOUND_AND_COUNTED = {
    column: db.select(User).from_statement(text(
        f"{_COUNT} WHERE {column} = :login AND {_UNLOCKED} RETURNING {', '.join(c.name for c in _COLUMNS)}"
    ).columns(*_COLUMNS)).execution_options(populate_existing=True)  # the count, also of a user loaded before
    for column in ("username", "email")
}
RECENT_WINDOW = 3600  # seconds
COUNT_HERE = object()  # verify_counted's attempt not counted yet


def _forget_loaded_state(user_id: str) -> None:
    """These UPDATEs bypass the ORM, and sessions keep loaded values after a commit: a User
    already loaded in this request must read its lockout columns afresh."""
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
        single_statement_transaction()
        row = db.session.execute(_ATTEMPT, {"now": now, "limit": self.limit, "until": now + self.duration,
                                            "id": user_id}).first()
        db.session.commit()
        _forget_loaded_state(user_id)
        return row[0] if row else None

    def find_and_count(self, login: str) -> tuple[User | None, int | None]:
        """The account of a login name (User.find_by_login) with an attempt counted, in one
        statement where a SELECT and then begin_attempt's UPDATE would be two: the user and the
        count; (user, None) when the account is locked; (None, None) when there is none."""
        key = login_key(login)
        if key is None:
            return None, None
        now = time.time()
        single_statement_transaction()
        user = db.session.execute(_FOUND_AND_COUNTED[key[0]], {
            "login": key[1], "now": now, "limit": self.limit, "until": now + self.duration}).scalar_one_or_none()
        db.session.commit()
        if user is None:  # no such account, or a locked one (counted nothing, as begin_attempt)
            return User.find_by_login(login), None
        return user, user.failed_attempts

    @staticmethod
    def is_locked(user) -> bool:
        return bool(user.locked_until and user.locked_until > time.time())

    def succeeded(self, user_id: str, commit: bool = True) -> None:
        """Reset the count; `commit` False leaves the reset to the caller's next commit."""
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


def verify_login(op, factor, response: dict, context: dict, commit: bool = True):
    """A first factor answered with a login name (the password): the account of `response["login"]`
    and the answer checked as verify_counted does, the attempt counted by the statement that
    finds the account."""
    user, count = op.lockout.find_and_count(response["login"])
    return user, verify_counted(op, factor, user, response, context, commit, attempt=count)


@counts_answers  # success or failure per factor, for the metrics
def verify_counted(op, factor, user, response: dict, context: dict, commit: bool = True, attempt=COUNT_HERE):
    """A factor's check under the account lockout: the one place views verify answers.
    `commit` False: a success's reset of the count waits for the caller's commit of what it
    records of that success (one transaction instead of two); never committed, the attempt
    stays counted, which errs on the safe side. `attempt`: the count when the caller counted
    this attempt already (verify_login; None: the account is locked)."""
    from ..models import record_audit
    from .factors import Verification

    if user is None:
        return factor.verify(user, response, context)
    count = op.lockout.begin_attempt(user.id) if attempt is COUNT_HERE else attempt
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
