"""Fixtures of the browser tests beside tests/conftest.py's `browser`."""

from __future__ import annotations

import pytest

from tests.webauthn_helpers import on_localhost


@pytest.fixture
def site(provider):
    """The provider as the browser opens it: on localhost, a secure context for WebAuthn."""
    return on_localhost(provider)


def browser_with(browser, **authenticator):
    """A fresh browser context and page holding one virtual authenticator (CDP WebAuthn domain);
    console messages are kept so a test can tell that no Content Security Policy was violated."""
    context = browser.new_context()
    page = context.new_page()
    console = []
    page.on("console", lambda message: console.append(message.text))
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": False, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True, **authenticator}})
    return context, page, console


@pytest.fixture
def open_browser(browser):
    """open_browser(**authenticator) -> (context, page) holding a virtual authenticator with
    those options; each context is closed after the test and must not have broken the
    Content Security Policy."""
    opened = []

    def open_(**authenticator):
        context, page, console = browser_with(browser, **authenticator)
        opened.append((context, console))
        return context, page

    yield open_
    for context, console in opened:
        context.close()
        assert not [m for m in console if "Content Security Policy" in m], console
