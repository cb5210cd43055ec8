"""Signing keys and the master secret in `keys/`.

Each signing key goes through three states so that rotation never breaks a
relying party: `next` (published in JWKS, not yet signing), `active` (signs),
`retired` (no longer signs, still published until every token it signed has
expired). `keyring.json` records the states; each private key is its own JWK file
with mode 0600. Instances sharing the folder see a rotation within a second.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

ALGORITHMS = ("RS256", "ES256")
KEYRING = "keyring.json"
MASTER_SECRET = "secret.key"
# Seconds a retired key stays published beyond the longest token lifetime: every instance
# notices a rotation within KeyRing.CHECK_INTERVAL, and a request may still be signing with
# the old key then; its token expires up to that much after the rotation.
SIGNING_GRACE = 10
# How long a relying party may keep a JWKS it fetched (the Cache-Control of /oidc/jwks): a next
# key starts signing only once it has been published that long, and every instance has seen it.
JWKS_CACHE_SECONDS = 60


class KeysNotReady(Exception):
    """The key folder is missing or inconsistent; the message says what to run."""


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _generate(alg: str, kid: str):
    params = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters=params)
    return ECKey.generate_key("P-256", parameters=params)


def _new_kid(alg: str) -> str:
    return f"{alg.lower()}-{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"


class KeyFolder:
    """Changes to `keys/`: used by the CLI, never on a request path."""

    def __init__(self, path: Path):
        self.path = path

    def _ring(self) -> list[dict]:
        ring = self.path / KEYRING
        return json.loads(ring.read_text())["keys"] if ring.exists() else []

    def _save_ring(self, entries: list[dict]) -> None:
        tmp = self.path / (KEYRING + ".tmp")
        tmp.write_text(json.dumps({"keys": entries}, indent=2) + "\n")
        tmp.replace(self.path / KEYRING)  # atomic: readers never see half a file

    def _add(self, alg: str, state: str) -> dict:
        kid = _new_kid(alg)
        key = _generate(alg, kid)
        _write_private(self.path / f"{kid}.jwk.json", json.dumps(key.as_dict(private=True)).encode())
        return {"kid": kid, "alg": alg, "state": state, "created_at": int(time.time())}

    def ensure_master_secret(self) -> bool:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / MASTER_SECRET
        if target.exists():
            return False
        _write_private(target, base64.urlsafe_b64encode(secrets.token_bytes(32)))
        return True

    def generate(self, algs: tuple[str, ...] = ALGORITHMS) -> list[dict]:
        """An active and a next key for each algorithm that has none; returns what was made."""
        self.ensure_master_secret()
        entries = self._ring()
        made = []
        for alg in algs:
            states = {e["state"] for e in entries if e["alg"] == alg}
            for state in ("active", "next"):
                if state not in states:
                    entry = self._add(alg, state)
                    if state == "active":
                        entry["activated_at"] = entry["created_at"]
                    entries.append(entry)
                    made.append(entry)
        self._save_ring(entries)
        return made

    def rotate(self, algs: tuple[str, ...], retire_after: int, published_for: float = 0) -> list[dict]:
        """next -> active, active -> retired, and a fresh next; prunes long-expired keys. Refused
        while a next key has been published for less than `published_for` seconds: a relying
        party's cached JWKS would not know the key that signs."""
        entries = self._ring()
        now = int(time.time())
        for alg in algs:
            upcoming = [e for e in entries if e["alg"] == alg and e["state"] == "next"]
            if not upcoming:
                raise KeysNotReady(f"no next {alg} key to promote: run 'oidc-provider keys generate'")
            age = now - upcoming[0]["created_at"]
            if age < published_for:
                raise KeysNotReady(
                    f"the next {alg} key was published {age} s ago; relying parties may keep a JWKS without "
                    f"it for {JWKS_CACHE_SECONDS} s: rotate in {int(published_for - age) + 1} s (or with --now "
                    f"for a compromised key, accepting that they refuse its tokens until they fetch JWKS again)")
            for entry in entries:
                if entry["alg"] != alg:
                    continue
                if entry["state"] == "active":
                    entry.update(state="retired", retired_at=now, published_until=now + retire_after)
                elif entry["state"] == "next":
                    entry.update(state="active", activated_at=now)
            entries.append(self._add(alg, "next"))
        kept = []
        for entry in entries:
            if entry["state"] == "retired" and entry["published_until"] < now:
                (self.path / f"{entry['kid']}.jwk.json").unlink(missing_ok=True)
            else:
                kept.append(entry)
        self._save_ring(kept)
        return kept

    def entries(self) -> list[dict]:
        return self._ring()


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int]
    signing: dict  # alg -> key
    published: KeySet
    jwks_bytes: bytes
    stale_at: float  # when a retired key's publication ends: reload then even if nothing changed


class KeyRing:
    """Keys for signing and verifying, cached in memory and reloaded when keyring.json changes."""

    CHECK_INTERVAL = 1.0

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._loaded = self._load()

    def _stamp(self) -> tuple[int, int]:
        try:
            stat = (self.path / KEYRING).stat()
        except FileNotFoundError:
            raise KeysNotReady(f"no signing keys in {self.path}: run 'oidc-provider keys generate'") from None
        return stat.st_mtime_ns, stat.st_size

    def _load(self) -> _Loaded:
        stamp = self._stamp()
        entries = json.loads((self.path / KEYRING).read_text())["keys"]
        now = time.time()
        signing, published, stale_at = {}, [], float("inf")
        for entry in entries:
            if entry["state"] == "retired":
                if entry["published_until"] < now:
                    continue
                stale_at = min(stale_at, entry["published_until"])
            key_data = json.loads((self.path / f"{entry['kid']}.jwk.json").read_text())
            key = RSAKey.import_key(key_data) if key_data["kty"] == "RSA" else ECKey.import_key(key_data)
            published.append(key)
            if entry["state"] == "active":
                signing[entry["alg"]] = key
        missing = [alg for alg in ALGORITHMS if alg not in signing]
        if missing:
            raise KeysNotReady(f"no active {', '.join(missing)} key: run 'oidc-provider keys generate'")
        key_set = KeySet(published)
        jwks = json.dumps(key_set.as_dict(private=False), separators=(",", ":")).encode()
        return _Loaded(stamp, signing, key_set, jwks, stale_at)

    def _current(self) -> _Loaded:
        now = time.monotonic()
        if now - self._checked_at >= self.CHECK_INTERVAL:
            with self._lock:
                self._checked_at = now
                if self._stamp() != self._loaded.stamp or time.time() > self._loaded.stale_at:
                    self._loaded = self._load()
        return self._loaded

    @property
    def jwks_bytes(self) -> bytes:
        return self._current().jwks_bytes

    @property
    def public_keys(self) -> KeySet:
        return self._current().published

    def sign(self, claims: dict, alg: str = "RS256", typ: str | None = None) -> str:
        key = self._current().signing[alg]
        header = {"alg": alg, "kid": key.kid}
        if typ:
            header["typ"] = typ
        return jwt.encode(header, claims, key)

    def verify(self, token: str, algorithms=ALGORITHMS):
        """Verify a JWT we signed; returns joserfc's Token (header, claims) or raises."""
        return jwt.decode(token, self.public_keys, algorithms=list(algorithms))


class MasterSecret:
    """One random secret in keys/secret.key (or SECRET_KEY); purpose keys are derived from it."""

    def __init__(self, value: bytes):
        self._value = value

    @classmethod
    def load(cls, keys_dir: Path) -> MasterSecret:
        from_env = os.environ.get("SECRET_KEY")
        if from_env:
            return cls(from_env.encode())
        path = keys_dir / MASTER_SECRET
        if not path.exists():
            raise KeysNotReady(f"no master secret in {keys_dir}: run 'oidc-provider keys generate'")
        return cls(path.read_bytes().strip())

    def derive(self, purpose: str) -> bytes:
        """HKDF-like expansion: one independent 32-byte key per purpose."""
        return hmac.new(self._value, purpose.encode(), hashlib.sha256).digest()
