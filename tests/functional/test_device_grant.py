"""The device authorization grant (RFC 8628) as a TV app and its user see it: the device asks
for codes and polls the token endpoint; the person enters the user code in a browser, signs in
with the usual factors and approves. ID tokens are checked with PyJWT against our JWKS."""

from __future__ import annotations

import re
import threading
import time
import uuid

import jwt
import pytest
import requests

from tests.conftest import BACKENDS, UserAgent, post, register_clients, start_provider, token_request
from tests.servers import email_code

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
INTERVAL = 1


def device_clients():
    return [
        {"client_id": "tv-app", "client_name": "Living-room TV", "token_endpoint_auth_method": "none",
         "grant_types": [GRANT, "refresh_token"], "scopes": ["openid", "profile", "offline_access"]},
        {"client_id": "tv-b", "client_name": "Other TV", "token_endpoint_auth_method": "none",
         "grant_types": [GRANT], "scopes": ["openid"]},
        {"client_id": "console", "client_name": "Game console", "grant_types": [GRANT], "scopes": ["openid"]},
    ]


def device_settings(smtp, **flow):
    return {"device_flow": {"enabled": True, "interval": INTERVAL, "user_code_attempts": 10_000, **flow},
            "email": {"host": "127.0.0.1", "port": smtp.port, "security": "none"},
            "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000}}


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, plain_smtp):
    running, stop = start_provider(tmp_path_factory.mktemp("device"), request.param,
                                   extra_settings=device_settings(plain_smtp))
    register_clients(running, device_clients())
    yield running
    stop()


@pytest.fixture(scope="module", params=list(BACKENDS))
def strict(request, tmp_path_factory, plain_smtp):
    """Codes that live 2 s, and 5 user codes per address and window."""
    running, stop = start_provider(tmp_path_factory.mktemp("device-strict"), request.param,
                                   extra_settings=device_settings(plain_smtp, lifetime=2, user_code_attempts=5))
    register_clients(running, device_clients())
    yield running
    stop()


# -- the device's side ---------------------------------------------------------------------------

def ask(provider, client="tv-app", auth="none", **params) -> dict:
    data = {"scope": "openid profile", **params}
    if auth == "none":
        answer = requests.post(f"{provider.url}/oidc/device_authorization", data={**data, "client_id": client},
                               timeout=10)
    else:
        answer = requests.post(f"{provider.url}/oidc/device_authorization", data=data, timeout=10,
                               auth=(client, provider.secrets[client]))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.json()


def poll(provider, device_code, client="tv-app", auth="none") -> requests.Response:
    return token_request(provider, {"grant_type": GRANT, "device_code": device_code}, client=client, auth=auth)


def error_of(answer: requests.Response) -> str:
    assert answer.status_code == 400, answer.text
    return answer.json()["error"]


def verified_id_token(provider, token: str, client_id: str) -> dict:
    key = jwt.PyJWKClient(f"{provider.url}/oidc/jwks").get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["RS256", "ES256"], audience=client_id, issuer=provider.url)
    assert "nonce" not in claims
    return claims


# -- the person's side ----------------------------------------------------------------------------

def enter_code(agent: UserAgent, user_code: str, complete: bool = True) -> requests.Response:
    """Open the verification URI (with or without the code in it) and submit the code."""
    url = f"{agent.provider.url}/device" + (f"?user_code={user_code}" if complete else "")
    page = agent.go(url)
    assert page.status_code == 200 and 'name="user_code"' in page.text
    if complete:
        assert f'value="{user_code}"' in page.text  # filled in, but only the person's submit counts
    return agent.submit(page, {"user_code": user_code})


def approve_page_after_password(provider, person, user_code, agent=None) -> tuple[UserAgent, requests.Response]:
    agent = agent or UserAgent(provider)
    page = enter_code(agent, user_code)
    page = agent.login(page, person["username"])
    assert page.status_code == 200 and 'value="approve"' in page.text, page.text[:500]
    return agent, page


def approve(provider, person, user_code) -> requests.Response:
    agent, page = approve_page_after_password(provider, person, user_code)
    done = agent.submit(page, {"action": "approve"})
    assert done.status_code == 200 and 'data-device="approved"' in done.text, done.text[:400]
    return done


# -- discovery and the endpoint ---------------------------------------------------------------------

def test_discovery_advertises_the_device_grant_only_when_enabled(provider, sqlite_provider):
    enabled = provider.discovery()
    assert enabled["device_authorization_endpoint"] == f"{provider.url}/oidc/device_authorization"
    assert GRANT in enabled["grant_types_supported"]
    default = sqlite_provider.discovery()
    assert "device_authorization_endpoint" not in default and GRANT not in default["grant_types_supported"]
    assert requests.post(f"{sqlite_provider.url}/oidc/device_authorization", data={"client_id": "tv-app"},
                         timeout=10).status_code == 404
    assert requests.get(f"{sqlite_provider.url}/device", timeout=10).status_code == 404


def test_the_device_authorization_response(provider):
    answer = ask(provider)
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", answer["user_code"])
    assert answer["verification_uri"] == f"{provider.url}/device"
    assert answer["verification_uri_complete"] == f"{provider.url}/device?user_code={answer['user_code']}"
    assert answer["expires_in"] == 600 and answer["interval"] == INTERVAL
    assert len(answer["device_code"]) >= 40


def test_the_device_authorization_endpoint_refuses_what_it_must(provider):
    url = f"{provider.url}/oidc/device_authorization"
    unknown = requests.post(url, data={"client_id": "nobody"}, timeout=10)
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_client"  # RFC 6749 5.2
    wrong_secret = requests.post(url, data={"scope": "openid"}, auth=("console", "wrong"), timeout=10)
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    not_allowed = requests.post(url, data={"scope": "openid"}, auth=("web", provider.secrets["web"]), timeout=10)
    assert not_allowed.status_code == 400 and not_allowed.json()["error"] == "unauthorized_client"
    bad_acr = requests.post(url, data={"client_id": "tv-app", "claims": "{not json"}, timeout=10)
    assert bad_acr.status_code == 400 and bad_acr.json()["error"] == "invalid_request"
    bad_resource = requests.post(url, data={"client_id": "tv-app", "resource": "https://unknown.example"}, timeout=10)
    assert bad_resource.status_code == 400 and bad_resource.json()["error"] == "invalid_target"
    too_long = requests.post(url, data={"client_id": "tv-app", "scope": "x" * 10_000}, timeout=10)
    assert too_long.status_code == 400 and too_long.json()["error"] == "invalid_request"
    assert requests.get(url, timeout=10).json()["error"] == "invalid_request"  # 405, in OAuth's format


# -- whole flows ----------------------------------------------------------------------------------

def test_a_tv_signs_in_with_the_password_entered_on_a_phone(provider):
    person = provider.add_user()
    device = ask(provider, scope="openid profile offline_access")
    assert error_of(poll(provider, device["device_code"])) == "authorization_pending"

    agent, page = approve_page_after_password(provider, person, device["user_code"])
    assert device["user_code"] in page.text and "Living-room TV" in page.text  # what asks, and its code
    assert 'data-scope="profile"' in page.text
    agent.submit(page, {"action": "approve"})

    time.sleep(INTERVAL)
    answer = poll(provider, device["device_code"])
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    claims = verified_id_token(provider, tokens["id_token"], "tv-app")
    assert claims["sub"] == person["sub"] and claims["amr"] == ["pwd"] and "acr" not in claims
    assert claims["sid"] and abs(claims["auth_time"] - time.time()) < 60
    assert tokens["scope"] == "openid profile offline_access"
    info = requests.get(f"{provider.url}/oidc/userinfo", timeout=10,
                        headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200 and info.json()["sub"] == person["sub"]
    refreshed = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                              client="tv-app", auth="none")
    assert refreshed.status_code == 200, refreshed.text
    assert verified_id_token(provider, refreshed.json()["id_token"], "tv-app")["amr"] == ["pwd"]


def test_acr_values_mfa_runs_the_same_factor_chain_as_a_browser_login(provider, plain_smtp):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"  # MFA over email needs a verified phone too (Transmit)
    person = provider.add_user(email_verified=True, phone=phone, phone_verified=True)
    device = ask(provider, client="console", auth="basic", acr_values="mfa")
    agent = UserAgent(provider)
    choice = agent.login(enter_code(agent, device["user_code"], complete=False), person["username"])
    assert "One more step" in choice.text, choice.text[:400]
    page = post(agent, choice, "start", {"factor": "email-otp"})
    page = agent.submit(page, {"code": email_code(plain_smtp, f"{person['username']}@example.com")})
    assert 'value="approve"' in page.text, page.text[:400]
    agent.submit(page, {"action": "approve"})

    answer = poll(provider, device["device_code"], client="console", auth="basic")
    assert answer.status_code == 200, answer.text
    claims = verified_id_token(provider, answer.json()["id_token"], "console")
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "eml", "mfa"]
    assert "refresh_token" not in answer.json()  # console may not use refresh tokens


def test_a_signed_in_browser_only_needs_to_approve(provider):
    person = provider.add_user()
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    device = ask(provider)
    page = enter_code(agent, device["user_code"])
    assert 'value="approve"' in page.text and 'name="password"' not in page.text
    agent.submit(page, {"action": "approve"})
    assert poll(provider, device["device_code"]).status_code == 200


def test_the_pages_are_server_rendered_and_their_forms_need_the_csrf_token(provider):
    person = provider.add_user()
    device = ask(provider)
    page = UserAgent(provider).go(f"{provider.url}/device")
    assert "<script" not in page.text and "script-src 'self'" in page.headers["Content-Security-Policy"]
    forged = requests.post(f"{provider.url}/device", data={"user_code": device["user_code"]}, timeout=10)
    assert forged.status_code == 400 and 'data-error="csrf"' in forged.text
    agent, approval = approve_page_after_password(provider, person, device["user_code"])
    uid = re.search(r'action="/device/approve/([^"]+)"', approval.text).group(1)
    forged = agent.go(f"{provider.url}/device/approve/{uid}", "POST", {"action": "approve"})
    assert forged.status_code == 400 and 'data-error="csrf"' in forged.text
    assert error_of(poll(provider, device["device_code"])) == "authorization_pending"
    elsewhere = UserAgent(provider)  # the approval page belongs to the browser that signed in
    assert elsewhere.go(f"{provider.url}/device/approve/{uid}").status_code == 400


# -- attacks and refusals ------------------------------------------------------------------------------

def test_polling_faster_than_the_interval_is_told_to_slow_down(provider):
    device = ask(provider)
    assert error_of(poll(provider, device["device_code"])) == "authorization_pending"
    assert error_of(poll(provider, device["device_code"])) == "slow_down"
    time.sleep(INTERVAL + 0.2)  # the old interval is not enough any more: it grew by 5 s
    assert error_of(poll(provider, device["device_code"])) == "slow_down"


def test_the_person_denies_the_device(provider):
    person = provider.add_user()
    device = ask(provider)
    agent, page = approve_page_after_password(provider, person, device["user_code"])
    done = agent.submit(page, {"action": "deny"})
    assert done.status_code == 200 and 'data-device="denied"' in done.text
    assert error_of(poll(provider, device["device_code"])) == "access_denied"
    again = enter_code(UserAgent(provider), device["user_code"])  # the code is spent
    assert again.status_code == 400 and "not right" in again.text


def test_cancel_on_the_login_page_denies_the_device(provider):
    device = ask(provider)
    agent = UserAgent(provider)
    page = enter_code(agent, device["user_code"])
    done = agent.submit(page, {"action": "cancel"})
    assert 'data-device="denied"' in done.text
    assert error_of(poll(provider, device["device_code"])) == "access_denied"


def test_a_device_code_gives_tokens_once(provider):
    person = provider.add_user()
    device = ask(provider)
    approve(provider, person, device["user_code"])
    assert poll(provider, device["device_code"]).status_code == 200
    assert error_of(poll(provider, device["device_code"])) == "invalid_grant"


def test_concurrent_polls_of_an_approved_code_have_one_winner(provider):
    person = provider.add_user()
    device = ask(provider)
    approve(provider, person, device["user_code"])
    barrier, answers = threading.Barrier(8), []

    def racer():
        barrier.wait()
        answers.append(poll(provider, device["device_code"]))

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answer.status_code for answer in answers) == [200] + [400] * 7
    assert {answer.json()["error"] for answer in answers if answer.status_code == 400} == {"invalid_grant"}


def test_another_client_cannot_redeem_the_device_code(provider):
    person = provider.add_user()
    device = ask(provider)
    approve(provider, person, device["user_code"])
    assert error_of(poll(provider, device["device_code"], client="tv-b")) == "invalid_grant"
    assert poll(provider, device["device_code"]).status_code == 200  # the rightful device still can


def test_a_made_up_device_code_is_invalid_grant(provider):
    assert error_of(poll(provider, "not-a-device-code")) == "invalid_grant"
    assert error_of(token_request(provider, {"grant_type": GRANT}, client="tv-app", auth="none")) == "invalid_request"


def test_an_expired_device_code(strict):
    device = ask(strict)
    time.sleep(2.2)
    assert error_of(poll(strict, device["device_code"])) == "expired_token"


def test_guessing_user_codes_is_bounded(strict):
    """5 tries per address and window; the sixth is refused before it is compared, right or not."""
    device = ask(strict)
    agent = UserAgent(strict)
    for guess in ("BCDF-GHJK", "ZZZZ-ZZZZ", "not a code", "BBBB-BBBB", "XXXX-XXXX"):
        page = enter_code(agent, guess, complete=False)
        assert page.status_code == 400 and "not right" in page.text
    refused = enter_code(agent, device["user_code"], complete=False)
    assert refused.status_code == 429 and "Too many codes" in refused.text
