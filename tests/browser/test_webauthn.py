"""WebAuthn end to end: Debian's chromium (Playwright) with Chromium's virtual authenticator.

WebAuthn needs a secure context, so the pages are opened on http://localhost:PORT with
rp id `localhost`. Each test registers a credential on the account page after a password
sign-in, forgets the session, and signs in again with it; the ID token must say so.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest

from tests.conftest import PASSWORD, REDIRECT, token_request
from tests.webauthn_helpers import webauthn_provider


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with webauthn_provider(tmp_path_factory, "webauthn-browser") as running:
        yield running


@pytest.fixture
def person(provider):
    return provider.add_user(email_verified=True)


def authorize_url(site, **params) -> str:
    query = {"client_id": "web", "response_type": "code", "scope": "openid", "redirect_uri": REDIRECT,
             "state": "w1", **params}
    return f"{site}/oidc/auth?{urlencode(query)}"


def to_client(page, click) -> str:
    """Do `click` and return the code the browser brings to the client's redirect_uri."""
    with page.expect_request(lambda request: request.url.startswith(REDIRECT)) as caught:
        click()
    # Chromium refuses port 9 (ERR_UNSAFE_PORT) and shows its error page: wait for that page, or
    # it would interrupt the test's next navigation.
    for _ in range(200):
        if page.url.startswith("chrome-error://"):
            break
        page.wait_for_timeout(25)
    else:
        raise AssertionError(f"the browser did not settle after the redirect to the client: {page.url}")
    params = {key: values[0] for key, values in parse_qs(urlsplit(caught.value.url).query).items()}
    assert params.get("state") == "w1" and "code" in params, caught.value.url
    return params["code"]


def enter_password(page, person):
    page.get_by_label("Username or email").first.fill(person["username"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def register(page, site, person, kind, name):
    """Sign in with a password, then add a credential on the account page."""
    page.goto(authorize_url(site))
    to_client(page, lambda: enter_password(page, person))
    page.goto(f"{site}/account/security/webauthn/add")
    page.locator("#webauthn-kind").select_option(kind)
    page.locator("#webauthn-name").fill(name)
    page.get_by_role("button", name="Add").click()
    page.wait_for_url(f"{site}/account/security/webauthn")
    assert page.locator("tr[data-credential] input[name=name]").input_value() == name, page.content()[:2000]


def claims(provider, code) -> dict:
    answer = token_request(provider, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT})
    assert answer.status_code == 200, answer.text
    return jwt.decode(answer.json()["id_token"], options={"verify_signature": False})


def stored(provider, person) -> dict:
    """The person's one credential, as the provider keeps it."""
    from oidc_provider.models import confirmed_authenticators

    with provider.app.app_context():
        [credential] = confirmed_authenticators(person["sub"])
        return {"kind": credential.kind, **credential.data}


def sign_in_with_password_and(page, site, person, button, acr) -> str:
    """A new session: the password, then the WebAuthn factor the level asks for."""
    page.context.clear_cookies()
    page.goto(authorize_url(site, acr_values=acr))
    enter_password(page, person)
    page.get_by_role("button", name=button).click()
    return to_client(page, lambda: page.get_by_role("button", name="Continue").click())


@pytest.mark.parametrize("verifies", [True, False], ids=["with-user-verification", "without-user-verification"])
def test_a_security_key_after_a_password(provider, open_browser, site, person, verifies):
    _context, page = open_browser(transport="usb", hasUserVerification=verifies, isUserVerified=verifies)
    register(page, site, person, "webauthn-key", "Blue key")
    assert stored(provider, person)["user_verified"] is verifies

    acr = "mfa" if verifies else "phr"
    token = claims(provider, sign_in_with_password_and(page, site, person, "Use a security key", acr))
    assert token["sub"] == person["sub"] and token["acr"] == acr
    assert token["amr"] == ["pwd", "webauthn", "mfa"]
    assert stored(provider, person)["sign_count"] >= 1


def test_device_biometrics_after_a_password(provider, open_browser, site, person):
    _context, page = open_browser(transport="internal", hasUserVerification=True, isUserVerified=True)
    register(page, site, person, "webauthn-platform", "This laptop")
    token = claims(provider, sign_in_with_password_and(
        page, site, person, "Use this device (fingerprint, face, PIN)", "phr"))
    assert token["acr"] == "phr" and "webauthn" in token["amr"]


def test_a_passkey_signs_in_with_no_username(provider, open_browser, site, person):
    _context, page = open_browser(transport="internal", hasResidentKey=True, hasUserVerification=True,
                                  isUserVerified=True)
    register(page, site, person, "passkey", "Phone passkey")
    page.context.clear_cookies()
    page.goto(authorize_url(site))
    page.get_by_role("button", name="Sign in with a passkey").click()
    code = to_client(page, lambda: page.get_by_role("button", name="Continue").click())
    token = claims(provider, code)
    assert token["sub"] == person["sub"] and token["amr"] == ["webauthn"] and token["acr"] == "phr"
