"""MFA orchestration as relying parties see it: what is asked, and what the tokens claim."""

from __future__ import annotations

import re
import uuid

import jwt
import pytest

from tests.conftest import (post, BACKENDS, REDIRECT, UserAgent, callback_params, interaction_uid, start_provider,
                            token_request)
from tests.servers import email_code, sms_code


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
    assert agent.cookie("op_session")  # the password step itself succeeded


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


@pytest.fixture(scope="module")
def leveled(tmp_path_factory, plain_smtp, gateway_server):
    """Custom levels: mfa (2 flows, fresh for 2 s) and strong (3 flows), as YAML data would say."""
    running, stop = start_provider(tmp_path_factory.mktemp("levels"), "sqlite-sql", extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms"},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
        "acr": {"levels": [{"value": "mfa", "flows": 2, "max_age": 2}, {"value": "strong", "flows": 3},
                           {"value": "phr", "flows": 1, "required_factors": ["passkey", "webauthn-key"]}]},
    })
    yield running
    stop()


def test_the_highest_requested_level_wins(leveled, plain_smtp, gateway_server):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    person = leveled.add_user(phone=phone, phone_verified=True, email_verified=True)
    agent = UserAgent(leveled)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa strong urn:unknown:x"), person["username"])
    page = post(agent, choice, "start", {"factor": "email-otp"})
    choice = agent.submit(page, {"code": email_code(plain_smtp, f"{person['username']}@example.com")})
    assert "One more step" in choice.text  # mfa would be met here; strong is not
    offered = set(re.findall(r'name="factor" value="([^"]+)"', choice.text))
    assert offered == {"sms", "voice"}
    page = post(agent, choice, "start", {"factor": "sms"})
    claims = id_token_claims(leveled, agent.submit(page, {"code": sms_code(gateway_server, phone)}))
    assert claims["acr"] == "strong" and claims["amr"] == ["pwd", "eml", "sms", "mfa"]


def test_an_essential_acr_that_cannot_be_met_is_an_error_not_a_weaker_token(leveled):
    person = leveled.add_user(email_verified=True)
    agent = UserAgent(leveled)
    claims = '{"id_token": {"acr": {"essential": true, "values": ["phr"]}}}'
    answer = agent.login(agent.authorize(client_id="web", claims=claims, state="e1"), person["username"])
    params = callback_params(answer)
    assert params["error"] == "unmet_authentication_requirements" and params["state"] == "e1"
    unknown = '{"id_token": {"acr": {"essential": true, "values": ["urn:nobody:knows"]}}}'
    assert callback_params(agent.authorize(client_id="web", claims=unknown))["error"] == \
        "unmet_authentication_requirements"
    malformed = callback_params(agent.authorize(client_id="web", claims="{not json"))
    assert malformed["error"] == "invalid_request"


def test_essential_mfa_in_the_claims_parameter_is_honoured(leveled, gateway_server):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    person = leveled.add_user(phone=phone, phone_verified=True, email_verified=True)
    agent = UserAgent(leveled)
    claims = '{"id_token": {"acr": {"essential": true, "values": ["mfa"]}}}'
    choice = agent.login(agent.authorize(client_id="web", claims=claims), person["username"])
    page = post(agent, choice, "start", {"factor": "sms"})
    assert id_token_claims(leveled, agent.submit(page, {"code": sms_code(gateway_server, phone)}))["acr"] == "mfa"


def test_a_level_with_max_age_falls_back_on_refresh(leveled, gateway_server):
    import time

    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    person = leveled.add_user(phone=phone, phone_verified=True, email_verified=True)
    agent = UserAgent(leveled)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa", scope="openid offline_access"),
                         person["username"])
    page = post(agent, choice, "start", {"factor": "sms"})
    params = callback_params(agent.submit(page, {"code": sms_code(gateway_server, phone)}))
    tokens = token_request(leveled, {"grant_type": "authorization_code", "code": params["code"],
                                     "redirect_uri": REDIRECT}).json()
    assert jwt.decode(tokens["id_token"], options={"verify_signature": False})["acr"] == "mfa"
    time.sleep(2.5)
    refreshed = token_request(leveled, {"grant_type": "refresh_token",
                                        "refresh_token": tokens["refresh_token"]}).json()
    id_claims = jwt.decode(refreshed["id_token"], options={"verify_signature": False})
    access = jwt.decode(refreshed["access_token"], options={"verify_signature": False})
    assert "acr" not in id_claims and "acr" not in access  # mfa is no longer fresh
    assert id_claims["amr"] == ["pwd", "sms", "mfa"]  # what was done stays true
    with leveled.app.app_context():  # and the successor remembers the level it was given
        from oidc_provider.extensions import db
        from oidc_provider.models import RefreshToken
        from oidc_provider.oauth.tokens import sha256_hex

        stored = db.session.execute(db.select(RefreshToken.auth)
                                    .filter_by(token_hash=sha256_hex(refreshed["refresh_token"]))).scalar_one()
    assert stored["acr"] is None and stored["amr"] == ["pwd", "sms", "mfa"]
    # and the session asks again for the stale level
    again = agent.authorize(client_id="web", acr_values="mfa")
    assert again.status_code == 200 and ("One more step" in again.text or 'name="password"' in again.text)


# -- attacks ---------------------------------------------------------------------------------

def test_skipping_the_second_step_by_calling_later_endpoints(provider, person):
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"])
    uid = interaction_uid(choice)
    resumed = agent.go(f"{provider.url}/oidc/auth/resume/{uid}")
    assert resumed.status_code == 200 and "One more step" in resumed.text  # no code
    forged = agent.go(f"{provider.url}/interaction/{uid}/verify", "POST",
                      {"csrf_token": agent.csrf(choice), "code": "123456"})
    assert forged.status_code == 200 and "One more step" in forged.text
    consent = agent.go(f"{provider.url}/interaction/{uid}/consent", "POST",
                       {"csrf_token": agent.csrf(choice), "action": "approve"})
    assert "Location" not in consent.headers or "code=" not in consent.headers["Location"]
    again = agent.go(f"{provider.url}/oidc/auth/resume/{uid}")
    assert "One more step" in again.text


def test_another_browser_cannot_continue_this_chain(provider, person):
    victim = UserAgent(provider)
    choice = victim.login(victim.authorize(client_id="web", acr_values="mfa"), person["username"])
    attacker = UserAgent(provider)
    own_page = attacker.authorize(client_id="web")  # a valid CSRF token of the attacker's own
    uid = interaction_uid(choice)
    stolen = attacker.go(f"{provider.url}/interaction/{uid}/start", "POST",
                         {"csrf_token": attacker.csrf(own_page), "factor": "sms"})
    assert stolen.status_code == 400 and "another browser" in stolen.text


def test_a_factor_in_one_session_never_completes_mfa_in_another(provider, person, gateway_server):
    first = UserAgent(provider)
    first.login(first.authorize(client_id="web", acr_values="mfa"), person["username"])  # password in A
    second = UserAgent(provider)
    code_page = post(second, second.authorize(client_id="web", acr_values="mfa"), "start",
                     {"login": person["username"], "factor": "sms"})
    after_sms = second.submit(code_page, {"code": sms_code(gateway_server, person["phone"])})
    assert after_sms.status_code == 200 and "One more step" in after_sms.text  # B has one factor only
    assert 'name="password"' in after_sms.text


def test_a_second_factor_cannot_start_a_sign_in(provider, person):
    """Only first factors may begin before the user is known (here: voice is a first factor,
    password-only steps are not startable, and an unknown factor id is refused)."""
    agent = UserAgent(provider)
    page = agent.authorize(client_id="web")
    for factor in ("password", "nonsense"):
        refused = post(agent, page, "start", {"login": person["username"], "factor": factor})
        assert refused.status_code == 400
    provider.op.factors.get("voice").first_factor = False
    try:
        refused = post(agent, page, "start", {"login": person["username"], "factor": "voice"})
        assert refused.status_code == 400 and "cannot be used for this step" in refused.text
    finally:
        provider.op.factors.get("voice").first_factor = True
