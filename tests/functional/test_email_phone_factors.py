"""Email OTP, SMS OTP, voice OTP and magic links, with real delivery: codes are read from
what the SMTP server and the gateway received, never from the provider's internals."""

from __future__ import annotations

import re
import threading
import time
import uuid

import jwt
import pytest
from prometheus_client import REGISTRY

from tests.conftest import (post, BACKENDS, UserAgent, callback_params, factor_passed, pkce_pair, start_provider,
                            token_request)
from tests.servers import email_code, sms_code, text_of

REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("factors"), request.param, extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms", "timeout": 5},
        "voice": {"gateway": "webhook", "url": f"{gateway_server.url}/voice", "timeout": 5},
        "otp": {"resend_cooldown": 2, "per_user_limit": 3, "per_destination_limit": 3, "per_ip_limit": 10_000},
    })
    yield running
    stop()


@pytest.fixture
def person(provider):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    return provider.add_user(phone=phone, phone_verified=True, email_verified=True) | {"phone": phone}


def email_link(smtp, address: str) -> str:
    return re.search(r"(http://\S+/interaction/link/\S+)", text_of(smtp.mailbox.to(address)[-1].message)).group(1)


def texts_to(gateway, number: str, path: str = "/sms") -> list[str]:
    return [r.json()["text"] for r in gateway.received if r.path == path and r.json()["to"] == number]


def start(agent: UserAgent, factor: str, login: str, **params):
    return post(agent, agent.authorize(client_id="web", **params), "start", {"login": login, "factor": factor})


def finish(provider, agent, page, verifier=None) -> dict:
    """From the redirect to the client: exchange the code, return the ID token's claims."""
    params = callback_params(page)
    data = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT}
    if verifier:
        data["code_verifier"] = verifier
    tokens = token_request(provider, data).json()
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})


# -- each factor as the first (passwordless) factor ------------------------------------------

def test_email_otp_signs_in_without_a_password(provider, person, plain_smtp, agent):
    page = start(agent, "email-otp", person["username"])
    assert page.status_code == 200 and f"If an account exists for <strong>{person['username']}</strong>" in page.text
    claims = finish(provider, agent, agent.submit(page, {"code": email_code(plain_smtp, f"{person['username']}@example.com")}))
    assert claims["sub"] == person["sub"] and claims["amr"] == ["eml"] and "acr" not in claims


def test_sms_otp_signs_in(provider, person, gateway_server, agent):
    page = start(agent, "sms", f"{person['username']}@example.com")
    claims = finish(provider, agent, agent.submit(page, {"code": sms_code(gateway_server, person["phone"])}))
    assert claims["amr"] == ["sms"]


def test_voice_otp_reads_the_code_out(provider, person, gateway_server, agent):
    page = start(agent, "voice", person["username"])
    spoken = texts_to(gateway_server, person["phone"], "/voice")[-1]
    digits = re.search(r"code is ((?:\d ){5,9}\d)", spoken).group(1)
    claims = finish(provider, agent, agent.submit(page, {"code": digits.replace(" ", "")}))
    assert claims["amr"] == ["tel"]


def test_magic_link_needs_a_post_and_completes_the_same_browser(provider, person, plain_smtp, agent):
    page = start(agent, "email", person["username"])
    assert "Check your email" in page.text
    link = email_link(plain_smtp, f"{person['username']}@example.com")
    for _ in range(2):  # a mail scanner's GET uses nothing up
        shown = agent.go(link)
        assert shown.status_code == 200 and "Yes, sign me in" in shown.text
    claims = finish(provider, agent, agent.submit(shown, {}))
    assert claims["amr"] == ["eml"] and claims["sub"] == person["sub"]
    replay = UserAgent(provider).go(link)
    assert replay.status_code == 400 and "expired or was already used" in replay.text


def test_magic_link_opened_in_another_browser_completes_the_original(provider, person, plain_smtp, agent):
    waiting = start(agent, "email", person["username"])
    other = UserAgent(provider)
    confirmed = other.submit(other.go(email_link(plain_smtp, f"{person['username']}@example.com")), {})
    assert confirmed.status_code == 200 and "This browser has not been signed in" in confirmed.text
    assert other.cookie("op_session") is None
    assert other.authorize(client_id="web").status_code == 200  # still asked to sign in there
    resumed = agent.go(waiting.url)  # the original page refreshes itself
    assert finish(provider, agent, resumed)["sub"] == person["sub"]


# -- as a second factor ----------------------------------------------------------------------

def test_password_then_sms_is_mfa(provider, person, gateway_server, agent):
    verifier, challenge = pkce_pair()
    page = agent.authorize(client_id="web", acr_values="mfa", code_challenge=challenge, code_challenge_method="S256")
    choice = agent.login(page, person["username"])
    assert "One more step" in choice.text
    offered = set(re.findall(r'name="factor" value="([^"]+)"', choice.text))
    assert offered == {"email-otp", "sms", "voice", "email"}
    code_page = post(agent, choice, "start", {"factor": "sms"})
    claims = finish(provider, agent, agent.submit(code_page, {"code": sms_code(gateway_server, person["phone"])}),
                    verifier)
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "sms", "mfa"]


def test_second_factor_never_offers_the_same_flow(provider, person, plain_smtp, agent):
    page = start(agent, "email-otp", person["username"], acr_values="mfa")
    choice = agent.submit(page, {"code": email_code(plain_smtp, f"{person['username']}@example.com")})
    offered = set(re.findall(r'name="factor" value="([^"]+)"', choice.text))
    assert offered == {"sms", "voice"} and 'name="password"' in choice.text
    refused = post(agent, choice, "start", {"factor": "email"})  # an email link after an email code is not MFA
    assert refused.status_code == 400


def test_step_up_from_a_password_session_asks_only_the_missing_factor(provider, person, plain_smtp, agent):
    agent.sign_in(person["username"], client_id="web")
    choice = agent.authorize(client_id="web", require_mfa="true")
    assert "One more step" in choice.text and 'name="login"' not in choice.text
    code_page = post(agent, choice, "start", {"factor": "email-otp"})
    claims = finish(provider, agent, agent.submit(code_page, {"code": email_code(plain_smtp, f"{person['username']}@example.com")}))
    assert claims["amr"] == ["pwd", "eml", "mfa"] and claims["acr"] == "mfa"


# -- attacks ---------------------------------------------------------------------------------

def test_guessing_beyond_the_try_limit_kills_the_code(provider, person, plain_smtp, agent):
    page = start(agent, "email-otp", person["username"])
    right = email_code(plain_smtp, f"{person['username']}@example.com")
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    for _ in range(provider.op.settings.otp.max_attempts):
        assert agent.submit(page, {"code": wrong}).status_code == 401
    assert agent.submit(page, {"code": right}).status_code == 401
    assert agent.cookie("op_session") is None


def test_a_code_works_once_even_when_submitted_concurrently(provider, person, plain_smtp, agent):
    page = start(agent, "email-otp", person["username"])
    code = email_code(plain_smtp, f"{person['username']}@example.com")
    url, data = agent.form_action(page), {"csrf_token": agent.csrf(page), "code": code}
    barrier, statuses = threading.Barrier(6), []

    def submit():
        barrier.wait()
        answer = agent.http.post(url, data=data, allow_redirects=False, timeout=15)
        statuses.append("signed in" if factor_passed(answer) else "refused")

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == ["refused"] * 5 + ["signed in"]


def test_an_email_code_does_not_pass_the_sms_step(provider, person, plain_smtp, gateway_server, agent):
    page = start(agent, "email-otp", person["username"])
    email = email_code(plain_smtp, f"{person['username']}@example.com")
    sms_page = post(agent, post(agent, page, "restart"), "start", {"login": person["username"], "factor": "sms"})
    assert "we sent it a code" in sms_page.text
    assert agent.submit(sms_page, {"code": email}).status_code == 401
    assert agent.submit(sms_page, {"code": sms_code(gateway_server, person["phone"])}).status_code == 302


def test_a_code_of_one_user_does_not_sign_in_another(provider, plain_smtp):
    alice, mallory = provider.add_user(email_verified=True), provider.add_user(email_verified=True)
    alice_agent, mallory_agent = UserAgent(provider), UserAgent(provider)
    start(alice_agent, "email-otp", alice["username"])
    mallory_page = start(mallory_agent, "email-otp", mallory["username"])
    alice_code = email_code(plain_smtp, f"{alice['username']}@example.com")
    assert mallory_agent.submit(mallory_page, {"code": alice_code}).status_code == 401


def test_resend_is_throttled_and_kills_the_previous_code(provider, person, plain_smtp, agent):
    address = f"{person['username']}@example.com"
    page = start(agent, "email-otp", person["username"])
    first = email_code(plain_smtp, address)
    too_soon = post(agent, page, "resend")
    assert too_soon.status_code == 429 and "moments ago" in too_soon.text
    time.sleep(2.1)
    assert post(agent, page, "resend").status_code == 200
    second = email_code(plain_smtp, address)
    assert len(plain_smtp.mailbox.to(address)) == 2
    if first != second:
        assert agent.submit(page, {"code": first}).status_code == 401  # the resend killed it
    time.sleep(2.1)
    assert post(agent, page, "resend").status_code == 200  # the third code in the window
    third = email_code(plain_smtp, address)
    time.sleep(2.1)
    flooded = post(agent, page, "resend")
    assert flooded.status_code == 429 and "Too many codes" in flooded.text  # per-user limit: 3
    assert len(plain_smtp.mailbox.to(address)) == 3
    assert agent.submit(page, {"code": third}).status_code == 302


def test_unknown_and_known_addresses_get_the_same_answer(provider, person, plain_smtp):
    """No enumeration: the same status and page, apart from the address echoed back."""
    stranger = f"nobody-{uuid.uuid4().hex[:6]}@example.com"
    known = start(UserAgent(provider), "email", f"{person['username']}@example.com")
    unknown = start(UserAgent(provider), "email", stranger)

    def shape(page):
        text = re.sub(r'value="[^"]*"|action="[^"]*"', "", page.text)
        return re.sub(r"<p>.*?</p>", "", text, count=1, flags=re.S)

    assert known.status_code == unknown.status_code == 200
    assert shape(known) == shape(unknown)
    assert plain_smtp.mailbox.to(stranger) == []
    wrong = post(UserAgent(provider), start(UserAgent(provider), "email-otp", stranger), "verify", {"code": "123456"})
    assert wrong.status_code in (400, 401)


def test_unverified_phone_is_not_a_factor(provider, gateway_server):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    unverified = provider.add_user(phone=phone, phone_verified=False)
    page = start(UserAgent(provider), "sms", unverified["username"])
    assert page.status_code == 200 and texts_to(gateway_server, phone) == []


def test_a_gateway_that_fails_once_still_delivers_the_code_after_a_retry(provider, person, gateway, agent):
    gateway.failures = 1
    page = start(agent, "sms", person["username"])
    assert page.status_code == 200 and "we sent it a code" in page.text
    code = sms_code(gateway, person["phone"])
    assert len(texts_to(gateway, person["phone"])) == 2  # the refused try, then the one that arrived
    assert agent.submit(page, {"code": code}).status_code == 302


def test_a_gateway_down_for_good_leaves_a_clear_page_and_a_logged_counted_failure(provider, person, gateway,
                                                                                  agent, caplog):
    failed = {"channel": "sms", "outcome": "failed"}
    before = REGISTRY.get_sample_value("oidc_deliveries_total", failed) or 0
    gateway.status = 500
    agent.http.headers["X-Request-ID"] = request_id = f"code-request-{uuid.uuid4().hex}"
    page = start(agent, "sms", person["username"])
    del agent.http.headers["X-Request-ID"]
    assert page.status_code == 200 and "we sent it a code" in page.text and "Send a new code" in page.text
    assert len(texts_to(gateway, person["phone"])) == provider.op.settings.delivery.attempts
    assert REGISTRY.get_sample_value("oidc_deliveries_total", failed) == before + 1
    [logged] = [r for r in caplog.records if getattr(r, "delivery", {}).get("outcome") == "failed"]
    assert logged.delivery["channel"] == "sms" and logged.delivery["error"] == "HTTP 500"
    assert person["phone"] not in logged.getMessage() + str(logged.delivery)
    assert logged.request_id == request_id  # the request that asked for the code

    gateway.status = 200  # the gateway is back: a new code reaches the person (the cool-down has passed)
    resent = post(agent, page, "resend")
    assert agent.submit(resent, {"code": sms_code(gateway, person["phone"], after=3)}).status_code == 302


def test_expired_code_is_refused(tmp_path, plain_smtp):
    provider, stop = start_provider(tmp_path, "sqlite-sql", extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"}, "otp": {"lifetime": 1}})
    try:
        person = provider.add_user(email_verified=True)
        agent = UserAgent(provider)
        page = start(agent, "email-otp", person["username"])
        code = email_code(plain_smtp, f"{person['username']}@example.com")
        time.sleep(1.5)
        assert agent.submit(page, {"code": code}).status_code == 401
    finally:
        stop()
