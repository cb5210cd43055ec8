"""NIST SP 800-63B (revision 3): authenticators and verifiers (section 5), what AAL2 and AAL3
mean (section 4), session management (section 7). Codes are read from what the real SMTP
server and SMS gateway received."""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid

import jwt
import pytest
from sqlalchemy import text

from oidc_provider.authn.acr import achieved_acr
from oidc_provider.authn.factors.recovery_codes import ALPHABET, LENGTH
from oidc_provider.authn.session import FactorUse
from oidc_provider.settings import ConfigError, load_settings
from oidc_provider.settings.provider import Lifetimes, LockoutSettings, Otp
from tests.conftest import (BACKENDS, PASSWORD, REDIRECT, UserAgent, asked_recovery_code, asked_recovery_number,
                            callback_params, factor_passed, post, recovery_codes_shown, start_provider, token_request,
                            wrong_passwords_at_once)
from tests.security.conftest import cookie_attributes, set_cookies, settings_for, submit_once
from tests.servers import email_code, sms_code, text_of
from tests.unit.test_webauthn import options_of, register
from tests.unit.webauthn_authenticator import SoftAuthenticator

clause = pytest.mark.clause

LOCKOUT = 8
FACTORS = ["password", "email-otp", "sms", "voice", "email", "totp", "recovery-code", "webauthn-key", "passkey"]
WEBAUTHN = {"webauthn-key", "webauthn-platform", "passkey"}


def nist_settings(smtp, gateway, **otp):
    return settings_for(smtp, gateway, FACTORS, otp, lockout={"max_failures": LOCKOUT, "duration": 600})


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("nist"), request.param,
                                   extra_settings=nist_settings(plain_smtp, gateway_server))
    yield running
    stop()


@pytest.fixture(scope="module", params=list(BACKENDS))
def short_lived(request, tmp_path_factory, plain_smtp, gateway_server):
    """Codes and links that expire after 2 seconds."""
    running, stop = start_provider(tmp_path_factory.mktemp("nist-short"), request.param, extra_settings=nist_settings(
        plain_smtp, gateway_server, lifetime=2, link_lifetime=2))
    yield running
    stop()


def new_person(provider) -> dict:
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    return provider.add_user(phone=phone, phone_verified=True, email_verified=True) | {"phone": phone}


def address(person) -> str:
    return f"{person['username']}@example.com"


def sms_first(provider, person) -> tuple[UserAgent, object]:
    agent = UserAgent(provider)
    return agent, post(agent, agent.authorize(client_id="web"), "start", {"login": person["username"], "factor": "sms"})


def second_step(provider, person, factor, **params):
    """A new browser: password, then the chosen factor's page."""
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa", **params), person["username"])
    assert "One more step" in choice.text, choice.text[:300]
    return agent, post(agent, choice, "start", {"factor": factor})


def id_token(provider, redirect) -> dict:
    params = callback_params(redirect)
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                      "redirect_uri": REDIRECT}).json()
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})


def failure_reasons(provider, person) -> list[str]:
    from oidc_provider.extensions import db
    from oidc_provider.models import AuditEvent

    with provider.app.app_context():
        rows = db.session.execute(db.select(AuditEvent).filter_by(user_id=person["sub"], event="factor.failed")
                                  .order_by(AuditEvent.id)).scalars()
        return [row.detail["reason"] for row in rows]


def link_in(smtp, person) -> str:
    """The sign-in link in the latest email to this person."""
    text = text_of(smtp.mailbox.to(address(person))[-1].message)
    return re.search(r"(http://\S+/interaction/link/\S+)", text).group(1)


def mfa_signed_in(provider, person, gateway) -> UserAgent:
    """Signed in with password + SMS just now: the fresh MFA sign-in the account pages demand."""
    agent, page = second_step(provider, person, "sms")
    callback_params(agent.submit(page, {"code": sms_code(gateway, person["phone"])}))
    return agent


def generate_recovery_codes(provider, person, gateway) -> list[str]:
    agent = mfa_signed_in(provider, person, gateway)
    url = f"{provider.url}/account/security/recovery-codes"
    return recovery_codes_shown(agent.go(f"{url}/generate", "POST", {"csrf_token": agent.csrf(agent.go(url))}))


def uses(provider, *factor_ids, at=None) -> list[FactorUse]:
    """What a session records for these factors, with the flows of the running configuration."""
    at = at or time.time()
    return [FactorUse(factor=f, amr=provider.op.factors.get(f).amr, flow=provider.op.factors.get(f).flow, at=at)
            for f in factor_ids]


# -- 5.1.3 out-of-band (SMS, voice) and email one-time codes ------------------------------------

@clause("NIST 800-63B 5.1.3.2: an out-of-band code is invalid once its lifetime has passed")
@pytest.mark.parametrize("factor", ["sms", "email-otp"])
def test_an_expired_code_is_refused(short_lived, gateway_server, plain_smtp, factor):
    person = new_person(short_lived)
    agent = UserAgent(short_lived)
    page = post(agent, agent.authorize(client_id="web"), "start", {"login": person["username"], "factor": factor})
    code = sms_code(gateway_server, person["phone"]) if factor == "sms" else email_code(plain_smtp, address(person))
    time.sleep(2.5)
    answer = agent.submit(page, {"code": code})
    assert answer.status_code == 401 and agent.cookie("op_session") is None


@clause("NIST 800-63B 5.1.3.2: a sign-in link is invalid once its lifetime has passed")
def test_an_expired_link_is_refused(short_lived, plain_smtp):
    person = new_person(short_lived)
    agent = UserAgent(short_lived)
    post(agent, agent.authorize(client_id="web"), "start", {"login": person["username"], "factor": "email"})
    link = link_in(plain_smtp, person)
    time.sleep(2.5)
    page = agent.go(link)
    assert page.status_code == 400 and "expired or was already used" in page.text


@clause("NIST 800-63B 5.1.3.2: authentication invalid if not completed within 10 minutes (SMS/voice codes)")
def test_code_lifetime_is_at_most_ten_minutes_by_default():
    assert Otp().lifetime <= 600
    assert Lifetimes().interaction <= 15 * 60  # the sign-in page itself expires too


@clause("NIST 800-63B 5.1.3.2: out-of-band secrets have at least 20 bits (6 digits, about 19.93, as NIST accepts)")
def test_codes_have_six_digits_at_least(provider, gateway_server):
    person = new_person(provider)
    sms_first(provider, person)
    assert re.fullmatch(r"\d{6,10}", sms_code(gateway_server, person["phone"]))
    with pytest.raises(ConfigError, match="otp.length"):
        load_settings(None, {"otp": {"length": 5}})


@clause("NIST 800-63B 5.1.3.2 / 5.2.8: an out-of-band code is accepted once (replay)")
def test_an_sms_code_is_accepted_once(provider, gateway_server):
    person = new_person(provider)
    agent, page = sms_first(provider, person)
    code = sms_code(gateway_server, person["phone"])
    url, data = agent.form_action(page), {"csrf_token": agent.csrf(page), "code": code}
    assert "code" in callback_params(agent.submit(page, {"code": code}))
    replay = agent.http.post(url, data=data, allow_redirects=False, timeout=15)
    assert not factor_passed(replay)


@clause("NIST 800-63B 5.2.8 / SPEC 7: a code submitted in parallel is accepted exactly once")
def test_parallel_submits_of_one_code_have_one_winner(provider, gateway_server):
    person = new_person(provider)
    agent, page = sms_first(provider, person)
    url = agent.form_action(page)
    data = {"csrf_token": agent.csrf(page), "code": sms_code(gateway_server, person["phone"])}
    barrier, outcomes = threading.Barrier(6), []

    def submit():
        barrier.wait()
        answer = agent.http.post(url, data=data, allow_redirects=False, timeout=30)
        outcomes.append(factor_passed(answer))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    [thread.start() for thread in threads]
    [thread.join(60) for thread in threads]
    assert sorted(outcomes) == [False] * 5 + [True]


@clause("NIST 800-63B 5.1.3.2 / 5.2.2: guessing a code is bounded: after the tries even the right code fails")
def test_a_code_dies_after_its_tries(provider, gateway_server):
    person = new_person(provider)
    agent, page = sms_first(provider, person)
    right = sms_code(gateway_server, person["phone"])
    tries = provider.op.settings.otp.max_attempts
    assert tries < LOCKOUT
    for guess in range(tries):
        assert agent.submit(page, {"code": f"{(int(right) + 1 + guess) % 10**6:06d}"}).status_code == 401
    assert agent.submit(page, {"code": right}).status_code == 401


# -- 5.2.2 throttling ---------------------------------------------------------------------------

@clause("NIST 800-63B 5.2.2: consecutive failures on one account limited to no more than 100")
def test_lockout_limit_cannot_exceed_100():
    assert LockoutSettings().max_failures <= 100
    with pytest.raises(ConfigError, match="lockout.max_failures"):
        load_settings(None, {"lockout": {"max_failures": 101}})


@clause("NIST 800-63B 5.2.2 / SPEC 7: lockout counted atomically: parallel guesses cannot pass the limit")
def test_parallel_guesses_cannot_pass_the_lockout(provider):
    person = new_person(provider)
    wrong_passwords_at_once(provider, person["username"], 16)
    reasons = failure_reasons(provider, person)
    assert len(reasons) == 16
    assert sum(1 for reason in reasons if reason != "account locked") <= LOCKOUT  # passwords actually compared
    browser = UserAgent(provider)
    assert browser.login(browser.authorize(client_id="web"), person["username"], PASSWORD).status_code == 401


@clause("NIST 800-63B 5.2.2: failures of every factor count towards one lockout; then even the right answer fails")
def test_failures_of_all_factors_add_up(provider, gateway_server):
    person = new_person(provider)
    codes = generate_recovery_codes(provider, person, gateway_server)
    for attempt in range(LOCKOUT // 2):  # wrong passwords
        agent = UserAgent(provider)
        assert agent.login(agent.authorize(client_id="web"), person["username"], f"wrong {attempt}").status_code == 401
    agent, page = sms_first(provider, person)
    for attempt in range(LOCKOUT - LOCKOUT // 2):  # wrong codes of another factor
        page = agent.submit(page, {"code": f"{attempt:06d}"})
    assert agent.submit(page, {"code": sms_code(gateway_server, person["phone"])}).status_code == 401
    browser = UserAgent(provider)
    assert browser.login(browser.authorize(client_id="web"), person["username"]).status_code == 401
    assert "account locked" in failure_reasons(provider, person)
    assert len(codes) == 10


# -- 5.1.2 look-up secrets (recovery codes) -----------------------------------------------------

@clause("NIST 800-63B 5.1.2.1: look-up secrets have at least 20 bits of entropy (ours: 60 bits)")
def test_recovery_codes_have_enough_entropy(provider, gateway_server):
    bits = LENGTH * math.log2(len(ALPHABET))
    assert bits >= 20 and round(bits) == 60
    codes = generate_recovery_codes(provider, new_person(provider), gateway_server)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(len(code.replace("-", "")) == LENGTH and set(code.replace("-", "")) <= set(ALPHABET) for code in codes)


@clause("NIST 800-63B 5.1.2.2: with fewer than 64 bits, look-up secret guesses are rate limited (5.2.2)")
def test_recovery_code_guesses_count_towards_the_lockout(provider, gateway_server):
    person = new_person(provider)
    codes = generate_recovery_codes(provider, person, gateway_server)
    agent, page = second_step(provider, person, "recovery-code")
    for attempt in range(LOCKOUT):  # the password step succeeded and reset the count
        page = agent.submit(page, {"code": f"zzzz-zzzz-zz{attempt:02d}"})
        assert page.status_code == 401
    assert agent.submit(page, {"code": asked_recovery_code(page, codes)}).status_code == 401
    assert failure_reasons(provider, person)[-1] == "account locked"


@clause("NIST 800-63B 5.1.2.2: a look-up secret is used successfully only once")
def test_a_recovery_code_works_once(provider, gateway_server):
    person = new_person(provider)
    codes = generate_recovery_codes(provider, person, gateway_server)
    agent, page = second_step(provider, person, "recovery-code")
    used = asked_recovery_code(page, codes)
    assert id_token(provider, agent.submit(page, {"code": used}))["amr"] == ["pwd", "rcv", "mfa"]
    agent, page = second_step(provider, person, "recovery-code")
    assert agent.submit(page, {"code": used}).status_code == 401


@clause("NIST 800-63B 5.1.2.2: look-up secrets stored in a form resistant to offline attacks")
def test_recovery_codes_are_not_stored_in_a_testable_form(provider, gateway_server):
    import hashlib

    person = new_person(provider)
    codes = [code.replace("-", "") for code in generate_recovery_codes(provider, person, gateway_server)]
    with provider.app.app_context():
        from oidc_provider.extensions import db

        rows = db.session.execute(text("SELECT lookup, secret, data FROM authenticators "
                                       "WHERE user_id = :u AND kind = 'recovery-code'"), {"u": person["sub"]}).all()
    stored = " ".join(str(value) for row in rows for value in row)
    assert len(rows) == 10
    for code in codes:  # neither the code nor an unkeyed hash of it: a dump alone tests no guess
        for form in (code, hashlib.sha256(code.encode()).hexdigest(),
                     hashlib.sha256(f"{person['sub']}:{code}".encode()).hexdigest()):
            assert form not in stored


@clause("NIST 800-63B 5.1.2.2: the verifier prompts for the next or a specific (numbered) secret")
def test_recovery_code_prompt_names_which_code(provider, gateway_server):
    person = new_person(provider)
    codes = generate_recovery_codes(provider, person, gateway_server)
    agent, page = second_step(provider, person, "recovery-code")
    asked = re.search(r"code (?:number |#)(\d+)", page.text)
    assert asked, "the page does not ask for a specific code"
    other = codes[(int(asked.group(1)) % len(codes))]  # not the one asked for
    assert agent.submit(page, {"code": other}).status_code == 401


@clause("NIST 800-63B 5.1.2.2: the secret asked for is accepted; the next prompt asks for the next one")
def test_the_asked_recovery_code_works_and_the_prompt_moves_to_the_next(provider, gateway_server):
    person = new_person(provider)
    codes = generate_recovery_codes(provider, person, gateway_server)
    agent, page = second_step(provider, person, "recovery-code")
    assert asked_recovery_number(page) == 1
    assert id_token(provider, agent.submit(page, {"code": codes[0]}))["amr"] == ["pwd", "rcv", "mfa"]
    agent, page = second_step(provider, person, "recovery-code")
    assert asked_recovery_number(page) == 2
    for wrong in (codes[0], codes[2]):  # the used one, an unused one not asked for: refused, still number 2
        page = agent.submit(page, {"code": wrong})
        assert page.status_code == 401 and asked_recovery_number(page) == 2
    assert id_token(provider, agent.submit(page, {"code": codes[1]}))["amr"] == ["pwd", "rcv", "mfa"]
    assert failure_reasons(provider, person)[-2:] == ["unknown or used recovery code",
                                                     "an unused recovery code, but not the next one"]


# -- 5.1.1 memorized secrets --------------------------------------------------------------------

def stored_password_hash(provider, person) -> str:
    with provider.app.app_context():
        from oidc_provider.extensions import db

        return db.session.execute(text("SELECT password_hash FROM users WHERE id = :id"),
                                  {"id": person["sub"]}).scalar_one()


@clause("NIST 800-63B 5.1.1.2: passwords stored salted and hashed with a memory-hard KDF (argon2id)")
def test_passwords_are_argon2id_hashes(provider):
    first, second = provider.add_user(), provider.add_user()  # the same password
    hashes = [stored_password_hash(provider, person) for person in (first, second)]
    for value in hashes:
        assert value.startswith("$argon2id$v=19$") and PASSWORD not in value
        params = dict(part.split("=") for part in value.split("$")[3].split(","))
        assert int(params["m"]) >= 19 * 1024 and int(params["t"]) >= 2  # OWASP minimums
        salt = value.split("$")[4]
        assert len(salt) * 6 >= 32  # at least 32 bits of salt (5.1.1.2)
    assert hashes[0] != hashes[1]


@clause("NIST 800-63B 5.1.1.2: no truncation: long passwords count to their last character")
def test_long_passwords_are_not_truncated(provider):
    long_password = "Ünïcödé and spaces " * 5 + "tail-X"  # over 64 characters, any characters
    person = provider.add_user(password=long_password)
    person["password"] = long_password
    wrong = long_password[:-1] + "Y"
    agent = UserAgent(provider)
    assert agent.login(agent.authorize(client_id="web"), person["username"], wrong).status_code == 401
    assert "code" in UserAgent(provider).sign_in(person["username"], long_password, client_id="web")


@clause("NIST 800-63B 5.1.1.2: subscriber-chosen passwords have at least 8 characters")
def test_short_passwords_are_refused(tmp_path):
    from tests.conftest import run_cli

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "provider.yaml").write_text(
        f"issuer: http://127.0.0.1:5999\ndatabase_url: sqlite:///{tmp_path / 'oidc.db'}\nkeys_dir: keys\n"
        "clients_file: config/clients.yaml\n")
    (tmp_path / "config" / "clients.yaml").write_text("clients: []\n")
    run_cli(tmp_path, "keys", "generate")
    run_cli(tmp_path, "db", "upgrade")
    refused = run_cli(tmp_path, "users", "add", "ada", "--password-stdin", input="seven77\n", ok=False)
    assert "at least 8 characters" in refused.stderr + refused.stdout
    run_cli(tmp_path, "users", "add", "ada", "--password-stdin", input="eight888\n")


# -- 4.2 AAL2 and 4.3 AAL3 ----------------------------------------------------------------------

@clause("NIST 800-63B 4.2.1: AAL2 (acr mfa) is two distinct factors: password and an SMS code")
def test_password_and_sms_is_mfa(provider, gateway_server):
    person = new_person(provider)
    agent, page = second_step(provider, person, "sms")
    claims = id_token(provider, agent.submit(page, {"code": sms_code(gateway_server, person["phone"])}))
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "sms", "mfa"]


@clause("NIST 800-63B 4.2.1: two factors of the same flow (email code + email link, SMS + voice) are not mfa")
@pytest.mark.parametrize("first, same_flow", [("email-otp", "email"), ("sms", "voice"), ("email", "email-otp")])
def test_same_flow_twice_is_not_mfa(provider, plain_smtp, gateway_server, first, same_flow):
    person = new_person(provider)
    assert achieved_acr(provider.op.levels, uses(provider, first, same_flow), time.time(), None) is None
    agent = UserAgent(provider)
    page = post(agent, agent.authorize(client_id="web", acr_values="mfa"), "start",
                {"login": person["username"], "factor": first})
    if first == "sms":
        choice = agent.submit(page, {"code": sms_code(gateway_server, person["phone"])})
    elif first == "email-otp":
        choice = agent.submit(page, {"code": email_code(plain_smtp, address(person))})
    else:
        choice = agent.submit(agent.go(link_in(plain_smtp, person)), {})
    assert "One more step" in choice.text
    assert f'name="factor" value="{same_flow}"' not in choice.text
    assert post(agent, choice, "start", {"factor": same_flow}).status_code == 400


@clause("NIST 800-63B 4.2.1: a single factor never yields the mfa level")
@pytest.mark.parametrize("factor", FACTORS)
def test_no_single_factor_is_mfa(provider, factor):
    assert achieved_acr(provider.op.levels, uses(provider, factor), time.time(), None) in (None, "phr")


@clause("NIST 800-63B 4.3.1 / 5.2.5: phishing resistance (acr phr) comes only from a WebAuthn factor")
def test_only_webauthn_yields_phr(provider):
    import itertools

    others = [f for f in FACTORS if f not in WEBAUTHN]
    for pair in itertools.combinations(others, 2):
        assert achieved_acr(provider.op.levels, uses(provider, *pair), time.time(), None) != "phr", pair
    for factor in WEBAUTHN & set(FACTORS):
        assert achieved_acr(provider.op.levels, uses(provider, "password", factor), time.time(), None,
                            next(level for level in provider.op.levels if level.value == "phr")) == "phr"


@clause("NIST 800-63B 4.3.1: asked for phr, only WebAuthn is offered; an OTP cannot reach it")
def test_phr_offers_only_webauthn(provider, gateway_server):
    person = new_person(provider)
    origin = provider.url.replace("127.0.0.1", "localhost")
    key = SoftAuthenticator(origin)
    register(mfa_signed_in(provider, person, gateway_server), key, "webauthn-key")
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values="phr"), person["username"])
    offered = set(re.findall(r'name="factor" value="([^"]+)"', choice.text))
    assert offered and offered <= WEBAUTHN
    assert post(agent, choice, "start", {"factor": "sms"}).status_code == 400
    page = post(agent, choice, "start", {"factor": "webauthn-key"})
    claims = id_token(provider, agent.submit(page, {"credential": json.dumps(key.get(options_of(page)))}))
    assert claims["acr"] == "phr"


@clause("NIST 800-63B 4.3.1: an OTP session never answers phr (prompt=none gets an error, not a code)")
def test_otp_session_never_answers_phr(provider, gateway_server):
    person = new_person(provider)
    agent, page = second_step(provider, person, "sms")
    assert id_token(provider, agent.submit(page, {"code": sms_code(gateway_server, person["phone"])}))["acr"] == "mfa"
    answer = callback_params(agent.authorize(client_id="web", acr_values="phr", prompt="none"))
    assert "code" not in answer and answer["error"] in ("unmet_authentication_requirements", "login_required",
                                                        "interaction_required")
    essential = '{"id_token": {"acr": {"essential": true, "values": ["phr"]}}}'
    answer = callback_params(agent.login(agent.authorize(client_id="web", claims=essential, prompt="login"),
                                         person["username"]))
    assert answer["error"] == "unmet_authentication_requirements"


# -- 4.2.3 reauthentication, 7.1 sessions -------------------------------------------------------

@clause("NIST 800-63B 4.2.3: reauthentication at least once per 12 hours (session lifetime)")
def test_session_lifetime_is_at_most_twelve_hours(provider):
    assert Lifetimes().session <= 12 * 3600 and provider.op.settings.lifetimes.session <= 12 * 3600


@clause("NIST 800-63B 4.2.3: reauthentication for AAL2 repeats both factors (prompt=login, acr mfa)")
def test_reauthentication_asks_both_factors_again(provider, gateway_server):
    person = new_person(provider)
    agent, page = second_step(provider, person, "sms")
    first = id_token(provider, agent.submit(page, {"code": sms_code(gateway_server, person["phone"])}))
    time.sleep(1.1)
    page = agent.authorize(client_id="web", acr_values="mfa", prompt="login")
    assert 'name="password"' in page.text
    choice = agent.login(page, person["username"])
    assert "One more step" in choice.text, "the earlier SMS must not count for the new login"
    page = post(agent, choice, "start", {"factor": "sms"})
    again = id_token(provider, agent.submit(page, {"code": sms_code(gateway_server, person["phone"])}))
    assert again["acr"] == "mfa" and again["auth_time"] > first["auth_time"]


@clause("NIST 800-63B 4.2.3 / OIDC max_age: a stale session is reauthenticated before a code is issued")
def test_max_age_reauthenticates(provider, gateway_server):
    person = new_person(provider)
    agent, page = second_step(provider, person, "sms")
    id_token(provider, agent.submit(page, {"code": sms_code(gateway_server, person["phone"])}))
    time.sleep(1.1)
    page = agent.authorize(client_id="web", max_age="1")
    assert page.status_code == 200 and 'name="password"' in page.text


@clause("NIST 800-63B 7.1: session secrets have at least 64 bits of entropy, are fresh per session and HttpOnly")
def test_session_secret_is_random_and_not_scriptable(provider):
    person = new_person(provider)
    cookies = []
    for _ in range(3):
        agent = UserAgent(provider)
        answer = submit_once(agent, agent.authorize(client_id="web"),
                             {"login": person["username"], "password": PASSWORD, "action": "login"})
        cookies.append(set_cookies(answer)[provider.cookie_name("op_session")])
    values = [header.split(";")[0].split("=", 1)[1] for header in cookies]
    assert len(set(values)) == 3 and all(len(value) * 6 >= 64 for value in values)
    for header in cookies:
        attributes = cookie_attributes(header)
        assert "httponly" in attributes and attributes["path"] == "/"
        assert "domain" not in attributes  # host-only (7.1.1: the minimum practical set of hostnames)


@clause("NIST 800-63B 7.1: a sign-in in progress is bound to its browser; another cannot continue it")
def test_sign_in_is_bound_to_its_browser(provider):
    person = new_person(provider)
    victim = UserAgent(provider)
    choice = victim.login(victim.authorize(client_id="web", acr_values="mfa"), person["username"])
    attacker = UserAgent(provider)
    page = attacker.go(choice.url)
    assert page.status_code == 400 and "another browser" in page.text
