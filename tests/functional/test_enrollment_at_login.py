"""Setting up a second factor during a login that needs one, as a person does it: TOTP codes
from pyotp, SMS codes from the gateway server, WebAuthn answers from a software authenticator.
The attack it must not open: someone with only the password adding their own factor to an
account that already has one."""

from __future__ import annotations

import json
import re
import time
import uuid

import jwt
import pyotp
import pytest

from tests.conftest import (BACKENDS, REDIRECT, UserAgent, callback_params, interaction_uid, post, start_provider,
                            token_request)
from tests.servers import sms_code
from tests.unit.webauthn_authenticator import SoftAuthenticator

FACTORS = ["password", "email-otp", "sms", "voice", "email", "totp", "recovery-code", "webauthn-key",
           "webauthn-platform", "passkey"]


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("enroll"), request.param, extra_settings=lambda port: {
        "factors": FACTORS,
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms", "timeout": 5},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
        "webauthn": {"rp_id": "localhost", "origins": [f"http://localhost:{port}"]},
        "enrollment": {"at_login": True, "factors": ["totp", "webauthn-key", "webauthn-platform", "sms"]},
    })
    yield running
    stop()


@pytest.fixture
def person(provider):
    """A password and a confirmed email, no phone: nothing that can be a second factor."""
    return provider.add_user(email_verified=True)


def claims_of(provider, redirect) -> dict:
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": callback_params(redirect)["code"],
                                      "redirect_uri": REDIRECT}).json()
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})


def offered(page) -> list[str]:
    return re.findall(r'name="factor" value="([^"]+)"', page.text)


def login_needing_mfa(provider, person, **params):
    agent = UserAgent(provider)
    page = agent.login(agent.authorize(client_id="web", acr_values="mfa", **params), person["username"])
    return agent, page


def enroll_page(agent, page, factor):
    return post(agent, page, "enroll", {"factor": factor})


def totp_of(page) -> pyotp.TOTP:
    return pyotp.TOTP(re.search(r'<code id="totp-secret">([A-Z2-7 ]+)</code>', page.text).group(1).replace(" ", ""))


def authenticators(provider, user_id, kind=None) -> list:
    from oidc_provider.extensions import db
    from oidc_provider.models import Authenticator

    with provider.app.app_context():
        query = db.select(Authenticator).filter_by(user_id=user_id)
        if kind:
            query = query.filter_by(kind=kind)
        return [(a.kind, a.confirmed) for a in db.session.execute(query).scalars()]


def audit(provider, event, user_id) -> list[dict]:
    from oidc_provider.extensions import db
    from oidc_provider.models import AuditEvent

    with provider.app.app_context():
        rows = db.session.execute(db.select(AuditEvent).filter_by(event=event, user_id=user_id)).scalars()
        return [row.detail for row in rows]


# -- the journeys ---------------------------------------------------------------------------------------

def test_a_user_without_a_second_factor_sets_up_totp_and_gets_mfa(provider, person):
    agent, page = login_needing_mfa(provider, person)
    assert page.status_code == 200 and "Set up a second way to sign in" in page.text
    assert offered(page) == ["totp", "webauthn-key", "webauthn-platform", "sms"]
    setup = enroll_page(agent, page, "totp")
    assert "Set up your authenticator app" in setup.text
    totp = totp_of(setup)
    wrong = agent.submit(setup, {"code": "000000" if totp.now() != "000000" else "111111"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    claims = claims_of(provider, agent.submit(wrong, {"code": totp.now()}))
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "otp", "mfa"]
    [entry] = audit(provider, "mfa.enrolled", person["sub"])
    assert entry["factor"] == "totp" and entry["at_login"] is True

    # from now on the app is the second factor, not a new enrollment
    again, choice = login_needing_mfa(provider, person)
    assert "One more step" in choice.text and offered(choice) == ["totp"]


def test_a_user_without_a_phone_adds_one_by_sms_and_gets_mfa(provider, person, gateway):
    number = f"+1555{uuid.uuid4().int % 10**7:07d}"
    agent, page = login_needing_mfa(provider, person)
    phone_page = enroll_page(agent, page, "sms")
    assert "Add your phone" in phone_page.text
    bad = agent.submit(phone_page, {"phone": "555 0100"})
    assert bad.status_code == 400 and "international format" in bad.text
    sent = agent.submit(bad, {"phone": number})
    assert "We sent a code to" in sent.text and number[-2:] in sent.text
    claims = claims_of(provider, agent.submit(sent, {"code": sms_code(gateway, number)}))
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "sms", "mfa"]

    # the number is now confirmed: the next login texts it a code
    again, choice = login_needing_mfa(provider, person)
    assert "One more step" in choice.text and {"sms", "voice"} <= set(offered(choice))


def test_a_security_key_is_registered_then_used_once_for_mfa(provider, person):
    agent, page = login_needing_mfa(provider, person)
    setup = enroll_page(agent, page, "webauthn-key")
    assert 'data-webauthn="create"' in setup.text
    options_url = re.search(r'data-options-url="([^"]+)"', setup.text).group(1)
    options = agent.http.post(f"{provider.url}{options_url}", data={"csrf_token": agent.csrf(setup)}, timeout=15)
    assert options.status_code == 200, options.text
    key = SoftAuthenticator(provider.url.replace("127.0.0.1", "localhost"))
    step = agent.submit(setup, {"credential": json.dumps(key.create(options.json()))})
    # registered; an assertion by the new key is what the login counts
    assert step.status_code == 200 and 'data-webauthn="get"' in step.text, step.text[:500]
    assert authenticators(provider, person["sub"], "webauthn-key") == [("webauthn-key", True)]
    block = re.search(r'<script type="application/json" id="webauthn-options">(.*?)</script>', step.text, re.S)
    claims = claims_of(provider, agent.submit(step, {"credential": json.dumps(key.get(json.loads(block.group(1))))}))
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "webauthn", "mfa"]
    assert [e["factor"] for e in audit(provider, "mfa.enrolled", person["sub"])] == ["webauthn-key"]


def test_an_older_session_confirms_its_password_before_setting_up(provider, person):
    agent = UserAgent(provider)
    assert "code" in agent.sign_in(person["username"], client_id="web")
    page = agent.authorize(client_id="web", acr_values="mfa")  # step-up in a new interaction
    assert "First confirm your password" in page.text and offered(page) == []
    refused = enroll_page(agent, page, "totp")  # not before a factor of this interaction
    assert refused.status_code == 403 and not authenticators(provider, person["sub"], "totp")
    page = agent.authorize(client_id="web", acr_values="mfa")
    choose = agent.submit(page, {"password": person["password"]})
    assert offered(choose) == ["totp", "webauthn-key", "webauthn-platform", "sms"]
    setup = enroll_page(agent, choose, "totp")
    claims = claims_of(provider, agent.submit(setup, {"code": totp_of(setup).now()}))
    assert claims["acr"] == "mfa"


# -- the attack: a password alone must not add a factor to an account that has one ---------------------

def test_a_user_with_a_factor_is_asked_for_it_never_offered_enrollment(provider, person):
    agent, page = login_needing_mfa(provider, person)
    setup = enroll_page(agent, page, "totp")
    totp = totp_of(setup)
    claims_of(provider, agent.submit(setup, {"code": totp.at(time.time() - 30)}))

    attacker, choice = login_needing_mfa(provider, person)  # knows the password, not the app
    assert "One more step" in choice.text and "Set up" not in choice.text
    for factor in ("totp", "webauthn-key", "sms"):
        refused = enroll_page(attacker, choice, factor)
        assert refused.status_code == 403 and "cannot be set up now" in refused.text
    for path in ("enroll/totp", "enroll/sms", "enroll/phone", "enroll/webauthn"):
        answer = attacker.go(f"{provider.url}/interaction/{interaction_uid(choice)}/{path}", "POST",
                             {"csrf_token": attacker.csrf(choice), "code": totp.now(), "phone": "+15550100999"})
        assert answer.status_code == 403
    options = attacker.http.post(f"{provider.url}/interaction/{interaction_uid(choice)}/enroll/webauthn/options",
                                 data={"csrf_token": attacker.csrf(choice)}, timeout=15)
    assert options.status_code == 403
    assert authenticators(provider, person["sub"]) == [("totp", True)]  # nothing added, nothing pending


def test_a_factor_that_cannot_meet_the_level_is_no_reason_to_add_another(provider, person):
    """phr needs WebAuthn; the user's app cannot give it, and adding a key with only the password
    would go around the app: the login is refused with what is missing instead."""
    agent, page = login_needing_mfa(provider, person)
    setup = enroll_page(agent, page, "totp")
    claims_of(provider, agent.submit(setup, {"code": totp_of(setup).now()}))

    attacker = UserAgent(provider)
    login = attacker.authorize(client_id="web", acr_values="phr")
    refused = attacker.login(login, person["username"])
    assert refused.status_code == 403 and "Set up" not in refused.text
    answer = attacker.go(f"{provider.url}/interaction/{interaction_uid(login)}/enroll", "POST",
                         {"csrf_token": attacker.csrf(login), "factor": "webauthn-key"})
    assert answer.status_code == 403
    assert authenticators(provider, person["sub"]) == [("totp", True)]


def test_enrollment_needs_a_first_factor_in_this_login(provider, person):
    agent = UserAgent(provider)
    page = agent.authorize(client_id="web", acr_values="mfa")
    answer = agent.go(f"{provider.url}/interaction/{interaction_uid(page)}/enroll", "POST",
                      {"csrf_token": agent.csrf(page), "factor": "totp"})
    assert answer.status_code == 403
    assert not authenticators(provider, person["sub"])


def test_a_login_that_needs_no_mfa_offers_no_enrollment(provider, person):
    agent = UserAgent(provider)
    claims = claims_of(provider, agent.login(agent.authorize(client_id="web"), person["username"]))
    assert claims["amr"] == ["pwd"] and "acr" not in claims


# -- not configured -----------------------------------------------------------------------------------

def test_without_enrollment_the_login_says_what_is_missing(provider_default):
    person = provider_default.add_user(email_verified=True)
    agent = UserAgent(provider_default)
    login = agent.authorize(client_id="web", acr_values="mfa")
    page = agent.login(login, person["username"])
    assert page.status_code == 403 and "a verified phone number" in page.text
    assert "Set up a second way" not in page.text
    answer = agent.go(f"{provider_default.url}/interaction/{interaction_uid(login)}/enroll", "POST",
                      {"csrf_token": agent.csrf(login), "factor": "totp"})
    assert answer.status_code == 403


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider_default(request, tmp_path_factory):
    """Default settings: enrollment at login is off."""
    running, stop = start_provider(tmp_path_factory.mktemp("enroll-off"), request.param)
    yield running
    stop()


# -- the admin's flag: `oidc-provider users require-enrollment NAME` --------------------------------

def require_enrollment(provider, person) -> None:
    from tests.conftest import cli_home, run_cli

    run_cli(cli_home(provider), "users", "require-enrollment", person["username"])


def test_the_admin_flag_asks_for_a_factor_right_after_the_password(provider_default):
    person = provider_default.add_user(email_verified=True)
    require_enrollment(provider_default, person)
    agent = UserAgent(provider_default)
    page = agent.login(agent.authorize(client_id="web"), person["username"])  # the login itself needs one factor
    assert "Set up a second way to sign in" in page.text, page.text[:500]
    assert offered(page) == ["totp", "webauthn-key", "webauthn-platform", "sms"]  # the default list
    setup = enroll_page(agent, page, "totp")
    claims = claims_of(provider_default, agent.submit(setup, {"code": totp_of(setup).now()}))
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "otp", "mfa"]


def test_the_admin_flag_never_adds_a_factor_beside_an_existing_one(provider_default, gateway):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    person = provider_default.add_user(email_verified=True, phone=phone, phone_verified=True)
    require_enrollment(provider_default, person)
    agent = UserAgent(provider_default)
    claims = claims_of(provider_default, agent.login(agent.authorize(client_id="web"), person["username"]))
    assert claims["amr"] == ["pwd"]  # the phone could follow the password: no enrollment around it
