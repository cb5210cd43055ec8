"""MFA orchestration as relying parties see it: what is asked, and what the tokens claim."""

from __future__ import annotations

import re
import uuid

import jwt
import pytest

from tests.conftest import BACKENDS, REDIRECT, UserAgent, callback_params, start_provider, token_request
from tests.servers import code_in, text_of


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("mfa"), request.param, extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms"},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
    })
    yield running
    stop()


@pytest.fixture
def person(provider):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    return provider.add_user(phone=phone, phone_verified=True, email_verified=True) | {"phone": phone}


def post(agent, page, action, fields=None):
    base = re.search(r'action="(/interaction/[^/"]+)/', page.text).group(1)
    return agent.go(f"{agent.provider.url}{base}/{action}", "POST", {"csrf_token": agent.csrf(page), **(fields or {})})


def email_code(smtp, address):
    return code_in(text_of(smtp.mailbox.to(address)[-1].message))


def id_token_claims(provider, redirect) -> dict:
    params = callback_params(redirect)
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                      "redirect_uri": REDIRECT}).json()
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})


def test_mfa_over_email_and_sms_needs_a_verified_phone(provider):
    """The Transmit guide: MFA only for users with a primary email and phone; say what is missing."""
    no_phone = provider.add_user(email_verified=True)
    agent = UserAgent(provider)
    page = agent.login(agent.authorize(client_id="web", acr_values="mfa"), no_phone["username"])
    assert page.status_code == 403 and "a verified phone number" in page.text
    assert "op_session" in agent.http.cookies  # the password step itself succeeded


def test_prompt_none_that_cannot_meet_the_level_is_unmet_authentication_requirements(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    answer = callback_params(agent.authorize(client_id="web", acr_values="mfa", prompt="none", state="s9"))
    assert answer["error"] == "unmet_authentication_requirements" and answer["state"] == "s9"
    assert "code" not in answer


def test_a_password_session_never_yields_mfa_without_the_second_step(provider, person):
    agent = UserAgent(provider)
    claims = id_token_claims(provider, agent.sign_in(person["username"], client_id="web") and
                             agent.authorize(client_id="web"))
    assert claims["amr"] == ["pwd"] and "acr" not in claims
