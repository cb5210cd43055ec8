"""OAuth 2.0 Security Best Current Practice (RFC 9700), attacked over HTTP."""

import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import REDIRECT, UserAgent, pkce_pair, token_request
from tests.security.conftest import code_for, redeem, tokens_for

clause = pytest.mark.clause


@clause("RFC 9700 4.1.3: redirect URIs compared by exact string matching")
@pytest.mark.parametrize("redirect_uri", [
    REDIRECT + "/extra", REDIRECT + "?x=1", REDIRECT + "/", REDIRECT.replace(":9/", ":10/"),
    REDIRECT.upper(), REDIRECT.replace("http://", "https://"), REDIRECT + "#frag",
    "http://127.0.0.1:9@evil.example/callback",
])
def test_redirect_uri_variants_are_refused_and_never_redirected(sqlite_provider, redirect_uri):
    agent = UserAgent(sqlite_provider)
    page = agent.authorize(client_id="web", redirect_uri=redirect_uri, state="s")
    assert page.status_code == 400, page.status_code
    assert "Location" not in page.headers


@clause("RFC 9700 4.11.2: the authorization endpoint is not an open redirector")
def test_unknown_client_is_shown_not_redirected(sqlite_provider):
    page = UserAgent(sqlite_provider).authorize(client_id="no-such-client", redirect_uri="https://evil.example/")
    assert page.status_code == 400 and "Location" not in page.headers
    assert "evil.example" not in page.text


@clause("RFC 9700 4.11.2: logout does not redirect to unregistered addresses")
def test_post_logout_redirect_to_unregistered_uri_is_not_followed(sqlite_provider):
    page = requests.get(f"{sqlite_provider.url}/oidc/logout", allow_redirects=False, timeout=10,
                        params={"client_id": "web", "post_logout_redirect_uri": "https://evil.example/"})
    assert page.status_code == 400 and "Location" not in page.headers


@clause("RFC 9700 2.1.2: the implicit grant is not supported")
@pytest.mark.parametrize("response_type", ["token", "id_token token", "code token"])
def test_implicit_and_hybrid_response_types_are_refused(sqlite_provider, response_type):
    agent = UserAgent(sqlite_provider)
    page = agent.authorize(client_id="web", response_type=response_type, state="s")
    query = parse_qs(urlsplit(page.headers["Location"]).query)
    assert query["error"] == ["unsupported_response_type"] and query["state"] == ["s"]
    assert "access_token" not in page.headers["Location"]


@clause("RFC 9700 4.4.2 / RFC 9207: iss in every authorization response defeats mix-up")
def test_authorization_responses_carry_the_issuer(provider, user, agent):
    params, _ = code_for(agent, user, state="abc")
    assert params["iss"] == provider.url and params["state"] == "abc"
    error = agent.authorize(client_id="web", prompt="none", scope="openid", state="e", max_age="0")
    query = parse_qs(urlsplit(error.headers["Location"]).query)
    assert query["iss"] == [provider.url] and "error" in query
    assert provider.discovery()["authorization_response_iss_parameter_supported"] is True


@clause("RFC 9700 4.5: a code issued to one client cannot be injected into another")
def test_code_of_one_client_is_refused_for_another(provider, user, agent):
    params, verifier = code_for(agent, user, client="web")
    response = redeem(provider, params["code"], verifier, client="web-post", auth="post")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert redeem(provider, params["code"], verifier).status_code in (200, 400)  # never both


@clause("RFC 9700 4.5.3.1: PKCE binds the code to the session that asked for it")
def test_injected_code_fails_without_the_original_verifier(provider, user, agent):
    params, _ = code_for(agent, user)
    other_verifier, _ = pkce_pair()
    response = redeem(provider, params["code"], other_verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


@clause("RFC 9700 4.8.2: PKCE downgrade (a verifier sent for a code that had no challenge)")
def test_pkce_downgrade_is_refused(provider, user, agent):
    params = agent.sign_in(user["username"], client_id="web")
    verifier, _ = pkce_pair()
    response = redeem(provider, params["code"], verifier)
    assert response.status_code == 400 and response.json()["error"] in ("invalid_grant", "invalid_request")


@clause("RFC 9700 4.8.2: a challenge without its verifier at the token endpoint is refused")
def test_code_with_challenge_needs_the_verifier(provider, user, agent):
    params, _ = code_for(agent, user)
    response = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                        "redirect_uri": REDIRECT})
    assert response.status_code == 400 and response.json()["error"] in ("invalid_grant", "invalid_request")


@clause("RFC 9700 4.2.4 / RFC 6749 4.1.2: a code is single use; replay revokes what it issued")
def test_code_replay_revokes_the_first_tokens(provider, user, agent):
    params, verifier = code_for(agent, user, scope="openid offline_access")
    first = redeem(provider, params["code"], verifier).json()
    assert redeem(provider, params["code"], verifier).json()["error"] == "invalid_grant"
    refreshed = token_request(provider, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 400
    introspected = requests.post(f"{provider.url}/oidc/introspect", data={"token": first["access_token"]},
                                 auth=("resource-server", provider.secrets["resource-server"]), timeout=10).json()
    assert introspected["active"] is False


@clause("RFC 9700 4.2.4: concurrent redemptions of one code: exactly one wins")
def test_concurrent_code_redemption_has_one_winner(provider, user, agent):
    params, verifier = code_for(agent, user)
    results, barrier = [], threading.Barrier(8)

    def attempt():
        barrier.wait()
        results.append(redeem(provider, params["code"], verifier).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    assert sorted(results) == [200] + [400] * 7


@clause("RFC 9700 4.14.2: refresh token rotation; replay of a rotated token revokes the family")
def test_refresh_token_replay_revokes_the_family(provider, user, agent):
    tokens = tokens_for(provider, agent, user, scope="openid offline_access")
    second = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}).json()
    replay = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    after = token_request(provider, {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    assert after.status_code == 400, "the attacker's or victim's newer token must die with the family"


@clause("RFC 9700 4.14.2: a refresh token is bound to the client it was issued to")
def test_refresh_token_of_another_client_is_refused(provider, user, agent):
    tokens = tokens_for(provider, agent, user, scope="openid offline_access")
    stolen = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                           client="web-post", auth="post")
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"


@clause("RFC 9700 2.3: access tokens are audience-restricted (a resource's token is not for userinfo)")
def test_resource_token_is_refused_at_userinfo(provider, user, agent):
    tokens = tokens_for(provider, agent, user, resource="https://api.example.com")
    response = requests.get(f"{provider.url}/oidc/userinfo", timeout=10,
                            headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 401


@clause("RFC 9700 2.3: a client gets at most the scopes registered for it")
def test_scopes_beyond_registration_are_not_granted(provider):
    response = token_request(provider, {"grant_type": "client_credentials", "scope": "orders:read admin"},
                             client="backend")
    assert response.status_code == 200 and "admin" not in response.json().get("scope", "").split()


@clause("RFC 9700 4.16: clickjacking: login pages refuse to be framed")
def test_login_page_refuses_framing(sqlite_provider):
    page = UserAgent(sqlite_provider).authorize(client_id="web")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


@clause("RFC 9700 4.7 / 2.1: state is returned unchanged so clients can detect CSRF")
def test_state_is_echoed_exactly(provider, user, agent):
    state = "a b&c=d/é"
    params, _ = code_for(agent, user, state=state)
    assert params["state"] == state


@clause("RFC 9700 2.5 / RFC 7521: a private_key_jwt assertion cannot be replayed")
def test_client_assertion_replay_is_refused(provider):
    import time
    import uuid

    import jwt as pyjwt

    key = provider.client_keys["jwt-client"]
    claims = {"iss": "jwt-client", "sub": "jwt-client", "aud": f"{provider.url}/oidc/token",
              "jti": uuid.uuid4().hex, "exp": int(time.time()) + 60, "iat": int(time.time())}
    assertion = pyjwt.encode(claims, key.as_pem(private=True), algorithm="RS256", headers={"kid": key.kid})
    data = {"grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    first = requests.post(f"{provider.url}/oidc/token", data=data, timeout=10)
    again = requests.post(f"{provider.url}/oidc/token", data=data, timeout=10)
    assert first.status_code == 200
    assert again.status_code in (400, 401) and again.json()["error"] == "invalid_client"
