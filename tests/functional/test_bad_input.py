"""Bad input, replays and races against a live provider, as a relying party or a user
sees them over HTTP: status codes, OAuth error codes, pages versus redirects."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
import requests

from tests.conftest import BACKENDS, REDIRECT, UserAgent, callback_params, pkce_pair, start_provider, token_request


# -- helpers -------------------------------------------------------------------------------

def authorize_raw(provider, query: list[tuple[str, str]] | dict) -> requests.Response:
    """One GET to /oidc/auth, redirects not followed; a list allows repeated parameters."""
    return requests.get(f"{provider.url}/oidc/auth?{urlencode(query)}", allow_redirects=False, timeout=15)


def auth_query(client_id: str = "web", **extra) -> dict:
    _, challenge = pkce_pair()
    return {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": "openid",
            "state": "st-1", "code_challenge": challenge, "code_challenge_method": "S256", **extra}


def assert_error_page(response: requests.Response, message_id: str | None = None) -> None:
    """RFC 6749 4.1.2.1: the user is told; the browser is not sent anywhere."""
    assert response.status_code == 400, response.text[:300]
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    if message_id:
        assert f'data-error="{message_id}"' in response.text


def assert_oauth_error(response: requests.Response, error: str, status: int = 400) -> None:
    """RFC 6749 5.2: a JSON error body with the given code."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body


def signed_in_code(provider, username: str, client_id: str = "web") -> tuple[str, str]:
    """A fresh authorization code (with S256 PKCE) and its code_verifier."""
    verifier, challenge = pkce_pair()
    params = UserAgent(provider).sign_in(username, client_id=client_id, state="st-code", scope="openid profile",
                                         code_challenge=challenge, code_challenge_method="S256")
    assert params["state"] == "st-code" and "code" in params, params
    return params["code"], verifier


def exchange(provider, code: str, verifier: str | None, client: str = "web", auth: str = "basic"):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        data["code_verifier"] = verifier
    return token_request(provider, data, client=client, auth=auth)


def tokens_for(provider, username: str) -> dict:
    code, verifier = signed_in_code(provider, username)
    response = exchange(provider, code, verifier)
    assert response.status_code == 200, response.text
    return response.json()


def refresh(provider, refresh_token: str, client: str = "web") -> requests.Response:
    return token_request(provider, {"grant_type": "refresh_token", "refresh_token": refresh_token}, client=client)


def userinfo(provider, access_token: str) -> requests.Response:
    return requests.get(f"{provider.url}/oidc/userinfo", headers={"Authorization": f"Bearer {access_token}"},
                        timeout=15)


def introspect(provider, token: str) -> dict:
    response = requests.post(f"{provider.url}/oidc/introspect", data={"token": token},
                             auth=("resource-server", provider.secrets["resource-server"]), timeout=15)
    assert response.status_code == 200, response.text
    return response.json()


# -- 1, 2: unverifiable client or redirect_uri: a page, never a redirect ------------------------

def test_unknown_client_gets_error_page_not_redirect(provider):
    """RFC 6749 4.1.2.1: an invalid client_id must not cause a redirect."""
    response = authorize_raw(provider, auth_query(client_id="no-such-client"))
    assert_error_page(response, "invalid_client")


@pytest.mark.parametrize("redirect_uri", [
    "http://127.0.0.1:9/elsewhere",  # another path
    REDIRECT + "/extra",  # the registered one extended
    REDIRECT + "?next=http://evil.example",  # extra query
    REDIRECT[:-1],  # a prefix of the registered one
    REDIRECT + "/",
    "http://evil.example/callback",
], ids=["other-path", "extension", "extra-query", "prefix", "trailing-slash", "other-host"])
def test_unregistered_redirect_uri_gets_error_page(provider, redirect_uri):
    """RFC 6749 3.1.2.3 and RFC 9700 2.1: exact string matching, then 4.1.2.1: no redirect."""
    response = authorize_raw(provider, auth_query(redirect_uri=redirect_uri))
    assert_error_page(response, "invalid_redirect_uri")
    # The control: the registered URI itself is accepted (the browser is shown the login page).
    accepted = authorize_raw(provider, auth_query(redirect_uri=REDIRECT))
    assert accepted.status_code == 200 and 'name="password"' in accepted.text


# -- 3: PKCE -------------------------------------------------------------------------------

def test_public_client_without_code_challenge_gets_error_redirect(provider):
    """RFC 7636 4.4.1 and RFC 9700 2.1.1: a public client must use PKCE."""
    query = auth_query(client_id="mobile")
    del query["code_challenge"], query["code_challenge_method"]
    params = callback_params(authorize_raw(provider, query))
    assert params["error"] == "invalid_request"
    assert params["state"] == "st-1" and params["iss"] == provider.url
    assert "code" not in params


@pytest.mark.parametrize("client_id", ["mobile", "web"])
def test_plain_code_challenge_method_is_refused(provider, client_id):
    """RFC 9700 2.1.1: S256 only; plain would let a stolen challenge redeem the code."""
    verifier, _ = pkce_pair()
    params = callback_params(authorize_raw(provider, auth_query(client_id=client_id, code_challenge=verifier,
                                                                code_challenge_method="plain")))
    assert params["error"] == "invalid_request"
    assert params["state"] == "st-1" and "code" not in params


@pytest.mark.parametrize("client,auth", [("web", "basic"), ("mobile", "none")])
def test_missing_code_verifier_is_invalid_grant(provider, user, client, auth):
    """RFC 7636 4.6: the code was bound to a challenge, so a verifier is required."""
    code, _ = signed_in_code(provider, user["username"], client_id=client)
    assert_oauth_error(exchange(provider, code, None, client=client, auth=auth), "invalid_grant")


@pytest.mark.parametrize("client,auth", [("web", "basic"), ("mobile", "none")])
def test_wrong_code_verifier_is_invalid_grant(provider, user, client, auth):
    """RFC 7636 4.6: a verifier that does not hash to the challenge gets invalid_grant."""
    code, _ = signed_in_code(provider, user["username"], client_id=client)
    other_verifier, _ = pkce_pair()  # well-formed, just not the one
    assert_oauth_error(exchange(provider, code, other_verifier, client=client, auth=auth), "invalid_grant")


# -- 4, 5: authorization code replay -------------------------------------------------------------

def test_code_reuse_is_refused_and_revokes_the_first_tokens(provider, user):
    """RFC 6749 4.1.2 and 10.5: a code used twice is denied, and what it gave is revoked."""
    code, verifier = signed_in_code(provider, user["username"])
    first = exchange(provider, code, verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert userinfo(provider, tokens["access_token"]).status_code == 200
    assert introspect(provider, tokens["access_token"])["active"] is True
    assert introspect(provider, tokens["refresh_token"])["active"] is True

    assert_oauth_error(exchange(provider, code, verifier), "invalid_grant")

    rejected = userinfo(provider, tokens["access_token"])
    assert rejected.status_code == 401
    assert "invalid_token" in rejected.headers["WWW-Authenticate"]
    assert_oauth_error(refresh(provider, tokens["refresh_token"]), "invalid_grant")
    assert introspect(provider, tokens["access_token"]) == {"active": False}
    assert introspect(provider, tokens["refresh_token"]) == {"active": False}


@pytest.mark.parametrize("racers", [2, 8])
def test_concurrent_code_exchange_has_one_winner_then_revokes(provider, user, racers):
    """RFC 6749 4.1.2: of concurrent exchanges exactly one succeeds; the race counts as a
    replay, so the winner's tokens are revoked too."""
    code, verifier = signed_in_code(provider, user["username"])
    barrier = threading.Barrier(racers)

    def race(_):
        barrier.wait(10)
        return exchange(provider, code, verifier)

    with ThreadPoolExecutor(racers) as pool:
        responses = list(pool.map(race, range(racers)))

    winners = [r for r in responses if r.status_code == 200]
    losers = [r for r in responses if r.status_code != 200]
    assert len(winners) == 1, [(r.status_code, r.text[:200]) for r in responses]
    assert {"access_token", "refresh_token", "id_token"} <= set(winners[0].json())
    for loser in losers:
        assert_oauth_error(loser, "invalid_grant")

    tokens = winners[0].json()
    assert userinfo(provider, tokens["access_token"]).status_code == 401
    assert_oauth_error(refresh(provider, tokens["refresh_token"]), "invalid_grant")


# -- 6: expired code -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", list(BACKENDS))
def test_expired_code_is_invalid_grant(tmp_path, backend):
    """RFC 6749 4.1.2: codes are short-lived; an expired one is invalid_grant."""
    short, stop = start_provider(tmp_path, backend, {"lifetimes": {"authorization_code": 1}})
    try:
        username = short.add_user()["username"]
        code, verifier = signed_in_code(short, username)  # the control: used at once, it works
        assert exchange(short, code, verifier).status_code == 200
        code, verifier = signed_in_code(short, username)
        time.sleep(2.2)
        assert_oauth_error(exchange(short, code, verifier), "invalid_grant")
    finally:
        stop()


# -- 7: client authentication ------------------------------------------------------------------

def test_wrong_secret_basic_is_invalid_client_and_leaves_code_usable(provider, user):
    """RFC 6749 5.2: failed client authentication is 401 invalid_client, with WWW-Authenticate
    for HTTP Basic; it happens before the code is looked at."""
    code, verifier = signed_in_code(provider, user["username"])
    response = requests.post(f"{provider.url}/oidc/token", auth=("web", "not-the-secret"), timeout=15,
                             data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                   "code_verifier": verifier})
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert exchange(provider, code, verifier).status_code == 200


def test_wrong_secret_post_is_invalid_client(provider):
    """RFC 6749 2.3.1 and 5.2: client_secret_post with a wrong secret."""
    response = requests.post(f"{provider.url}/oidc/token", timeout=15, data={
        "grant_type": "authorization_code", "code": "anything", "redirect_uri": REDIRECT,
        "client_id": "web-post", "client_secret": "not-the-secret"})
    assert_oauth_error(response, "invalid_client", 401)


def test_no_client_credentials_is_invalid_client(provider):
    """RFC 6749 5.2: no client authentication at all."""
    response = requests.post(f"{provider.url}/oidc/token", timeout=15,
                             data={"grant_type": "authorization_code", "code": "anything", "redirect_uri": REDIRECT})
    assert_oauth_error(response, "invalid_client", 401)


# -- 8: refresh token reuse ----------------------------------------------------------------------

def test_refresh_token_reuse_revokes_the_family(provider, user):
    """RFC 9700 4.14.2: a rotated refresh token used again revokes the whole family."""
    tokens = tokens_for(provider, user["username"])
    rotated = refresh(provider, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    newest = rotated.json()
    assert newest["refresh_token"] != tokens["refresh_token"]
    assert userinfo(provider, newest["access_token"]).status_code == 200

    assert_oauth_error(refresh(provider, tokens["refresh_token"]), "invalid_grant")

    assert_oauth_error(refresh(provider, newest["refresh_token"]), "invalid_grant")
    assert userinfo(provider, newest["access_token"]).status_code == 401
    assert introspect(provider, newest["refresh_token"]) == {"active": False}


# -- 9: malformed or oversized requests ----------------------------------------------------------

def test_oversized_token_request_body_is_invalid_request(provider):
    """A body over 64 KiB, made of parameters each under the length limit: 400, never 500."""
    data = {"grant_type": "client_credentials", **{f"pad{i}": "a" * 4000 for i in range(20)}}
    response = requests.post(f"{provider.url}/oidc/token", data=data, auth=("backend", provider.secrets["backend"]),
                             timeout=15)
    assert len(response.request.body) > 64 * 1024
    assert_oauth_error(response, "invalid_request")


def test_overlong_parameter_at_token_endpoint_is_invalid_request(provider):
    response = requests.post(f"{provider.url}/oidc/token", auth=("backend", provider.secrets["backend"]),
                             data={"grant_type": "client_credentials", "scope": "orders:read " + "x" * 4100},
                             timeout=15)
    assert_oauth_error(response, "invalid_request")


def test_overlong_parameter_at_authorization_endpoint_is_error_page(provider):
    response = authorize_raw(provider, auth_query(state="s" * 4100))
    assert_error_page(response, "invalid_request")


def test_unknown_grant_type_is_unsupported_grant_type(provider):
    """RFC 6749 5.2."""
    response = token_request(provider, {"grant_type": "urn:example:no-such-grant"})
    assert_oauth_error(response, "unsupported_grant_type")


def test_json_token_request_is_an_oauth_error(provider, user):
    """RFC 6749 4.1.3: the token request is form-encoded; a JSON body is not understood."""
    code, verifier = signed_in_code(provider, user["username"])
    response = requests.post(f"{provider.url}/oidc/token", auth=("web", provider.secrets["web"]), timeout=15,
                             json={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                   "code_verifier": verifier})
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] in ("invalid_request", "unsupported_grant_type")


def test_duplicated_parameter_gets_error_redirect(provider):
    """RFC 6749 3.1: parameters must not repeat; client and redirect_uri are fine, so redirect."""
    query = list(auth_query().items()) + [("scope", "openid profile")]
    params = callback_params(authorize_raw(provider, query))
    assert params["error"] == "invalid_request"
    assert params["state"] == "st-1" and "code" not in params


def test_duplicated_redirect_uri_gets_error_page(provider):
    """RFC 6749 3.1 and 4.1.2.1: with two redirect_uri values neither is verified: no redirect."""
    query = list(auth_query().items()) + [("redirect_uri", "http://evil.example/cb")]
    assert_error_page(authorize_raw(provider, query))


def test_non_integer_max_age_gets_error_redirect(provider):
    """OIDC Core 3.1.2.1: max_age is a number of seconds."""
    params = callback_params(authorize_raw(provider, auth_query(max_age="ten")))
    assert params["error"] == "invalid_request"
    assert params["state"] == "st-1" and "code" not in params


def test_get_token_endpoint_is_json_client_error(provider):
    response = requests.get(f"{provider.url}/oidc/token", params={"grant_type": "client_credentials"}, timeout=15)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "invalid_request"


def test_garbage_bearer_token_at_userinfo_is_invalid_token(provider):
    """RFC 6750 3.1."""
    response = userinfo(provider, "not.a.token")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_unknown_resource_at_authorization_endpoint_is_invalid_target(provider):
    """RFC 8707 2."""
    params = callback_params(authorize_raw(provider, auth_query(resource="https://unknown.example.com")))
    assert params["error"] == "invalid_target"
    assert params["state"] == "st-1" and "code" not in params


def test_unknown_resource_at_token_endpoint_is_invalid_target(provider):
    """RFC 8707 2."""
    response = token_request(provider, {"grant_type": "client_credentials", "scope": "orders:read",
                                        "resource": "https://unknown.example.com"}, client="backend")
    assert_oauth_error(response, "invalid_target")


# -- 10: prompt=none ---------------------------------------------------------------------------

def test_prompt_none_without_session_is_login_required(provider):
    """OIDC Core 3.1.2.6: no page is shown; the client hears login_required, with its state."""
    response = UserAgent(provider).authorize(client_id="web", prompt="none", state="keep-me-123")
    params = callback_params(response)
    assert response.headers["Location"].startswith(REDIRECT + "?")
    assert params["error"] == "login_required"
    assert params["state"] == "keep-me-123" and params["iss"] == provider.url
    assert "code" not in params
