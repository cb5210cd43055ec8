"""An automated accessibility audit of the pages people see, in Debian's chromium (Playwright).

axe-core (pinned in tests/interop/package.json, installed by `make test`) is injected into
each page: the login page, a refused password, the choice of a second factor, code entry,
consent, the password reset request, the choice at enrollment, the device code page, My MFA
settings, the TOTP setup page, the recovery codes (their status, a new set shown with its
numbers, and a sign-in asking for one by its number) and an error page, in English and in
German (the browser's language). A violation of impact "serious" or "critical" fails the test; "moderate" and
"minor" ones are printed, so they show up without blocking. Every page must also carry its
language on <html>, one h1 and a main landmark.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PASSWORD, require_service, start_provider
from tests.browser.test_webauthn import authorize_url, to_client

AXE = Path(__file__).resolve().parent.parent / "interop" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")
LOCALES = {"en": "en-US", "de": "de-DE"}
WRONG = "not the password"
FACTORS = ["password", "email-otp", "sms", "totp", "recovery-code"]


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    running, stop = start_provider(tmp_path_factory.mktemp("accessibility"), "sqlite-sql", extra_settings={
        "factors": FACTORS, "enrollment": {"at_login": True}, "device_flow": {"enabled": True},
    })
    yield running
    stop()


@pytest.fixture(scope="module")
def axe_script():
    require_service("axe-core (cd tests/interop && npm ci)",
                    lambda: AXE.is_file() or (_ for _ in ()).throw(FileNotFoundError(AXE)))
    return AXE


def audit(page, axe_script) -> list[dict]:
    """axe's violations on the current page, plus the page's language, h1 and main checks."""
    page.add_script_tag(path=str(axe_script))
    found = page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ["violations"]});
        return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                            nodes: v.nodes.map(n => n.target.join(" "))}));
    }""")
    return found


def fill_login(page, login: str, password: str) -> None:
    page.fill("#login", login)
    page.fill("#password", password)


def post_password(page, site: str, login: str, **params) -> None:
    """A new authorization request, then its login page posted with the right password."""
    page.goto(authorize_url(site, **params))
    fill_login(page, login, PASSWORD)
    page.click("button[value=login]")


def walk(page, site, provider, lang):
    """Visit each page in turn; yields (name, page) when the page is ready to audit."""
    with_phone = provider.add_user(email_verified=True, phone="+15550199", phone_verified=True)
    password_only = provider.add_user(email_verified=True)

    page.goto(authorize_url(site))
    yield "login"
    fill_login(page, with_phone["username"], WRONG)
    page.click("button[value=login]")
    page.wait_for_selector("#login-error")
    yield "password error"

    page.click("#forgot-password")
    page.wait_for_url("**/reset")
    yield "password reset request"

    post_password(page, site, with_phone["username"], acr_values="mfa")
    page.wait_for_selector("button[value=email-otp]")
    yield "second factor choice"
    page.click("button[value=email-otp]")
    page.wait_for_selector("#code")
    yield "code entry"

    page.context.clear_cookies()
    post_password(page, site, with_phone["username"], client_id="web-post")
    page.wait_for_selector("button[value=approve]")
    yield "consent"

    page.context.clear_cookies()
    post_password(page, site, password_only["username"], acr_values="mfa")
    page.wait_for_selector("[data-enroll=choose]")
    yield "enrollment choice"

    page.goto(f"{site}/device")
    yield "device code"
    page.fill("#user_code", "BCDF-GHJK")
    page.click("button[type=submit]")
    page.wait_for_selector("#user-code-error")
    yield "device code error"

    page.context.clear_cookies()
    page.goto(authorize_url(site))
    fill_login(page, password_only["username"], PASSWORD)
    to_client(page, lambda: page.click("button[value=login]"))
    page.goto(f"{site}/account/security")
    page.wait_for_selector("#methods")
    yield "account security"
    page.goto(f"{site}/account/security/totp")
    page.click("main form button[type=submit]")
    page.wait_for_selector("#totp-secret")
    yield "TOTP setup"
    page.goto(f"{site}/account/security/recovery-codes")
    yield "recovery codes"
    page.click("main form button[type=submit]")
    page.wait_for_selector("#recovery-codes")
    yield "recovery codes shown"

    page.context.clear_cookies()
    post_password(page, site, password_only["username"], acr_values="mfa")
    page.wait_for_selector("button[value=recovery-code], #code")
    if page.locator("button[value=recovery-code]").count():
        page.click("button[value=recovery-code]")
        page.wait_for_selector("#code")
    asks = {"en": "Enter recovery code number 1 ", "de": "Geben Sie den Wiederherstellungscode Nr. 1 "}[lang]
    assert asks in page.inner_text("main"), page.inner_text("main")
    yield "recovery code entry (by its number)"

    page.goto(f"{site}/oidc/auth?client_id=nobody&response_type=code&scope=openid")
    yield "error"


@pytest.mark.parametrize("lang", list(LOCALES))
def test_the_main_pages_pass_axe_in_both_languages(provider, browser, axe_script, lang):
    site = provider.url.replace("127.0.0.1", "localhost")
    # bypass_csp: the pages' Content Security Policy would (rightly) refuse the injected axe script
    context = browser.new_context(bypass_csp=True, locale=LOCALES[lang])
    page = context.new_page()
    blocking, visited = {}, []
    try:
        for name in walk(page, site, provider, lang):
            visited.append(name)
            assert page.locator("html").get_attribute("lang") == lang, name
            assert page.locator("h1").count() == 1 and page.locator("main").count() == 1, name
            violations = audit(page, axe_script)
            for violation in violations:
                if violation["impact"] not in BLOCKING:
                    print(f"[{lang}] {name}: {violation['impact']} {violation['id']}: {violation['help']}")
            serious = [v for v in violations if v["impact"] in BLOCKING]
            if serious:
                blocking[name] = serious
    finally:
        context.close()
    assert len(visited) == 15, visited
    assert not blocking, blocking
