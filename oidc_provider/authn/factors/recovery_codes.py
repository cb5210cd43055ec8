"""Recovery codes: single-use codes the user saved, for when their other factors are lost.

A set is `recovery_codes` codes (10 by default) of 12 characters from Crockford's
base32 alphabet: 60 bits each, shown as xxxx-xxxx-xxxx exactly once, when generated,
numbered 1..N in the order shown. Each code is one Authenticator row holding only a keyed
hash (HMAC-SHA256 with a key derived from the master secret, over the user id and the
code) and its number; with 60 random bits a slow hash adds nothing, and the key means a
database dump alone cannot test guesses. A sign-in asks for one code: the next unused one,
the lowest number left (NIST SP 800-63B-3 5.1.2.2); any other code, even an unused one of
the set, is refused as a wrong one. The database finds the code by its hash and number, so
nothing secret is compared in Python. Using one deletes its row in one statement: of two
requests with the same code exactly one deletes it. Generating a new set deletes the old
one in the same transaction. A use is audited and the user is told by email.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time

from sqlalchemy.orm import aliased

from ...i18n import gettext, lazy_gettext as _l, ngettext
from ...delivery import DeliveryError
from ...extensions import db
from ...models import Authenticator, record_audit
from . import Verification

log = logging.getLogger(__name__)

# Crockford's base32, lower case: no i, l, o or u, so nothing reads as another character.
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
LENGTH = 12  # 12 x 5 = 60 bits
GROUP = 4
# What people may type for a character that is not in the alphabet (Crockford's decoding).
_LOOKALIKES = str.maketrans({"i": "1", "l": "1", "o": "0"})
_SEPARATORS = re.compile(r"[\s\-]")


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def shown(code: str) -> str:
    """abcd-efgh-jkmn: groups are easier to copy by hand."""
    return "-".join(code[i:i + GROUP] for i in range(0, len(code), GROUP))


def normalize(typed: str) -> str | None:
    """The code as stored from what a person typed (any case, spaces or dashes, I/L/O for 1/0);
    None when it cannot be a code."""
    code = _SEPARATORS.sub("", typed or "").lower().translate(_LOOKALIKES)
    if len(code) != LENGTH or any(ch not in ALPHABET for ch in code):
        return None
    return code


class RecoveryCodeFactor:
    id = "recovery-code"
    amr = "rcv"
    flow = "recovery"  # something saved on paper: a flow of its own
    kind = "code"
    response_field = "code"
    max_response = 32
    failure_message = "recovery_code_failed"
    usernameless = False
    first_factor = False
    inputmode = "text"  # codes have letters: a full keyboard on phones
    label = _l("Use a recovery code")
    # letters, digits, spaces and dashes; "\-" so it is valid under the pattern attribute's v flag
    pattern = r"[A-Za-z0-9 \-]*"

    def __init__(self, op):
        self.delivery = op.delivery
        self.settings = op.settings.totp_recovery
        self._key = op.secret.derive("recovery-codes")

    # -- the Factor protocol ---------------------------------------------------------------

    def available_for(self, user) -> bool:
        return bool(user and not user.disabled and self.remaining(user) > 0)

    def begin(self, user, context) -> dict:
        return {}  # nothing is sent: the user has the codes

    def prompt(self, user) -> str:
        """The code page's lead text: which code to enter."""
        number = self.next_number(user) if user is not None else None
        if number is None:
            return gettext("Enter one of the recovery codes you saved. Each code works only once.")
        return gettext("Enter recovery code number %(number)d from the set you saved. Each code works only once.",
                       number=number)

    def verify(self, user, response, context) -> Verification:
        if user is None or user.disabled:
            return Verification(False, "no account")
        code = normalize(str(response.get(self.response_field) or ""))
        if code is None:
            return Verification(False, "not a recovery code")
        lookup = self._lookup(user.id, code)
        # only the next code: its number is the lowest left, read in the same statement
        lowest = aliased(Authenticator)
        next_number = db.select(db.func.min(lowest.number)).where(*self._unused(user, lowest)).scalar_subquery()
        used = db.session.execute(db.delete(Authenticator).where(
            *self._unused(user), Authenticator.lookup == lookup, Authenticator.number == next_number,
        )).rowcount
        db.session.commit()
        if used != 1:
            return Verification(False, "an unused recovery code, but not the next one" if self._is_unused(user, lookup)
                                else "unknown or used recovery code")
        left = self.remaining(user)
        record_audit("recovery_code.used", user_id=user.id, ip=context.get("ip"), remaining=left)
        self._tell(user, left)
        return Verification(True)

    # -- the set ---------------------------------------------------------------------------

    def remaining(self, user) -> int:
        return db.session.execute(db.select(db.func.count()).select_from(Authenticator).where(
            *self._unused(user))).scalar_one()

    def next_number(self, user) -> int | None:
        """The number of the code a sign-in asks for (the lowest left), None when none is left."""
        return db.session.execute(db.select(db.func.min(Authenticator.number)).where(
            *self._unused(user))).scalar_one()

    def is_low(self, left: int) -> bool:
        return left <= self.settings.recovery_codes_low

    def generate(self, user, confirmed: bool = True) -> list[str]:
        """A new set replacing the old one (same transaction); the codes as shown, never again,
        in the order of their numbers (the first is number 1). An unconfirmed set (the MFA
        API's first enrollment) works only once `confirm_pending`."""
        codes = [new_code() for _ in range(self.settings.recovery_codes)]
        now = time.time()
        db.session.execute(db.delete(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id))
        db.session.add_all(Authenticator(user_id=user.id, kind=self.id, name="Recovery code", secret=None, data={},
                                         lookup=self._lookup(user.id, code), confirmed=confirmed, created_at=now,
                                         number=number)
                           for number, code in enumerate(codes, start=1))
        db.session.commit()
        return [shown(code) for code in codes]

    def confirm_pending(self, user) -> int:
        """An unconfirmed set becomes the user's set (its enrollment was confirmed)."""
        confirmed = db.session.execute(db.update(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id, Authenticator.confirmed.is_(False),
        ).values(confirmed=True).execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        return confirmed

    def add_one(self, user) -> tuple[int, str]:
        """One new code after the others (the number after the highest), shown once with its
        number: the MFA API hands one back for each used."""
        code = new_code()
        mine = aliased(Authenticator)
        after_last = db.select(db.func.coalesce(db.func.max(mine.number), 0) + 1).where(
            mine.user_id == user.id, mine.kind == self.id).scalar_subquery()
        added = Authenticator(user_id=user.id, kind=self.id, name="Recovery code", secret=None, data={},
                              lookup=self._lookup(user.id, code), confirmed=True, created_at=time.time(),
                              number=after_last)
        db.session.add(added)
        db.session.commit()
        return added.number, shown(code)

    def remove(self, user) -> int:
        removed = db.session.execute(db.delete(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id)).rowcount
        db.session.commit()
        return removed

    # -- internals -------------------------------------------------------------------------

    def _unused(self, user, rows=Authenticator) -> tuple:
        """Where the user's codes that work now are (`rows`: the table or an alias of it)."""
        return rows.user_id == user.id, rows.kind == self.id, rows.confirmed.is_(True)

    def _is_unused(self, user, lookup: str) -> bool:
        return db.session.execute(db.select(Authenticator.id).where(
            *self._unused(user), Authenticator.lookup == lookup)).first() is not None

    def _lookup(self, user_id: str, code: str) -> str:
        return hmac.new(self._key, f"{user_id}:{code}".encode(), hashlib.sha256).hexdigest()

    def _tell(self, user, left: int) -> None:
        """A notice to the account's address; a failed delivery never fails the sign-in."""
        if not user.email:
            return
        more = (gettext("Generate a new set on your account's security page soon.")
                if self.is_low(left) else gettext("You can generate a new set on your account's security page."))
        text = (ngettext("A recovery code was just used to sign in to your account. %(num)d unused code remains.",
                         "A recovery code was just used to sign in to your account. %(num)d unused codes remain.",
                         left) + " " + more + "\n\n"
                + gettext("If this was not you, sign in, generate new recovery codes and change your password now."))
        try:
            self.delivery.send_email(user.email, "notice", {"subject": gettext("A recovery code was used"),
                                                            "text": text})
        except DeliveryError as exc:
            log.warning("recovery code notice for user %s not delivered: %s", user.id, exc)
