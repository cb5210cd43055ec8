"""Enrollment at login in Debian's chromium: a login that needs MFA from a user with only a
password sets up a security key (Chromium's virtual authenticator, through webauthn.js and
the pages' CSP), uses it once, and the ID token says mfa."""

from __future__ import annotations

import pytest

from tests.browser.test_webauthn import authorize_url, claims, enter_password, to_client
from tests.webauthn_helpers import webauthn_provider


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with webauthn_provider(tmp_path_factory, "enroll-browser", enrollment={"at_login": True}) as running:
        yield running


def test_a_security_key_set_up_at_login_gives_mfa(provider, open_browser, site):
    person = provider.add_user(email_verified=True)
    _context, page = open_browser(transport="usb", hasUserVerification=True, isUserVerified=True)
    page.goto(authorize_url(site, acr_values="mfa"))
    enter_password(page, person)
    assert page.get_by_role("heading", name="Set up a second way to sign in").is_visible()
    page.get_by_role("button", name="A security key").click()
    page.get_by_role("button", name="Add").click()
    page.get_by_role("heading", name="Use a security key").wait_for()
    code = to_client(page, lambda: page.get_by_role("button", name="Continue").click())
    token = claims(provider, code)
    assert token["sub"] == person["sub"] and token["acr"] == "mfa"
    assert token["amr"] == ["pwd", "webauthn", "mfa"]
