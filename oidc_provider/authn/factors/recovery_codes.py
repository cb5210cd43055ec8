"""Recovery codes: single-use codes the user saved, for when their other factors are lost.

A set is `recovery_codes` codes (10 by default) of 12 characters from Crockford's
base32 alphabet: 60 bits each, shown as xxxx-xxxx-xxxx exactly once, when generated.
Each code is one Authenticator row holding only a keyed hash (HMAC-SHA256 with a key
derived from the master secret, over the user id and the code); with 60 random bits
a slow hash adds nothing, and the key means a database dump alone cannot test
guesses. The database finds a code by that hash, so nothing secret is compared in
Python. Using one deletes its row in one statement: of two requests with the same
code exactly one deletes it. Generating a new set deletes the old one in the same
transaction. A use is audited and the user is told by email.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time

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
    prompt = _l("Enter one of the recovery codes you saved. Each code works only once.")
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

    def verify(self, user, response, context) -> Verification:
        if user is None or user.disabled:
            return Verification(False, "no account")
        code = normalize(str(response.get(self.response_field) or ""))
        if code is None:
            return Verification(False, "not a recovery code")
        used = db.session.execute(db.delete(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id, Authenticator.confirmed.is_(True),
            Authenticator.lookup == self._lookup(user.id, code),
        )).rowcount
        db.session.commit()
        if used != 1:
            return Verification(False, "unknown or used recovery code")
        left = self.remaining(user)
        record_audit("recovery_code.used", user_id=user.id, ip=context.get("ip"), remaining=left)
        self._tell(user, left)
        return Verification(True)

    # -- the set ---------------------------------------------------------------------------

    def remaining(self, user) -> int:
        return db.session.execute(db.select(db.func.count()).select_from(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id, Authenticator.confirmed.is_(True),
        )).scalar_one()

    def is_low(self, left: int) -> bool:
        return left <= self.settings.recovery_codes_low

    def generate(self, user, confirmed: bool = True) -> list[str]:
        """A new set replacing the old one (same transaction); the codes as shown, never again.
        An unconfirmed set (the MFA API's first enrollment) works only once `confirm_pending`."""
        codes = [new_code() for _ in range(self.settings.recovery_codes)]
        now = time.time()
        db.session.execute(db.delete(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id))
        db.session.add_all(Authenticator(user_id=user.id, kind=self.id, name="Recovery code", secret=None, data={},
                                         lookup=self._lookup(user.id, code), confirmed=confirmed, created_at=now)
                           for code in codes)
        db.session.commit()
        return [shown(code) for code in codes]

    def confirm_pending(self, user) -> int:
        """An unconfirmed set becomes the user's set (its enrollment was confirmed)."""
        confirmed = db.session.execute(db.update(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id, Authenticator.confirmed.is_(False),
        ).values(confirmed=True).execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        return confirmed

    def add_one(self, user) -> str:
        """One new code beside the others, shown once: the MFA API hands one back for each used."""
        code = new_code()
        db.session.add(Authenticator(user_id=user.id, kind=self.id, name="Recovery code", secret=None, data={},
                                     lookup=self._lookup(user.id, code), confirmed=True, created_at=time.time()))
        db.session.commit()
        return shown(code)

    def remove(self, user) -> int:
        removed = db.session.execute(db.delete(Authenticator).where(
            Authenticator.user_id == user.id, Authenticator.kind == self.id)).rowcount
        db.session.commit()
        return removed

    # -- internals -------------------------------------------------------------------------

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
