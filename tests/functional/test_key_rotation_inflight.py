"""Signing key rotation without downtime (SPEC section 6), as relying parties see it.

Two `oidc-provider serve` instances (two workers each) share keys/. Client threads keep
asking both for tokens while the operator runs `oidc-provider keys rotate`; an outside
validator (PyJWT) checks every token as it arrives with the JWKS it fetched *before* the
rotation and never refreshed, so the key that starts signing must have been published
before. Afterwards every token still verifies with either instance's JWKS, and the retired
key leaves the JWKS only once every token it signed has expired.
"""

from __future__ import annotations

import json
import threading
import time

import jwt
import pytest
import requests

from oidc_provider.oauth.keys import SIGNING_GRACE, KeyRing
from tests.conftest import _free_port, published_long_enough, run_cli
from tests.production import production_home, serve

LIFETIME = 4  # seconds, of access and ID tokens: short, so the retired key's end comes within the test


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    port = _free_port()
    home = production_home(tmp_path_factory.mktemp("rotation"), f"http://127.0.0.1:{port}",
                           {"lifetimes": {"access_token": LIFETIME, "id_token": LIFETIME},
                            "mfa_api": {"access_token_lifetime": LIFETIME}})  # its resource's tokens too
    served = []
    try:
        served.append(serve(home, port))
        served.append(serve(home))
        yield home, served
    finally:
        for instance in served:
            instance.stop()
        home.close()


def published(url: str) -> dict:
    response = requests.get(f"{url}/oidc/jwks", timeout=10)
    assert response.status_code == 200
    return response.json()


def kids(jwks: dict) -> set[str]:
    return {key["kid"] for key in jwks["keys"]}


def ring(home) -> dict[tuple[str, str], str]:
    """(alg, state) -> kid, from keys/keyring.json (states: next, active; retired ones skipped)."""
    entries = json.loads((home.path / "keys" / "keyring.json").read_text())["keys"]
    return {(e["alg"], e["state"]): e["kid"] for e in entries if e["state"] != "retired"}


def test_rotation_while_tokens_are_in_flight(instances):
    home, (a, b) = instances
    issuer = f"{a.url}"
    secret = home.secrets["backend"]
    before = ring(home)
    old, upcoming = before[("RS256", "active")], before[("RS256", "next")]
    cached = published(a.url)
    assert kids(cached) == kids(published(b.url)) and {old, upcoming} <= kids(cached)  # next: published early
    relying_party_cache = jwt.PyJWKSet.from_dict(cached)  # fetched once, never refreshed below

    issued: list[tuple[float, str]] = []
    problems: list[str] = []
    stop = threading.Event()

    def client(index: int) -> None:
        http = requests.Session()  # keep-alive, like a real client
        for n in range(100_000):
            if stop.is_set():
                return
            url = (a.url, b.url)[(index + n) % 2]
            answer = http.post(f"{url}/oidc/token", data={"grant_type": "client_credentials", "scope": "orders:read"},
                               auth=("backend", secret), timeout=15)
            if answer.status_code != 200:
                problems.append(f"{url}: {answer.status_code} {answer.text[:200]}")
                continue
            token = answer.json()["access_token"]
            issued.append((time.time(), token))
            try:  # the outside validator, with its pre-rotation JWKS
                kid = jwt.get_unverified_header(token)["kid"]
                jwt.decode(token, relying_party_cache[kid].key, algorithms=["RS256"], issuer=issuer,
                           options={"verify_aud": False})
            except (KeyError, jwt.PyJWTError) as exc:
                problems.append(f"token from {url} refused by the relying party: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    published_long_enough(home.path / "keys")  # the relying party's JWKS already holds the next key
    rotated_at = time.time()
    run_cli(home.path, "keys", "rotate")
    rotated_by = time.time()  # keyring.json was replaced in between
    time.sleep(2.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not problems, problems[:5]

    after = ring(home)
    assert after[("RS256", "active")] == upcoming and after[("RS256", "next")] not in (old, upcoming)
    signed_by = {}
    for at, token in issued:
        signed_by.setdefault(jwt.get_unverified_header(token)["kid"], []).append((at, token))
    assert set(signed_by) == {old, upcoming}, set(signed_by)  # the fresh next key signed nothing
    # every worker switched within its reload interval (a second), give or take a busy machine's latency
    assert all(at < rotated_by + KeyRing.CHECK_INTERVAL + 2 for at, _ in signed_by[old])
    assert all(at > rotated_at for at, _ in signed_by[upcoming])

    # every token, from either instance, verifies with either instance's current JWKS
    for url in (a.url, b.url):
        current = jwt.PyJWKClient(f"{url}/oidc/jwks")
        assert {old, upcoming, after[("RS256", "next")]} <= kids(published(url))  # retired, active, next
        for _, token in issued:
            key = current.get_signing_key_from_jwt(token)
            jwt.decode(token, key.key, algorithms=["RS256"], issuer=issuer,
                       options={"verify_aud": False, "verify_exp": False})  # some expired meanwhile

    # the retired key stays published until every token it signed has expired, then goes
    last_expiry = max(jwt.decode(token, options={"verify_signature": False})["exp"] for _, token in signed_by[old])
    gone_at = {}
    deadline = rotated_at + LIFETIME + SIGNING_GRACE + 10
    while len(gone_at) < 2 and time.time() < deadline:
        for url in (a.url, b.url):
            if url not in gone_at and old not in kids(published(url)):
                gone_at[url] = time.time()
        time.sleep(0.25)
    assert set(gone_at) == {a.url, b.url}, "the retired key was never withdrawn"
    assert min(gone_at.values()) >= last_expiry
    time.sleep(KeyRing.CHECK_INTERVAL * 1.5)  # each worker notices on its own, within its reload interval
    for url in (a.url, b.url) * 4:  # several requests: each instance's workers answer in turn
        assert kids(published(url)) == set(after.values())  # active and next of each algorithm
