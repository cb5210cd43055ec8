"""My MFA settings (/account/security) over HTTP, as a person uses it: the listing, each change,
the step-up before sensitive changes (the ordinary sign-in of the provider's own account
client), the email notices (a real SMTP server), and the attacks: a stale session adding or
removing factors, a missing CSRF token, another user's factor id."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import requests

from oidc_provider.device_cli import Device
from tests.conftest import (BACKENDS, UserAgent, asked_recovery_code, post, recovery_codes_shown, start_provider,
                            token_request)
from tests.servers import email_code, sms_code, text_of
from tests.unit.webauthn_authenticator import SoftAuthenticator

FACTORS = ["password", "email-otp", "sms", "voice", "email", "totp", "recovery-code", "push",
           "webauthn-key", "webauthn-platform", "passkey"]
HUB = "/account/security"


def settings(smtp, gateway, **extra):
    def at(port):
        return {"factors": FACTORS, "email": {"host": "127.0.0.1", "port": smtp.port, "security": "none"},
                "sms": {"gateway": "webhook", "url": f"{gateway.url}/sms"},
                "webauthn": {"rp_id": "localhost", "origins": [f"http://localhost:{port}"]},
                "trusted_devices": {"enabled": True}, **extra}
    return at


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("account-security"), request.param,
                                   extra_settings=settings(plain_smtp, gateway_server))
    yield running
    stop()


@pytest.fixture(scope="module")
def short_provider(tmp_path_factory, plain_smtp, gateway_server):
    """A sign-in counts as fresh for five seconds only."""
    running, stop = start_provider(tmp_path_factory.mktemp("account-short"), "sqlite-sql",
                                   extra_settings=settings(plain_smtp, gateway_server, account={"reauth_max_age": 5}))
    yield running
    stop()


_numbers = iter(range(10**6))


def new_phone() -> str:
    return f"+1555{time.time_ns() % 10**5:05d}{next(_numbers) % 100:02d}"


@pytest.fixture
def person(provider):
    """Email and phone confirmed: MFA over email and SMS, so a step-up asks for a code too."""
    return provider.add_user(name="Ada", email_verified=True, phone=new_phone(), phone_verified=True)


def signed_in(provider, person) -> UserAgent:
    """A browser signed in with the password only (the client asks for nothing more)."""
    agent = UserAgent(provider)
    assert "code" in agent.sign_in(person["username"], client_id="web")
    return agent


def page(agent, path):
    answer = agent.go(f"{agent.provider.url}{path}")
    assert answer.status_code == 200, answer.text[:500]
    return answer


def send(agent, path, fields=None, csrf_from=HUB):
    """POST an account form, with the CSRF token of an account page, following redirects."""
    token = agent.csrf(page(agent, csrf_from))
    return agent.go(f"{agent.provider.url}{path}", "POST", {"csrf_token": token, **(fields or {})})


def raw_post(agent, path, fields=None, csrf_from=HUB):
    """The same, without following redirects: what the provider answers first."""
    token = agent.csrf(page(agent, csrf_from))
    return agent.http.post(f"{agent.provider.url}{path}", data={"csrf_token": token, **(fields or {})},
                           allow_redirects=False, timeout=15)


def is_step_up(answer) -> bool:
    """The provider sent the browser to its own sign-in, as the account client."""
    location = answer.headers.get("Location", "")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return answer.status_code == 303 and location.startswith("/oidc/auth?") and query["client_id"] == "op:account"


def pass_step_up(agent, first, person, smtp):
    """The step-up as the person does it: the password when it is not fresh any more (the name
    is filled in), then an email code."""
    assert first.status_code == 200 and "your account settings" in first.text, first.text[:600]
    choice = first
    if 'name="password"' in first.text and "One more step" not in first.text:
        assert f'value="{person["username"]}"' in first.text  # login_hint
        choice = agent.login(first, person["username"])
    if "One more step" not in choice.text:
        return choice  # one factor was enough (no MFA)
    assert 'name="factor" value="password"' not in choice.text
    step = post(agent, choice, "start", {"factor": "email-otp"})
    return agent.submit(step, {"code": email_code(smtp, person_email(person))})


def person_email(person) -> str:
    return f"{person['username']}@example.com"


def stepped_up(provider, person, smtp) -> UserAgent:
    """Signed in, and just confirmed it is them: sensitive changes go through."""
    agent = signed_in(provider, person)
    answer = agent.http.get(f"{provider.url}/account/security/webauthn/add", allow_redirects=False, timeout=15)
    if is_step_up(answer):
        back = pass_step_up(agent, agent.go(f"{provider.url}{answer.headers['Location']}"), person, smtp)
        assert back.status_code == 200 and back.url.endswith("/webauthn/add"), back.text[:500]
    assert 'data-fresh="yes"' in page(agent, HUB).text
    return agent


def notices(smtp, person, since=0) -> list[str]:
    """Subjects of the security notices the person got."""
    return [m.message["Subject"] for m in smtp.mailbox.to(person_email(person))[since:]
            if "If this was you, there is nothing to do" in text_of(m.message)]


def audit_events(provider, person, prefix="") -> list[str]:
    from oidc_provider.extensions import db
    from oidc_provider.models import AuditEvent

    with provider.app.app_context():
        rows = db.session.execute(db.select(AuditEvent).filter_by(user_id=person["sub"])
                                  .order_by(AuditEvent.id)).scalars()
        return [row.event for row in rows if row.event.startswith(prefix)]


def enroll_totp(agent) -> tuple[pyotp.TOTP, object]:
    """Set up an authenticator app from the secret shown next to the QR code."""
    setup = send(agent, "/account/security/totp/enroll", csrf_from="/account/security/totp")
    assert setup.status_code == 200 and "<svg" in setup.text, setup.text[:500]
    secret = re.search(r'<code id="totp-secret">([A-Z2-7 ]+)</code>', setup.text).group(1).replace(" ", "")
    totp = pyotp.TOTP(secret)
    done = agent.go(f"{agent.provider.url}/account/security/totp/confirm", "POST",
                    {"csrf_token": agent.csrf(setup), "code": totp.now()})
    assert done.status_code == 200 and 'data-totp="enrolled"' in done.text, done.text[:500]
    return totp, done


def add_key(agent, name="Blue key", kind="webauthn-key"):
    origin = agent.provider.url.replace("127.0.0.1", "localhost")
    key = SoftAuthenticator(origin)
    add = page(agent, "/account/security/webauthn/add")
    options = agent.http.post(f"{agent.provider.url}/account/security/webauthn/options", timeout=15,
                              data={"csrf_token": agent.csrf(add), "kind": kind, "name": name})
    assert options.status_code == 200, options.text
    done = agent.go(f"{agent.provider.url}/account/security/webauthn/register", "POST",
                    {"csrf_token": agent.csrf(add), "credential": json.dumps(key.create(options.json()))})
    assert done.status_code == 200 and name in done.text, done.text[:500]
    return key


def enroll_push(agent, name="Ada's phone") -> Device:
    shown = page(agent, "/push/enroll")
    url = re.search(r'<code id="push-enroll-url">([^<]+)</code>', shown.text).group(1).replace("&amp;", "&")
    return Device.enroll(url, name)


def factor_ids(agent) -> dict[str, list[int]]:
    """Factor ids on the page, by kind."""
    found: dict[str, list[int]] = {}
    for kind, factor_id in re.findall(r'<tr data-kind="([^"]+)" data-factor="(\d+)">', page(agent, HUB).text):
        found.setdefault(kind, []).append(int(factor_id))
    return found


# -- the page --------------------------------------------------------------------------------------

def test_the_pages_need_a_signed_in_user(provider):
    for path in (HUB, f"{HUB}/factors/1/remove", f"{HUB}/reauth", "/account/security/webauthn/add"):
        assert requests.get(f"{provider.url}{path}", timeout=10).status_code == 401, path
    assert requests.post(f"{provider.url}{HUB}/factors/1/remove", timeout=10).status_code == 400  # no CSRF token


def test_the_listing_shows_every_factor_with_its_name_and_times(provider, person, plain_smtp):
    agent = stepped_up(provider, person, plain_smtp)
    hub = page(agent, HUB)
    assert hub.text.count("<h1") == 1 and "<main" in hub.text and 'aria-labelledby="methods-heading"' in hub.text
    assert '<tr data-kind="password">' in hub.text and "You have no second method yet" in hub.text
    assert person_email(person) in hub.text and "(confirmed)" in hub.text
    for link in ("/account/security/totp", "/account/security/webauthn/add", "/push/enroll", "/account/contact"):
        assert f'href="{link}"' in hub.text, link

    enroll_totp(agent)
    add_key(agent, "Blue key")
    device = enroll_push(agent, "Ada's phone")
    listing = page(agent, HUB).text
    rows = dict(re.findall(r'<tr data-kind="([^"]+)" data-factor="\d+">\s*<th scope="row">([^<]+)</th>', listing))
    assert rows == {"totp": "Authenticator app", "webauthn-key": "Security key", "push": "Phone for push approval"}
    assert "Blue key" in listing and "Ada&#39;s phone" in listing
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert listing.count(today) >= 3 and "never" in listing  # added today; the key and phone never used
    assert device.device_id not in listing  # the page shows names, not key thumbprints
    assert notices(plain_smtp, person) == ["An authenticator app was added to your account",
                                           "A security key or passkey was added to your account",
                                           "A phone for push approval was added to your account"]
    assert {"totp.enrolled", "webauthn.registered", "push.device_enrolled"} <= set(audit_events(provider, person))


def test_recovery_codes_left_and_regenerating_with_a_warning_when_few(provider, person, plain_smtp):
    agent = stepped_up(provider, person, plain_smtp)
    made = send(agent, "/account/security/recovery-codes/generate")
    codes = recovery_codes_shown(made)
    assert len(codes) == 10
    assert 'data-remaining="10"' in page(agent, HUB).text and "recovery-low" not in page(agent, HUB).text
    for _ in range(7):  # used to sign in elsewhere
        other = UserAgent(provider)
        choice = other.login(other.authorize(client_id="web", acr_values="mfa"), person["username"])
        step = post(other, choice, "start", {"factor": "recovery-code"})
        answer = other.submit(step, {"code": asked_recovery_code(step, codes)})
        assert "code" in parse_qs(urlsplit(answer.headers["Location"]).query)
    hub = page(agent, HUB).text
    assert 'data-remaining="3"' in hub and 'id="recovery-low"' in hub and "Only 3 left" in hub
    again = send(agent, "/account/security/recovery-codes/generate")
    assert "Your earlier recovery codes no longer work" in again.text
    assert 'data-remaining="10"' in page(agent, HUB).text
    assert notices(plain_smtp, person).count("New recovery codes were made for your account") == 2
    assert audit_events(provider, person, "recovery_codes.") == ["recovery_codes.generated"] * 2


def test_removing_a_factor_asks_first_then_mails_the_user(provider, person, plain_smtp):
    agent = stepped_up(provider, person, plain_smtp)
    add_key(agent, "Old key")
    [key_id] = factor_ids(agent)["webauthn-key"]
    confirm = page(agent, f"{HUB}/factors/{key_id}/remove")
    assert "<h1>Remove Old key</h1>" in confirm.text and 'data-verdict="ok"' in confirm.text
    removed = agent.submit(confirm, {})
    assert removed.status_code == 200 and "The method was removed" in removed.text
    assert "webauthn-key" not in factor_ids(agent)
    assert notices(plain_smtp, person)[-1] == "A security key or passkey was removed from your account"
    mail = plain_smtp.mailbox.to(person_email(person))[-1].message
    assert 'named "Old key" was removed' in text_of(mail) and "127.0.0.1" in text_of(mail)
    assert audit_events(provider, person, "webauthn.")[-1] == "webauthn.removed"


# -- step-up -----------------------------------------------------------------------------------

def test_a_sensitive_change_on_a_stale_session_steps_up_and_comes_back(provider, person, plain_smtp):
    agent = signed_in(provider, person)  # the password only, but the person can do MFA
    assert 'data-fresh="no"' in page(agent, HUB).text
    answer = raw_post(agent, "/account/security/totp/enroll", csrf_from="/account/security/totp")
    assert is_step_up(answer)
    query = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}
    assert query["acr_values"] == "mfa" and query["max_age"] == "300" and query["login_hint"] == person["username"]
    assert query["code_challenge_method"] == "S256"
    choice = agent.go(f"{provider.url}{answer.headers['Location']}")
    # the password is still fresh; a user with MFA must pass a second factor again
    assert "One more step" in choice.text and "your account settings" in choice.text
    step = post(agent, choice, "start", {"factor": "email-otp"})
    back = agent.submit(step, {"code": email_code(plain_smtp, person_email(person))})
    assert back.url == f"{provider.url}/account/security/totp" and "Set up an authenticator app" in back.text
    assert 'data-fresh="yes"' in page(agent, HUB).text
    enroll_totp(agent)  # now it goes through
    assert audit_events(provider, person, "account.step_up") == ["account.step_up_started", "account.step_up_passed"]


def test_a_removal_page_on_a_stale_session_comes_back_to_the_same_page(provider, person, plain_smtp):
    fresh = stepped_up(provider, person, plain_smtp)
    add_key(fresh, "Spare key")
    [key_id] = factor_ids(fresh)["webauthn-key"]
    agent = signed_in(provider, person)
    answer = agent.http.get(f"{provider.url}{HUB}/factors/{key_id}/remove", allow_redirects=False, timeout=15)
    assert is_step_up(answer)
    back = pass_step_up(agent, agent.go(f"{provider.url}{answer.headers['Location']}"), person, plain_smtp)
    assert back.url == f"{provider.url}{HUB}/factors/{key_id}/remove" and "<h1>Remove Spare key</h1>" in back.text


def test_a_sign_in_older_than_the_max_age_is_stale(short_provider, plain_smtp):
    person = short_provider.add_user(email_verified=True)  # no phone: a password alone is every factor
    agent = signed_in(short_provider, person)
    made = send(agent, "/account/security/recovery-codes/generate")
    assert len(recovery_codes_shown(made)) == 10  # fresh: straight through
    time.sleep(5.5)
    answer = raw_post(agent, "/account/security/recovery-codes/generate")
    assert is_step_up(answer) and "acr_values" not in answer.headers["Location"]  # no MFA: any factor
    back = agent.login(agent.go(f"{short_provider.url}{answer.headers['Location']}"), person["username"])
    assert back.url == f"{short_provider.url}/account/security/recovery-codes", back.text[:300]
    again = agent.go(f"{short_provider.url}/account/security/recovery-codes/generate", "POST",
                     {"csrf_token": agent.csrf(back)})
    assert len(recovery_codes_shown(again)) == 10


def test_the_account_client_cannot_use_the_token_endpoint(provider):
    answer = token_request(provider, {"grant_type": "authorization_code", "code": "x", "client_id": "op:account",
                                      "redirect_uri": f"{provider.url}{HUB}/reauth"}, client=None)
    assert answer.status_code in (400, 401) and answer.json()["error"] in ("invalid_client", "unauthorized_client")


def test_cancelling_the_step_up_changes_nothing(short_provider):
    person = short_provider.add_user(email_verified=True)
    agent = signed_in(short_provider, person)
    time.sleep(5.5)
    answer = raw_post(agent, "/account/security/recovery-codes/generate")
    login = agent.go(f"{short_provider.url}{answer.headers['Location']}")
    assert 'name="password"' in login.text and 'value="cancel"' in login.text
    cancelled = agent.submit(login, {"action": "cancel"})
    assert cancelled.status_code == 400 and 'data-problem="reauth_cancelled"' in cancelled.text
    assert 'data-remaining="0"' in page(agent, HUB).text


def test_a_step_up_as_another_user_changes_nothing_for_either(short_provider):
    provider = short_provider
    person, other = provider.add_user(email_verified=True), provider.add_user(email_verified=True)
    agent = signed_in(provider, person)
    time.sleep(5.5)
    answer = raw_post(agent, "/account/security/recovery-codes/generate")
    login = agent.go(f"{provider.url}{answer.headers['Location']}")
    result = agent.login(login, other["username"])
    assert 'data-problem="reauth_other_user"' in result.text
    assert "recovery_codes.generated" not in audit_events(provider, person) + audit_events(provider, other)


def test_a_replayed_step_up_response_is_refused(provider, person, plain_smtp):
    agent = signed_in(provider, person)
    answer = raw_post(agent, "/account/security/recovery-codes/generate")
    choice = agent.go(f"{provider.url}{answer.headers['Location']}")
    step = post(agent, choice, "start", {"factor": "email-otp"})
    hop = agent.http.post(agent.form_action(step), allow_redirects=False, timeout=15, data={
        "csrf_token": agent.csrf(step), "code": email_code(plain_smtp, person_email(person))})
    while "/account/security/reauth?" not in hop.headers["Location"]:
        hop = agent.http.get(f"{provider.url}{hop.headers['Location']}", allow_redirects=False, timeout=15)
    response = hop.headers["Location"]
    assert response.startswith(f"{provider.url}/account/security/reauth?") and "code=" in response
    first = agent.http.get(response, allow_redirects=False, timeout=15)
    assert first.status_code == 303 and first.headers["Location"] == "/account/security/recovery-codes"
    replay = agent.http.get(response, timeout=15)
    assert replay.status_code == 400 and 'data-problem="reauth_expired"' in replay.text
    forged = agent.http.get(response.replace("state=", "state=x"), timeout=15)
    assert forged.status_code == 400


# -- attacks ---------------------------------------------------------------------------------------

def test_a_stale_session_cannot_add_or_remove_anything(provider, person, plain_smtp):
    fresh = stepped_up(provider, person, plain_smtp)
    add_key(fresh, "Real key")
    [key_id] = factor_ids(fresh)["webauthn-key"]
    stale = signed_in(provider, person)  # e.g. a browser left signed in: the password only

    # a passkey: the options and the registration both refuse
    add = stale.http.get(f"{provider.url}/account/security/webauthn/add", allow_redirects=False, timeout=15)
    assert is_step_up(add)
    options = stale.http.post(f"{provider.url}/account/security/webauthn/options", timeout=15,
                              data={"csrf_token": stale.csrf(page(stale, HUB)), "kind": "passkey"})
    assert options.status_code == 401 and options.json()["error"] == "reauth_required"
    assert is_step_up(raw_post(stale, "/account/security/webauthn/register", {"credential": "{}"}))
    # a push device: no enrollment code is shown
    push = stale.http.get(f"{provider.url}/push/enroll", allow_redirects=False, timeout=15)
    assert is_step_up(push) and "push-enroll-url" not in push.text
    # TOTP: neither a new seed nor the pending one's page, nor a confirmation
    for path in ("/account/security/totp/enroll", "/account/security/totp/confirm"):
        assert is_step_up(raw_post(stale, path, {"code": "123456"})), path
    assert is_step_up(stale.http.get(f"{provider.url}/account/security/totp/enroll", allow_redirects=False,
                                     timeout=15))
    # removing a factor, by every route
    assert is_step_up(raw_post(stale, f"{HUB}/factors/{key_id}/remove"))
    assert is_step_up(raw_post(stale, f"/account/security/webauthn/{key_id}/remove"))
    assert is_step_up(raw_post(stale, "/account/security/recovery-codes/generate"))
    assert is_step_up(raw_post(stale, "/account/contact/phone/change", {"value": "+15550100999"}))
    assert factor_ids(fresh) == {"webauthn-key": [key_id]}
    assert not {"webauthn.removed", "totp.enrolled", "recovery_codes.generated"} & set(audit_events(provider, person))


def test_a_missing_csrf_token_is_refused(provider, person, plain_smtp):
    agent = stepped_up(provider, person, plain_smtp)
    add_key(agent, "Kept key")
    [key_id] = factor_ids(agent)["webauthn-key"]
    for path in (f"{HUB}/factors/{key_id}/remove", "/account/security/recovery-codes/generate",
                 "/account/security/totp/enroll", f"{HUB}/devices/forget", "/account/contact/email/change"):
        answer = agent.http.post(f"{provider.url}{path}", data={"value": "x@example.com"}, timeout=15,
                                 allow_redirects=False)
        assert answer.status_code == 400 and 'data-error="csrf"' in answer.text, path
    assert factor_ids(agent) == {"webauthn-key": [key_id]}


def test_one_user_cannot_remove_another_users_factor_by_id(provider, person, plain_smtp):
    victim = stepped_up(provider, person, plain_smtp)
    add_key(victim, "Victim key")
    device = enroll_push(victim, "Victim phone")
    ids = factor_ids(victim)
    attacker_person = provider.add_user(email_verified=True)
    attacker = signed_in(provider, attacker_person)  # fresh: no MFA, so the password is enough
    for factor_id in (ids["webauthn-key"][0], ids["push"][0]):
        assert attacker.go(f"{provider.url}{HUB}/factors/{factor_id}/remove").status_code == 404
        assert send(attacker, f"{HUB}/factors/{factor_id}/remove").status_code == 404
    assert send(attacker, f"/account/security/webauthn/{ids['webauthn-key'][0]}/remove").status_code == 404
    send(attacker, f"/push/devices/{device.device_id}/remove")
    assert factor_ids(victim) == ids
    assert device.pending() == []  # the device still works


# -- the last second factor ---------------------------------------------------------------------------

def test_removal_verdicts(provider, plain_smtp):
    """The rules for the last second factor, through the confirmation page of a fresh session."""
    from oidc_provider.extensions import db
    from oidc_provider.models import User

    results = {}
    for policy in ("always", None):
        who = provider.add_user(email_verified=True)
        agent = signed_in(provider, who)
        totp, _ = enroll_totp(agent)  # the only second factor (no phone)
        with provider.app.app_context():  # the operator makes MFA mandatory for this user
            db.session.get(User, who["sub"]).mfa_policy = policy
            db.session.commit()
        [app_id] = factor_ids(agent)["totp"]
        step = agent.http.get(f"{provider.url}{HUB}/factors/{app_id}/remove", allow_redirects=False, timeout=15)
        assert is_step_up(step)
        choice = agent.go(f"{provider.url}{step.headers['Location']}")  # the password is still fresh
        assert 'value="totp"' in choice.text and 'value="recovery-code"' not in choice.text
        code_page = post(agent, choice, "start", {"factor": "totp"})
        later = totp.at(time.time() + 30)  # the enrollment used this step's code; the next one is accepted
        confirm = agent.submit(code_page, {"code": later})
        assert confirm.url.endswith(f"/factors/{app_id}/remove"), confirm.text[:500]
        results[policy] = re.search(r'data-verdict="([a-z_]+)"', confirm.text).group(1)
        assert ("Remove Authenticator app</button>" in confirm.text) is (policy is None)  # no button when refused
        answer = send(agent, f"{HUB}/factors/{app_id}/remove")  # posted anyway
        if policy == "always":
            assert answer.status_code == 409 and "totp" in factor_ids(agent)
            assert "factor.removal_refused" in audit_events(provider, who)
        else:
            assert answer.status_code == 200 and "totp" not in factor_ids(agent)
    assert results == {"always": "mfa_required", None: "last_second_factor"}


# -- remembered devices and contact points ------------------------------------------------------------

def test_a_remembered_device_is_listed_and_forgotten_without_step_up(provider, person, plain_smtp):
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"])
    step = post(agent, choice, "start", {"factor": "email-otp"})
    assert 'name="remember"' in step.text
    agent.submit(step, {"code": email_code(plain_smtp, person_email(person)), "remember": "on"})
    assert agent.cookie("op_trust")
    hub = page(agent, HUB)
    assert 'id="remembered"' in hub.text and "(this browser)" in hub.text
    [device_id] = re.findall(r'<tr data-device="(\d+)">', hub.text)
    other = signed_in(provider, provider.add_user(email_verified=True))
    assert send(other, f"{HUB}/devices/{device_id}/forget").status_code == 404  # not theirs
    forgotten = send(agent, f"{HUB}/devices/{device_id}/forget")
    assert forgotten.status_code == 200 and "no longer remembered" in forgotten.text
    assert 'id="remembered"' not in forgotten.text and "No device is remembered" in forgotten.text
    assert audit_events(provider, person, "device.")[-1] == "device.revoked"


def test_changing_the_phone_number_needs_a_fresh_sign_in_and_the_new_numbers_code(provider, person, plain_smtp,
                                                                                    gateway):
    agent = stepped_up(provider, person, plain_smtp)
    new = new_phone()
    sent = send(agent, "/account/contact/phone/change", {"value": new}, csrf_from="/account/contact")
    assert sent.status_code == 200 and 'id="confirm-code"' in sent.text
    wrong = agent.go(f"{provider.url}/account/contact/phone/change/confirm", "POST",
                     {"csrf_token": agent.csrf(sent), "code": "000000"})
    assert wrong.status_code == 401
    done = agent.go(f"{provider.url}/account/contact/phone/change/confirm", "POST",
                    {"csrf_token": agent.csrf(sent), "code": sms_code(gateway, new)})
    assert done.status_code == 200 and "were changed" in done.text and new in done.text
    assert notices(plain_smtp, person)[-1] == "Your phone number was changed"
    assert "contact.changed" in audit_events(provider, person)


def test_changing_the_email_address_tells_the_old_one(provider, person, plain_smtp):
    agent = stepped_up(provider, person, plain_smtp)
    new = f"new-{person['username']}@example.com"
    taken = provider.add_user(email_verified=True)
    looks_sent = send(agent, "/account/contact/email/change", {"value": person_email(taken)},
                      csrf_from="/account/contact")
    assert looks_sent.status_code == 200 and 'id="confirm-code"' in looks_sent.text  # no hint it is taken
    assert not plain_smtp.mailbox.to(person_email(taken))[1:]  # nothing sent to the other account
    bad = send(agent, "/account/contact/email/change", {"value": "not an address"}, csrf_from="/account/contact")
    assert bad.status_code == 400 and "Enter an email address" in bad.text
    sent = send(agent, "/account/contact/email/change", {"value": new}, csrf_from="/account/contact")
    done = agent.go(f"{provider.url}/account/contact/email/change/confirm", "POST",
                    {"csrf_token": agent.csrf(sent), "code": email_code(plain_smtp, new)})
    assert done.status_code == 200 and new in done.text
    assert notices(plain_smtp, person)[-1] == "Your email address was changed"  # the old address
    assert [m.message["Subject"] for m in plain_smtp.mailbox.to(new)][-1] == "Your email address was changed"


def test_a_push_device_enrolled_and_removed_is_mailed(provider, person, plain_smtp):
    agent = stepped_up(provider, person, plain_smtp)
    device = enroll_push(agent, "Work phone")
    [device_id] = factor_ids(agent)["push"]
    removed = send(agent, f"{HUB}/factors/{device_id}/remove", csrf_from=f"{HUB}/factors/{device_id}/remove")
    assert removed.status_code == 200 and "push" not in factor_ids(agent)
    with pytest.raises(Exception, match="401"):
        device.pending()
    assert notices(plain_smtp, person)[-2:] == ["A phone for push approval was added to your account",
                                                "A phone for push approval was removed from your account"]

