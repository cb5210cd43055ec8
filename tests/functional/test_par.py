"""Pushed authorization requests (RFC 9126) as relying parties use them, and the attacks on them."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from tests.conftest import (BACKENDS, REDIRECT, UserAgent, add_clients, callback_params, pkce_pair, post,
                            start_provider, token_request)
from tests.servers import sms_code

LIFETIME = 3  # seconds a request_uri lives in these providers
URN = "urn:ietf:params:oauth:request_uri:"


@pytest.fixture(scope="module", params=list(BACKENDS))
def op(request, tmp_path_factory, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("par"), request.param, extra_settings={
        "par": {"lifetime": LIFETIME},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms"},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
    })
    add_clients(running, {"client_id": "par-only", "client_secret": "par-only-" + "s" * 40,
                          "redirect_uris": [REDIRECT], "scopes": ["openid"], "first_party": True,
                          "require_pushed_authorization_requests": True})
    yield running
    stop()


@pytest.fixture
def person(op):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    return op.add_user(phone=phone, phone_verified=True, email_verified=True) | {"phone": phone}


def push(provider, client="web", auth="basic", **params) -> requests.Response:
    """POST /oidc/par, the client authenticated as at the token endpoint."""
    data = {"response_type": "code", "scope": "openid", "redirect_uri": REDIRECT, **params}
    data = {key: value for key, value in data.items() if value is not None}
    kwargs = {}
    if auth == "basic":
        kwargs["auth"] = (client, provider.secrets[client])
    elif auth == "none":
        data["client_id"] = client
    return requests.post(f"{provider.url}/oidc/par", data=data, timeout=15, **kwargs)


def pushed_uri(provider, client="web", **params) -> str:
    response = push(provider, client, **params)
    assert response.status_code == 201, response.text
    return response.json()["request_uri"]


def use(agent: UserAgent, client: str, request_uri: str, **query) -> requests.Response:
    return agent.go(requests.Request("GET", f"{agent.provider.url}/oidc/auth", params={
        "client_id": client, "request_uri": request_uri, **query}).prepare().url)


def test_discovery_advertises_the_par_endpoint(op):
    config = op.discovery()
    assert config["pushed_authorization_request_endpoint"] == f"{op.url}/oidc/par"
    assert config["require_pushed_authorization_requests"] is False
    assert config["request_uri_parameter_supported"] is False  # no request_uri is ever fetched


def test_a_pushed_request_survives_the_login_and_yields_tokens(op, person):
    verifier, challenge = pkce_pair()
    response = push(op, state="pushed-state", nonce="n-1", code_challenge=challenge, code_challenge_method="S256")
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    answer = response.json()
    assert answer["request_uri"].startswith(URN) and answer["expires_in"] == LIFETIME
    agent = UserAgent(op)
    page = use(agent, "web", answer["request_uri"], state="query-state", scope="openid email")
    assert 'name="password"' in page.text
    params = callback_params(agent.login(page, person["username"]))
    assert params["state"] == "pushed-state"  # only the pushed parameters count
    tokens = token_request(op, {"grant_type": "authorization_code", "code": params["code"],
                                "redirect_uri": REDIRECT, "code_verifier": verifier}).json()
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["nonce"] == "n-1" and claims["sub"] == person["sub"] and tokens["scope"] == "openid"


def test_public_and_key_authenticated_clients_push_too(op):
    refused = push(op, "mobile", auth="none", scope="openid")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"  # PKCE is required
    _, challenge = pkce_pair()
    assert push(op, "mobile", auth="none", code_challenge=challenge, code_challenge_method="S256").status_code == 201
    key = op.client_keys["jwt-client"]
    now = int(time.time())
    assertion = jwt.encode({"iss": "jwt-client", "sub": "jwt-client", "aud": f"{op.url}/oidc/par",
                            "jti": uuid.uuid4().hex, "iat": now, "exp": now + 60},
                           key.as_pem(private=True), algorithm="RS256", headers={"kid": key.kid})
    pushed = requests.post(f"{op.url}/oidc/par", timeout=15, data={
        "response_type": "code", "scope": "openid", "redirect_uri": REDIRECT, "client_id": "jwt-client",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    assert pushed.status_code == 201, pushed.text


def test_client_authentication_failures_are_json_401(op):
    wrong = requests.post(f"{op.url}/oidc/par", auth=("web", "not-the-secret"), timeout=15,
                          data={"response_type": "code", "redirect_uri": REDIRECT})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    anonymous = requests.post(f"{op.url}/oidc/par", data={"response_type": "code", "client_id": "web"}, timeout=15)
    assert anonymous.status_code in (400, 401) and anonymous.json()["error"] == "invalid_client"
    page = requests.get(f"{op.url}/oidc/par", timeout=15)
    assert page.status_code == 405 and page.json()["error"] == "invalid_request"


@pytest.mark.parametrize(("params", "error"), [
    ({"redirect_uri": "https://attacker.example/cb"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request"),
    ({"claims": "{not json"}, "invalid_request"),
    ({"max_age": "soon"}, "invalid_request"),
    ({"resource": "https://unknown.example.com"}, "invalid_target"),
    ({"request_uri": URN + "abc"}, "invalid_request"),  # RFC 9126 2.1
    ({"client_id": "web-post"}, "invalid_request"),  # not the authenticated client
])
def test_a_pushed_request_is_validated_as_the_authorization_endpoint_would(op, params, error):
    response = push(op, **params)
    assert response.status_code == 400 and response.json()["error"] == error, response.text
    assert response.headers["Content-Type"].startswith("application/json")


def test_a_request_uri_is_single_use(op, person):
    request_uri = pushed_uri(op, state="once")
    agent = UserAgent(op)
    agent.sign_in(person["username"], client_id="web")
    assert "code" in callback_params(use(agent, "web", request_uri))
    replay = callback_params(use(agent, "web", request_uri, state="again"))
    assert replay["error"] == "invalid_request_uri" and replay["state"] == "again" and "code" not in replay


def test_of_concurrent_uses_exactly_one_wins(op):
    request_uri = pushed_uri(op)
    url = f"{op.url}/oidc/auth?client_id=web&request_uri={request_uri}"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: requests.get(url, allow_redirects=False, timeout=15), range(8)))
    won = [a for a in answers if a.status_code == 303 and "/interaction/" in a.headers["Location"]]
    lost = [a for a in answers if a.status_code == 302 and "error=invalid_request_uri" in a.headers["Location"]]
    assert len(won) == 1 and len(lost) == 7, [(a.status_code, a.headers.get("Location")) for a in answers]


def test_an_expired_request_uri_is_refused(op):
    request_uri = pushed_uri(op)
    time.sleep(LIFETIME + 0.5)
    answer = callback_params(use(UserAgent(op), "web", request_uri))
    assert answer["error"] == "invalid_request_uri"


def test_a_request_uri_is_bound_to_the_client_that_pushed_it(op, person):
    request_uri = pushed_uri(op, client="web")
    agent = UserAgent(op)
    stolen = callback_params(use(agent, "web-post", request_uri))
    assert stolen["error"] == "invalid_request_uri" and "code" not in stolen
    page = use(agent, "web", request_uri)  # the attempt did not burn it for its client
    assert 'name="password"' in page.text


def test_request_uris_from_elsewhere_are_not_fetched(op):
    answer = callback_params(use(UserAgent(op), "web", "https://attacker.example/request.jwt"))
    assert answer["error"] == "request_uri_not_supported"
    unknown_client = use(UserAgent(op), "nobody", pushed_uri(op))
    assert unknown_client.status_code == 400 and "Location" not in unknown_client.headers


def test_a_client_that_requires_par_is_refused_a_plain_request(op, person):
    plain = callback_params(UserAgent(op).authorize(client_id="par-only", state="p1"))
    assert plain["error"] == "invalid_request" and plain["state"] == "p1" and "code" not in plain
    agent = UserAgent(op)
    request_uri = pushed_uri(op, client="par-only", state="p2")
    params = callback_params(agent.login(use(agent, "par-only", request_uri), person["username"]))
    assert params["state"] == "p2" and "code" in params


def test_acr_values_mfa_pushed_still_runs_the_mfa_chain(op, person, gateway_server):
    agent = UserAgent(op)
    request_uri = pushed_uri(op, acr_values="mfa", state="m1")
    choice = agent.login(use(agent, "web", request_uri), person["username"])
    assert choice.status_code == 200 and "One more step" in choice.text  # the password alone is not enough
    page = post(agent, choice, "start", {"factor": "sms"})
    params = callback_params(agent.submit(page, {"code": sms_code(gateway_server, person["phone"])}))
    assert params["state"] == "m1"
    tokens = token_request(op, {"grant_type": "authorization_code", "code": params["code"],
                                "redirect_uri": REDIRECT}).json()
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "sms", "mfa"]


@pytest.fixture(scope="module")
def required(tmp_path_factory):
    """A provider where every client must push (par.required)."""
    running, stop = start_provider(tmp_path_factory.mktemp("par-required"), "sqlite-sql",
                                   extra_settings={"par": {"required": True}})
    yield running
    stop()


def test_when_par_is_required_plain_requests_are_refused(required):
    assert required.discovery()["require_pushed_authorization_requests"] is True
    plain = callback_params(UserAgent(required).authorize(client_id="web", state="r1"))
    assert plain["error"] == "invalid_request" and plain["state"] == "r1"
    person = required.add_user()
    agent = UserAgent(required)
    page = use(agent, "web", pushed_uri(required, state="r2"))
    params = callback_params(agent.login(page, person["username"]))
    assert params["state"] == "r2" and "code" in params


def test_par_required_still_lets_the_account_pages_step_up(required):
    """The built-in account client (the account pages' own step-up) is not a relying party to push."""
    _, challenge = pkce_pair()
    page = UserAgent(required).authorize(client_id="op:account", redirect_uri=f"{required.url}/account/security/reauth",
                                         code_challenge=challenge, code_challenge_method="S256", state="s")
    assert page.status_code == 200 and 'name="password"' in page.text, page.headers.get("Location")
