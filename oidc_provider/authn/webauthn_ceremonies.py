"""WebAuthn ceremonies: py_webauthn wrapped once, with this provider's policy and one error.

The library does the checks of W3C WebAuthn Level 2, 7.1 (registration) and 7.2
(authentication): challenge, origin, rp id hash, user presence and verification flags,
signature. This module adds what is policy: the rp id and origins from settings, how
each kind of credential is made and used, attestation with an AAGUID allow-list. Sign
counts are left to the caller, to compare only after the signature held: a forged
assertion must not be able to pass for a cloned authenticator.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from webauthn import (generate_authentication_options, generate_registration_options,
                      verify_authentication_response, verify_registration_response)
from webauthn.helpers import options_to_json_dict, parse_attestation_object
from webauthn.helpers.structs import (AttestationConveyancePreference, AuthenticatorAttachment,
                                      AuthenticatorSelectionCriteria, AuthenticatorTransport,
                                      PublicKeyCredentialDescriptor, PublicKeyCredentialHint,
                                      ResidentKeyRequirement, UserVerificationRequirement)

log = logging.getLogger(__name__)

CHALLENGE_BYTES = 32  # WebAuthn 13.4.3: at least 16 random bytes
_WARNED: set[str] = set()  # rp ids already warned about


@dataclass(frozen=True)
class Kind:
    """How one factor's credentials are made and used."""

    attachment: AuthenticatorAttachment | None  # None: any authenticator
    resident_key: ResidentKeyRequirement  # required: a discoverable credential (a passkey)
    user_verification: UserVerificationRequirement  # required: PIN or biometrics every time
    hints: tuple[PublicKeyCredentialHint, ...] = ()


KINDS = {
    # A roaming key is a second factor: the key itself is what counts; a PIN is welcome.
    "webauthn-key": Kind(AuthenticatorAttachment.CROSS_PLATFORM, ResidentKeyRequirement.DISCOURAGED,
                         UserVerificationRequirement.PREFERRED, (PublicKeyCredentialHint.SECURITY_KEY,)),
    # Device biometrics: the point is the verified user, so UV is required (SPEC: hwk + user).
    "webauthn-platform": Kind(AuthenticatorAttachment.PLATFORM, ResidentKeyRequirement.DISCOURAGED,
                              UserVerificationRequirement.REQUIRED, (PublicKeyCredentialHint.CLIENT_DEVICE,)),
    # A passkey names its user and stands alone as a first factor: discoverable and verified.
    "passkey": Kind(None, ResidentKeyRequirement.REQUIRED, UserVerificationRequirement.REQUIRED),
}


class CeremonyFailed(Exception):
    """A ceremony was refused; the message is for logs only, never shown to the user."""


@dataclass(frozen=True)
class NewCredential:
    """What registration yields and what is kept (all public; nothing here is secret)."""

    credential_id: str  # base64url, the lookup key
    public_key: str  # base64url COSE key
    sign_count: int
    aaguid: str
    transports: list[str]
    user_verified: bool
    backed_up: bool
    fmt: str


@dataclass(frozen=True)
class Assertion:
    credential_id: str
    sign_count: int
    user_verified: bool
    user_handle: str | None  # base64url; discoverable credentials always carry it


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_challenge() -> str:
    return b64url(secrets.token_bytes(CHALLENGE_BYTES))


def parse_credential(raw: str) -> dict:
    """The posted result of navigator.credentials.create()/get() as a JSON object with an id."""
    try:
        credential = json.loads(raw)
    except (ValueError, RecursionError):
        raise CeremonyFailed("credential is not JSON") from None
    if not isinstance(credential, dict) or not isinstance(credential.get("id"), str) \
            or not 0 < len(credential["id"]) <= 1366:  # 1023 bytes at most (WebAuthn 5.8.3)
        raise CeremonyFailed("credential has no id")
    return credential


def refuse_framed(credential: dict) -> None:
    """WebAuthn Level 3 7.1 step 10 and 7.2 step 14 (topOrigin), and crossOrigin (5.8.1): our pages
    refuse to be framed (frame-ancestors 'none'), so we never expect a ceremony run inside
    another origin's frame; py_webauthn leaves these fields to the relying party."""
    try:
        client_data = json.loads(from_b64url(credential["response"]["clientDataJSON"]))
    except (KeyError, TypeError, ValueError):  # malformed: the library refuses it
        return
    if isinstance(client_data, dict) and (client_data.get("crossOrigin") not in (None, False)
                                          or "topOrigin" in client_data):
        raise CeremonyFailed("ceremony ran in a cross-origin frame (crossOrigin or topOrigin)")


class RelyingParty:
    """This provider as a WebAuthn relying party."""

    def __init__(self, rp_id: str, name: str, origins: list[str], attestation: str = "none",
                 allowed_aaguids: list[str] = (), timeout: int = 120):
        self.id = rp_id
        self.name = name
        self.origins = list(origins)
        self.attestation = attestation
        self.allowed_aaguids = frozenset(allowed_aaguids)
        self.timeout = timeout  # seconds

    @classmethod
    def from_settings(cls, settings) -> RelyingParty:
        """The rp id defaults to the issuer's host and the origins to the issuer's origin."""
        from ..settings import ConfigError

        webauthn = settings.webauthn
        issuer = urlsplit(settings.issuer_url)
        rp_id = webauthn.rp_id or issuer.hostname
        origins = webauthn.origins or [f"{issuer.scheme}://{issuer.netloc}"]
        for origin in origins:  # WebAuthn 5.1.3: the rp id is the origin's domain or a suffix of it
            host = urlsplit(origin).hostname or ""
            if host != rp_id and not host.endswith("." + rp_id):
                raise ConfigError(f"settings: field 'webauthn.origins': {origin} is not within rp_id {rp_id}")
        if (rp_id.replace(".", "").isdigit() or ":" in rp_id) and rp_id not in _WARNED:
            _WARNED.add(rp_id)  # once, not once per factor
            log.warning("WebAuthn rp id %s is an IP address, which browsers refuse: set webauthn.rp_id "
                        "and webauthn.origins to a domain (http://localhost works for development)", rp_id)
        return cls(rp_id, webauthn.rp_name, origins, webauthn.attestation, webauthn.allowed_aaguids,
                   webauthn.timeout)

    # -- registration (WebAuthn 7.1) -----------------------------------------------------------

    def registration_options(self, kind: str, *, user_handle: bytes, user_name: str, display_name: str,
                             exclude: list[str], challenge: str) -> dict:
        """PublicKeyCredentialCreationOptions as JSON (base64url for bytes)."""
        policy = KINDS[kind]
        options = generate_registration_options(
            rp_id=self.id, rp_name=self.name, user_id=user_handle, user_name=user_name,
            user_display_name=display_name, challenge=from_b64url(challenge), timeout=self.timeout * 1000,
            attestation=(AttestationConveyancePreference.DIRECT if self.attestation == "direct"
                         else AttestationConveyancePreference.NONE),
            authenticator_selection=AuthenticatorSelectionCriteria(
                authenticator_attachment=policy.attachment, resident_key=policy.resident_key,
                user_verification=policy.user_verification),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=from_b64url(c)) for c in exclude],
            hints=list(policy.hints) or None,
        )
        return options_to_json_dict(options)

    def verify_registration(self, kind: str, raw: str, challenge: str) -> NewCredential:
        credential = parse_credential(raw)
        refuse_framed(credential)
        try:
            verified = verify_registration_response(
                credential=credential, expected_challenge=from_b64url(challenge), expected_rp_id=self.id,
                expected_origin=self.origins,
                require_user_verification=KINDS[kind].user_verification == UserVerificationRequirement.REQUIRED,
            )
        except Exception as exc:  # noqa: BLE001 - whatever the library cannot verify is refused
            raise CeremonyFailed(f"registration refused: {exc}") from None
        if self.attestation == "direct":
            self._check_attestation(verified)
        transports = credential.get("response", {}).get("transports") or []
        known = {t.value for t in AuthenticatorTransport}
        return NewCredential(
            credential_id=b64url(verified.credential_id), public_key=b64url(verified.credential_public_key),
            sign_count=verified.sign_count, aaguid=verified.aaguid,
            transports=[t for t in transports if isinstance(t, str) and t in known]
            if isinstance(transports, list) else [],
            user_verified=verified.user_verified, backed_up=verified.credential_backed_up,
            fmt=str(verified.fmt.value if hasattr(verified.fmt, "value") else verified.fmt),
        )

    def _check_attestation(self, verified) -> None:
        """With attestation `direct`, only listed authenticator models, vouched for by a certificate:
        without one (fmt none, packed self attestation) the AAGUID is merely the device's claim."""
        statement = parse_attestation_object(verified.attestation_object).att_stmt
        if not statement.x5c:
            raise CeremonyFailed(f"attestation {verified.fmt} carries no certificate")
        if verified.aaguid not in self.allowed_aaguids:
            raise CeremonyFailed(f"authenticator model {verified.aaguid} is not allowed")

    # -- authentication (WebAuthn 7.2) ---------------------------------------------------------

    def authentication_options(self, kind: str, *, allow: list[tuple[str, list[str]]], challenge: str) -> dict:
        """PublicKeyCredentialRequestOptions as JSON; `allow` is (credential id, transports) pairs."""
        descriptors = [
            PublicKeyCredentialDescriptor(id=from_b64url(credential_id),
                                          transports=[AuthenticatorTransport(t) for t in transports] or None)
            for credential_id, transports in allow
        ]
        options = generate_authentication_options(
            rp_id=self.id, challenge=from_b64url(challenge), timeout=self.timeout * 1000,
            allow_credentials=descriptors, user_verification=KINDS[kind].user_verification,
        )
        return options_to_json_dict(options)

    def verify_authentication(self, kind: str, credential: dict, challenge: str, public_key: str) -> Assertion:
        """Everything of 7.2 except the sign count, which the caller compares (see the module doc)."""
        refuse_framed(credential)
        try:
            verified = verify_authentication_response(
                credential=credential, expected_challenge=from_b64url(challenge), expected_rp_id=self.id,
                expected_origin=self.origins, credential_public_key=from_b64url(public_key),
                credential_current_sign_count=0,
                require_user_verification=KINDS[kind].user_verification == UserVerificationRequirement.REQUIRED,
            )
        except Exception as exc:  # noqa: BLE001 - whatever the library cannot verify is refused
            raise CeremonyFailed(f"assertion refused: {exc}") from None
        handle = (credential.get("response") or {}).get("userHandle")
        return Assertion(credential_id=b64url(verified.credential_id), sign_count=verified.new_sign_count,
                         user_verified=verified.user_verified, user_handle=handle or None)
