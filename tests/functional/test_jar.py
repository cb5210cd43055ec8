"""Signed request objects (JAR, RFC 9101; OIDC Core 6.1), signed here with PyJWT, and the attacks on them."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.conftest import REDIRECT, UserAgent, add_clients, callback_params, pkce_pair, start_provider, \
    token_request

OTHER_REDIRECT = "http://127.0.0.1:9/other"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # registered nowhere


def public_jwk(key, kid: str) -> dict:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    return {**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"}


JWKS = {"keys": [public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1")]}
SECRET = "jar-secret-" + "s" * 40


@pytest.fixture(scope="module")
def op(provider):
    """The shared provider (both backends), with the clients these tests need."""
    common = {"redirect_uris": [REDIRECT, OTHER_REDIRECT], "scopes": ["openid", "profile", "email"],
              "first_party": True, "jwks": JWKS}
    add_clients(provider,
                {"client_id": "jar-app", "client_secret": SECRET, **common},
                {"client_id": "jar-only", "client_secret": SECRET, "require_signed_request_object": True, **common},
                {"client_id": "jar-es256", "client_secret": SECRET, "request_object_signing_alg": "ES256", **common})
    return provider


def request_object(provider, client="jar-app", key=RSA_KEY, alg="RS256", kid="rsa-1", typ="oauth-authz-req+jwt",
                   **claims) -> str:
    now = int(time.time())
    body = {"iss": client, "aud": provider.url, "iat": now, "nbf": now, "exp": now + 300,
            "jti": uuid.uuid4().hex, "client_id": client, "response_type": "code", "scope": "openid",
            "redirect_uri": REDIRECT, **claims}
    body = {name: value for name, value in body.items() if value is not None}
    headers = {"kid": kid, **({"typ": typ} if typ else {})}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def authorize(agent: UserAgent, client: str, request: str, **query) -> requests.Response:
    return agent.go(requests.Request("GET", f"{agent.provider.url}/oidc/auth", params={
        "client_id": client, "request": request, **query}).prepare().url)


def exchange(provider, params, client, redirect_uri, verifier=None) -> dict:
    response = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                        "redirect_uri": redirect_uri, "code_verifier": verifier}, client)
    assert response.status_code == 200, response.text
    return response.json()


def test_discovery_advertises_request_objects(op):
    config = op.discovery()
    assert config["request_parameter_supported"] is True
    assert config["request_object_signing_alg_values_supported"] == ["RS256", "ES256"]
    assert config["request_uri_parameter_supported"] is False


@pytest.mark.parametrize(("key", "alg", "kid"), [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1")])
def test_a_signed_request_object_signs_in(op, user, key, alg, kid):
    verifier, challenge = pkce_pair()
    signed = request_object(op, key=key, alg=alg, kid=kid, state="s-obj", nonce="n-obj", scope="openid email",
                            code_challenge=challenge, code_challenge_method="S256",
                            claims={"id_token": {"auth_time": {"essential": True}}})
    agent = UserAgent(op)
    params = callback_params(agent.login(authorize(agent, "jar-app", signed), user["username"]))
    assert params["state"] == "s-obj"
    tokens = exchange(op, params, "jar-app", REDIRECT, verifier)
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["nonce"] == "n-obj" and claims["aud"] == "jar-app" and tokens["scope"] == "openid email"


def test_the_request_objects_parameters_win_over_the_query(op, user):
    agent = UserAgent(op)
    agent.sign_in(user["username"], client_id="jar-app")  # a password session
    signed = request_object(op, redirect_uri=OTHER_REDIRECT, scope="openid profile", state="from-object")
    answer = authorize(agent, "jar-app", signed, redirect_uri=REDIRECT, scope="openid email", state="from-query",
                       acr_values="mfa", prompt="login")
    assert answer.headers["Location"].startswith(OTHER_REDIRECT)  # and no MFA, no fresh login: query ignored
    params = callback_params(answer)
    assert params["state"] == "from-object"
    assert exchange(op, params, "jar-app", OTHER_REDIRECT)["scope"] == "openid profile"
    # and the other way round: acr_values in the object counts, so the password alone is not enough
    stepped = authorize(agent, "jar-app", request_object(op, acr_values="mfa"))
    assert stepped.status_code == 200 and "One more step" in stepped.text


def test_a_client_that_requires_request_objects_is_refused_a_plain_request(op, user):
    plain = callback_params(UserAgent(op).authorize(client_id="jar-only", state="q1"))
    assert plain["error"] == "invalid_request" and plain["state"] == "q1" and "code" not in plain
    agent = UserAgent(op)
    page = authorize(agent, "jar-only", request_object(op, client="jar-only", state="q2"))
    assert callback_params(agent.login(page, user["username"]))["state"] == "q2"


@pytest.mark.parametrize(("label", "make", "query"), [
    ("signed by another key", lambda op: request_object(op, key=STRANGER_KEY), {}),
    ("unknown kid", lambda op: request_object(op, key=STRANGER_KEY, kid="stranger"), {}),
    ("alg none", lambda op: jwt.encode({"iss": "jar-app", "aud": op.url, "exp": int(time.time()) + 60,
                                        "response_type": "code", "client_id": "jar-app"}, None, algorithm="none"), {}),
    ("HS256 with a guessable key", lambda op: jwt.encode(
        {"iss": "jar-app", "aud": op.url, "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256",
        headers={"kid": "rsa-1"}), {}),
    ("wrong aud", lambda op: request_object(op, aud="https://other-provider.example"), {}),
    ("wrong iss", lambda op: request_object(op, iss="web"), {}),
    ("expired", lambda op: request_object(op, exp=int(time.time()) - 120, iat=int(time.time()) - 600), {}),
    ("no exp", lambda op: request_object(op, exp=None), {}),
    ("exp far ahead", lambda op: request_object(op, exp=int(time.time()) + 30 * 86400), {}),
    ("not valid yet", lambda op: request_object(op, nbf=int(time.time()) + 3600), {}),
    ("client_id claim of another client", lambda op: request_object(op, client_id="web"), {}),
    ("query client_id of another client", lambda op: request_object(op), {"client_id": "jar-only"}),
    ("nested request_uri", lambda op: request_object(op, request_uri="https://attacker.example/r"), {}),
    ("another JWT type", lambda op: request_object(op, typ="at+jwt"), {}),
    ("not a JWT", lambda op: "not-a-jwt", {}),
    ("RS256 for an ES256 client", lambda op: request_object(op, client="jar-es256"), {"client_id": "jar-es256"}),
])
def test_bad_request_objects_are_invalid_request_object(op, user, label, make, query):
    agent = UserAgent(op)
    agent.sign_in(user["username"], client_id="jar-app")  # even with a session, no code
    query = dict(query)
    client = query.pop("client_id", "jar-app")
    answer = authorize(agent, client, make(op), state="bad", redirect_uri=REDIRECT, **query)
    params = callback_params(answer)  # to the query's redirect_uri: registered, so the client's
    assert params["error"] == "invalid_request_object", (label, params)
    assert params["state"] == "bad" and "code" not in params
    # with no redirect_uri it can trust (several registered, none in the query), the user is told
    page = authorize(agent, client, make(op))
    assert page.status_code == 400 and "Location" not in page.headers and "invalid_request_object" not in page.url


def test_request_and_request_uri_together_are_refused(op):
    answer = callback_params(authorize(UserAgent(op), "jar-app", request_object(op), request_uri="urn:x",
                                        redirect_uri=REDIRECT))
    assert answer["error"] == "invalid_request"


def test_a_request_object_can_be_pushed(op, user):
    _, challenge = pkce_pair()
    signed = request_object(op, client="jar-only", state="pushed", code_challenge=challenge,
                            code_challenge_method="S256")
    pushed = requests.post(f"{op.url}/oidc/par", data={"request": signed}, auth=("jar-only", SECRET), timeout=15)
    assert pushed.status_code == 201, pushed.text
    agent = UserAgent(op)
    page = agent.go(f"{op.url}/oidc/auth?client_id=jar-only&request_uri={pushed.json()['request_uri']}")
    assert callback_params(agent.login(page, user["username"]))["state"] == "pushed"  # it counts as signed
    plain = requests.post(f"{op.url}/oidc/par", auth=("jar-only", SECRET), timeout=15,
                          data={"response_type": "code", "scope": "openid", "redirect_uri": REDIRECT})
    assert plain.status_code == 400 and plain.json()["error"] == "invalid_request"
    forged = requests.post(f"{op.url}/oidc/par", auth=("jar-only", SECRET), timeout=15,
                           data={"request": request_object(op, client="jar-only", key=STRANGER_KEY)})
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_request_object"


@pytest.fixture(scope="module")
def plain_provider(tmp_path_factory):
    """PAR and JAR switched off."""
    running, stop = start_provider(tmp_path_factory.mktemp("no-par-jar"), "sqlite-sql",
                                   extra_settings={"par": {"enabled": False}, "jar": {"enabled": False}})
    add_clients(running, {"client_id": "jar-app", "client_secret": SECRET, "redirect_uris": [REDIRECT],
                          "scopes": ["openid"], "first_party": True, "jwks": JWKS})
    yield running
    stop()


def test_switched_off_they_are_neither_advertised_nor_accepted(plain_provider):
    config = plain_provider.discovery()
    assert "pushed_authorization_request_endpoint" not in config
    assert "require_pushed_authorization_requests" not in config
    assert config["request_parameter_supported"] is False and config["request_uri_parameter_supported"] is False
    assert "request_object_signing_alg_values_supported" not in config
    answer = callback_params(authorize(UserAgent(plain_provider), "jar-app", request_object(plain_provider)))
    assert answer["error"] == "request_not_supported"
    answer = callback_params(UserAgent(plain_provider).go(
        f"{plain_provider.url}/oidc/auth?client_id=jar-app&request_uri=urn:ietf:params:oauth:request_uri:x"))
    assert answer["error"] == "request_uri_not_supported"
    missing = requests.post(f"{plain_provider.url}/oidc/par", auth=("jar-app", SECRET), timeout=15, data={})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
