"""WebAuthn factors: roaming security keys, device biometrics, and passkeys.

Three factors share one ceremony (authn/webauthn_ceremonies.py) and differ in how their
credentials are made and used: a security key is a second factor (user verification
preferred), device biometrics demand user verification, and a passkey is a discoverable,
verified credential that names its user, so a login may start with it and nothing else.
Each only accepts credentials registered as its own kind.

Challenges are random, kept in the store under the interaction (sign-in) or the IdP
session (registration) they were made for, and consumed with `take`: an assertion is
checked against a challenge at most once, whatever the outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from ...i18n import lazy_gettext as _l
from ...extensions import db
from ...models import Authenticator, confirmed_authenticators, record_audit
from ..webauthn_ceremonies import CeremonyFailed, RelyingParty, b64url, new_challenge, parse_credential
from . import Verification

log = logging.getLogger(__name__)

KIND_IDS = ("webauthn-key", "webauthn-platform", "passkey")
AUTH_KEY = "webauthn:auth:{binding}:{challenge}"  # a sign-in challenge, bound to the interaction
REGISTRATION_KEY = "webauthn:reg:{sid}"  # the registration under way in an IdP session
NAME_LENGTH = 64
DEFAULT_NAMES = {"webauthn-key": "Security key", "webauthn-platform": "This device", "passkey": "Passkey"}


def user_handle(op, user_id: str) -> bytes:
    """The WebAuthn user.id: stable per account, and not the `sub` the clients see (WebAuthn 14.6.1)."""
    return hmac.new(op.secret.derive("webauthn-user-handle"), user_id.encode(), hashlib.sha256).digest()


def find_credential(kind: str, credential_id: str) -> Authenticator | None:
    return db.session.execute(
        db.select(Authenticator).filter_by(kind=kind, lookup=credential_id, confirmed=True)
    ).scalars().first()


def user_credentials(user_id: str, kinds=KIND_IDS) -> list[Authenticator]:
    return [a for a in confirmed_authenticators(user_id) if a.kind in kinds]


def clean_name(name: str | None, kind: str) -> str:
    name = " ".join((name or "").split())[:NAME_LENGTH]
    return name or DEFAULT_NAMES[kind]


# -- registration (the account's security page) ------------------------------------------------

class RegistrationRefused(Exception):
    """Registration failed; `reason` is for logs and the audit only."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def start_registration(op, user, sid: str, kind: str, name: str | None) -> dict:
    """Creation options for a new credential of `kind` (an enabled factor), its challenge kept for
    this IdP session."""
    rp = op.factors.get(kind).rp
    challenge = new_challenge()
    options = rp.registration_options(
        kind, user_handle=user_handle(op, user.id), user_name=user.email or user.username,
        display_name=user.name or user.username, challenge=challenge,
        exclude=[a.lookup for a in user_credentials(user.id, (kind,))],
    )
    # One registration at a time per session: a newer one replaces an unfinished one.
    op.store.set(REGISTRATION_KEY.format(sid=sid),
                 {"challenge": challenge, "user_id": user.id, "kind": kind, "name": clean_name(name, kind)},
                 rp.timeout)
    return options


def finish_registration(op, user, sid: str, raw: str) -> Authenticator:
    """Verify the authenticator's answer to this session's registration and keep the credential."""
    pending = op.store.take(REGISTRATION_KEY.format(sid=sid))  # single use, success or not
    if pending is None or pending["user_id"] != user.id:
        raise RegistrationRefused("no registration under way in this session (expired or used)")
    kind = pending["kind"]
    factor = op.factors.get(kind)
    if factor is None:
        raise RegistrationRefused(f"{kind} is not enabled")
    try:
        new = factor.rp.verify_registration(kind, raw, pending["challenge"])
    except CeremonyFailed as exc:
        raise RegistrationRefused(str(exc)) from None
    # WebAuthn 7.1 step 22: a credential id already registered (to anyone) is refused.
    known = db.session.execute(db.select(Authenticator.id).filter(
        Authenticator.lookup == new.credential_id, Authenticator.kind.in_(KIND_IDS))).first()
    if known is not None:
        raise RegistrationRefused("credential id already registered")
    credential = Authenticator(
        user_id=user.id, kind=kind, name=pending["name"], lookup=new.credential_id, confirmed=True,
        data={"public_key": new.public_key, "sign_count": new.sign_count, "aaguid": new.aaguid,
              "transports": new.transports, "user_verified": new.user_verified, "backed_up": new.backed_up,
              "fmt": new.fmt, "user_handle": b64url(user_handle(op, user.id))},
    )
    db.session.add(credential)
    db.session.commit()
    return credential


# -- signing in ---------------------------------------------------------------------------------

class WebAuthnFactor:
    amr = "webauthn"
    flow = "webauthn"  # several WebAuthn credentials are still one kind of proof: never MFA together
    kind = "webauthn"
    response_field = "credential"
    max_response = 16_384  # an assertion is well under 2 KB; a long user handle and ids fit easily
    failure_message = "webauthn_failed"
    usernameless = False
    first_factor = False
    id: str
    label: str
    instruction: str  # what the sign-in page asks the person to do

    def __init__(self, op):
        self.op = op
        self.store = op.store
        self.rp = RelyingParty.from_settings(op.settings)  # validated at start-up

    def available_for(self, user) -> bool:
        return bool(user and not user.disabled and user_credentials(user.id, (self.id,)))

    def allowed(self, user) -> list[Authenticator]:
        """The credentials offered to the browser (allowCredentials)."""
        return user_credentials(user.id, (self.id,)) if user is not None and not user.disabled else []

    def begin(self, user, context) -> dict:
        challenge = new_challenge()
        allowed = self.allowed(user)
        options = self.rp.authentication_options(
            self.id, allow=[(a.lookup, a.data.get("transports") or []) for a in allowed], challenge=challenge)
        self.store.set(AUTH_KEY.format(binding=context["binding"], challenge=challenge),
                       {"factor": self.id, "allow": [a.lookup for a in allowed]}, self.rp.timeout)
        return {"challenge": challenge, "options": options}

    def verify(self, user, response, context) -> Verification:
        challenge = context.get("challenge")
        # Consumed before anything is checked: an answer to this challenge is looked at once.
        issued = self.store.take(AUTH_KEY.format(binding=context["binding"], challenge=challenge)) \
            if isinstance(challenge, str) and 0 < len(challenge) <= 64 else None
        if issued is None or issued.get("factor") != self.id:
            return Verification(False, "challenge unknown, expired or already used")
        if user is None and not self.usernameless:
            return Verification(False, "no account bound to this step")
        try:
            credential = parse_credential(str(response.get(self.response_field) or ""))
        except CeremonyFailed as exc:
            return Verification(False, str(exc))
        stored = find_credential(self.id, credential["id"])
        if stored is None:
            return Verification(False, f"no {self.id} credential with this id")
        if user is not None and stored.user_id != user.id:
            return Verification(False, "credential of another account")
        if issued["allow"] and stored.lookup not in issued["allow"]:
            return Verification(False, "credential not offered for this sign-in")
        try:
            assertion = self.rp.verify_authentication(self.id, credential, challenge, stored.data["public_key"])
        except CeremonyFailed as exc:
            return Verification(False, str(exc))
        expected_handle = stored.data.get("user_handle")
        if assertion.user_handle is not None and assertion.user_handle != expected_handle:
            return Verification(False, "user handle does not match the credential's account")
        if user is None and assertion.user_handle is None:  # WebAuthn 7.2 step 6: who is it, then?
            return Verification(False, "a usernameless assertion without a user handle")
        if not self._sign_count_advanced(stored, assertion.sign_count, context):
            return Verification(False, "sign count did not increase: possibly a cloned authenticator")
        stored.data = {**stored.data, "sign_count": assertion.sign_count}
        stored.last_used_at = time.time()
        db.session.commit()
        return Verification(True, user_id=stored.user_id if self.usernameless else None)

    def _sign_count_advanced(self, stored: Authenticator, received: int, context) -> bool:
        """WebAuthn 7.2 step 21: a counter that does not grow (when either side is non-zero) may
        mean two copies of one authenticator; refused, recorded and logged."""
        current = int(stored.data.get("sign_count") or 0)
        if (received or current) and received <= current:
            record_audit("webauthn.sign_count_regression", user_id=stored.user_id, ip=context.get("ip"),
                         factor=self.id, credential=stored.id, name=stored.name, stored=current, received=received)
            log.warning("WebAuthn sign count regression: credential %s of user %s, stored %s, received %s",
                        stored.id, stored.user_id, current, received)
            return False
        return True


class SecurityKeyFactor(WebAuthnFactor):
    id = "webauthn-key"
    label = _l("Use a security key")
    instruction = _l("Insert or touch your security key when your browser asks.")


class PlatformFactor(WebAuthnFactor):
    id = "webauthn-platform"
    label = _l("Use this device (fingerprint, face, PIN)")
    instruction = _l("Confirm with your fingerprint, face or device PIN when your browser asks.")


class PasskeyFactor(WebAuthnFactor):
    id = "passkey"
    label = _l("Sign in with a passkey")
    instruction = _l("Choose your passkey when your browser asks, and unlock it.")
    usernameless = True
    first_factor = True

    def available_for(self, user) -> bool:
        # Anyone may start a usernameless sign-in; a known account needs a passkey of its own.
        return user is None or super().available_for(user)

    def allowed(self, user) -> list[Authenticator]:
        # Never list an account's passkeys: the page would tell who has one (enumeration).
        # Passkeys are discoverable, so the browser finds them; verify() checks the owner.
        return []
