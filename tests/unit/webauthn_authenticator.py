"""A software WebAuthn authenticator and client, for tests (soft-webauthn cannot live beside
webauthn 3.x). It makes ES256 credentials with `cryptography` and speaks CBOR with `cbor2`,
and lets a test set every flag and field an attacker could: user presence and verification,
the origin and rp id the client claims, the sign counter, the challenge, the credential used.

The outputs are the JSON forms browsers post (WebAuthn Level 3 RegistrationResponseJSON and
AuthenticationResponseJSON), built from the options JSON the provider sends.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import struct
from dataclasses import dataclass

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

UP, UV, AT = 0x01, 0x04, 0x40  # authenticator data flags (WebAuthn 6.1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cose_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """RFC 9053 EC2 key, ES256 (kty 2, alg -7, crv 1 P-256)."""
    numbers = public_key.public_numbers()
    return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})


@dataclass
class Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0
    resident: bool = False

    @property
    def id_b64(self) -> str:
        return b64url(self.id)


class SoftAuthenticator:
    """One authenticator (a key, a phone...) holding credentials, plus the browser around it."""

    def __init__(self, origin: str, *, aaguid: bytes = bytes(16), uv: bool = True, attachment="cross-platform",
                 transports=("usb",)):
        self.origin = origin
        self.aaguid = aaguid
        self.uv = uv  # whether it can verify the user (PIN, biometrics) and does so when asked
        self.attachment = attachment
        self.transports = list(transports)
        self.credentials: dict[bytes, Credential] = {}

    # -- registration ----------------------------------------------------------------------

    def create(self, options: dict, *, origin: str | None = None, rp_id: str | None = None, up: bool = True,
               uv: bool | None = None, fmt: str = "none", attestation_key=None, attestation_cert=None,
               challenge: str | None = None, credential_id: bytes | None = None) -> dict:
        """navigator.credentials.create(): a new credential for options["rp"]["id"]."""
        rp_id = rp_id or options["rp"]["id"]
        resident = (options.get("authenticatorSelection") or {}).get("residentKey") == "required"
        credential = Credential(credential_id or os.urandom(32), ec.generate_private_key(ec.SECP256R1()), options["rp"]["id"],
                                from_b64url(options["user"]["id"]), resident=resident)
        self.credentials[credential.id] = credential
        # WebAuthn 6.5.1: attested credential data = aaguid, id length, id, COSE public key
        attested = (self.aaguid + struct.pack(">H", len(credential.id)) + credential.id
                    + cose_key(credential.key.public_key()))
        auth_data = self._auth_data(rp_id, up, uv, credential.sign_count, extra_flags=AT) + attested
        client_data = self._client_data("webauthn.create", challenge or options["challenge"], origin)
        statement: dict = {}
        if fmt == "packed":  # signed by an attestation key (with a certificate) or, without one, by itself
            signer = attestation_key or credential.key
            statement = {"alg": -7, "sig": signer.sign(auth_data + hashlib.sha256(client_data).digest(),
                                                       ec.ECDSA(hashes.SHA256()))}
            if attestation_cert is not None:
                statement["x5c"] = [attestation_cert.public_bytes(serialization.Encoding.DER)]
        attestation = cbor2.dumps({"fmt": fmt, "attStmt": statement, "authData": auth_data})
        return {
            "id": credential.id_b64, "rawId": credential.id_b64, "type": "public-key",
            "response": {"clientDataJSON": b64url(client_data), "attestationObject": b64url(attestation),
                         "transports": self.transports},
            "authenticatorAttachment": self.attachment, "clientExtensionResults": {},
        }

    # -- authentication --------------------------------------------------------------------

    def get(self, options: dict, *, origin: str | None = None, rp_id: str | None = None, up: bool = True,
            uv: bool | None = None, credential: Credential | None = None, sign_count: int | None = None,
            challenge: str | None = None, user_handle: bytes | None | bool = True) -> dict:
        """navigator.credentials.get(): an assertion by an allowed credential, or by a discoverable
        one when none is listed. Every argument overrides what an honest authenticator would do."""
        if credential is None:
            credential = self.pick(options)
        if sign_count is None:
            credential.sign_count += 1
            sign_count = credential.sign_count
        rp_id = rp_id or options.get("rpId") or credential.rp_id
        auth_data = self._auth_data(rp_id, up, uv, sign_count)
        client_data = self._client_data("webauthn.get", challenge or options["challenge"], origin)
        signature = credential.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        handle = credential.user_handle if user_handle is True else (user_handle or None)
        return {
            "id": credential.id_b64, "rawId": credential.id_b64, "type": "public-key",
            "response": {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                         "signature": b64url(signature), "userHandle": b64url(handle) if handle else None},
            "authenticatorAttachment": self.attachment, "clientExtensionResults": {},
        }

    def pick(self, options: dict) -> Credential:
        allowed = [from_b64url(c["id"]) for c in options.get("allowCredentials") or []]
        rp_id = options.get("rpId")
        for credential in self.credentials.values():
            if credential.rp_id != rp_id:
                continue
            if (allowed and credential.id in allowed) or (not allowed and credential.resident):
                return credential
        raise LookupError("no credential of this authenticator fits the options (NotAllowedError)")

    # -- parts -----------------------------------------------------------------------------

    def _flags(self, up: bool, uv: bool | None) -> int:
        verified = self.uv if uv is None else uv
        return (UP if up else 0) | (UV if verified else 0)

    def _auth_data(self, rp_id: str, up: bool, uv: bool | None, sign_count: int, extra_flags: int = 0) -> bytes:
        """WebAuthn 6.1: rpIdHash, flags, signCount."""
        flags = self._flags(up, uv) | extra_flags
        return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", sign_count)

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin or self.origin,
                           "crossOrigin": False}).encode()


def attestation_certificate(aaguid: bytes) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A made-up authenticator model's attestation key and certificate (WebAuthn 8.2.1 fields)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Keys"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Test Key Attestation")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # id-fido-gen-ce-aaguid: the model this certificate vouches for
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"),
                                                  b"\x04\x10" + aaguid), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate
