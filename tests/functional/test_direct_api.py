"""The direct API as the Transmit guide shows it, with real SMTP and SMS gateway servers."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from tests.conftest import interaction_uid, start_provider, token_request
from tests.servers import code_in, text_of

VERIFY = "https://domain.com/verify"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.103 Safari/537.36"


@pytest.fixture(scope="module", params=["sqlite-sql", "postgres-redis"])
def provider(request, tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("api"), request.param, extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms"},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
    })
    yield running
    stop()


@pytest.fixture(scope="module")
def bearer(provider):
    answer = token_request(provider, {"grant_type": "client_credentials",
                                      "scope": "auth.email auth.sms auth.password"}, client="api-backend")
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture
def person(provider):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    return provider.add_user(phone=phone, phone_verified=True, email_verified=True) | {"phone": phone}


def call(provider, bearer, path, body):
    return requests.post(f"{provider.url}{path}", json=body, headers=bearer, timeout=15)


def query(url: str) -> dict:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def sms_code(gateway, number):
    return code_in([r.json()["text"] for r in gateway.received if r.json().get("to") == number][-1])


def email_code(smtp, address):
    return code_in(text_of(smtp.mailbox.to(address)[-1].message))


def exchange(provider, url) -> dict:
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": query(url)["code"],
                                      "redirect_uri": VERIFY}, client="api-backend").json()
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})


def test_the_guides_magic_link_with_require_mfa_then_sms(provider, bearer, person, plain_smtp, gateway_server):
    """Step 1 of the Transmit guide, curl example 1 (host changed), then the second factor."""
    address = f"{person['username']}@example.com"
    sent = call(provider, bearer, "/cis/v1/auth/links/email", {
        "email": address, "redirect_uri": VERIFY, "require_mfa": True,
        "client_attributes": {"user_agent": UA, "ip_address": "123.45.67.89"}})
    assert sent.status_code == 200
    link = re.search(r"(http://\S+/v1/auth/links/email/verify\?token=\S+)", text_of(
        plain_smtp.mailbox.to(address)[-1].message)).group(1)
    browser = requests.Session()
    landing = browser.get(link, timeout=10)
    assert landing.status_code == 200 and "Yes, sign me in" in landing.text
    token = re.search(r'name="token" value="([^"]+)"', landing.text).group(1)
    answer = browser.post(link.split("?")[0], data={"token": token}, allow_redirects=False, timeout=10)
    url = answer.headers["Location"]
    params = query(url)
    assert url.startswith(VERIFY) and params["error"] == "mfa_required"
    assert params["error_description"] == "A second factor is required: sms"  # not another email flow
    assert call(provider, bearer, "/v1/auth/otp/sms", {"phone_number": person["phone"]}).status_code == 200
    done = call(provider, bearer, "/v1/auth/otp/sms/validation", {
        "phone_number": person["phone"], "passcode": sms_code(gateway_server, person["phone"]),
        "redirect_uri": VERIFY, "require_mfa": True, "mfa_session": params["mfa_session"]})
    claims = exchange(provider, done.json()["result"]["url"])
    assert claims["acr"] == "mfa" and claims["amr"] == ["eml", "sms", "mfa"] and claims["sub"] == person["sub"]


def test_password_with_require_mfa_lists_the_guides_factors(provider, bearer, person, plain_smtp):
    first = call(provider, bearer, "/v1/auth/password/login", {
        "username": person["username"], "password": person["password"], "redirect_uri": VERIFY, "require_mfa": True})
    assert first.status_code == 200
    url = first.json()["result"]["url"]
    assert "error=mfa_required&error_description=A%20second%20factor%20is%20required%3A%20email%2Csms%2Cemail-otp" in url
    address = f"{person['username']}@example.com"
    call(provider, bearer, "/v1/auth/otp/email", {"email": address})
    second = call(provider, bearer, "/v1/auth/otp/email/validation", {
        "email": address, "passcode": email_code(plain_smtp, address), "redirect_uri": VERIFY,
        "require_mfa": True, "mfa_session": first.json()["mfa_session"], "nonce": "n-1", "state": "s-1"})
    assert query(second.json()["result"]["url"])["state"] == "s-1"
    claims = exchange(provider, second.json()["result"]["url"])
    assert claims["amr"] == ["pwd", "eml", "mfa"] and claims["nonce"] == "n-1"


def test_email_otp_alone_gives_a_code(provider, bearer, person, plain_smtp):
    address = f"{person['username']}@example.com"
    call(provider, bearer, "/v1/auth/otp/email", {"email": address})
    done = call(provider, bearer, "/v1/auth/otp/email/validation", {
        "email": address, "passcode": email_code(plain_smtp, address), "redirect_uri": VERIFY})
    claims = exchange(provider, done.json()["result"]["url"])
    assert claims["amr"] == ["eml"] and "acr" not in claims


# -- attacks ---------------------------------------------------------------------------------

def test_the_second_step_without_the_first_is_only_a_first_step(provider, bearer, person, gateway_server):
    call(provider, bearer, "/v1/auth/otp/sms", {"phone_number": person["phone"]})
    answer = call(provider, bearer, "/v1/auth/otp/sms/validation", {
        "phone_number": person["phone"], "passcode": sms_code(gateway_server, person["phone"]),
        "redirect_uri": VERIFY, "require_mfa": True})
    assert query(answer.json()["result"]["url"])["error"] == "mfa_required"  # no code
    forged = call(provider, bearer, "/v1/auth/password/login", {
        "username": person["username"], "password": person["password"], "redirect_uri": VERIFY,
        "require_mfa": True, "mfa_session": "made-up"})
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_grant"


def test_steps_of_two_users_do_not_mix(provider, bearer, person, gateway_server):
    other = provider.add_user(email_verified=True, phone=f"+1555{uuid.uuid4().int % 10**7:07d}", phone_verified=True)
    first = call(provider, bearer, "/v1/auth/password/login", {
        "username": other["username"], "password": other["password"], "redirect_uri": VERIFY, "require_mfa": True})
    call(provider, bearer, "/v1/auth/otp/sms", {"phone_number": person["phone"]})
    mixed = call(provider, bearer, "/v1/auth/otp/sms/validation", {
        "phone_number": person["phone"], "passcode": sms_code(gateway_server, person["phone"]),
        "redirect_uri": VERIFY, "require_mfa": True, "mfa_session": first.json()["mfa_session"]})
    assert mixed.status_code == 400 and mixed.json()["error"] == "invalid_grant"


def test_require_mfa_on_the_second_call_only_never_yields_mfa(provider, bearer, person, gateway_server):
    first = call(provider, bearer, "/v1/auth/password/login", {
        "username": person["username"], "password": person["password"], "redirect_uri": VERIFY})
    single = exchange(provider, first.json()["result"]["url"])
    assert single["amr"] == ["pwd"] and "acr" not in single
    call(provider, bearer, "/v1/auth/otp/sms", {"phone_number": person["phone"]})
    second = call(provider, bearer, "/v1/auth/otp/sms/validation", {
        "phone_number": person["phone"], "passcode": sms_code(gateway_server, person["phone"]),
        "redirect_uri": VERIFY, "require_mfa": True})
    assert query(second.json()["result"]["url"])["error"] == "mfa_required"


def test_tokens_scopes_and_redirect_uris_are_checked(provider, bearer, person):
    body = {"username": person["username"], "password": person["password"], "redirect_uri": VERIFY}
    assert requests.post(f"{provider.url}/v1/auth/password/login", json=body, timeout=10).status_code == 401
    other = token_request(provider, {"grant_type": "client_credentials", "scope": "orders:read"}, client="backend")
    foreign = {"Authorization": f"Bearer {other.json()['access_token']}"}
    assert call(provider, foreign, "/v1/auth/password/login", body).status_code == 403  # no auth.password scope
    unregistered = call(provider, bearer, "/v1/auth/password/login", {**body, "redirect_uri": "https://evil.example/"})
    assert unregistered.status_code == 400 and "redirect_uri" in unregistered.json()["error_description"]
    garbage = requests.post(f"{provider.url}/v1/auth/password/login", data="{nope", headers={
        **bearer, "Content-Type": "application/json"}, timeout=10)
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_request"
    wrong = call(provider, bearer, "/v1/auth/password/login", {**body, "password": "wrong"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


# -- GET /v1/auth/webauthn: into the browser flow ---------------------------------------------

def webauthn(provider, prefix="/v1/auth", accept=None, **params):
    headers = {"Accept": accept} if accept else {}
    return requests.get(f"{provider.url}{prefix}/webauthn", params=params, headers=headers,
                        allow_redirects=False, timeout=10)


def interaction_level(provider, page) -> str:
    """The acr level the paused authorization request must reach, as the provider stored it."""
    with provider.app.app_context():
        return provider.op.store.get(f"interaction:{interaction_uid(page)}")["level"]


@pytest.mark.parametrize("prefix", ["/v1/auth", "/cis/v1/auth"])
def test_webauthn_sends_the_browser_into_the_code_flow_with_phr(provider, person, prefix):
    from tests.conftest import UserAgent

    answer = webauthn(provider, prefix, client_id="api-backend", redirect_uri=VERIFY, state="s-1", nonce="n-1",
                      unknown="dropped")
    assert answer.status_code == 302 and answer.headers["Cache-Control"] == "no-store"
    location = answer.headers["Location"]
    assert location.startswith(f"{provider.url}/oidc/auth?")
    assert query(location) == {"client_id": "api-backend", "redirect_uri": VERIFY, "response_type": "code",
                               "scope": "openid", "acr_values": "phr", "state": "s-1", "nonce": "n-1"}
    agent = UserAgent(provider)
    page = agent.go(location)
    assert page.status_code == 200 and interaction_level(provider, page) == "phr"
    # a password is not enough, and with no WebAuthn credential there is nothing else to offer
    after_password = agent.login(page, person["username"])
    assert after_password.status_code == 403 and "sms" not in re.findall(r'name="factor" value="([^"]+)"',
                                                                         after_password.text)


def test_webauthn_with_require_mfa_still_asks_for_phr_with_the_default_levels(provider, person):
    """phr (one WebAuthn flow) is ranked above mfa (two flows) by default: require_mfa=true asks
    for phr, never for mfa, which SMS and email would meet without WebAuthn."""
    from tests.conftest import UserAgent

    answer = webauthn(provider, client_id="api-backend", redirect_uri=VERIFY, require_mfa="true")
    assert query(answer.headers["Location"])["acr_values"] == "phr"
    assert "require_mfa" not in query(answer.headers["Location"])
    agent = UserAgent(provider)
    page = agent.go(answer.headers["Location"])
    assert interaction_level(provider, page) == "phr"
    after_password = agent.login(page, person["username"])
    assert after_password.status_code == 403  # not "One more step" with SMS or email, as mfa would offer
    assert "One more step" not in after_password.text


def test_webauthn_passes_pkce_on(provider):
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    answer = webauthn(provider, client_id="api-backend", redirect_uri=VERIFY, code_challenge=challenge,
                      require_mfa="false")
    params = query(answer.headers["Location"])
    assert params["code_challenge"] == challenge and params["code_challenge_method"] == "S256"


@pytest.mark.parametrize("params, error, text", [
    ({"redirect_uri": VERIFY}, "invalid_request", "'client_id' is required"),
    ({"client_id": "", "redirect_uri": VERIFY}, "invalid_request", "'client_id' is required"),
    ({"client_id": "nobody", "redirect_uri": VERIFY}, "invalid_client", "not registered"),
    ({"client_id": "api-backend"}, "invalid_request", "'redirect_uri' is required"),
    ({"client_id": "api-backend", "redirect_uri": "https://evil.example/"}, "invalid_request", "not registered"),
    ({"client_id": "backend", "redirect_uri": VERIFY}, "invalid_request", "not registered"),  # has none
    ({"client_id": ["api-backend", "web"], "redirect_uri": VERIFY}, "invalid_request", "more than once"),
    ({"client_id": "api-backend", "redirect_uri": VERIFY, "require_mfa": "yes"}, "invalid_request", "true or false"),
    ({"client_id": "api-backend", "redirect_uri": VERIFY, "code_challenge": "short"}, "invalid_request", "43 to 128"),
    ({"client_id": "api-backend", "redirect_uri": VERIFY, "code_challenge": "x" * 43,
      "code_challenge_method": "plain"}, "invalid_request", "S256"),
    ({"client_id": "api-backend", "redirect_uri": VERIFY, "code_challenge_method": "S256"}, "invalid_request",
     "with a code_challenge"),
    ({"client_id": "api-backend", "redirect_uri": VERIFY, "state": "s" * 5000}, "invalid_request", "too long"),
])
def test_webauthn_refuses_malformed_requests_without_redirecting(provider, params, error, text):
    page = webauthn(provider, **params)
    assert page.status_code == 400 and "Location" not in page.headers
    assert page.headers["Content-Type"].startswith("text/html") and "evil.example" not in page.text
    answer = webauthn(provider, accept="application/json", **params)
    assert answer.status_code == 400 and "Location" not in answer.headers
    assert answer.json()["error"] == error and text in answer.json()["error_description"]


def test_which_level_webauthn_asks_for():
    from oidc_provider.authn.acr import Level
    from oidc_provider.views.direct_api import webauthn_level

    def level(value, rank, flows=1, required=()):
        return Level(value, rank, flows, frozenset(required), frozenset(), None, None)

    keys = ("webauthn-key", "webauthn-platform", "passkey")
    mfa, phr = level("mfa", 0, 2), level("phr", 1, 1, keys)
    both = level("phr-mfa", 2, 2, keys)
    assert webauthn_level([mfa, phr], False) == phr and webauthn_level([mfa, phr], True) == phr
    assert webauthn_level([mfa, phr, both], False) == phr and webauthn_level([mfa, phr, both], True) == both
    low_phr, high_mfa = level("phr", 0, 1, keys), level("mfa", 1, 2)  # phr ranked below mfa: not enough
    assert webauthn_level([low_phr, high_mfa], False) == low_phr and webauthn_level([low_phr, high_mfa], True) is None
    assert webauthn_level([mfa, level("otp", 1, 1, ["totp"])], False) is None  # requires something else
    assert webauthn_level([level("mixed", 0, 1, ["totp", "passkey"])], False) is None  # WebAuthn not required
    assert webauthn_level([phr], True) is None  # no level for require_mfa at all


def test_strings_the_database_cannot_hold_are_refused(provider, bearer):
    """NUL (PostgreSQL text refuses it), unpaired surrogates, and IP addresses longer than the
    audit column: 400, never 500."""
    body = {"username": "someone", "password": "x", "redirect_uri": VERIFY}
    for change in ({"username": "a\x00b"}, {"password": "a\x00b"}, {"state": "\x00"},
                   {"client_attributes": {"user_agent": "UA\x00"}}, {"client_attributes": {"ip_address": "1" * 65}}):
        answer = call(provider, bearer, "/v1/auth/password/login", {**body, **change})
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", change
    surrogate = b'{"email": "\\ud800@example.com"}'
    answer = requests.post(f"{provider.url}/v1/auth/otp/email", data=surrogate, timeout=10,
                           headers={**bearer, "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    long_address = "x" * 300 + "@example.com"  # store keys stay short: the address is hashed into them
    assert call(provider, bearer, "/v1/auth/otp/email", {"email": long_address}).status_code == 200
    assert call(provider, bearer, "/v1/auth/otp/email/validation", {
        "email": long_address, "passcode": "000000", "redirect_uri": VERIFY}).json()["error"] == "invalid_grant"


def test_errors_raised_by_werkzeug_keep_the_json_shape(provider, bearer):
    huge = requests.post(f"{provider.url}/v1/auth/otp/email", data=b"{" + b" " * 70_000 + b"}", timeout=10,
                         headers={**bearer, "Content-Type": "application/json"})
    assert huge.status_code == 400 and huge.json() == {"error": "invalid_request",
                                                       "error_description": "The request body is too large."}
