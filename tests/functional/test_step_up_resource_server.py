"""Step-up (RFC 9470) end to end: a resource server built on oidc_provider.resource_server
refuses a password-only token for a payment, the client sends the user back with the
acr_values the challenge named, the provider asks only for a second factor (a code sent by
a real SMTP server) and the new token is accepted. All over real HTTP on loopback."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid

import pytest
import requests
from flask import Flask, g, jsonify
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from examples.resource_server import create_app
from oidc_provider.oauth.keys import KeyFolder, KeyRing
from oidc_provider.resource_server import ResourceServer
from oidc_provider.settings.clients import ClientRegistry
from tests.conftest import post, REDIRECT, UserAgent, callback_params, pkce_pair, start_provider, token_request
from tests.servers import code_in, free_port, serving_app, text_of

API = "https://api.example.com"
SCOPE = "openid orders:read"


@pytest.fixture(scope="module")
def provider(tmp_path_factory, plain_smtp):
    base = tmp_path_factory.mktemp("step-up")
    running, stop = start_provider(base, "sqlite-sql", extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5}})
    # The shop's web client may also ask for the API's scope; the clients file reloads on change.
    clients = base / "clients.yaml"
    data = json.loads(clients.read_text())  # start_provider writes JSON, which is YAML
    for client in data["clients"]:
        if client["client_id"] == "web":
            client["scopes"] = [*client["scopes"], "orders:read"]
    clients.write_text(json.dumps(data))
    time.sleep(ClientRegistry.CHECK_INTERVAL + 0.1)  # the registry looks at the file once a second
    yield running
    stop()


@pytest.fixture(scope="module")
def api(provider):
    """The example resource server (audience https://api.example.com) on its own port."""
    with serving_app(create_app(provider.url, API)) as url:
        yield url


def challenge_of(response: requests.Response) -> dict:
    """The auth-params of a Bearer WWW-Authenticate header (RFC 6750 3, RFC 9110 11.6.1)."""
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer"), header
    return {name: re.sub(r"\\(.)", r"\1", value)
            for name, value in re.findall(r'([A-Za-z_]+)="((?:[^"\\]|\\.)*)"', header)}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def exchange(provider, params: dict, verifier: str) -> dict:
    answer = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                      "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert answer.status_code == 200, answer.text
    return answer.json()


def b64_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def claims_of(token: str) -> dict:
    """A token's claims, read without verifying: what the client sees."""
    return b64_json(token.split(".")[1])


def password_token(provider, agent: UserAgent, username: str, resource: str = API, scope: str = SCOPE) -> str:
    verifier, challenge = pkce_pair()
    params = agent.sign_in(username, client_id="web", scope=scope, resource=resource,
                           code_challenge=challenge, code_challenge_method="S256")
    return exchange(provider, params, verifier)["access_token"]


# -- the journey ------------------------------------------------------------------------------

def test_a_payment_steps_up_from_password_to_mfa(provider, api, plain_smtp):
    # MFA needs a verified email address and phone number (the Transmit guide's note)
    person = provider.add_user(email_verified=True, phone=f"+1555{uuid.uuid4().int % 10**7:07d}", phone_verified=True)
    agent = UserAgent(provider)
    token = password_token(provider, agent, person["username"])
    assert claims_of(token)["amr"] == ["pwd"] and "acr" not in claims_of(token)

    orders = requests.get(f"{api}/orders", headers=bearer(token), timeout=10)
    assert orders.status_code == 200 and orders.json()["sub"] == person["sub"]

    refused = requests.post(f"{api}/payments", headers=bearer(token), json={"amount": 10}, timeout=10)
    assert refused.status_code == 401
    challenge = challenge_of(refused)
    assert challenge["error"] == "insufficient_user_authentication"
    assert challenge["acr_values"] == "mfa" and challenge["max_age"] == "300"
    assert refused.json()["error"] == "insufficient_user_authentication"

    # RFC 9470 4: the client asks the provider for what the challenge named
    verifier, pkce = pkce_pair()
    choice = agent.authorize(client_id="web", scope=SCOPE, resource=API, acr_values=challenge["acr_values"],
                             max_age=challenge["max_age"], code_challenge=pkce, code_challenge_method="S256")
    assert choice.status_code == 200 and "One more step" in choice.text
    assert 'name="password"' not in choice.text  # the password still counts: only the second factor
    code_page = post(agent, choice, "start", {"factor": "email-otp"})
    assert "We sent a code to" in code_page.text
    address = f"{person['username']}@example.com"
    code = code_in(text_of(plain_smtp.mailbox.to(address)[-1].message))
    stepped_up = exchange(provider, callback_params(agent.submit(code_page, {"code": code})), verifier)["access_token"]

    claims = claims_of(stepped_up)
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "eml", "mfa"] and claims["aud"] == API
    paid = requests.post(f"{api}/payments", headers=bearer(stepped_up), json={"amount": 10}, timeout=10)
    assert paid.status_code == 200 and paid.json() == {"sub": person["sub"], "status": "accepted", "amount": 10}
    # the old token is still only good for what it was good for
    assert requests.post(f"{api}/payments", headers=bearer(token), timeout=10).status_code == 401


# -- tokens that are refused ------------------------------------------------------------------

def test_no_token_gets_a_bare_challenge(api):
    bare = 'Bearer, DPoP algs="ES256 RS256 PS256 EdDSA"'  # RFC 6750 3.1; RFC 9449 7.2: both schemes
    answer = requests.get(f"{api}/orders", timeout=10)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == bare
    basic = requests.get(f"{api}/orders", auth=("web", "secret"), timeout=10)
    assert basic.status_code == 401 and basic.headers["WWW-Authenticate"] == bare


@pytest.mark.parametrize("garbage", ["x", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "." * 3, "é" * 10])
def test_garbage_tokens_are_invalid(api, garbage):
    answer = requests.get(f"{api}/orders", headers={"Authorization": f"Bearer {garbage}".encode()}, timeout=10)
    assert answer.status_code == 401
    assert challenge_of(answer)["error"] == "invalid_token" and answer.json()["error"] == "invalid_token"


def test_signed_but_unacceptable_tokens_are_invalid(provider, api):
    """Tokens signed with the provider's real key, each wrong in one way."""
    now = int(time.time())
    good = {"iss": provider.url, "sub": "someone", "aud": API, "exp": now + 60, "iat": now, "jti": "j1",
            "client_id": "web", "scope": "orders:read", "auth_time": now, "acr": "mfa", "amr": ["pwd", "eml", "mfa"]}
    sign = provider.op.keyring.sign  # the issuer's own signing key: only the claims are wrong

    def answer(token):
        return requests.get(f"{api}/orders", headers=bearer(token), timeout=10)

    assert answer(sign(good, "RS256", typ="at+jwt")).status_code == 200  # the baseline is accepted
    cases = {
        "expired": (sign({**good, "exp": now - 120}, "RS256", typ="at+jwt"), "expired"),
        "another issuer": (sign({**good, "iss": "http://evil.example"}, "RS256", typ="at+jwt"), "another issuer"),
        "no exp": (sign({k: v for k, v in good.items() if k != "exp"}, "RS256", typ="at+jwt"), "expired"),
        "an ID token": (sign(good, "RS256"), "not a JWT access token"),
        "DPoP-bound": (sign({**good, "cnf": {"jkt": "abc"}}, "RS256", typ="at+jwt"), "bound to a key"),
    }
    for name, (token, reason) in cases.items():
        refused = answer(token)
        assert refused.status_code == 401, name
        assert challenge_of(refused)["error"] == "invalid_token", name
        assert reason in challenge_of(refused)["error_description"], name


def test_tampered_and_foreign_keyed_tokens_are_invalid(provider, api):
    now = int(time.time())
    claims = {"iss": provider.url, "sub": "someone", "aud": API, "exp": now + 60, "scope": "orders:read"}
    genuine = provider.op.keyring.sign(claims, "RS256", typ="at+jwt")
    header, _, signature = genuine.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "admin"}).encode()).rstrip(b"=").decode()
    tampered = ".".join([header, forged, signature])
    published_kid = b64_json(header)["kid"]
    impostor = RSAKey.generate_key(2048, parameters={"kid": published_kid})  # same kid, another key
    unknown = RSAKey.generate_key(2048, parameters={"kid": "not-published"})
    for token, reason in [
        (tampered, "signature"),
        (jose_jwt.encode({"alg": "RS256", "kid": published_kid, "typ": "at+jwt"}, claims, impostor), "signature"),
        (jose_jwt.encode({"alg": "RS256", "kid": "not-published", "typ": "at+jwt"}, claims, unknown), "unknown key"),
    ]:
        refused = requests.get(f"{api}/orders", headers=bearer(token), timeout=10)
        assert refused.status_code == 401 and challenge_of(refused)["error"] == "invalid_token"
        assert reason in challenge_of(refused)["error_description"]


def test_a_token_for_another_resource_is_refused(provider, api):
    person = provider.add_user(email_verified=True)
    for_billing = password_token(provider, UserAgent(provider), person["username"],
                                 resource="https://billing.example.com")
    assert claims_of(for_billing)["aud"] == "https://billing.example.com"
    refused = requests.get(f"{api}/orders", headers=bearer(for_billing), timeout=10)
    assert refused.status_code == 401 and challenge_of(refused)["error"] == "invalid_token"
    assert "not meant for this resource" in challenge_of(refused)["error_description"]
    # without a resource the audience is the issuer: not this API either
    for_provider = password_token(provider, UserAgent(provider), person["username"], resource=None)
    assert claims_of(for_provider)["aud"] == provider.url
    assert requests.get(f"{api}/orders", headers=bearer(for_provider), timeout=10).status_code == 401


def test_a_token_without_the_scope_gets_insufficient_scope(provider, api):
    person = provider.add_user(email_verified=True)
    token = password_token(provider, UserAgent(provider), person["username"], scope="openid")
    refused = requests.get(f"{api}/orders", headers=bearer(token), timeout=10)
    assert refused.status_code == 403
    assert challenge_of(refused) == {"error": "insufficient_scope", "scope": "orders:read",
                                     "error_description": "The token lacks the scope this request needs."}


# -- max_age ----------------------------------------------------------------------------------

def test_an_old_login_is_refused_with_max_age_in_the_challenge(provider):
    max_age = 3
    app = Flask(__name__)
    rs = ResourceServer(provider.url, API)

    @app.get("/recent")
    @rs.require(max_age=max_age)
    def recent():
        return jsonify({"auth_time": g.access_token["auth_time"]})

    with serving_app(app) as url:
        person = provider.add_user(email_verified=True)
        token = password_token(provider, UserAgent(provider), person["username"])
        auth_time = claims_of(token)["auth_time"]
        fresh = requests.get(f"{url}/recent", headers=bearer(token), timeout=10)
        assert fresh.status_code == 200 and fresh.json() == {"auth_time": auth_time}
        time.sleep(max(0.0, auth_time + max_age + 1.1 - time.time()))
        stale = requests.get(f"{url}/recent", headers=bearer(token), timeout=10)
        assert stale.status_code == 401
        assert challenge_of(stale) == {"error": "insufficient_user_authentication", "max_age": str(max_age),
                                       "error_description": "More recent authentication is required."}
        assert stale.json()["max_age"] == max_age


# -- the issuer's keys ------------------------------------------------------------------------

def test_keys_rotated_after_the_first_fetch_are_fetched_again(tmp_path):
    provider, stop = start_provider(tmp_path, "sqlite-sql")
    app = Flask(__name__)
    rs = ResourceServer(provider.url, API)
    rs.refetch_interval = 0  # the default waits 10 s between fetches caused by unknown kids

    @app.get("/whoami")
    @rs.require()
    def whoami():
        return jsonify({"sub": g.access_token["sub"]})

    try:
        with serving_app(app) as url:
            def token():
                now = int(time.time())
                return provider.op.keyring.sign({"iss": provider.url, "sub": "someone", "aud": API, "exp": now + 60},
                                                "RS256", typ="at+jwt")

            before = token()
            assert requests.get(f"{url}/whoami", headers=bearer(before), timeout=10).status_code == 200
            keys = KeyFolder(tmp_path / "keys")
            keys.rotate(("RS256",), retire_after=600)
            keys.rotate(("RS256",), retire_after=600)  # twice: the signing key did not exist at the first fetch
            time.sleep(KeyRing.CHECK_INTERVAL + 0.1)
            after = token()
            assert b64_json(after.split(".")[0])["kid"] != b64_json(before.split(".")[0])["kid"]
            answer = requests.get(f"{url}/whoami", headers=bearer(after), timeout=10)
            assert answer.status_code == 200 and answer.json() == {"sub": "someone"}
    finally:
        stop()


def test_an_unreachable_issuer_is_a_503_not_a_verdict_on_the_token(provider):
    app = Flask(__name__)
    rs = ResourceServer(provider.url, API, jwks_uri=f"http://127.0.0.1:{free_port()}/oidc/jwks")

    @app.get("/whoami")
    @rs.require()
    def whoami():
        return jsonify({})

    with serving_app(app) as url:
        now = int(time.time())
        token = provider.op.keyring.sign({"iss": provider.url, "sub": "someone", "aud": API, "exp": now + 60},
                                         "RS256", typ="at+jwt")
        answer = requests.get(f"{url}/whoami", headers=bearer(token), timeout=20)
        assert answer.status_code == 503 and answer.json()["error"] == "temporarily_unavailable"
