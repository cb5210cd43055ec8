"""The attack suite: one file per source, every case marked with the clause it comes from.

`pytest tests/security -m "not slow" --collect-only -q` lists the cases; the README's table
counts them per source. A case without a `clause` marker fails the suite (see
test_every_case_names_its_clause in test_suite_shape.py).
"""

from __future__ import annotations

import jwt

from tests.conftest import REDIRECT, callback_params, pkce_pair, token_request


def settings_for(smtp, gateway, factors: list[str], otp: dict | None = None, **extra):
    """Settings (a function of the port) of the suite's providers: the real SMTP and gateway
    servers, send limits high enough for many cases on one address, WebAuthn on localhost;
    `otp` adds to the otp block, `extra` to the top level."""
    return lambda port: {
        "factors": factors,
        "email": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "timeout": 5},
        "sms": {"gateway": "webhook", "url": f"{gateway.url}/sms", "timeout": 5},
        "voice": {"gateway": "webhook", "url": f"{gateway.url}/voice", "timeout": 5},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000, "per_user_limit": 100, "per_destination_limit": 100,
                **(otp or {})},
        "webauthn": {"rp_id": "localhost", "origins": [f"http://localhost:{port}"]},
        **extra,
    }


def code_for(agent, user, client="web", **params):
    """Sign in through the browser stand-in; returns (callback params, PKCE verifier)."""
    verifier, challenge = pkce_pair()
    params = {"client_id": client, "code_challenge": challenge, "code_challenge_method": "S256", **params}
    return agent.sign_in(user["username"], **params), verifier


def redeem(provider, code, verifier, client="web", auth="basic", redirect_uri=REDIRECT):
    return token_request(provider, {"grant_type": "authorization_code", "code": code,
                                    "redirect_uri": redirect_uri, "code_verifier": verifier}, client, auth)


def tokens_for(provider, agent, user, client="web", auth="basic", **params):
    params, verifier = code_for(agent, user, client, **params)
    response = redeem(provider, params["code"], verifier, client, auth)
    assert response.status_code == 200, response.text
    return response.json()


def verify_jwt(provider, token, audience, algorithms=("RS256", "ES256")):
    key = jwt.PyJWKClient(f"{provider.url}/oidc/jwks").get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=list(algorithms), audience=audience, issuer=provider.url)


def submit_once(agent, page, fields: dict):
    """Post the page's form like UserAgent.submit, but answer the first response (its
    Set-Cookie headers), without following redirects."""
    import html
    import re

    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
    data = {name: html.unescape(value) for name, value in hidden}
    return agent.http.post(agent.form_action(page), data={**data, **fields}, allow_redirects=False, timeout=30)


def set_cookies(response) -> dict[str, str]:
    """Cookie name -> its whole Set-Cookie header, as the browser got it."""
    return {header.split("=", 1)[0]: header for header in response.raw.headers.getlist("Set-Cookie")}


def cookie_attributes(header: str) -> dict[str, str]:
    """The attributes of one Set-Cookie header, lower-cased names ("httponly": "")."""
    attributes = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return attributes


__all__ = ["callback_params", "code_for", "cookie_attributes", "redeem", "set_cookies", "submit_once",
           "tokens_for", "verify_jwt"]
