"""OpenID Connect Core 1.0: ID token rules, nonce, max_age/auth_time, prompt, claims."""

import base64
import hashlib
import time

import jwt
import pytest
import requests

from tests.conftest import UserAgent, callback_params, token_request
from tests.security.conftest import code_for, redeem, tokens_for, verify_jwt

clause = pytest.mark.clause


@clause("OIDC Core 3.1.3.7: ID token iss, aud, exp, iat and signature verify against the JWKS")
def test_id_token_validates_with_an_independent_library(provider, user, agent):
    tokens = tokens_for(provider, agent, user, nonce="n-1")
    claims = verify_jwt(provider, tokens["id_token"], "web")
    assert claims["sub"] == user["sub"] and claims["iat"] <= time.time() < claims["exp"]
    assert jwt.get_unverified_header(tokens["id_token"])["kid"]


@clause("OIDC Core 3.1.3.7 (6): the ID token is signed with the algorithm registered for the client")
def test_id_token_alg_follows_client_registration(provider, user, agent):
    params, verifier = code_for(agent, user, client="web-post")
    if "code" not in params:  # third-party client: consent page first
        pytest.fail(f"no code: {params}")
    tokens = redeem(provider, params["code"], verifier, client="web-post", auth="post").json()
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "ES256"
    verify_jwt(provider, tokens["id_token"], "web-post", algorithms=("ES256",))
    with pytest.raises(jwt.InvalidAlgorithmError):
        verify_jwt(provider, tokens["id_token"], "web-post", algorithms=("RS256",))


@clause("OIDC Core 3.1.3.7 (3): an ID token is not valid for another audience")
def test_id_token_audience_is_the_client(provider, user, agent):
    tokens = tokens_for(provider, agent, user)
    with pytest.raises(jwt.InvalidAudienceError):
        verify_jwt(provider, tokens["id_token"], "web-post")


@clause("OIDC Core 3.1.2.1 / 3.1.3.7 (11): the nonce is returned unchanged in the ID token")
def test_nonce_round_trips(provider, user, agent):
    tokens = tokens_for(provider, agent, user, nonce="n-0S6_WzA2Mj")
    assert verify_jwt(provider, tokens["id_token"], "web")["nonce"] == "n-0S6_WzA2Mj"


@clause("OIDC Core 3.1.3.6: at_hash is the left half of the SHA-256 of the access token")
def test_at_hash_matches_the_access_token(provider, user, agent):
    tokens = tokens_for(provider, agent, user)
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()
    expected = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    assert verify_jwt(provider, tokens["id_token"], "web")["at_hash"] == expected


@clause("OIDC Core 3.1.2.1: max_age makes auth_time required and forces a new login when exceeded")
def test_max_age_forces_reauthentication_and_sets_auth_time(provider, user, agent):
    first = tokens_for(provider, agent, user, max_age="600")
    claims = verify_jwt(provider, first["id_token"], "web")
    assert abs(claims["auth_time"] - time.time()) < 60
    time.sleep(1.1)
    page = agent.authorize(client_id="web", max_age="0")
    assert 'name="password"' in page.text, "max_age=0 must ask for the password again"


@clause("OIDC Core 3.1.2.1: prompt=none with no session answers login_required, never a page")
def test_prompt_none_without_session(sqlite_provider):
    answer = callback_params(UserAgent(sqlite_provider).authorize(client_id="web", prompt="none", state="x"))
    assert answer["error"] == "login_required" and answer["state"] == "x"


@clause("OIDC Core 3.1.2.1: prompt=none when consent is missing answers consent_required")
def test_prompt_none_without_consent(provider, user, agent):
    code_for(agent, user, client="web")  # a session, but no consent for web-post
    answer = callback_params(agent.authorize(client_id="web-post", prompt="none", scope="openid email"))
    assert answer["error"] == "consent_required"


@clause("OIDC Core 3.1.2.1: prompt=login asks for credentials despite a session")
def test_prompt_login_reauthenticates(provider, user, agent):
    code_for(agent, user)
    page = agent.authorize(client_id="web", prompt="login")
    assert 'name="password"' in page.text


@clause("OIDC Core 3.1.2.1: prompt=none combined with another value is invalid_request")
def test_prompt_none_with_login_is_invalid(provider, user, agent):
    answer = callback_params(agent.authorize(client_id="web", prompt="none login"))
    assert answer["error"] == "invalid_request"


@clause("OIDC Core 3.1.2.1: a request without the openid scope gets no ID token")
def test_no_openid_scope_no_id_token(provider, user, agent):
    tokens = tokens_for(provider, agent, user, scope="profile")
    assert "id_token" not in tokens


@clause("OIDC Core 5.3.2: userinfo sub equals the ID token sub")
def test_userinfo_sub_matches(provider, user, agent):
    tokens = tokens_for(provider, agent, user, scope="openid email")
    info = requests.get(f"{provider.url}/oidc/userinfo", timeout=10,
                        headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert info["sub"] == verify_jwt(provider, tokens["id_token"], "web")["sub"]


@clause("OIDC Core 5.3.3: an ID token is not an access token")
def test_id_token_is_refused_at_userinfo(provider, user, agent):
    tokens = tokens_for(provider, agent, user)
    response = requests.get(f"{provider.url}/oidc/userinfo", timeout=10,
                            headers={"Authorization": f"Bearer {tokens['id_token']}"})
    assert response.status_code == 401


@clause("OIDC Core 12.2: an ID token from refresh keeps sub and auth_time, and has no nonce")
def test_refreshed_id_token(provider, user, agent):
    tokens = tokens_for(provider, agent, user, scope="openid offline_access", nonce="n-r")
    first = verify_jwt(provider, tokens["id_token"], "web")
    refreshed = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}).json()
    second = verify_jwt(provider, refreshed["id_token"], "web")
    assert (second["sub"], second["auth_time"]) == (first["sub"], first["auth_time"]) and "nonce" not in second


@clause("OIDC Core 5.5.1.1: an essential acr that cannot be met is an error, not a weaker token")
def test_essential_acr_unmet_with_prompt_none(provider, user, agent):
    code_for(agent, user)
    claims = '{"id_token": {"acr": {"essential": true, "values": ["phr"]}}}'
    answer = callback_params(agent.authorize(client_id="web", prompt="none", claims=claims))
    assert answer["error"] in ("unmet_authentication_requirements", "login_required", "interaction_required")
    assert "code" not in answer


@clause("OIDC Core 2: acr_values asking for mfa never yields acr mfa after a password alone")
def test_acr_downgrade_is_impossible(provider, user, agent):
    page = agent.authorize(client_id="web", acr_values="mfa")
    page = agent.login(page, user["username"])
    assert page.status_code == 200, "the chain must ask for a second factor, not redirect with a code"
    assert "code=" not in page.headers.get("Location", "")


@clause("OIDC Core 3.1.3.2: the code is bound to the redirect_uri it was issued for")
def test_redirect_uri_must_match_at_token_endpoint(provider, user, agent):
    params, verifier = code_for(agent, user)
    response = redeem(provider, params["code"], verifier, redirect_uri="http://127.0.0.1:9/other")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


@clause("OIDC Discovery 3: discovery metadata names the issuer exactly and only supported values")
def test_discovery_is_consistent(provider):
    meta = provider.discovery()
    assert meta["issuer"] == provider.url
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "none" not in meta["id_token_signing_alg_values_supported"]
