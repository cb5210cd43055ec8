"""mfa_token: a login that passed its first factor and must do more (Auth0's MFA API).

The client holds an opaque value (256 random bits); the store keeps the login under an
HMAC of it (key derived from the master secret), so the store names no usable token. A
login records its client, its user, the factors done and when, the acr level it must
reach, and the scope and resources asked for: a second factor only ever completes that
user's login at that client.

It lives `mfa_api.mfa_token_lifetime` seconds (10 minutes, as Auth0's); the record is kept
an hour longer only so that a late use is told "expired" rather than "malformed". Every
answer checked with it (an OTP, a binding code, a recovery code) is counted first, in one
atomic increment: after `max_attempts` answers it is dead. The counter alone says so (the
record stays until it expires), so a right answer counted within the limit still wins a race
with later ones. A success takes it from the store (single use, also under concurrent
requests); a login that still needs more gets a new one.

Out-of-band codes (`oob_code`, from /mfa/challenge and /mfa/associate) are opaque too and
kept the same way, each bound to the holder (login or access token) that asked for it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass, field

from .session import FactorUse

GRACE = 3600  # seconds a dead login's record is kept to say "expired"
MAX_TOKEN = 256  # longest mfa_token or oob_code looked at, in characters
LOGIN = "mfa-login:{}"
TRIES = "mfa-tries:{}"
OOB = "mfa-oob:{}"
ENROLLMENT = "mfa-enrollment:{}"


class MfaTokenError(Exception):
    """An mfa_token or oob_code refused; `error` and `description` are Auth0's."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


MALFORMED = ("invalid_grant", "Malformed mfa_token")
EXPIRED = ("expired_token", "mfa_token is expired")


@dataclass
class MfaLogin:
    """A login waiting for more factors, as stored."""

    key: str  # the keyed hash of the token: the store key, also binding challenges to this login
    client_id: str
    user_id: str
    factors: list[dict]  # FactorUse as dicts, in the order done
    level: str | None  # the acr level it must reach
    scope: str
    resources: list[str] = field(default_factory=list)
    expires_at: float = 0.0

    @property
    def uses(self) -> list[FactorUse]:
        return [FactorUse(**use) for use in self.factors]


class MfaTokens:
    def __init__(self, store, key: bytes, settings):
        self.store = store
        self._key = key
        self.lifetime = settings.mfa_token_lifetime
        self.max_attempts = settings.max_attempts

    @classmethod
    def of(cls, op) -> MfaTokens:
        return cls(op.store, op.secret.derive("mfa-tokens"), op.settings.mfa_api)

    def digest(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    # -- logins --------------------------------------------------------------------------

    def issue(self, *, client_id: str, user_id: str, factors: list[FactorUse], level: str | None, scope: str,
              resources: list[str]) -> str:
        token = secrets.token_urlsafe(32)
        login = MfaLogin(key=self.digest(token), client_id=client_id, user_id=user_id,
                         factors=[asdict(use) for use in factors], level=level, scope=scope,
                         resources=list(resources), expires_at=time.time() + self.lifetime)
        self.store.set(LOGIN.format(login.key), asdict(login), self.lifetime + GRACE)
        return token

    def find(self, token) -> MfaLogin:
        """The login an mfa_token stands for; MfaTokenError when unknown, used or expired."""
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN:
            raise MfaTokenError(*MALFORMED)
        record = self.store.get(LOGIN.format(self.digest(token)))
        if record is None:
            raise MfaTokenError(*MALFORMED)
        login = MfaLogin(**record)
        if int(self.store.get(TRIES.format(login.key)) or 0) > self.max_attempts:
            raise MfaTokenError(*MALFORMED)  # dead after too many answers
        if login.expires_at <= time.time():
            raise MfaTokenError(*EXPIRED)
        return login

    def count_attempt(self, holder_key: str) -> bool:
        """Count one answer before it is checked; False (and the login dead) past the limit. The
        counter alone kills it: deleting the login would also fail a right answer counted within
        the limit and still being checked."""
        return self.store.incr(TRIES.format(holder_key), self.lifetime + GRACE) <= self.max_attempts

    def finish(self, login: MfaLogin) -> bool:
        """Use the login up; of concurrent successes exactly one gets True."""
        return self.store.take(LOGIN.format(login.key)) is not None

    # -- out-of-band codes and enrollments, bound to a holder (a login, or an access token) ---

    def new_oob(self, holder_key: str, record: dict, lifetime: float) -> str:
        code = secrets.token_urlsafe(32)
        self.store.set(OOB.format(self.digest(code)), {**record, "holder": holder_key,
                                                       "expires_at": time.time() + lifetime}, lifetime + GRACE)
        return code

    def oob(self, code, holder_key: str) -> dict | None:
        """The record of an oob_code this holder asked for; None when unknown or another's."""
        if not isinstance(code, str) or not 0 < len(code) <= MAX_TOKEN:
            return None
        record = self.store.get(OOB.format(self.digest(code)))
        if record is None or not hmac.compare_digest(record["holder"], holder_key):
            return None
        return record

    def drop_oob(self, code: str) -> None:
        self.store.delete(OOB.format(self.digest(code)))

    def remember_enrollment(self, holder_key: str, record: dict) -> None:
        """What /mfa/associate started for this holder (the TOTP app to confirm, the recovery
        codes that go with it), until the holder's own lifetime ends."""
        self.store.set(ENROLLMENT.format(holder_key), record, self.lifetime + GRACE)

    def enrollment(self, holder_key: str) -> dict | None:
        return self.store.get(ENROLLMENT.format(holder_key))

    def forget_enrollment(self, holder_key: str) -> None:
        self.store.delete(ENROLLMENT.format(holder_key))
