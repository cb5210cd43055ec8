"""Journeys through the provider as relying parties and users meet them."""

import time
import uuid

import jwt
import pytest
import requests
from joserfc import jwt as jose_jwt

from tests.conftest import PASSWORD, REDIRECT, UserAgent, callback_params, pkce_pair, token_request


def exchange(provider, params, verifier, client="web", auth="basic"):
    response = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                        "redirect_uri": REDIRECT, "code_verifier": verifier}, client, auth)
    assert response.status_code == 200, response.text
    return response.json()


def decode_id_token(provider, id_token, audience, algorithms=("RS256",)):
    key = jwt.PyJWKClient(f"{provider.url}/oidc/jwks").get_signing_key_from_jwt(id_token)
    return jwt.decode(id_token, key.key, algorithms=list(algorithms), audience=audience, issuer=provider.url)


def sign_in_with_pkce(agent, user, **params):
    verifier, challenge = pkce_pair()
    result = agent.sign_in(user["username"], code_challenge=challenge, code_challenge_method="S256", **params)
    return result, verifier


def test_public_client_with_pkce_gets_tokens_without_a_secret(provider, user, agent):
    params, verifier = sign_in_with_pkce(agent, user, client_id="mobile", scope="openid offline_access")
    tokens = exchange(provider, params, verifier, client="mobile", auth="none")
    claims = decode_id_token(provider, tokens["id_token"], "mobile")
    assert claims["sub"] == user["sub"] and claims["amr"] == ["pwd"]
    refreshed = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                              client="mobile", auth="none")
    assert refreshed.status_code == 200 and refreshed.json()["refresh_token"] != tokens["refresh_token"]


def test_a_disabled_account_gets_no_tokens_from_its_code_or_refresh_token(provider, agent):
    from oidc_provider.extensions import db
    from oidc_provider.models import User

    def set_disabled(sub, value):
        with provider.app.app_context():
            db.session.get(User, sub).disabled = value
            db.session.commit()

    person = provider.add_user()
    params, verifier = sign_in_with_pkce(agent, person, client_id="mobile", scope="openid offline_access")
    tokens = exchange(provider, params, verifier, client="mobile", auth="none")
    second, second_verifier = sign_in_with_pkce(agent, person, client_id="mobile", scope="openid")
    set_disabled(person["sub"], True)
    refreshed = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                              client="mobile", auth="none")
    assert refreshed.status_code == 400 and "access_token" not in refreshed.json()
    code = token_request(provider, {"grant_type": "authorization_code", "code": second["code"],
                                    "redirect_uri": REDIRECT, "code_verifier": second_verifier}, "mobile", "none")
    assert code.status_code == 400 and code.json()["error"] == "invalid_grant"
    set_disabled(person["sub"], False)  # enabled again: the refresh token (not spent) works
    refreshed = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                              client="mobile", auth="none")
    assert refreshed.status_code == 200, refreshed.text


def test_third_party_client_asks_for_consent_once(provider, user, agent):
    verifier, challenge = pkce_pair()
    page = agent.authorize(client_id="web-post", scope="openid email", state="c1",
                           code_challenge=challenge, code_challenge_method="S256")
    consent = agent.login(page, user["username"])
    assert consent.status_code == 200 and 'data-scope="email"' in consent.text
    params = callback_params(agent.submit(consent, {"action": "approve"}))
    tokens = exchange(provider, params, verifier, client="web-post", auth="post")
    # web-post asked for ES256 ID tokens
    claims = decode_id_token(provider, tokens["id_token"], "web-post", algorithms=("ES256",))
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "ES256"
    assert claims["sub"] == user["sub"]
    # remembered: the next request goes straight back with a code
    again = agent.authorize(client_id="web-post", scope="openid email", state="c2",
                            code_challenge=challenge, code_challenge_method="S256")
    assert "code" in callback_params(again)
    # prompt=consent asks again, and denying sends access_denied
    page = agent.authorize(client_id="web-post", scope="openid email", state="c3", prompt="consent",
                           code_challenge=challenge, code_challenge_method="S256")
    denied = callback_params(agent.submit(page, {"action": "deny"}))
    assert denied["error"] == "access_denied" and denied["state"] == "c3"


def test_prompt_none_without_consent_answers_consent_required(provider, user, agent):
    agent.sign_in(user["username"], client_id="web", state="s")
    answer = callback_params(agent.authorize(client_id="web-post", prompt="none", state="p"))
    assert answer == {"error": "consent_required", "error_description": "consent:missing", "state": "p",
                      "iss": provider.url}


def test_session_is_reused_and_prompt_login_forces_a_fresh_login(provider, user, agent):
    first = decode_id_token(provider, exchange(provider, *sign_in_with_pkce(agent, user, client_id="web"))["id_token"], "web")
    reused, verifier = sign_in_with_pkce(agent, user, client_id="web", prompt="none")
    second = decode_id_token(provider, exchange(provider, reused, verifier)["id_token"], "web")
    assert second["auth_time"] == first["auth_time"] and second["sid"] == first["sid"]

    time.sleep(1.1)
    verifier, challenge = pkce_pair()
    page = agent.authorize(client_id="web", prompt="login", code_challenge=challenge, code_challenge_method="S256")
    assert page.status_code == 200 and 'name="password"' in page.text
    fresh = decode_id_token(provider, exchange(provider, callback_params(agent.login(page, user["username"])),
                                               verifier)["id_token"], "web")
    assert fresh["auth_time"] > first["auth_time"]


def test_max_age_forces_reauthentication(provider, user, agent):
    agent.sign_in(user["username"], client_id="web")
    time.sleep(1.1)
    page = agent.authorize(client_id="web", max_age="0")
    assert 'name="password"' in page.text
    assert callback_params(agent.authorize(client_id="web", max_age="0", prompt="none"))["error"] == "login_required"
    assert "code" in callback_params(agent.authorize(client_id="web", max_age="3600"))


def test_wrong_password_gets_a_generic_answer_and_no_session(provider, user, agent):
    page = agent.authorize(client_id="web")
    wrong = agent.login(page, user["username"], "not the password")
    unknown = agent.login(page, "nobody-" + uuid.uuid4().hex[:6], "not the password")
    assert wrong.status_code == unknown.status_code == 401
    text = "The username or password is not right"
    assert text in wrong.text and text in unknown.text
    assert agent.cookie("op_session") is None


def test_password_guessing_is_throttled_even_for_the_right_password(provider, agent):
    victim = provider.add_user()
    page = agent.authorize(client_id="web")
    limit = provider.op.settings.password_failures_before_throttle
    for _ in range(limit):
        agent.login(page, victim["username"], "guess")
    blocked = agent.login(page, victim["username"], PASSWORD)
    assert blocked.status_code == 401 and agent.cookie("op_session") is None


def test_session_cookie_flags_and_rotation(provider, user, agent):
    agent.sign_in(user["username"], client_id="web")
    first = agent.cookie("op_session")
    cookie = next(c for c in agent.http.cookies if c.name == provider.cookie_name("op_session"))
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie._rest.get("SameSite") == "Lax"
    agent.sign_in(user["username"], client_id="web", prompt="login")
    assert agent.cookie("op_session") != first  # a new id after each login


def test_login_page_of_another_browser_is_refused(provider, user, agent):
    page = agent.authorize(client_id="web")
    other = UserAgent(provider)
    stolen = other.go(agent.interaction_url(page))
    assert stolen.status_code == 400 and "another browser" in stolen.text


def test_the_authorization_request_answers_with_the_login_page(provider, user, agent):
    """No redirect to the page: the answer to GET /oidc/auth is the page, with the interaction's
    cookie and a page's headers; reloading it starts the login afresh, and that page signs in."""
    query = {"client_id": "web", "response_type": "code", "scope": "openid", "redirect_uri": REDIRECT, "state": "s-1"}
    first = agent.http.get(f"{provider.url}/oidc/auth", params=query, allow_redirects=False, timeout=15)
    assert first.status_code == 200 and 'name="password"' in first.text
    assert provider.cookie_name("op_interaction") in first.headers["Set-Cookie"]
    assert first.headers["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in first.headers[
        "Content-Security-Policy"]
    reloaded = agent.http.get(first.url, allow_redirects=False, timeout=15)
    assert reloaded.status_code == 200 and agent.interaction_url(reloaded) != agent.interaction_url(first)
    assert callback_params(agent.login(reloaded, user["username"]))["state"] == "s-1"
    # a POSTed request is still sent to its page (reloading that page does not post again)
    posted = requests.post(f"{provider.url}/oidc/auth", data=query, allow_redirects=False, timeout=15)
    assert posted.status_code == 303 and posted.headers["Location"].startswith("/interaction/")


def test_login_form_without_csrf_token_is_refused(provider, user, agent):
    page = agent.authorize(client_id="web")
    response = agent.http.post(agent.form_action(page), data={"login": user["username"], "password": PASSWORD,
                                                             "action": "login"}, allow_redirects=False)
    assert response.status_code == 400 and agent.cookie("op_session") is None


def test_private_key_jwt_client_authentication(provider, user, agent):
    key = provider.client_keys["jwt-client"]

    def assertion(**overrides):
        now = int(time.time())
        claims = {"iss": "jwt-client", "sub": "jwt-client", "aud": f"{provider.url}/oidc/token",
                  "jti": uuid.uuid4().hex, "iat": now, "exp": now + 60, **overrides}
        return jose_jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    form = {"grant_type": "client_credentials", "scope": "orders:read",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    signed = assertion()
    ok = requests.post(f"{provider.url}/oidc/token", data={**form, "client_assertion": signed}, timeout=10)
    assert ok.status_code == 200, ok.text
    assert ok.json()["scope"] == "orders:read"
    replayed = requests.post(f"{provider.url}/oidc/token", data={**form, "client_assertion": signed}, timeout=10)
    assert replayed.status_code in (400, 401) and replayed.json()["error"] == "invalid_client"
    wrong_audience = requests.post(f"{provider.url}/oidc/token",
                                   data={**form, "client_assertion": assertion(aud="https://elsewhere")}, timeout=10)
    assert wrong_audience.json()["error"] == "invalid_client"


def test_client_credentials_resource_audience_and_lifetime(provider):
    response = token_request(provider, {"grant_type": "client_credentials", "scope": "orders:read",
                                        "resource": "https://api.example.com"}, client="backend")
    assert response.status_code == 200
    token = response.json()
    assert token["expires_in"] == 120  # the resource's access_token_lifetime
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://api.example.com" and claims["sub"] == "backend"
    assert jwt.get_unverified_header(token["access_token"])["typ"] == "at+jwt"  # RFC 9068 2.1
    assert "refresh_token" not in token
    default = token_request(provider, {"grant_type": "client_credentials"}, client="backend").json()
    assert default["expires_in"] == provider.op.settings.lifetimes.access_token


def test_code_flow_with_resource_and_introspection_carry_acr_amr(provider, user, agent):
    params, verifier = sign_in_with_pkce(agent, user, client_id="web", resource="https://api.example.com",
                                         scope="openid offline_access")
    tokens = exchange(provider, params, verifier)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://api.example.com"
    assert claims["amr"] == ["pwd"] and "auth_time" in claims
    answer = requests.post(f"{provider.url}/oidc/introspect", data={"token": tokens["access_token"]},
                           auth=("resource-server", provider.secrets["resource-server"]), timeout=10).json()
    assert answer["active"] is True and answer["sub"] == user["sub"] and answer["amr"] == ["pwd"]
    refresh = requests.post(f"{provider.url}/oidc/introspect", data={"token": tokens["refresh_token"]},
                            auth=("resource-server", provider.secrets["resource-server"]), timeout=10).json()
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    # a token for api.example.com is not a userinfo token
    assert requests.get(f"{provider.url}/oidc/userinfo", headers={
        "Authorization": f"Bearer {tokens['access_token']}"}, timeout=10).status_code == 401
    # a client may not introspect another client's tokens
    other = requests.post(f"{provider.url}/oidc/introspect", data={"token": tokens["access_token"]},
                          auth=("backend", provider.secrets["backend"]), timeout=10).json()
    assert other == {"active": False}


def test_logout_without_hint_asks_first(provider, user, agent):
    agent.sign_in(user["username"], client_id="web")
    page = agent.go(f"{provider.url}/oidc/logout?client_id=web&post_logout_redirect_uri=http://127.0.0.1:9/bye")
    assert page.status_code == 200 and "Sign out?" in page.text
    assert "code" in callback_params(agent.authorize(client_id="web", prompt="none"))  # still signed in
    done = agent.submit(page, {"action": "logout"})
    assert done.status_code == 302 and done.headers["Location"] == "http://127.0.0.1:9/bye"
    assert callback_params(agent.authorize(client_id="web", prompt="none"))["error"] == "login_required"


@pytest.mark.parametrize("target", ["http://127.0.0.1:9/evil", "https://attacker.example/"])
def test_logout_to_an_unregistered_address_is_refused(provider, target, agent):
    page = agent.go(f"{provider.url}/oidc/logout?client_id=web&post_logout_redirect_uri={target}")
    assert page.status_code == 400 and "Location" not in page.headers


def test_discovery_advertises_what_works(provider):
    config = provider.discovery()
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token", "client_credentials", "password"} <= set(
        config["grant_types_supported"])  # and the MFA API's grants (test_mfa_api.py)
    assert "implicit" not in config["grant_types_supported"]
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    assert config["request_parameter_supported"] is True  # signed request objects (test_jar.py)
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                 "end_session_endpoint", "revocation_endpoint", "introspection_endpoint"):
        assert config[name].startswith(provider.url)
        assert requests.options(config[name], timeout=10).status_code < 500


def test_pages_cannot_be_framed_and_run_no_scripts(provider, agent):
    page = agent.authorize(client_id="web")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert "<script" not in page.text
