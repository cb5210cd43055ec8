"""The real `oidc-provider` console script, in a subprocess, in a temporary base directory.

Standard input is closed (or piped) as in CI, so any command that would wait for a
terminal fails instead of hanging.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from oidc_provider import create_app
from tests.conftest import published_long_enough, run_cli as cli
from oidc_provider.oauth.keys import SIGNING_GRACE, MasterSecret
from oidc_provider.settings.clients import hash_client_secret

REDIRECT = "http://127.0.0.1:9/callback"
FIRST_PASSWORD = "first password 123"
NEW_PASSWORD = "second password 456"


@pytest.fixture
def home(tmp_path):
    base = tmp_path / "base"
    (base / "config").mkdir(parents=True)
    (base / "config" / "provider.yaml").write_text(
        "issuer: http://127.0.0.1:5999\n"
        f"database_url: sqlite:///{base / 'data' / 'oidc.db'}\n"  # absolute; data/ made on demand
        "keys_dir: keys\n"
        "clients_file: config/clients.yaml\n"
        "dev_mode: true\n"
    )
    return base


def keys_table(output: str) -> dict[str, tuple[str, str]]:
    """kid -> (alg, state) from `keys list` or `keys rotate`."""
    rows = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("RS256", "ES256"):
            rows[parts[0]] = (parts[1], parts[2])
    return rows


def make_secret(home: Path, client_id: str) -> tuple[str, str]:
    out = cli(home, "clients", "secret", client_id).stdout
    assert f"client_id:          {client_id}" in out
    secret = re.search(r"^client_secret:\s+(\S+)", out, re.M).group(1)
    secret_hash = re.search(r"^client_secret_hash:\s+(\S+)", out, re.M).group(1)
    return secret, secret_hash


def write_clients(home: Path, secret_hash: str) -> Path:
    path = home / "config" / "clients.yaml"
    path.write_text(f"""\
clients:
  - client_id: demo-x
    client_name: Demo X
    client_secret_hash: "{secret_hash}"
    redirect_uris: ["{REDIRECT}"]
    grant_types: [authorization_code, refresh_token]
    scopes: [openid, profile, email]
    first_party: true
""")
    return path


# -- keys -------------------------------------------------------------------------------

def test_keys_generate_list_rotate(home):
    out = cli(home, "keys", "generate").stdout
    made = re.findall(r"^generated (\S+) \((RS256|ES256), (active|next)\)$", out, re.M)
    assert sorted((alg, state) for _, alg, state in made) == [
        ("ES256", "active"), ("ES256", "next"), ("RS256", "active"), ("RS256", "next")]
    for kid, _, _ in made:
        assert (home / "keys" / f"{kid}.jwk.json").exists()
    assert (home / "keys" / "secret.key").exists()
    assert "keys already present" in cli(home, "keys", "generate").stdout  # idempotent

    listed = keys_table(cli(home, "keys", "list").stdout)
    assert listed == {kid: (alg, state) for kid, alg, state in made}

    published_long_enough(home / "keys")
    rotated = keys_table(cli(home, "keys", "rotate").stdout)
    for kid, alg, state in made:
        assert rotated[kid] == (alg, {"active": "retired", "next": "active"}[state])
    fresh = {kid: row for kid, row in rotated.items() if kid not in listed}
    assert sorted(fresh.values()) == [("ES256", "next"), ("RS256", "next")]

    after = cli(home, "keys", "list").stdout
    assert keys_table(after) == rotated
    # retired keys show until when they stay published (the longest token lifetime, 1 hour, and a grace)
    retired_lines = [line for line in after.splitlines() if " retired " in line]
    assert len(retired_lines) == 2
    assert all(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d$", line) for line in retired_lines)
    ring = json.loads((home / "keys" / "keyring.json").read_text())["keys"]
    for entry in ring:
        if entry["state"] == "retired":
            assert entry["published_until"] - entry["retired_at"] == 3600 + SIGNING_GRACE


def test_a_next_key_signs_only_once_relying_parties_can_have_it(home):
    """JWKS may be cached for its max-age: a next key younger than that is not promoted, unless
    the operator says --now (a compromised key must go at once)."""
    cli(home, "keys", "generate")
    before = keys_table(cli(home, "keys", "list").stdout)
    refused = cli(home, "keys", "rotate", ok=False)
    assert re.search(r"the next (RS256|ES256) key was published \d+ s ago; relying parties may keep a JWKS "
                     r"without it for 60 s: rotate in \d+ s", refused.stderr), refused.stderr
    assert keys_table(cli(home, "keys", "list").stdout) == before  # nothing changed
    forced = keys_table(cli(home, "keys", "rotate", "--now").stdout)
    assert sorted(state for _, state in forced.values()) == ["active", "active", "next", "next", "retired", "retired"]
    cli(home, "keys", "rotate", "--alg", "ES256", ok=False)  # its new next key is fresh


def test_keys_rotate_one_algorithm(home):
    cli(home, "keys", "generate")
    published_long_enough(home / "keys")
    before = keys_table(cli(home, "keys", "list").stdout)
    after = keys_table(cli(home, "keys", "rotate", "--alg", "ES256").stdout)
    assert {kid: row for kid, row in after.items() if row[0] == "RS256"} == \
        {kid: row for kid, row in before.items() if row[0] == "RS256"}
    assert sorted(state for alg, state in after.values() if alg == "ES256") == ["active", "next", "retired"]


def test_commands_without_keys_say_what_to_run(home):
    for args in (("keys", "list"), ("keys", "rotate"), ("clients", "secret", "demo-x"), ("db", "upgrade")):
        result = cli(home, *args, ok=False)
        assert "oidc-provider keys generate" in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


# -- clients ----------------------------------------------------------------------------

def test_clients_secret_and_check(home):
    cli(home, "keys", "generate")
    secret, secret_hash = make_secret(home, "demo-x")
    assert secret not in secret_hash and secret_hash.startswith("hmac-sha256:")
    key = MasterSecret((home / "keys" / "secret.key").read_bytes().strip()).derive("client-secret")
    assert hash_client_secret(secret, key) == secret_hash
    assert make_secret(home, "demo-x")[0] != secret  # a fresh secret every time

    path = write_clients(home, secret_hash)
    out = cli(home, "clients", "check").stdout
    assert f"{path}: 1 clients, all valid" in out
    assert "1 clients, all valid" in cli(home, "clients", "check", str(path)).stdout


@pytest.mark.parametrize("edit, client, field", [
    (lambda c: c.pop("client_secret_hash"), "demo-x", "client_secret_hash"),
    (lambda c: c.update(redirect_uris=["https://app.example.com/cb#x"]), "demo-x", "redirect_uris"),
    (lambda c: c.update(redirect_uris=["http://app.example.com/cb"]), "demo-x", "redirect_uris"),
    (lambda c: c.update(redirect_url="https://app.example.com/cb"), "demo-x", "redirect_url"),
    (lambda c: c.update(client_secret_hash=None, token_endpoint_auth_method="private_key_jwt"), "demo-x", "jwks"),
])
def test_clients_check_names_file_client_and_field(home, edit, client, field):
    cli(home, "keys", "generate")
    path = write_clients(home, make_secret(home, "demo-x")[1])
    data = yaml.safe_load(path.read_text())
    data["clients"].append({"client_id": "other-ok", "client_secret_hash": data["clients"][0]["client_secret_hash"],
                            "grant_types": ["client_credentials"]})
    edit(data["clients"][0])
    data["clients"][0] = {k: v for k, v in data["clients"][0].items() if v is not None}
    path.write_text(yaml.safe_dump(data))
    result = cli(home, "clients", "check", ok=False)
    assert str(path) in result.stderr
    assert f"client '{client}'" in result.stderr
    assert f"field '{field}'" in result.stderr
    assert "Traceback" not in result.stderr
    assert "all valid" not in result.stdout


def test_clients_check_refuses_a_duplicate_and_a_non_list(home):
    cli(home, "keys", "generate")
    path = write_clients(home, make_secret(home, "demo-x")[1])
    text = path.read_text()
    path.write_text(text + text.split("clients:\n", 1)[1])
    result = cli(home, "clients", "check", ok=False)
    assert str(path) in result.stderr and "client 'demo-x'" in result.stderr and "client_id" in result.stderr
    path.write_text("clients: demo-x\n")
    result = cli(home, "clients", "check", ok=False)
    assert str(path) in result.stderr and "'clients'" in result.stderr


# -- database and users -----------------------------------------------------------------

def password_hash(home: Path, username: str) -> str:
    with sqlite3.connect(home / "data" / "oidc.db") as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users WHERE username = ?", (username,)).fetchone()
    return stored


def verifies(stored: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(stored, password)
    except VerificationError:
        return False


def sign_in(app, username: str, password: str) -> tuple[int, dict, str]:
    """Authorization request, login form, redirect back; returns (status, callback params, verifier)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    browser = app.test_client()
    response = browser.get("/oidc/auth", query_string={
        "client_id": "demo-x", "response_type": "code", "scope": "openid email", "redirect_uri": REDIRECT,
        "state": "st-1", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256"})
    hops = 0
    while response.status_code in (302, 303) and not response.headers["Location"].startswith(REDIRECT):
        response, hops = browser.get(response.headers["Location"]), hops + 1
        assert hops < 10
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and 'name="password"' in page, page[:500]
    action = re.search(r'<form method="post" action="([^"]+)"', page).group(1)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = browser.post(action, data={"csrf_token": csrf, "login": username, "password": password,
                                          "action": "login"})
    hops = 0
    while response.status_code in (302, 303) and not response.headers["Location"].startswith(REDIRECT):
        response, hops = browser.get(response.headers["Location"]), hops + 1
        assert hops < 10
    if response.status_code in (302, 303):
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        return response.status_code, {k: v[0] for k, v in query.items()}, verifier
    return response.status_code, {}, verifier


def test_db_upgrade_and_users(home):
    cli(home, "keys", "generate")
    secret, secret_hash = make_secret(home, "demo-x")
    write_clients(home, secret_hash)
    assert "database is up to date" in cli(home, "db", "upgrade").stdout
    assert (home / "data" / "oidc.db").exists()
    assert "database is up to date" in cli(home, "db", "upgrade").stdout  # again: nothing to do

    out = cli(home, "users", "add", "alice", "--email", "Alice@Example.com", "--name", "Alice",
              "--password-stdin", input=FIRST_PASSWORD + "\n").stdout
    sub = re.search(r"^created alice \(sub ([0-9a-f-]{36})\)$", out, re.M).group(1)
    stored = password_hash(home, "alice")
    assert stored.startswith("$argon2id$") and FIRST_PASSWORD not in stored
    assert verifies(stored, FIRST_PASSWORD) and not verifies(stored, NEW_PASSWORD)

    listed = cli(home, "users", "list").stdout
    row = next(line for line in listed.splitlines() if line.startswith("alice "))
    assert "alice@example.com" in row and sub in row  # the email is stored in lower case

    duplicate = cli(home, "users", "add", "alice", "--password-stdin", input=FIRST_PASSWORD + "\n", ok=False)
    assert "exists" in duplicate.stderr
    short = cli(home, "users", "add", "bob", "--password-stdin", input="short\n", ok=False)
    assert "at least 8 characters" in short.stderr
    closed = cli(home, "users", "add", "carol", ok=False)  # no terminal, no password: refuse, do not hang
    assert "at least 8 characters" in closed.stderr
    assert "bob" not in cli(home, "users", "list").stdout

    out = cli(home, "users", "set-password", "alice", "--password-stdin", input=NEW_PASSWORD + "\n").stdout
    assert "password of alice changed" in out
    stored = password_hash(home, "alice")
    assert verifies(stored, NEW_PASSWORD) and not verifies(stored, FIRST_PASSWORD)
    missing = cli(home, "users", "set-password", "nobody", "--password-stdin", input=NEW_PASSWORD + "\n", ok=False)
    assert "no user 'nobody'" in missing.stderr

    # The provider built on the same base directory logs her in with the new password only,
    # and the secret printed by `clients secret` authenticates the client.
    app = create_app(home / "config" / "provider.yaml", base_dir=home)
    status, _, _ = sign_in(app, "alice", FIRST_PASSWORD)
    assert status == 401
    status, params, verifier = sign_in(app, "alice@example.com", NEW_PASSWORD)
    assert status in (302, 303) and params.get("state") == "st-1" and "code" in params, params
    token = app.test_client().post("/oidc/token", data={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier}, headers={"Authorization": "Basic " + base64.b64encode(
            f"demo-x:{secret}".encode()).decode()})
    assert token.status_code == 200, token.get_data(as_text=True)
    claims = app.extensions["op"].keyring.verify(token.get_json()["id_token"]).claims
    assert claims["sub"] == sub and claims["aud"] in ("demo-x", ["demo-x"]) and claims["amr"] == ["pwd"]
    info = app.test_client().get("/oidc/userinfo", headers={
        "Authorization": f"Bearer {token.get_json()['access_token']}"})
    assert info.status_code == 200 and info.get_json()["email"] == "alice@example.com"
    wrong = app.test_client().post("/oidc/token", data={"grant_type": "authorization_code", "code": "x",
                                                       "redirect_uri": REDIRECT, "code_verifier": verifier},
                                   headers={"Authorization": "Basic " + base64.b64encode(
                                       f"demo-x:{secret}x".encode()).decode()})
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_client"
    with app.app_context():
        from oidc_provider.extensions import db

        db.engine.dispose()


# -- demo -------------------------------------------------------------------------------

def test_demo_prepares_everything_and_prints_how_to_sign_in(home):
    out = cli(home, "demo").stdout
    clients_file = home / "config" / "clients.yaml"
    assert clients_file.exists()
    assert f"{clients_file}: 2 clients, all valid" in cli(home, "clients", "check").stdout
    assert "Demo user:    demo / demo-password" in out

    url = re.search(r"^\s+(http://127\.0\.0\.1:5999/oidc/auth\?client_id=demo-web\S+)$", out, re.M).group(1)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["response_type"] == "code" and "openid" in query["scope"].split()
    registered = {c["client_id"]: c for c in yaml.safe_load(clients_file.read_text())["clients"]}
    assert query["redirect_uri"] in registered["demo-web"]["redirect_uris"]
    mobile_url = re.search(r"(http://\S+/oidc/auth\?client_id=demo-mobile\S+)", out).group(1)
    mobile = {k: v[0] for k, v in parse_qs(urlsplit(mobile_url).query).items()}
    verifier = re.search(r"code_verifier=([A-Za-z0-9_-]+)", out).group(1)
    assert mobile["code_challenge_method"] == "S256"
    assert mobile["code_challenge"] == base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()

    secret = re.search(r"^Web client:\s+demo-web / (\S+)$", out, re.M).group(1)
    key = MasterSecret((home / "keys" / "secret.key").read_bytes().strip()).derive("client-secret")
    assert registered["demo-web"]["client_secret_hash"] == hash_client_secret(secret, key)
    assert "demo" in cli(home, "users", "list").stdout.split()
    assert verifies(password_hash(home, "demo"), "demo-password")

    again = cli(home, "demo").stdout  # a second run changes nothing and prints the same secret
    assert f"demo-web / {secret}" in again
    assert yaml.safe_load(clients_file.read_text())["clients"][0]["client_secret_hash"] == \
        registered["demo-web"]["client_secret_hash"]
    demo_rows = [line for line in cli(home, "users", "list").stdout.splitlines() if line.startswith("demo ")]
    assert len(demo_rows) == 1


def test_keys_reencrypt_moves_totp_seeds_to_the_new_key(tmp_path):
    """Rotation of the key that encrypts reversible secrets: new id first, reencrypt, old id gone."""
    from oidc_provider.authn.factors.totp import seed_context
    from oidc_provider.cli import create_user, upgrade_database
    from oidc_provider.extensions import db
    from oidc_provider.models import Authenticator
    from oidc_provider.oauth.keys import KeyFolder

    KeyFolder(tmp_path / "keys").generate()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "clients.yaml").write_text("clients: []\n")
    config = tmp_path / "config" / "provider.yaml"
    base = f"database_url: sqlite:///{tmp_path}/oidc.db\n"
    config.write_text(base + "encryption_key_ids: [m1]\n")
    app = create_app(config, base_dir=tmp_path)
    upgrade_database(app)
    with app.app_context():
        user = create_user("seeded", "long enough password")
        box = app.extensions["op"].secret_box
        row = Authenticator(user_id=user.id, kind="totp", name="app", confirmed=True, data={},
                            secret=box.encrypt(b"JBSWY3DPEHPK3PXP", seed_context(user.id)))
        db.session.add(row)
        db.session.commit()
        row_id, user_id = row.id, user.id
    config.write_text(base + "encryption_key_ids: [m2, m1]\n")
    env = {**os.environ, "OIDC_PROVIDER_HOME": str(tmp_path), "OIDC_PROVIDER_CONFIG": str(config)}
    cli = str(Path(sys.executable).with_name("oidc-provider"))
    done = subprocess.run([cli, "keys", "reencrypt"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "1 secret(s) now under key m2" in done.stdout, done.stderr
    config.write_text(base + "encryption_key_ids: [m2]\n")  # the old key is gone
    app = create_app(config, base_dir=tmp_path)
    with app.app_context():
        stored = db.session.get(Authenticator, row_id).secret
        assert stored.startswith("v1:m2:")
        assert app.extensions["op"].secret_box.decrypt(stored, seed_context(user_id)) == b"JBSWY3DPEHPK3PXP"
