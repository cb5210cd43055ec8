"""Self-service password reset as a person uses it: "Forgot password?" on the sign-in page, a
link read from what the SMTP server received, a second factor when the account has one, then
a new password. Attacks: an unknown account, a reused, expired or forwarded link, a reset
that tries to skip the second factor or the lockout."""

from __future__ import annotations

import re
import time

import jwt
import pyotp
import pytest

from tests.conftest import BACKENDS, PASSWORD, REDIRECT, UserAgent, callback_params, interaction_uid, post, \
    start_provider, token_request
from tests.servers import text_of

NEW_PASSWORD = "a brand new passphrase"


def settings(smtp, gateway, **extra):
    return {
        "email": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "timeout": 5},
        "sms": {"gateway": "webhook", "url": f"{gateway.url}/sms", "timeout": 5},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000, "per_user_limit": 3},
        "lockout": {"max_failures": 4},
        **extra,
    }


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("reset"), request.param,
                                   extra_settings=settings(plain_smtp, gateway_server))
    yield running
    stop()


@pytest.fixture
def person(provider):
    return provider.add_user(email_verified=True)


def address(person) -> str:
    return f"{person['username']}@example.com"


def mails(smtp, to: str, subject: str) -> list:
    return [r.message for r in smtp.mailbox.to(to) if r.message["Subject"] == subject]


def reset_link(smtp, to: str) -> str:
    messages = mails(smtp, to, "Reset your password")
    assert messages, f"no reset email reached {to}"
    return re.search(r"(http://\S+/password-reset/\S+)", text_of(messages[-1])).group(1)


def ask_reset(agent: UserAgent, login: str):
    """From the sign-in page: "Forgot password?", then the username or email."""
    page = agent.authorize(client_id="web")
    forgot = re.search(r'href="([^"]+)" id="forgot-password"', page.text)
    assert forgot, page.text[:500]
    form = agent.go(agent.provider.url + forgot.group(1))
    assert "Reset your password" in form.text
    return agent.submit(form, {"login": login})


def follow(agent: UserAgent, link: str):
    """Open the emailed link (a GET only shows a button) and continue."""
    shown = agent.go(link)
    assert shown.status_code == 200 and "Continue" in shown.text, shown.text[:500]
    return agent.submit(shown, {})


def choose(agent: UserAgent, page, password=NEW_PASSWORD, repeat=None):
    assert "Choose a new password" in page.text, page.text[:500]
    return agent.submit(page, {"password": password, "repeat": password if repeat is None else repeat})


def signs_in(provider, username, password, **params) -> bool:
    """Whether a new browser gets a code with this password (and nothing else)."""
    agent = UserAgent(provider)
    answer = agent.login(agent.authorize(client_id="web", **params), username, password)
    return answer.status_code in (302, 303) and "code" in callback_params(answer)


def id_token_claims(provider, redirect) -> dict:
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": callback_params(redirect)["code"],
                                      "redirect_uri": REDIRECT}).json()
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})


def audit(provider, event, user_id) -> list[dict]:
    from oidc_provider.extensions import db
    from oidc_provider.models import AuditEvent

    with provider.app.app_context():
        rows = db.session.execute(db.select(AuditEvent).filter_by(event=event, user_id=user_id)).scalars()
        return [row.detail for row in rows]


# -- without a second factor -------------------------------------------------------------------------

def test_a_reset_by_email_sets_the_new_password_and_signs_everyone_out(provider, person, plain_smtp):
    # signed in elsewhere, with a refresh token
    elsewhere = UserAgent(provider)
    tokens = token_request(provider, {"grant_type": "authorization_code", "redirect_uri": REDIRECT, "code":
                                      elsewhere.sign_in(person["username"], client_id="web",
                                                        scope="openid offline_access")["code"]}).json()
    assert "refresh_token" in tokens

    agent = UserAgent(provider)
    sent = ask_reset(agent, address(person))
    assert sent.status_code == 200 and "Check your email" in sent.text
    done = choose(agent, follow(agent, reset_link(plain_smtp, address(person))))
    # the reset signs nobody in: the sign-in page comes back and says what happened
    assert done.status_code == 200 and "Your password has been changed" in done.text
    assert 'name="password"' in done.text and agent.cookie("op_session") is None

    assert not signs_in(provider, person["username"], PASSWORD)
    claims = id_token_claims(provider, agent.login(done, person["username"], NEW_PASSWORD))
    assert claims["sub"] == person["sub"] and claims["amr"] == ["pwd"]

    refreshed = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    silent = callback_params(elsewhere.authorize(client_id="web", prompt="none"))
    assert silent["error"] == "login_required"  # the other browser's session ended too

    notice = mails(plain_smtp, address(person), "Your password was changed")
    assert len(notice) == 1 and person["username"] in text_of(notice[0])
    assert "signed out" in text_of(notice[0])
    [entry] = audit(provider, "password.reset", person["sub"])
    assert entry["factors"] == ["email"] and entry["token_families_revoked"] == 1


def test_a_link_works_once(provider, person, plain_smtp):
    agent = UserAgent(provider)
    ask_reset(agent, person["username"])
    link = reset_link(plain_smtp, address(person))
    password_page = follow(agent, link)
    replay = agent.go(link)
    assert replay.status_code == 400 and "expired or was already used" in replay.text
    choose(agent, password_page)
    again = UserAgent(provider).go(link)
    assert again.status_code == 400 and "expired or was already used" in again.text


def test_a_new_request_kills_the_previous_link(provider, person, plain_smtp):
    agent = UserAgent(provider)
    ask_reset(agent, person["username"])
    first = reset_link(plain_smtp, address(person))
    sent = ask_reset(agent, person["username"])
    assert "Check your email" in sent.text
    second = reset_link(plain_smtp, address(person))
    assert first != second
    assert agent.go(first).status_code == 400
    assert "Choose a new password" in follow(agent, second).text


def test_a_link_opened_in_another_browser_changes_nothing(provider, person, plain_smtp):
    agent = UserAgent(provider)
    ask_reset(agent, person["username"])
    link = reset_link(plain_smtp, address(person))
    other = UserAgent(provider)
    shown = other.go(link)
    assert shown.status_code == 400 and "in the browser where you asked" in shown.text
    assert "Continue" not in shown.text
    assert "Choose a new password" in follow(agent, link).text  # still good where it was asked for


def test_the_new_password_must_be_acceptable(provider, person, plain_smtp):
    agent = UserAgent(provider)
    ask_reset(agent, person["username"])
    page = follow(agent, reset_link(plain_smtp, address(person)))
    short = choose(agent, page, "short")
    assert short.status_code == 400 and "at least 8 characters" in short.text
    differ = choose(agent, short, NEW_PASSWORD, "something else entirely")
    assert differ.status_code == 400 and "not the same" in differ.text
    assert signs_in(provider, person["username"], PASSWORD)


# -- no enumeration, limits ------------------------------------------------------------------------

def test_an_unknown_account_gets_the_same_answer(provider, person, plain_smtp):
    unconfirmed = provider.add_user()  # an email address that was never confirmed gets nothing either
    before = len(plain_smtp.mailbox.all())
    answers = {}
    for name in (person["username"], "nobody-at-all", unconfirmed["username"]):
        page = ask_reset(UserAgent(provider), name)
        answers[name] = (page.status_code, re.sub(r"\s+", " ", page.text.replace(name, "NAME")))
        answers[name] = (answers[name][0], re.sub(r'value="[^"]+"', "", answers[name][1]))
        answers[name] = (answers[name][0], re.sub(r"/interaction/[^/\"]+/", "/interaction/UID/", answers[name][1]))
    assert len(set(answers.values())) == 1
    assert len(plain_smtp.mailbox.all()) == before + 1  # only the real, confirmed account got mail
    assert mails(plain_smtp, address(person), "Reset your password")
    assert not mails(plain_smtp, f"{unconfirmed['username']}@example.com", "Reset your password")


def test_the_per_account_limit_is_silent(provider, person, plain_smtp):
    """Past the per-account limit nothing more is sent, and the page still says the same."""
    agent = UserAgent(provider)
    for _ in range(5):
        page = ask_reset(agent, person["username"])
        assert page.status_code == 200 and "Check your email" in page.text
    assert len(mails(plain_smtp, address(person), "Reset your password")) == 3  # per_user_limit


def test_the_per_ip_limit_and_cool_down_answer_the_same_for_every_name(tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("reset-limits"), "sqlite-sql", extra_settings=settings(
        plain_smtp, gateway_server, otp={"resend_cooldown": 60, "per_ip_limit": 3}))
    try:
        person = running.add_user(email_verified=True)
        agent = UserAgent(running)
        assert "Check your email" in ask_reset(agent, person["username"]).text
        again = agent.submit(agent.go(agent.last_page.url), {"login": "nobody-at-all"})
        assert again.status_code == 429 and "moments ago" in again.text  # the cool-down of this login
        for name in ("nobody-1", "nobody-2"):
            ask_reset(UserAgent(running), name)
        refused = ask_reset(UserAgent(running), person["username"])
        assert refused.status_code == 429 and "Too many" in refused.text
    finally:
        stop()


# -- with a second factor ---------------------------------------------------------------------------

def enroll_totp(provider, person) -> pyotp.TOTP:
    """Set up an app on the account page, confirmed with the previous step's code (so the current
    step is still unused for the test)."""
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    url = f"{provider.url}/account/security/totp"
    page = agent.go(f"{url}/enroll", "POST", {"csrf_token": agent.csrf(agent.go(url))})
    secret = re.search(r'<code id="totp-secret">([A-Z2-7 ]+)</code>', page.text).group(1).replace(" ", "")
    totp = pyotp.TOTP(secret)
    done = agent.go(f"{url}/confirm", "POST", {"csrf_token": agent.csrf(page), "code": totp.at(time.time() - 30)})
    assert 'data-totp="enrolled"' in done.text, done.text[:500]
    return totp


def test_a_user_with_totp_must_also_pass_it(provider, person, plain_smtp):
    totp = enroll_totp(provider, person)
    agent = UserAgent(provider)
    ask_reset(agent, person["username"])
    verify = follow(agent, reset_link(plain_smtp, address(person)))
    assert "Confirm it is you" in verify.text and "the email alone is not enough" in verify.text
    offered = re.findall(r'name="factor" value="([^"]+)"', verify.text)
    assert offered == ["totp"]  # no email factor: the link already was the email

    # skipping the factor: neither the password page nor an email factor gets through
    skipped = agent.go(f"{provider.url}/interaction/{interaction_uid(verify)}/reset/password", "POST",
                       {"csrf_token": agent.csrf(verify), "password": NEW_PASSWORD, "repeat": NEW_PASSWORD})
    assert "Confirm it is you" in skipped.text
    refused = post(agent, verify, "start", {"factor": "email-otp"})
    assert refused.status_code == 400 and "cannot be used for this step" in refused.text
    code_page = post(agent, verify, "start", {"factor": "totp"})
    wrong = agent.submit(code_page, {"code": "000000" if totp.now() != "000000" else "111111"})
    assert wrong.status_code == 401
    assert signs_in(provider, person["username"], PASSWORD)  # the old password still works
    assert not signs_in(provider, person["username"], NEW_PASSWORD)  # the new one does not

    done = choose(agent, agent.submit(wrong, {"code": totp.now()}))
    assert "Your password has been changed" in done.text
    assert not signs_in(provider, person["username"], PASSWORD)
    # signing in again asks for the app as before: the reset gave no session and no shortcut
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"], NEW_PASSWORD)
    assert "One more step" in choice.text and 'value="totp"' in choice.text
    [entry] = audit(provider, "password.reset", person["sub"])
    assert entry["factors"] == ["email", "totp"]


def test_without_the_second_factor_the_old_password_stays(provider, person, plain_smtp, gateway_server):
    phone = f"+1555{int(time.time() * 1000) % 10**7:07d}"
    person = provider.add_user(email_verified=True, phone=phone, phone_verified=True)
    agent = UserAgent(provider)
    ask_reset(agent, person["username"])
    verify = follow(agent, reset_link(plain_smtp, f"{person['username']}@example.com"))
    assert set(re.findall(r'name="factor" value="([^"]+)"', verify.text)) == {"sms", "voice"}
    cancelled = post(agent, verify, "reset/cancel")
    assert cancelled.status_code == 200 and 'name="password"' in cancelled.text
    assert signs_in(provider, person["username"], PASSWORD)
    assert not mails(plain_smtp, f"{person['username']}@example.com", "Your password was changed")


# -- expiry and lockout -------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=list(BACKENDS))
def short_lived(request, tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("reset-short"), request.param, extra_settings=settings(
        plain_smtp, gateway_server, password_reset={"link_lifetime": 2}))
    yield running
    stop()


def test_an_expired_link_is_refused(short_lived, plain_smtp):
    person = short_lived.add_user(email_verified=True)
    agent = UserAgent(short_lived)
    ask_reset(agent, person["username"])
    link = reset_link(plain_smtp, address(person))
    time.sleep(3)
    expired = agent.go(link)
    assert expired.status_code == 400 and "expired or was already used" in expired.text
    assert signs_in(short_lived, person["username"], PASSWORD)


def lock(provider, person):
    for _ in range(4):  # lockout.max_failures
        agent = UserAgent(provider)
        agent.login(agent.authorize(client_id="web"), person["username"], "wrong password")


def test_a_locked_account_cannot_reset_around_the_lockout(provider, plain_smtp):
    person = provider.add_user(email_verified=True)
    agent = UserAgent(provider)
    ask_reset(agent, person["username"])
    link = reset_link(plain_smtp, address(person))
    lock(provider, person)
    shown = agent.go(link)
    assert shown.status_code == 200
    refused = agent.submit(shown, {})
    assert refused.status_code == 403 and "locked" in refused.text
    sent_before = len(mails(plain_smtp, address(person), "Reset your password"))
    assert "Check your email" in ask_reset(UserAgent(provider), person["username"]).text
    assert len(mails(plain_smtp, address(person), "Reset your password")) == sent_before  # nothing sent
    assert not mails(plain_smtp, address(person), "Your password was changed")


def test_the_reset_pages_are_off_when_disabled(tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("reset-off"), "sqlite-sql", extra_settings=settings(
        plain_smtp, gateway_server, password_reset={"enabled": False}))
    try:
        agent = UserAgent(running)
        page = agent.authorize(client_id="web")
        assert "Forgot password?" not in page.text
        assert agent.go(f"{running.url}/interaction/{interaction_uid(page)}/reset").status_code == 404
        assert agent.go(f"{running.url}/password-reset/anything").status_code == 404
    finally:
        stop()


def test_two_submits_at_once_apply_the_password_once(provider, person, plain_smtp):
    import threading

    agent = UserAgent(provider)
    ask_reset(agent, person["username"])
    page = follow(agent, reset_link(plain_smtp, address(person)))
    url = f"{provider.url}/interaction/{interaction_uid(page)}/reset/password"
    answers = []

    def submit(password):
        answers.append(agent.http.post(url, data={"csrf_token": agent.csrf(page), "password": password,
                                                   "repeat": password}, allow_redirects=False, timeout=15))

    threads = [threading.Thread(target=submit, args=(f"{NEW_PASSWORD} {n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 2 and all(answer.status_code in (303, 400) for answer in answers)
    assert len(audit(provider, "password.reset", person["sub"])) == 1
    assert len(mails(plain_smtp, address(person), "Your password was changed")) == 1


def test_a_reset_link_is_no_sign_in_link(provider, person, plain_smtp):
    agent = UserAgent(provider)
    sent = ask_reset(agent, person["username"])
    token = reset_link(plain_smtp, address(person)).rsplit("/", 1)[1]
    as_sign_in = agent.go(f"{provider.url}/interaction/link/{token}")
    assert as_sign_in.status_code == 400 and "expired or was already used" in as_sign_in.text
    posted = agent.go(f"{provider.url}/interaction/link/{token}", "POST", {"csrf_token": agent.csrf(sent)})
    assert posted.status_code == 400 and "expired or was already used" in posted.text
    assert "Choose a new password" in follow(agent, reset_link(plain_smtp, address(person))).text
