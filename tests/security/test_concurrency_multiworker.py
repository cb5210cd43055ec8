"""Races through a real production server (SPEC 7): `oidc-provider serve` with two Granian
workers on PostgreSQL and Redis (tests/production.py). For every single-use thing, parallel
requests released by one barrier (each on its own connection, so the workers share them)
must have exactly one winner; every attempt counter must stop at its limit however many
answers arrive at once (the Zitadel GHSA-7h8m class of bug). Each case checks what the
clients saw and what the durable state (database, audit log) says happened."""

from __future__ import annotations

import json
import re
import time
import uuid

import pyotp
import pytest
import requests

from oidc_provider.extensions import db
from oidc_provider.models import AuditEvent, Authenticator, RefreshToken, User
from tests.conftest import (PASSWORD, REDIRECT, UserAgent, _free_port, asked_recovery_code, callback_params,
                            factor_passed, pkce_pair, post, token_request)
from tests.dpop_proofs import DPoPKey
from tests.multiworker import (AUTH0, DEVICE_GRANT, add_served_clients, from_address, race, same_browser,
                               worker_pids)
from tests.production import production_home, serve
from tests.servers import email_code, sms_code, text_of
from tests.unit.webauthn_authenticator import SoftAuthenticator

clause = pytest.mark.clause

WORKERS = 2
RACERS = 8  # two workers with four threads each: every racer is being served at the same time
OTP_TRIES = 3  # otp.max_attempts
MFA_TOKEN_TRIES = 3  # mfa_api.max_attempts
LOCKOUT = 10  # lockout.max_failures
USER_CODE_TRIES = 5  # device_flow.user_code_attempts per address


@pytest.fixture(scope="module")
def op(tmp_path_factory, plain_smtp, gateway_server):
    port = _free_port()
    home = production_home(tmp_path_factory.mktemp("races"), f"http://127.0.0.1:{port}", {
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms", "timeout": 5},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000, "per_user_limit": 50, "per_destination_limit": 50,
                "max_attempts": OTP_TRIES},
        "lockout": {"max_failures": LOCKOUT},
        "mfa_api": {"max_attempts": MFA_TOKEN_TRIES},
        "totp_recovery": {"max_tries": 20},  # the mfa_token's own limit is the one under test
        "device_flow": {"enabled": True, "interval": 1, "user_code_attempts": USER_CODE_TRIES},
        "webauthn": {"rp_id": "localhost", "origins": [f"http://localhost:{port}"]},
    })
    add_served_clients(home)
    served = serve(home, port, workers=WORKERS)
    try:
        assert len(worker_pids(served)) == WORKERS
        yield home.provider(served.url)
    finally:
        served.stop()
        home.close()


@pytest.fixture
def person(op):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    return op.add_user(phone=phone, phone_verified=True, email_verified=True) | {"phone": phone}


def address(person) -> str:
    return f"{person['username']}@example.com"


# -- what the durable state says -------------------------------------------------------------------

def audit(op, user_id: str, event: str) -> list[dict]:
    with op.app.app_context():
        rows = db.session.execute(db.select(AuditEvent).filter_by(user_id=user_id, event=event)).scalars()
        return [row.detail for row in rows]


def refresh_rows(op, user_id: str) -> list[RefreshToken]:
    with op.app.app_context():
        return list(db.session.execute(db.select(RefreshToken).filter_by(user_id=user_id)).scalars())


def account(op, user_id: str) -> User:
    with op.app.app_context():
        user = db.session.get(User, user_id)
        db.session.expunge(user)
        return user


# -- what the clients saw --------------------------------------------------------------------------

def statuses(answers) -> list:
    return sorted(a.status_code if isinstance(a, requests.Response) else type(a).__name__ for a in answers)


def one_winner(answers, won) -> requests.Response:
    winners = [answer for answer in answers if won(answer)]
    assert len(winners) == 1, statuses(answers)
    assert all(isinstance(a, requests.Response) and a.status_code < 500 for a in answers), statuses(answers)
    return winners[0]


def form_post(session: requests.Session, url: str, data: dict) -> requests.Response:
    return session.post(url, data=data, allow_redirects=False, timeout=60)


def hidden_fields(page) -> dict:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))


def code_page(op, person, factor: str) -> tuple[UserAgent, requests.Response]:
    """A new browser whose sign-in starts with `factor` (a code or link was sent)."""
    agent = UserAgent(op)
    page = post(agent, agent.authorize(client_id="web"), "start", {"login": person["username"], "factor": factor})
    assert page.status_code == 200, page.text[:300]
    return agent, page


def race_form(agent: UserAgent, page, fields: dict, count: int = RACERS) -> list:
    """The page's form posted `count` times at once by the same browser (its cookies, new connections)."""
    url, data = agent.form_action(page), {**hidden_fields(page), **fields}
    return race(count, lambda _: form_post(same_browser(agent), url, data))


def second_step(op, person, factor: str, acr: str = "mfa") -> tuple[UserAgent, requests.Response]:
    """A new browser: the password, then the step page of `factor`."""
    agent = UserAgent(op)
    choice = agent.login(agent.authorize(client_id="web", acr_values=acr), person["username"])
    assert f'name="factor" value="{factor}"' in choice.text, choice.text[:500]
    return agent, post(agent, choice, "start", {"factor": factor})


# -- single use: exactly one winner ----------------------------------------------------------------

@clause("RFC 6749 4.1.2 / RFC 9700 4.2.4: an authorization code is redeemed once, whichever worker gets it")
def test_an_authorization_code_raced_across_workers_is_redeemed_once(op, person):
    verifier, challenge = pkce_pair()
    code = UserAgent(op).sign_in(person["username"], client_id="web", scope="openid offline_access",
                                 code_challenge=challenge, code_challenge_method="S256")["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    answers = race(RACERS, lambda _: token_request(op, data))
    one_winner(answers, lambda a: a.status_code == 200)
    assert {a.json()["error"] for a in answers if a.status_code != 200} == {"invalid_grant"}
    assert len(refresh_rows(op, person["sub"])) == 1  # one token set was ever issued


@clause("RFC 9700 4.14.2: a refresh token rotates once; concurrent uses get one new token between them")
def test_a_refresh_token_raced_across_workers_rotates_once(op, person):
    code = UserAgent(op).sign_in(person["username"], client_id="web", scope="openid offline_access")["code"]
    tokens = token_request(op, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}).json()
    answers = race(RACERS, lambda _: token_request(op, {"grant_type": "refresh_token",
                                                        "refresh_token": tokens["refresh_token"]}))
    one_winner(answers, lambda a: a.status_code == 200)
    assert {a.json()["error"] for a in answers if a.status_code != 200} == {"invalid_grant"}
    rows = refresh_rows(op, person["sub"])
    assert len(rows) == 2 and len({row.family_id for row in rows}) == 1  # the original and one successor


@clause("NIST SP 800-63B 5.1.3.2 / SPEC 7: an email OTP is accepted once from parallel submits")
def test_an_email_code_raced_across_workers_signs_in_once(op, person, plain_smtp):
    agent, page = code_page(op, person, "email-otp")
    answers = race_form(agent, page, {"code": email_code(plain_smtp, address(person))})
    one_winner(answers, factor_passed)
    assert len(audit(op, person["sub"], "factor.succeeded")) == 1


@clause("NIST SP 800-63B 5.1.3.2 / SPEC 7: an SMS OTP is accepted once from parallel submits")
def test_an_sms_code_raced_across_workers_signs_in_once(op, person, gateway_server):
    agent, page = code_page(op, person, "sms")
    answers = race_form(agent, page, {"code": sms_code(gateway_server, person["phone"])})
    one_winner(answers, factor_passed)
    assert [entry["factor"] for entry in audit(op, person["sub"], "factor.succeeded")] == ["sms"]


@clause("SPEC 7: a magic link is used once, also when its button is pressed in parallel")
def test_a_magic_link_raced_across_workers_is_used_once(op, person, plain_smtp):
    agent, _ = code_page(op, person, "email")
    message = plain_smtp.mailbox.to(address(person), at_least=1)[-1].message
    link = re.search(r"(http://\S+/interaction/link/\S+)", text_of(message)).group(1)
    shown = agent.go(link)  # a GET shows the button and uses nothing up
    answers = race_form(agent, shown, {})
    winner = one_winner(answers, lambda a: a.status_code == 303)
    assert {a.status_code for a in answers if a is not winner} == {400}
    assert "code" in callback_params(agent.go(agent.provider.url + winner.headers["Location"]))
    assert [entry["factor"] for entry in audit(op, person["sub"], "factor.succeeded")] == ["email"]


@clause("NIST SP 800-63B 5.1.2.1: a look-up secret is used once, even by sign-ins racing on two workers")
def test_a_recovery_code_raced_by_parallel_sign_ins_works_once(op, person):
    with op.app.app_context():
        codes = op.op.factors.get("recovery-code").generate(db.session.get(User, person["sub"]))
    steps = [second_step(op, person, "recovery-code") for _ in range(RACERS)]

    def answer(index):
        agent, page = steps[index]
        return form_post(same_browser(agent), agent.form_action(page),
                         {**hidden_fields(page), "code": asked_recovery_code(page, codes)})

    one_winner(race(RACERS, answer), factor_passed)
    [used] = audit(op, person["sub"], "recovery_code.used")
    assert used["remaining"] == len(codes) - 1
    with op.app.app_context():
        assert op.op.factors.get("recovery-code").remaining(db.session.get(User, person["sub"])) == len(codes) - 1


@clause("WebAuthn L2 7.2 step 12 / SPEC 7: a challenge is answered once; a replayed assertion in parallel fails")
def test_a_webauthn_assertion_raced_across_workers_counts_once(op):
    person = op.add_user()  # a password only: adding the first key needs no second factor
    origin = op.url.replace("127.0.0.1", "localhost")
    key = SoftAuthenticator(origin)
    agent = UserAgent(op)
    assert "code" in agent.sign_in(person["username"], client_id="web")
    base = f"{op.url}/account/security/webauthn"
    csrf = agent.csrf(agent.go(f"{base}/add"))
    options = agent.http.post(f"{base}/options", data={"csrf_token": csrf, "kind": "webauthn-key", "name": "Key"},
                              timeout=15).json()
    added = agent.go(f"{base}/register", "POST", {"csrf_token": csrf, "credential": json.dumps(key.create(options))})
    assert added.status_code == 200 and "could not be added" not in added.text

    browser, page = second_step(op, person, "webauthn-key", acr="phr")
    block = re.search(r'<script type="application/json" id="webauthn-options">(.*?)</script>', page.text, re.S)
    assertion = key.get(json.loads(block.group(1)))
    answers = race_form(browser, page, {"credential": json.dumps(assertion)})
    one_winner(answers, factor_passed)
    succeeded = [e for e in audit(op, person["sub"], "factor.succeeded") if e["factor"] == "webauthn-key"]
    assert len(succeeded) == 1
    with op.app.app_context():
        stored = db.session.execute(db.select(Authenticator).filter_by(user_id=person["sub"],
                                                                       kind="webauthn-key")).scalar_one()
        assert stored.last_used_at is not None


@clause("RFC 9126 7.3: a request_uri is single use, also when parallel requests reach different workers")
def test_a_pushed_request_uri_raced_across_workers_starts_one_login(op):
    pushed = requests.post(f"{op.url}/oidc/par", auth=("web", op.secrets["web"]), timeout=15, data={
        "response_type": "code", "scope": "openid", "redirect_uri": REDIRECT})
    assert pushed.status_code == 201, pushed.text
    url = f"{op.url}/oidc/auth?client_id=web&request_uri={pushed.json()['request_uri']}"
    answers = race(RACERS, lambda _: requests.get(url, allow_redirects=False, timeout=60))
    one_winner(answers, lambda a: a.status_code == 303 and "/interaction/" in a.headers["Location"])
    assert sum("error=invalid_request_uri" in a.headers.get("Location", "") for a in answers) == RACERS - 1


@clause("RFC 9449 11.1: a DPoP proof's jti is accepted once, whichever worker sees it first")
def test_one_dpop_proof_raced_across_workers_is_accepted_once(op):
    proof = DPoPKey().proof("POST", f"{op.url}/oidc/token")

    def use(_):
        return requests.post(f"{op.url}/oidc/token", data={"grant_type": "client_credentials"}, timeout=60,
                             auth=("backend", op.secrets["backend"]), headers={"DPoP": proof})

    answers = race(RACERS, use)
    winner = one_winner(answers, lambda a: a.status_code == 200)
    assert winner.json()["token_type"] == "DPoP"
    assert {a.json()["error"] for a in answers if a is not winner} == {"invalid_dpop_proof"}


def device_request(op) -> dict:
    answer = requests.post(f"{op.url}/oidc/device_authorization", data={"client_id": "tv-app", "scope": "openid"},
                           timeout=15)
    assert answer.status_code == 200, answer.text
    return answer.json()


def poll(op, device_code: str) -> requests.Response:
    return token_request(op, {"grant_type": DEVICE_GRANT, "device_code": device_code}, client="tv-app", auth="none")


@clause("RFC 8628 3.5 / SPEC 7: an approved device_code gives tokens to one poll among parallel ones")
def test_an_approved_device_code_raced_across_workers_gives_tokens_once(op, person):
    device = device_request(op)
    agent = UserAgent(op)
    page = agent.go(f"{op.url}/device")
    page = agent.login(agent.submit(page, {"user_code": device["user_code"]}), person["username"])
    done = agent.submit(page, {"action": "approve"})
    assert 'data-device="approved"' in done.text, done.text[:300]
    answers = race(RACERS, lambda _: poll(op, device["device_code"]))
    winner = one_winner(answers, lambda a: a.status_code == 200)
    assert "access_token" in winner.json()
    assert {a.json()["error"] for a in answers if a is not winner} == {"invalid_grant"}


def mfa_call(op, grant: str, **data) -> requests.Response:
    body = {"grant_type": grant, "client_id": "ropc", "client_secret": op.secrets["ropc"], **data}
    return requests.post(f"{op.url}/oauth/token", data=body, timeout=60)


def mfa_token(op, person) -> str:
    answer = mfa_call(op, "password", username=person["username"], password=PASSWORD)
    assert answer.status_code == 403 and answer.json()["error"] == "mfa_required", answer.text
    return answer.json()["mfa_token"]


def with_totp_app(op) -> tuple[dict, pyotp.TOTP]:
    """A user with only an email address, then Auth0's journey: mfa_required, /mfa/associate
    an app, its first code."""
    person = op.add_user(email_verified=True)
    token = mfa_token(op, person)
    started = requests.post(f"{op.url}/mfa/associate", json={"authenticator_types": ["otp"]}, timeout=15,
                            headers={"Authorization": f"Bearer {token}"})
    assert started.status_code == 200, started.text
    app = pyotp.TOTP(started.json()["secret"])
    assert mfa_call(op, AUTH0 + "mfa-otp", mfa_token=token, otp=app.now()).status_code == 200
    return person, app


@clause("SPEC 7 / Auth0 MFA API: an mfa_token is used up by one success among parallel right answers")
def test_an_mfa_token_raced_across_workers_signs_in_once(op):
    person, app = with_totp_app(op)
    token, code = mfa_token(op, person), app.at(time.time() + app.interval)
    answers = race(RACERS, lambda _: mfa_call(op, AUTH0 + "mfa-otp", mfa_token=token, otp=code))
    winner = one_winner(answers, lambda a: a.status_code == 200)
    assert "access_token" in winner.json()
    # more answers than the token's tries: the others are refused as used or as one too many
    assert {a.json()["error"] for a in answers if a is not winner} <= {"invalid_grant", "too_many_attempts"}


def reset_requested(op, person, plain_smtp) -> tuple[UserAgent, str]:
    agent = UserAgent(op)
    page = agent.authorize(client_id="web")
    form = agent.go(op.url + re.search(r'href="([^"]+)" id="forgot-password"', page.text).group(1))
    assert "Check your email" in agent.submit(form, {"login": person["username"]}).text
    message = [r.message for r in plain_smtp.mailbox.to(address(person), at_least=1)
               if r.message["Subject"] == "Reset your password"][-1]
    return agent, re.search(r"(http://\S+/password-reset/\S+)", text_of(message)).group(1)


@clause("OWASP ASVS 2.5.6 / SPEC 7: a password reset link is followed once and the new password applied once")
def test_a_password_reset_link_raced_across_workers_is_used_once(op, plain_smtp):
    person = op.add_user(email_verified=True)  # no other factor: the new password comes right after the link
    agent, link = reset_requested(op, person, plain_smtp)
    shown = agent.go(link)
    answers = race_form(agent, shown, {})
    winner = one_winner(answers, lambda a: a.status_code == 303)
    assert {a.status_code for a in answers if a is not winner} == {400}
    assert len(audit(op, person["sub"], "password_reset.link_followed")) == 1

    choose = agent.go(op.url + winner.headers["Location"])
    assert "Choose a new password" in choose.text, choose.text[:300]
    answers = race_form(agent, choose, {"password": "a brand new passphrase", "repeat": "a brand new passphrase"})
    # one applies it (303); those that meet the spent link get 400; one that arrives after the
    # winner has closed the reset is sent back to the login (303): applied once either way
    assert 303 in statuses(answers) and set(statuses(answers)) <= {303, 400}, statuses(answers)
    assert len(audit(op, person["sub"], "password.reset")) == 1


# -- attempt counters: never raced past their limit -------------------------------------------------

@clause("NIST SP 800-63B 5.2.2 / GHSA-7h8m: parallel wrong OTPs get no more than the allowed tries")
def test_parallel_wrong_codes_never_get_more_than_the_allowed_tries(op, person, plain_smtp):
    agent, page = code_page(op, person, "email-otp")
    right = email_code(plain_smtp, address(person))
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    answers = race_form(agent, page, {"code": wrong})
    assert statuses(answers) == [401] * RACERS
    checked = [e for e in audit(op, person["sub"], "factor.failed") if e["reason"] == "wrong code"]
    assert 1 <= len(checked) <= OTP_TRIES, [e["reason"] for e in audit(op, person["sub"], "factor.failed")]
    late = agent.submit(page, {"code": right})  # the right code, after the limit: the code is dead
    assert late.status_code == 401 and not factor_passed(late)
    assert not account(op, person["sub"]).locked_until  # refused by the code's own limit, not the lockout


@clause("NIST SP 800-63B 5.2.2 / GHSA-7h8m: parallel wrong passwords never pass the lockout threshold")
def test_parallel_wrong_passwords_stop_at_the_lockout_threshold(op, person):
    agent = UserAgent(op)
    page = agent.authorize(client_id="web")
    answers = race_form(agent, page, {"login": person["username"], "password": "guess", "action": "login"},
                        count=3 * LOCKOUT)
    assert statuses(answers) == [401] * (3 * LOCKOUT)
    reasons = [e["reason"] for e in audit(op, person["sub"], "factor.failed")]
    assert len([r for r in reasons if r != "account locked"]) <= LOCKOUT, reasons  # passwords actually compared
    assert reasons.count("account locked") >= 2 * LOCKOUT
    assert account(op, person["sub"]).locked_until > time.time()
    fresh = UserAgent(op)
    refused = fresh.login(fresh.authorize(client_id="web"), person["username"])
    assert refused.status_code == 401  # the right password while locked


@clause("RFC 8628 5.1 / GHSA-7h8m: parallel wrong user codes stay within the per-address limit")
def test_parallel_wrong_user_codes_stay_within_the_limit(op, person):
    device = device_request(op)
    agent = from_address(UserAgent(op), "127.0.0.2")  # its own address: its own budget
    page = agent.go(f"{op.url}/device")
    answers = race_form(agent, page, {"user_code": "BBBB-BBBB"}, count=3 * USER_CODE_TRIES)
    codes = statuses(answers)
    assert set(codes) <= {400, 429} and codes.count(400) <= USER_CODE_TRIES, codes
    with op.app.app_context():
        failed = db.session.execute(db.select(AuditEvent).filter_by(event="device.code_failed",
                                                                    ip="127.0.0.2")).scalars().all()
    assert 1 <= len(failed) <= USER_CODE_TRIES  # compared from that address: at most its budget
    right = agent.submit(page, {"user_code": device["user_code"]})
    assert right.status_code == 429  # the limit holds for the right code too


@clause("SPEC 7 / GHSA-7h8m: parallel wrong answers on one mfa_token get no more than its tries")
def test_parallel_wrong_answers_on_one_mfa_token_stop_at_its_limit(op):
    person, app = with_totp_app(op)
    valid = {app.at(time.time() + offset) for offset in (-60, -30, 0, 30, 60)}
    wrong = next(f"{n:06d}" for n in range(1000, 999_999, 7919) if f"{n:06d}" not in valid)
    token = mfa_token(op, person)
    answers = race(RACERS, lambda _: mfa_call(op, AUTH0 + "mfa-otp", mfa_token=token, otp=wrong))
    bodies = [a.json() for a in answers]
    checked = [b for b in bodies if b.get("error_description") == "Invalid otp_code."]
    assert 1 <= len(checked) <= MFA_TOKEN_TRIES, bodies
    assert all(b["error"] in ("invalid_grant", "too_many_attempts") for b in bodies), bodies
    refused = [e for e in audit(op, person["sub"], "factor.failed") if e.get("via") == "mfa_api"]
    assert len([e for e in refused if "mfa_token" not in e["reason"]]) <= MFA_TOKEN_TRIES, refused
    late = mfa_call(op, AUTH0 + "mfa-otp", mfa_token=token, otp=app.at(time.time() + app.interval))
    assert late.status_code in (400, 429) and "access_token" not in late.json()
