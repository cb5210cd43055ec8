"""Signing keys (generate, publish, sign, rotate, prune), the master secret, and settings."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from oidc_provider.oauth.keys import KEYRING, MASTER_SECRET, KeyFolder, KeyRing, KeysNotReady, MasterSecret
from oidc_provider.settings import ConfigError, load_settings

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def ring_file(path) -> dict:
    return json.loads((path / KEYRING).read_text())


def states(folder: KeyFolder, alg: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in folder.entries():
        if entry["alg"] == alg:
            found.setdefault(entry["state"], []).append(entry["kid"])
    return found


def kid_of(folder: KeyFolder, alg: str, state: str) -> str:
    (kid,) = states(folder, alg)[state]
    return kid


def header_of(token: str) -> dict:
    return jws.extract_compact(token.encode()).headers()


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def published(keyring: KeyRing) -> dict[str, dict]:
    return {key["kid"]: key for key in json.loads(keyring.jwks_bytes)["keys"]}


def edit_ring(path, change) -> None:
    """Change keyring.json as another process (or the clock) would; the mtime moves on."""
    data = ring_file(path)
    for entry in data["keys"]:
        change(entry)
    (path / KEYRING).write_text(json.dumps(data))
    st = (path / KEYRING).stat()
    os.utime(path / KEYRING, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


@pytest.fixture
def folder(tmp_path):
    made = KeyFolder(tmp_path / "keys")
    made.generate()
    return made


@pytest.fixture
def keyring(folder):
    ring = KeyRing(folder.path)
    ring.CHECK_INTERVAL = 0  # see changes to keyring.json at once
    return ring


# -- generate ---------------------------------------------------------------------------

def test_generate_makes_secret_and_an_active_and_next_key_per_algorithm(tmp_path):
    folder = KeyFolder(tmp_path / "keys")
    made = folder.generate()
    assert sorted((e["alg"], e["state"]) for e in made) == [
        ("ES256", "active"), ("ES256", "next"), ("RS256", "active"), ("RS256", "next")]
    assert (folder.path / MASTER_SECRET).exists()
    assert len((folder.path / MASTER_SECRET).read_bytes().strip()) >= 43  # 32 random bytes
    kids = [e["kid"] for e in folder.entries()]
    assert len(set(kids)) == 4
    for entry in folder.entries():
        key_file = folder.path / f"{entry['kid']}.jwk.json"
        data = json.loads(key_file.read_text())
        assert data["kid"] == entry["kid"] and data["alg"] == entry["alg"]
        assert data["kty"] == {"RS256": "RSA", "ES256": "EC"}[entry["alg"]]
        assert "d" in data  # the private key, which is why the file is 0600


def test_private_files_have_mode_0600(folder):
    assert mode(folder.path / MASTER_SECRET) == 0o600
    key_files = list(folder.path.glob("*.jwk.json"))
    assert len(key_files) == 4
    for path in key_files:
        assert mode(path) == 0o600, path


def test_private_files_are_0600_whatever_the_umask(tmp_path):
    old = os.umask(0o000)
    try:
        folder = KeyFolder(tmp_path / "keys")
        folder.generate()
        folder.rotate(("RS256",), retire_after=60)
    finally:
        os.umask(old)
    for path in [folder.path / MASTER_SECRET, *folder.path.glob("*.jwk.json")]:
        assert mode(path) == 0o600, path


def test_generate_is_idempotent(folder):
    secret = (folder.path / MASTER_SECRET).read_bytes()
    before = folder.entries()
    files = sorted(p.name for p in folder.path.iterdir())
    assert folder.generate() == []
    assert folder.entries() == before
    assert (folder.path / MASTER_SECRET).read_bytes() == secret
    assert sorted(p.name for p in folder.path.iterdir()) == files


def test_generate_for_one_algorithm(tmp_path):
    folder = KeyFolder(tmp_path / "keys")
    assert {e["alg"] for e in folder.generate(("ES256",))} == {"ES256"}
    with pytest.raises(KeysNotReady, match="RS256"):
        KeyRing(folder.path)  # both algorithms must be able to sign
    assert {e["alg"] for e in folder.generate()} == {"RS256"}  # only what is missing
    KeyRing(folder.path)


def test_keyring_without_keys_says_what_to_run(tmp_path):
    with pytest.raises(KeysNotReady, match="oidc-provider keys generate"):
        KeyRing(tmp_path / "nothing")
    with pytest.raises(KeysNotReady, match="oidc-provider keys generate"):
        MasterSecret.load(tmp_path / "nothing")


# -- publish, sign, verify --------------------------------------------------------------

def test_jwks_publishes_active_and_next_without_private_parts(folder, keyring):
    keys = published(keyring)
    expected = {kid_of(folder, alg, state) for alg in ("RS256", "ES256") for state in ("active", "next")}
    assert set(keys) == expected
    for key in keys.values():
        assert not PRIVATE_MEMBERS & set(key), key
        assert key["use"] == "sig" and key["alg"] in ("RS256", "ES256")
    assert b'"d"' not in keyring.jwks_bytes


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_signs_with_the_active_key_and_verifies(folder, keyring, alg):
    token = keyring.sign({"sub": "alice", "n": 1}, alg=alg, typ="at+jwt")
    header = header_of(token)
    assert header["kid"] == kid_of(folder, alg, "active")
    assert header["alg"] == alg and header["typ"] == "at+jwt"
    verified = keyring.verify(token)
    assert verified.claims == {"sub": "alice", "n": 1}
    # a relying party holding only the published JWKS can verify it too
    public = KeySet.import_key_set(json.loads(keyring.jwks_bytes))
    assert jwt.decode(token, public, algorithms=[alg]).claims["sub"] == "alice"


def test_verify_refuses_a_token_signed_by_a_foreign_key(folder, keyring):
    forged_key = RSAKey.generate_key(2048, parameters={"kid": kid_of(folder, "RS256", "active")})
    forged = jwt.encode({"alg": "RS256", "kid": forged_key.kid}, {"sub": "mallory"}, forged_key)
    with pytest.raises(JoseError):
        keyring.verify(forged)


def test_verify_refuses_a_tampered_token(keyring):
    token = keyring.sign({"sub": "alice"})
    head, body, sig = token.split(".")
    other = keyring.sign({"sub": "mallory"}).split(".")[1]
    with pytest.raises(JoseError):
        keyring.verify(f"{head}.{other}.{sig}")


def test_verify_refuses_an_algorithm_not_allowed(keyring):
    token = keyring.sign({"sub": "alice"}, alg="ES256")
    with pytest.raises(JoseError):
        keyring.verify(token, algorithms=["RS256"])


# -- rotate -----------------------------------------------------------------------------

def test_rotate_promotes_next_retires_active_and_makes_a_new_next(folder, keyring):
    old_active = {alg: kid_of(folder, alg, "active") for alg in ("RS256", "ES256")}
    old_next = {alg: kid_of(folder, alg, "next") for alg in ("RS256", "ES256")}
    tokens = {alg: keyring.sign({"sub": "before"}, alg=alg) for alg in ("RS256", "ES256")}

    before = int(time.time())
    folder.rotate(("RS256", "ES256"), retire_after=3600)

    for alg in ("RS256", "ES256"):
        assert kid_of(folder, alg, "active") == old_next[alg]
        assert kid_of(folder, alg, "retired") == old_active[alg]
        new_next = kid_of(folder, alg, "next")
        assert new_next not in (old_active[alg], old_next[alg])
        assert mode(folder.path / f"{new_next}.jwk.json") == 0o600
        retired = next(e for e in folder.entries() if e["kid"] == old_active[alg])
        assert before + 3600 <= retired["published_until"] <= int(time.time()) + 3600

        keys = published(keyring)
        assert set(keys) >= {old_active[alg], old_next[alg], new_next}  # retired: still published
        signed = keyring.sign({"sub": "after"}, alg=alg)
        assert header_of(signed)["kid"] == old_next[alg]
        assert keyring.verify(tokens[alg]).claims["sub"] == "before"  # signed before the rotation
        assert keyring.verify(signed).claims["sub"] == "after"
    assert len(published(keyring)) == 6


def test_rotate_one_algorithm_leaves_the_other(folder):
    es_before = states(folder, "ES256")
    folder.rotate(("RS256",), retire_after=60)
    assert states(folder, "ES256") == es_before
    assert set(states(folder, "RS256")) == {"active", "next", "retired"}


def test_retired_key_is_pruned_after_its_window(folder, keyring):
    first = kid_of(folder, "RS256", "active")
    old_token = keyring.sign({"sub": "old"})
    folder.rotate(("RS256", "ES256"), retire_after=3600)
    assert keyring.verify(old_token).claims["sub"] == "old"

    # The retire window has passed (as if an hour went by).
    edit_ring(folder.path, lambda e: e.update(published_until=int(time.time()) - 1)
              if e["state"] == "retired" else None)
    assert first not in published(keyring)  # no longer published, even before the files go
    with pytest.raises(JoseError):
        keyring.verify(old_token)

    second = kid_of(folder, "RS256", "active")
    folder.rotate(("RS256", "ES256"), retire_after=3600)
    kids = {e["kid"] for e in folder.entries()}
    assert first not in kids
    assert not (folder.path / f"{first}.jwk.json").exists()  # the private key is deleted
    assert kid_of(folder, "RS256", "retired") == second  # the one just retired stays
    assert (folder.path / f"{second}.jwk.json").exists()
    assert len(folder.entries()) == 6
    assert set(published(keyring)) == kids


def test_retire_after_zero_then_rotate_again_prunes(folder, keyring):
    first = kid_of(folder, "ES256", "active")
    folder.rotate(("ES256",), retire_after=0)
    time.sleep(1.1)  # published_until is in whole seconds
    assert first not in published(keyring)
    folder.rotate(("ES256",), retire_after=0)
    assert first not in {e["kid"] for e in folder.entries()}
    assert not (folder.path / f"{first}.jwk.json").exists()
    assert set(states(folder, "ES256")) == {"active", "next", "retired"}


def test_rotate_without_a_next_key_says_what_to_run(tmp_path):
    folder = KeyFolder(tmp_path / "keys")
    folder.generate(("RS256",))
    with pytest.raises(KeysNotReady, match="keys generate"):
        folder.rotate(("ES256",), retire_after=60)


def test_keyring_notices_a_rotation_by_another_process(folder, keyring):
    before = keyring.sign({"sub": "x"})
    old_active = kid_of(folder, "RS256", "active")
    old_next = kid_of(folder, "RS256", "next")
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from oidc_provider.oauth.keys import KeyFolder; "
         "KeyFolder(Path(sys.argv[1])).rotate(('RS256', 'ES256'), retire_after=3600)", str(folder.path)],
        check=True, stdin=subprocess.DEVNULL, timeout=60,
    )
    after = keyring.sign({"sub": "x"})
    assert header_of(after)["kid"] == old_next
    assert kid_of(folder, "RS256", "next") in published(keyring)
    assert old_active in published(keyring)
    assert keyring.verify(before).claims["sub"] == "x"


def test_keyring_caches_between_checks(folder):
    ring = KeyRing(folder.path)
    ring.CHECK_INTERVAL = 3600
    ring.sign({"sub": "x"})
    ring._checked_at = time.monotonic()
    old_active = kid_of(folder, "RS256", "active")
    folder.rotate(("RS256", "ES256"), retire_after=3600)
    assert header_of(ring.sign({"sub": "x"}))["kid"] == old_active  # not reloaded yet
    ring.CHECK_INTERVAL = 0
    assert header_of(ring.sign({"sub": "x"}))["kid"] == kid_of(folder, "RS256", "active")


# -- master secret ----------------------------------------------------------------------

def test_master_secret_derives_independent_stable_keys(folder, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    secret = MasterSecret.load(folder.path)
    a, b = secret.derive("client-secret"), secret.derive("flask-session")
    assert len(a) == 32 and a != b
    assert MasterSecret.load(folder.path).derive("client-secret") == a
    other = KeyFolder(folder.path.parent / "other")
    other.generate(("ES256",))
    assert MasterSecret.load(other.path).derive("client-secret") != a
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    assert MasterSecret.load(folder.path).derive("client-secret") not in (a, None)


# -- settings ---------------------------------------------------------------------------

@pytest.fixture
def clean_env(monkeypatch):
    for name in ("ISSUER", "DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def write_yaml(tmp_path, text: str):
    path = tmp_path / "provider.yaml"
    path.write_text(text)
    return path


def test_settings_from_file(tmp_path, clean_env):
    path = write_yaml(tmp_path, """\
issuer: https://id.example.com
database_url: sqlite:///data/op.db
store: {backend: sql, prefix: "a:"}
lifetimes: {access_token: 300}
""")
    settings = load_settings(path)
    assert settings.issuer_url == "https://id.example.com"
    assert settings.database_url == "sqlite:///data/op.db"
    assert settings.store.backend == "sql" and settings.store.prefix == "a:"
    assert settings.lifetimes.access_token == 300
    assert settings.lifetimes.id_token == 3600  # defaults fill the rest


def test_environment_overrides_the_file(tmp_path, clean_env):
    path = write_yaml(tmp_path, """\
issuer: https://id.example.com
database_url: sqlite:///data/op.db
store: {backend: sql, prefix: "tenant-a:"}
""")
    clean_env.setenv("ISSUER", "https://login.example.org/tenant")
    clean_env.setenv("DATABASE_URL", "postgresql://op@db.internal/op")
    clean_env.setenv("REDIS_URL", "redis://cache.internal:6379/2")
    settings = load_settings(path)
    assert settings.issuer_url == "https://login.example.org/tenant"
    assert settings.database_url == "postgresql://op@db.internal/op"
    assert settings.store.backend == "redis"  # REDIS_URL switches the store to Redis
    assert settings.store.redis_url == "redis://cache.internal:6379/2"
    assert settings.store.prefix == "tenant-a:"  # the rest of the file's store section stays


def test_environment_overrides_without_a_file(clean_env):
    clean_env.setenv("ISSUER", "https://id.example.net")
    clean_env.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    settings = load_settings(None)
    assert settings.issuer_url == "https://id.example.net"
    assert settings.store.backend == "redis" and settings.store.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url == "sqlite:///instance/oidc.db"


def test_empty_environment_variables_do_not_override(tmp_path, clean_env):
    path = write_yaml(tmp_path, "issuer: https://id.example.com\n")
    clean_env.setenv("ISSUER", "")
    clean_env.setenv("REDIS_URL", "")
    settings = load_settings(path)
    assert settings.issuer_url == "https://id.example.com"
    assert settings.store.backend == "sql"


def test_bad_issuer_from_the_environment_is_an_error(tmp_path, clean_env):
    path = write_yaml(tmp_path, "issuer: https://id.example.com\n")
    clean_env.setenv("ISSUER", "not a url")
    with pytest.raises(ConfigError, match="issuer"):
        load_settings(path)


@pytest.mark.parametrize("text, field", [
    ("issuer: not-a-url\n", "issuer"),
    ("lifetimes:\n  authorization_code: 3600\n", "lifetimes.authorization_code"),
    ("lifetimes:\n  access_token: -5\n", "lifetimes.access_token"),
    ("lifetimes:\n  acess_token: 5\n", "lifetimes.acess_token"),
    ("isuer: https://id.example.com\n", "isuer"),
    ("store:\n  backend: memcached\n", "store.backend"),
    ("store:\n  backend: redis\n", "store.redis_url"),
    ("id_token_signing_alg: HS256\n", "id_token_signing_alg"),
    ("resources:\n  api.example.com: {}\n", "resources"),
    ("resources:\n  https://api.example.com:\n    access_token_lifetime: 0\n", "resources.https://api.example.com"),
])
def test_bad_provider_yaml_names_the_file_and_field(tmp_path, clean_env, text, field):
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert f"field '{field}" in message, message


@pytest.mark.parametrize("text", ["- a\n- b\n", "issuer: [unclosed\n"])
def test_unreadable_provider_yaml_names_the_file(tmp_path, clean_env, text):
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=f"^{path}: "):
        load_settings(path)


def test_missing_provider_yaml_names_the_file(tmp_path, clean_env):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "absent.yaml")


def test_a_retired_key_leaves_jwks_when_its_window_ends_without_any_file_change(tmp_path):
    import time as _time

    from oidc_provider.oauth.keys import KeyFolder, KeyRing

    folder = KeyFolder(tmp_path)
    folder.generate(("RS256", "ES256"))
    folder.rotate(("RS256",), retire_after=2)
    ring = KeyRing(tmp_path)
    ring.CHECK_INTERVAL = 0
    retired = [e["kid"] for e in folder.entries() if e["state"] == "retired"]
    assert retired[0] in ring.jwks_bytes.decode()
    _time.sleep(3.1)
    assert retired[0] not in ring.jwks_bytes.decode()
