"""Reversible secrets at rest (TOTP seeds, push device keys): AES-256-GCM with a key ring.

What can be hashed is hashed; what must be read back is encrypted. Each ciphertext
names the key that made it (`v1:<key id>:<data>`), so keys rotate without downtime:
put a new key first in `encryption_keys`, keep the old ones for reading, and run
`oidc-provider keys reencrypt` to move every stored secret to the new key.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class SecretBoxError(Exception):
    """A ciphertext that no configured key opens (or was tampered with)."""


class SecretBox:
    def __init__(self, keys: list[tuple[str, bytes]]):
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._keys = dict(keys)
        self.current_id = keys[0][0]

    def encrypt(self, plaintext: bytes, context: str) -> str:
        """`context` (e.g. the user id) is bound to the ciphertext: a value copied to another
        row does not decrypt there."""
        nonce = os.urandom(12)
        sealed = AESGCM(self._keys[self.current_id]).encrypt(nonce, plaintext, context.encode())
        return f"v1:{self.current_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> bytes:
        try:
            version, key_id, data = token.split(":", 2)
            raw = base64.urlsafe_b64decode(data.encode())
            return AESGCM(self._keys[key_id]).decrypt(raw[:12], raw[12:], context.encode())
        except Exception as exc:  # noqa: BLE001 - any failure is the same to the caller
            raise SecretBoxError("cannot decrypt this secret with the configured keys") from exc

    def needs_reencrypt(self, token: str) -> bool:
        return not token.startswith(f"v1:{self.current_id}:")
