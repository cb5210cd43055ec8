"""One-time secrets sent to an email address or a phone: codes and magic links.

The invariants live here, not in views (Kratos / warehouse style):
- a secret is stored only as a keyed hash, compared in constant time, consumed once
  (an atomic `take`, so two concurrent submits cannot both succeed);
- every submit is counted *before* comparing; after `max_attempts` the code is dead;
- a challenge is bound to one user, one factor and one login (the *binding*), so a
  code of user A, or an email code on the SMS step, or a code from another login,
  never verifies;
- sending is rate limited per user, per destination and per IP, in the ephemeral
  store so the limits hold across workers; a resend waits for a cool-down and kills
  the previous secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from .factors import Verification


class SendRefused(Exception):
    """Sending was refused before anything was sent; `message_id` names the catalogued message."""

    def __init__(self, message_id: str, retry_after: int = 0):
        super().__init__(message_id)
        self.message_id = message_id
        self.retry_after = retry_after


@dataclass(frozen=True)
class Issued:
    challenge: str  # public id of the challenge, kept in the login's state
    secret: str  # the code or link token, to be delivered; never stored


class OneTimeSecrets:
    def __init__(self, store, settings, key: bytes):
        self.store = store
        self.settings = settings.otp
        self._key = key

    # -- helpers ---------------------------------------------------------------------
    def _hash(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()

    def new_code(self) -> str:
        length = self.settings.length
        return str(secrets.randbelow(10**length)).zfill(length)

    @staticmethod
    def new_link_token() -> str:
        return secrets.token_urlsafe(32)

    def _limit(self, key: str, limit: int, window: int) -> None:
        if self.store.incr(f"rate:{key}", window) > limit:
            raise SendRefused("rate_limited", retry_after=window)

    # -- issuing ---------------------------------------------------------------------
    def check_send_allowed(self, *, factor: str, binding: str, user_id: str | None,
                           destination: str | None, ip: str | None) -> None:
        """Cool-down and rate limits; raises SendRefused. Also applied to unknown accounts,
        so the answers for known and unknown addresses cannot be told apart."""
        limits = self.settings
        if not self.store.add(f"otp-cooldown:{binding}:{factor}", 1, limits.resend_cooldown):
            raise SendRefused("resend_too_soon", retry_after=limits.resend_cooldown)
        if ip:
            self._limit(f"ip:{ip}", limits.per_ip_limit, limits.rate_window)
        if user_id:
            self._limit(f"user:{user_id}", limits.per_user_limit, limits.rate_window)
        if destination:
            self._limit(f"dest:{destination.lower()}", limits.per_destination_limit, limits.rate_window)

    def issue(self, *, factor: str, binding: str, user_id: str, destination: str, secret: str,
              lifetime: int) -> Issued:
        """Store a new challenge for this login and factor, replacing (killing) the previous one."""
        challenge = secrets.token_urlsafe(16)
        record = {
            "user_id": user_id, "factor": factor, "binding": binding, "destination": destination,
            "secret_hash": self._hash(secret), "expires_at": time.time() + lifetime,
        }
        self.store.set(f"otp:{challenge}", record, lifetime)
        self.store.set(f"otp-lookup:{self._hash(secret)}", challenge, lifetime)
        previous = self.store.get(f"otp-current:{binding}:{factor}")
        if previous:
            self.store.delete(f"otp:{previous}")
        self.store.set(f"otp-current:{binding}:{factor}", challenge, lifetime)
        return Issued(challenge, secret)

    def undo_send(self, issued: Issued | None, *, factor: str, binding: str) -> None:
        """A delivery failed: forget the challenge and the cool-down so the user can retry."""
        if issued is not None:
            self.store.delete(f"otp:{issued.challenge}")
        self.store.delete(f"otp-cooldown:{binding}:{factor}")

    # -- verifying -------------------------------------------------------------------
    def verify(self, challenge: str | None, *, factor: str, binding: str, user_id: str | None,
               secret: str) -> Verification:
        if not challenge or not user_id:
            return Verification(False, "no challenge for this login")
        key = f"otp:{challenge}"
        record = self.store.get(key)
        if record is None:
            return Verification(False, "expired, used or replaced")
        if record["expires_at"] <= time.time():  # by this server's clock, whatever the store's says
            return Verification(False, "expired")
        if (record["user_id"], record["factor"], record["binding"]) != (user_id, factor, binding):
            return Verification(False, "challenge of another user, factor or login")
        # The counter alone ends the code: every try past the limit is refused. Deleting the code
        # here would also fail a right answer counted within the limit and still in flight.
        tries = self.store.incr(f"otp-tries:{challenge}", max(self.settings.lifetime, self.settings.link_lifetime))
        if tries > self.settings.max_attempts:
            return Verification(False, "too many attempts")
        if not hmac.compare_digest(self._hash(secret.strip()), record["secret_hash"]):
            return Verification(False, "wrong code")
        if self.store.take(key) is None:
            return Verification(False, "used concurrently")
        return Verification(True)

    def find_by_link(self, token: str) -> tuple[str, dict] | None:
        """The challenge a link token belongs to, without consuming it (GET must not)."""
        if not token or len(token) > 128:
            return None
        challenge = self.store.get(f"otp-lookup:{self._hash(token)}")
        record = self.store.get(f"otp:{challenge}") if challenge else None
        return (challenge, record) if record else None


def mask_email(address: str) -> str:
    name, _, domain = address.partition("@")
    return f"{name[:1]}•••@{domain}"


def mask_phone(number: str) -> str:
    return "•••" + number[-2:]
