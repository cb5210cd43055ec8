"""My MFA settings in a real browser (Debian's chromium, Playwright) with Chromium's virtual
authenticator: set up an authenticator app from the secret on the page (the code from pyotp),
add a security key after a step-up with that app, see it listed, and remove it after another
step-up once the sign-in is stale (password, then the key itself).

The issuer is http://localhost:PORT so that WebAuthn has a secure context and the step-up's
redirect comes back to the same host (and cookies) the browser uses.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import segno

from tests.browser.test_webauthn import authorize_url, enter_password, to_client
from tests.functional.test_totp_recovery import qr_modules
from tests.webauthn_helpers import webauthn_provider

FACTORS = ["password", "email-otp", "sms", "voice", "email", "totp", "recovery-code", "webauthn-key",
           "webauthn-platform", "passkey"]
MAX_AGE = 12  # seconds a sign-in counts as fresh here, so the test can outwait it


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with webauthn_provider(tmp_path_factory, "account-browser", FACTORS, localhost_issuer=True,
                           account={"reauth_max_age": MAX_AGE}) as running:
        yield running


@pytest.fixture
def browser_page(open_browser):
    return open_browser(transport="usb", hasUserVerification=True, isUserVerified=True)[1]


def test_totp_then_a_security_key_after_a_step_up_then_its_removal(provider, site, browser_page):
    page = browser_page
    person = provider.add_user(email_verified=True)  # no phone: a password alone until the app is set up
    page.goto(authorize_url(site))
    to_client(page, lambda: enter_password(page, person))

    # The page, and a link followed with the keyboard.
    page.goto(f"{site}/account/security")
    assert page.get_by_role("heading", level=1).inner_text() == "My MFA settings"
    assert page.locator("h1").count() == 1 and page.get_by_role("main").count() == 1
    page.get_by_role("link", name="Set up an authenticator app").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{site}/account/security/totp")

    # TOTP: the secret shown next to the QR code gives the codes; the QR code holds the same URI.
    page.get_by_role("button", name="Set up an authenticator app").click()
    page.wait_for_url(f"{site}/account/security/totp/enroll")
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    uri = page.locator("#totp-uri").get_attribute("href")
    assert parse_qs(urlsplit(uri).query)["secret"] == [secret]
    assert qr_modules(page.locator(".qr").inner_html()) == qr_modules(segno.make(uri, error="m").svg_inline(scale=4))
    totp = pyotp.TOTP(secret)
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Confirm").click()
    assert page.locator("[data-totp=enrolled]").count() == 1

    # A security key: the person has MFA now, so the app's code is asked for first.
    page.goto(f"{site}/account/security")
    page.get_by_role("link", name=re.compile("Add a security key")).click()
    if page.get_by_role("heading", level=1).inner_text() == "Sign in":  # a slow machine: the password aged too
        enter_password(page, person)
    assert page.get_by_role("heading", level=1).inner_text() == "One more step"
    page.get_by_role("button", name="Use your authenticator app").click()
    page.get_by_label("Code").fill(totp.at(time.time() + 30))  # this step's code went to the setup
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{site}/account/security/webauthn/add")
    page.locator("#webauthn-kind").select_option("webauthn-key")
    page.get_by_label("Name").fill("Blue key")
    page.get_by_role("button", name="Add").click()
    page.wait_for_url(f"{site}/account/security/webauthn")

    page.goto(f"{site}/account/security")
    methods = page.locator("#methods")
    assert methods.locator("tr[data-kind=webauthn-key]").inner_text().startswith("Security key")
    assert "Blue key" in methods.inner_text() and "Authenticator app" in methods.inner_text()

    # Removing it after the sign-in went stale: the password again, then the key itself.
    page.wait_for_timeout((MAX_AGE + 1) * 1000)
    page.reload()
    assert page.locator("[data-fresh=no]").count() == 1
    page.get_by_role("link", name="Remove Blue key").click()
    assert page.get_by_label("Username or email").first.input_value() == person["username"]  # login_hint
    enter_password(page, person)
    page.get_by_role("button", name="Use a security key").click()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r".*/account/security/factors/\d+/remove$"))
    assert page.get_by_role("heading", level=1).inner_text() == "Remove Blue key"
    page.get_by_role("button", name="Remove Blue key").click()
    page.wait_for_url(f"{site}/account/security?done=removed")
    assert "The method was removed" in page.get_by_role("status").first.inner_text()
    assert page.locator("tr[data-kind=webauthn-key]").count() == 0
    assert page.locator("tr[data-kind=totp]").count() == 1
