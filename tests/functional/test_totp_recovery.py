"""TOTP apps and recovery codes as a person uses them: set up on the account pages, then a
second step after the password. Codes come from this file's own RFC 6238 implementation,
never from the provider's; attacks (replay, a code used twice or at once) each have a test."""

from __future__ import annotations

import base64
import html
import re
import threading
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import segno

from tests.conftest import (post, BACKENDS, REDIRECT, UserAgent, asked_recovery_code, callback_params, one_passed,
                            recovery_codes_shown, start_provider, token_request)
from tests.servers import text_of
from tests.unit.test_totp import PERIOD, RFC_KEYS, RFC_VECTORS, rfc6238

FACTORS = ["password", "email-otp", "sms", "voice", "email", "totp", "recovery-code"]


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, plain_smtp):
    running, stop = start_provider(tmp_path_factory.mktemp("totp-recovery"), request.param, extra_settings={
        "factors": FACTORS,
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
    })
    yield running
    stop()


@pytest.fixture
def person(provider):
    """Only a password: TOTP and recovery codes need no email or phone to be MFA."""
    return provider.add_user()


def id_token_claims(provider, redirect) -> dict:
    params = callback_params(redirect)
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                      "redirect_uri": REDIRECT}).json()
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})


def account_page(agent, path, action=None, fields=None):
    """GET an account page, or POST one of its forms (with the page's CSRF token)."""
    url = f"{agent.provider.url}/account/security/{path}"
    page = agent.go(url)
    if action is None:
        return page
    return agent.go(f"{url}/{action}", "POST", {"csrf_token": agent.csrf(page), **(fields or {})})


def away_from_step_edge(margin: float = 12) -> int:
    """Wait until the time step has `margin` seconds left (the next steps of a test then happen
    within it); returns the step."""
    left = PERIOD - time.time() % PERIOD
    if left < margin:
        time.sleep(left + 0.2)
    return int(time.time() // PERIOD)


def code(key: bytes, step: int) -> str:
    return rfc6238(key, step * PERIOD)


def begin_enrollment(agent):
    """Start setting up an app; returns (enrollment page, raw key read from the page)."""
    page = account_page(agent, "totp", "enroll")
    assert page.status_code == 200 and "Set up your authenticator app" in page.text
    shown = re.search(r'<code id="totp-secret">([A-Z2-7 ]+)</code>', page.text).group(1)
    groups = shown.split(" ")
    assert len(groups) == 8 and all(len(group) == 4 for group in groups)
    return page, base64.b32decode("".join(groups))


def enroll(agent, offset=0) -> tuple[bytes, int]:
    """Set up an app and confirm it with the code `offset` steps from now."""
    page, key = begin_enrollment(agent)
    step = away_from_step_edge()
    done = agent.go(f"{agent.provider.url}/account/security/totp/confirm", "POST",
                    {"csrf_token": agent.csrf(page), "code": code(key, step + offset)})
    assert done.status_code == 200 and 'data-totp="enrolled"' in done.text, done.text[:400]
    return key, step + offset


def second_step(provider, username, factor):
    """A new browser: password, then the chosen factor's code page."""
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), username)
    assert "One more step" in choice.text, choice.text[:400]
    assert f'name="factor" value="{factor}"' in choice.text
    page = post(agent, choice, "start", {"factor": factor})
    assert page.status_code == 200 and 'name="code"' in page.text
    return agent, page


def refused(agent, page, typed):
    answer = agent.submit(page, {"code": typed})
    assert answer.status_code == 401, answer.text[:400]
    return answer


def qr_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules of segno's inline SVG, read from its path (M, m and h commands)."""
    path = re.search(r'<path[^>]*class="qrline"[^>]*d="([^"]+)"', svg) or \
        re.search(r'<path[^>]*d="([^"]+)"[^>]*class="qrline"', svg)
    x = y = 0.0
    dark = set()
    for command, numbers in re.findall(r"([MmHh])([-0-9. ]+)", path.group(1)):
        values = [float(n) for n in numbers.split()]
        if command == "M":
            x, y = values
        elif command == "m":
            x, y = x + values[0], y + values[1]
        else:
            length = values[0]
            dark.update((int(x) + i, int(y)) for i in range(int(length)))
            x += length
    return dark


# -- the independent implementation itself ----------------------------------------------------

def test_this_files_totp_gives_the_rfc_6238_sha1_vectors():
    assert [rfc6238(RFC_KEYS["sha1"], at, 8) for at, *_ in RFC_VECTORS] == \
        ["94287082", "07081804", "14050471", "89005924", "69279037", "65353130"]


# -- TOTP -------------------------------------------------------------------------------------

def test_the_pages_need_a_signed_in_user(provider):
    agent = UserAgent(provider)
    assert agent.go(f"{provider.url}/account/security/totp").status_code == 401
    assert agent.go(f"{provider.url}/account/security/recovery-codes").status_code == 401
    assert agent.go(f"{provider.url}/account/security/totp/enroll", "POST", {}).status_code == 400  # no CSRF


def test_setting_up_an_app_shows_the_uri_the_key_and_a_qr_code_made_here(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    status = account_page(agent, "totp")
    assert status.status_code == 200 and 'data-totp="none"' in status.text
    page, key = begin_enrollment(agent)
    uri = html.unescape(re.search(r'<a id="totp-uri" href="([^"]+)"', page.text).group(1))
    parts = urlsplit(uri)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert base64.b32decode(query["secret"]) == key and len(key) == 20  # 160 bits
    assert query["issuer"] == "127.0.0.1" and parts.path.endswith(f":{person['username']}%40example.com")
    # an inline SVG drawn by the provider: no image from anywhere else, and it encodes the URI
    svg = re.search(r"<svg.*?</svg>", page.text, re.S).group(0)
    assert "<img" not in page.text and "http" not in svg
    matrix = segno.make(uri, error="m").matrix
    expected = {(x + 4, y + 4) for y, row in enumerate(matrix) for x, bit in enumerate(row) if bit}
    assert qr_modules(svg) == expected
    # the page is not stored anywhere on the way
    assert "no-store" in page.headers["Cache-Control"]


def test_a_first_valid_code_confirms_the_app_and_expired_or_early_codes_do_not(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    page, key = begin_enrollment(agent)
    step = away_from_step_edge()
    confirm = f"{provider.url}/account/security/totp/confirm"
    for wrong in (code(key, step - 2), code(key, step + 2), f"{(int(code(key, step)) + 1) % 10**6:06d}"):
        answer = agent.go(confirm, "POST", {"csrf_token": agent.csrf(page), "code": wrong})
        assert answer.status_code == 401 and "not right" in answer.text
        assert 'id="totp-secret"' in answer.text  # the same key, to try again
    assert 'data-totp="none"' in account_page(agent, "totp").text
    # unconfirmed, the app is not offered at sign-in
    other = UserAgent(provider)
    page = other.login(other.authorize(client_id="web", acr_values="mfa"), person["username"])
    assert page.status_code == 403 and 'value="totp"' not in page.text
    # one step behind is still in time
    done = agent.go(confirm, "POST", {"csrf_token": agent.csrf(answer), "code": code(key, step - 1)})
    assert done.status_code == 200 and 'data-totp="enrolled"' in done.text


def test_password_and_app_make_mfa_with_one_step_of_drift_and_no_replay(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    key, step = enroll(agent, offset=-1)  # confirmed with the previous step's code: now is step + 1

    first, page = second_step(provider, person["username"], "totp")
    assert "Open your authenticator app" in page.text and "Send a new code" not in page.text
    page = refused(first, page, code(key, step))  # used to confirm the app: not again
    assert "already used" in page.text
    page = refused(first, page, code(key, step + 3))  # two steps ahead of now: not yet valid
    claims = id_token_claims(provider, first.submit(page, {"code": code(key, step + 1)}))  # the current step
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "mfa"

    # a new sign-in in the same window with the same code: refused
    second, page = second_step(provider, person["username"], "totp")
    page = refused(second, page, code(key, step + 1))
    claims = id_token_claims(provider, second.submit(page, {"code": code(key, step + 2)}))  # one step ahead
    assert claims["amr"] == ["pwd", "otp", "mfa"]

    # after a later step, an earlier one is never accepted, nor the same one again
    third, page = second_step(provider, person["username"], "totp")
    page = refused(third, page, code(key, step + 1))
    refused(third, page, code(key, step + 2))


def test_two_steps_of_drift_are_refused(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    key, step = enroll(agent, offset=-1)  # now is step + 1
    browser, page = second_step(provider, person["username"], "totp")
    page = refused(browser, page, code(key, step + 3))  # two steps ahead of now
    page = refused(browser, page, code(key, step - 1))  # two steps behind: expired
    claims = id_token_claims(provider, browser.submit(page, {"code": code(key, step + 1)}))
    assert claims["acr"] == "mfa"


def test_guessing_app_codes_is_cut_short(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    key, step = enroll(agent, offset=-1)
    browser, page = second_step(provider, person["username"], "totp")
    good = code(key, step + 1)
    for _ in range(provider.op.settings.totp_recovery.max_tries):
        page = refused(browser, page, f"{(int(good) + 7) % 10**6:06d}")
    refused(browser, page, good)  # the right code too, until the window passes


def test_a_removed_app_is_no_longer_offered(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    key, step = enroll(agent)
    # the person has MFA now: a removal needs the app's code again (the next step: this one is used)
    choice = agent.authorize(client_id="web", acr_values="mfa")
    assert "One more step" in choice.text
    agent.submit(post(agent, choice, "start", {"factor": "totp"}), {"code": code(key, step + 1)})
    done = account_page(agent, "totp", "remove")
    assert done.status_code == 200 and 'data-totp="none"' in done.text
    browser = UserAgent(provider)
    page = browser.login(browser.authorize(client_id="web", acr_values="mfa"), person["username"])
    assert page.status_code == 403 and 'value="totp"' not in page.text


# -- recovery codes ---------------------------------------------------------------------------

def generate_codes(agent) -> list[str]:
    page = account_page(agent, "recovery-codes", "generate")
    assert page.status_code == 200 and "only time they are shown" in page.text
    assert "no-store" in page.headers["Cache-Control"]
    return recovery_codes_shown(page)


def remaining_on_page(agent) -> int:
    return int(re.search(r'data-remaining="(\d+)"', account_page(agent, "recovery-codes").text).group(1))


def test_recovery_codes_are_shown_once_and_sign_in_as_a_second_step(provider, person, plain_smtp):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    codes = generate_codes(agent)
    assert len(codes) == 10 and len(set(codes)) == 10
    status = account_page(agent, "recovery-codes")
    assert remaining_on_page(agent) == 10 and not any(c in status.text for c in codes)  # never shown again

    browser, page = second_step(provider, person["username"], "recovery-code")
    assert "Enter recovery code number 1 from the set you saved" in page.text and "Send a new code" not in page.text
    pattern = re.search(r'name="code"[^>]*pattern="([^"]+)"', page.text, re.S).group(1)
    assert re.fullmatch(html.unescape(pattern), codes[0].upper()), pattern
    claims = id_token_claims(provider, browser.submit(page, {"code": asked_recovery_code(page, codes).upper()}))
    assert claims["amr"] == ["pwd", "rcv", "mfa"] and claims["acr"] == "mfa"
    assert remaining_on_page(agent) == 9

    # the user is told, by email
    notice = text_of(plain_smtp.mailbox.to(f"{person['username']}@example.com")[-1].message)
    assert "recovery code was just used" in notice and "9 unused codes remain" in notice
    # ... and it is in the audit log
    from oidc_provider.extensions import db
    from oidc_provider.models import AuditEvent

    with provider.app.app_context():
        event = db.session.execute(db.select(AuditEvent).filter_by(
            user_id=person["sub"], event="recovery_code.used")).scalar_one()
        assert event.detail["remaining"] == 9

    # the same code again: refused
    again, page = second_step(provider, person["username"], "recovery-code")
    answer = refused(again, page, codes[0])
    assert "not right or was already used" in answer.text
    assert remaining_on_page(agent) == 9


def test_a_recovery_code_posted_by_six_sign_ins_at_once_works_once(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    codes = generate_codes(agent)
    steps = [second_step(provider, person["username"], "recovery-code") for _ in range(6)]
    barrier, answers = threading.Barrier(len(steps)), []

    def answer(browser, page):
        verify = re.search(r'action="(/interaction/[^"]+/verify)"', page.text).group(1)
        data = {"csrf_token": browser.csrf(page), "code": asked_recovery_code(page, codes)}
        barrier.wait()
        answers.append(browser.http.post(provider.url + verify, data=data, allow_redirects=False, timeout=30))

    threads = [threading.Thread(target=answer, args=step) for step in steps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 6
    one_passed(answers)
    assert remaining_on_page(agent) == 9


def test_a_new_set_ends_the_old_one_and_few_codes_left_are_flagged(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    old = generate_codes(agent)
    new = generate_codes(agent)
    assert not set(old) & set(new) and remaining_on_page(agent) == 10
    browser, page = second_step(provider, person["username"], "recovery-code")
    page = refused(browser, page, old[0])
    assert id_token_claims(provider, browser.submit(page, {"code": asked_recovery_code(page, new)}))["amr"] == [
        "pwd", "rcv", "mfa"]

    assert 'id="recovery-low"' not in account_page(agent, "recovery-codes").text
    factor = provider.op.factors.get("recovery-code")
    from oidc_provider.extensions import db
    from oidc_provider.models import User

    with provider.app.app_context():  # use six more, as sign-ins would: each the next one
        for typed in new[1:7]:
            assert factor.verify(db.session.get(User, person["sub"]), {"code": typed}, {}).ok
    status = account_page(agent, "recovery-codes")
    assert 'data-remaining="3"' in status.text and 'id="recovery-low"' in status.text


def test_the_recovery_code_step_names_the_code_in_german_too(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    generate_codes(agent)
    browser = UserAgent(provider)
    choice = browser.login(browser.authorize(client_id="web", acr_values="mfa", ui_locales="de"), person["username"])
    page = post(browser, choice, "start", {"factor": "recovery-code"})
    assert 'lang="de"' in page.text and "Geben Sie den Wiederherstellungscode Nr. 1 aus" in page.text


def test_removed_recovery_codes_no_longer_work(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    generate_codes(agent)
    done = account_page(agent, "recovery-codes", "remove")
    assert done.status_code == 200 and 'data-remaining="0"' in done.text
    browser = UserAgent(provider)
    page = browser.login(browser.authorize(client_id="web", acr_values="mfa"), person["username"])
    assert page.status_code == 403 and 'value="recovery-code"' not in page.text


def test_both_offered_side_by_side_and_either_completes_mfa(provider, person):
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    generate_codes(agent)  # first: once the app is set up, changes need its code too
    enroll(agent)
    browser = UserAgent(provider)
    choice = browser.login(browser.authorize(client_id="web", acr_values="mfa"), person["username"])
    offered = set(re.findall(r'name="factor" value="([^"]+)"', choice.text))
    assert offered == {"totp", "recovery-code"}
    assert "Use your authenticator app" in choice.text and "Use a recovery code" in choice.text


def test_the_pages_do_not_exist_when_the_factors_are_not_enabled(tmp_path):
    provider, stop = start_provider(tmp_path, "sqlite-sql", extra_settings={"factors": ["password", "email-otp"]})
    try:
        agent = UserAgent(provider)
        assert agent.go(f"{provider.url}/account/security/totp").status_code == 404
        assert agent.go(f"{provider.url}/account/security/recovery-codes").status_code == 404
    finally:
        stop()
