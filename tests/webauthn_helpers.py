"""What the WebAuthn tests share (unit/test_webauthn.py, security/test_webauthn_rp.py and
the browser tests): a provider whose relying party is http://localhost:PORT. (The browser's
virtual authenticator is tests/browser/conftest.py's open_browser.)

WebAuthn needs a secure context; http://localhost is one, http://127.0.0.1 is not for every
check, so the pages are opened on localhost with rp id `localhost`."""

from __future__ import annotations

from contextlib import contextmanager

from tests.conftest import start_provider

FACTORS = ["password", "email-otp", "sms", "voice", "email", "webauthn-key", "webauthn-platform", "passkey"]


@contextmanager
def webauthn_provider(tmp_path_factory, name: str, factors=FACTORS, *, localhost_issuer: bool = False,
                      **settings):
    """A live provider (SQLite) with `factors` and the WebAuthn relying party on localhost;
    `localhost_issuer`: the issuer too, so that redirects (a step-up's return) come back to
    the host, and the cookies, the browser uses. `settings`: further top-level settings."""

    def at(port: int) -> dict:
        values = {"factors": list(factors),
                  "webauthn": {"rp_id": "localhost", "origins": [f"http://localhost:{port}"]}, **settings}
        if localhost_issuer:
            values["issuer"] = f"http://localhost:{port}"
        return values

    running, stop = start_provider(tmp_path_factory.mktemp(name), "sqlite-sql", extra_settings=at)
    try:
        yield running
    finally:
        stop()


def on_localhost(provider) -> str:
    """The provider's URL with the host WebAuthn accepts."""
    return provider.url.replace("127.0.0.1", "localhost")
