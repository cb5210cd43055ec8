"""TOTP (RFC 6238, over HOTP RFC 4226) as a verifier: the appendix B vectors, the 30 s time
step, one step of drift, no replay, bounded guessing. Codes come from the HMAC implementation
in this file, never from pyotp or the provider."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from oidc_provider.authn import totp_codes
from tests.conftest import BACKENDS, UserAgent, one_passed, post, start_provider
from tests.functional.test_totp_recovery import begin_enrollment, id_token_claims, refused

clause = pytest.mark.clause

STEP = 30  # RFC 6238 5.2: the recommended time step X
SEED = b"12345678901234567890"  # RFC 6238 appendix B, the SHA1 seed
APPENDIX_B_SHA1 = [(59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
                   (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130")]


def hotp(key: bytes, counter: int, digits: int = 6) -> str:
    """RFC 4226 5.3: HMAC-SHA-1 over the 8-byte counter, dynamic truncation, modulo 10^digits."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[19] & 0x0F
    binary = ((mac[offset] & 0x7F) << 24) | (mac[offset + 1] << 16) | (mac[offset + 2] << 8) | mac[offset + 3]
    return str(binary % 10**digits).rjust(digits, "0")


def totp(key: bytes, at: float, digits: int = 6) -> str:
    """RFC 6238 4.2: T = floor((unix time - T0) / X), T0 = 0."""
    return hotp(key, int(at // STEP), digits)


def b32(key: bytes) -> str:
    return base64.b32encode(key).decode().rstrip("=")


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory):
    running, stop = start_provider(tmp_path_factory.mktemp("rfc6238"), request.param, extra_settings={
        "factors": ["password", "email-otp", "totp", "recovery-code"]})
    yield running
    stop()


def mid_step(margin: float = 10) -> int:
    """Wait until the current step has `margin` seconds left; returns the step."""
    left = STEP - time.time() % STEP
    if left < margin:
        time.sleep(left + 0.2)
    return int(time.time() // STEP)


def enrolling(provider):
    """A signed-in user on the authenticator-app setup page: (person, agent, the page, the new key)."""
    person = provider.add_user()
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    page, key = begin_enrollment(agent)
    return person, agent, page, key


def enrolled(provider) -> tuple[dict, bytes, int]:
    """A user with an app confirmed by the previous step's code (so now is step + 1)."""
    person, agent, page, key = enrolling(provider)
    step = mid_step(14) - 1
    done = agent.go(f"{provider.url}/account/security/totp/confirm", "POST",
                    {"csrf_token": agent.csrf(page), "code": hotp(key, step)})
    assert 'data-totp="enrolled"' in done.text, done.text[:300]
    return person, key, step


def code_step(provider, person):
    """A new browser at the TOTP step after the password."""
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"])
    return agent, post(agent, choice, "start", {"factor": "totp"})


def accepted(provider, agent, page, code) -> dict:
    return id_token_claims(provider, agent.submit(page, {"code": code}))


# -- the algorithm --------------------------------------------------------------------------

@clause("RFC 6238 appendix B: this file's HMAC implementation gives the SHA1 test vectors")
def test_independent_implementation_matches_appendix_b():
    assert [totp(SEED, at, 8) for at, _ in APPENDIX_B_SHA1] == [code for _, code in APPENDIX_B_SHA1]


@clause("RFC 6238 appendix B: our verifier accepts each SHA1 vector at its time, in its own step only")
@pytest.mark.parametrize("at, code", APPENDIX_B_SHA1)
def test_verifier_accepts_appendix_b_vectors(at, code):
    assert totp_codes.matching_step(b32(SEED), code, at=at, digits=8, drift=0) == at // STEP
    assert totp_codes.matching_step(b32(SEED), code, at=at + 2 * STEP, digits=8, drift=1) is None
    wrong = f"{(int(code) + 1) % 10**8:08d}"
    assert totp_codes.matching_step(b32(SEED), wrong, at=at, digits=8, drift=1) is None


@clause("RFC 6238 4.1 / 5.2: the time step is 30 s and the seed is 160 bits (RFC 4226 4 R6)")
def test_enrollment_offers_a_30_second_sha1_app_with_a_160_bit_seed(provider):
    _person, agent, page, key = enrolling(provider)
    uri = re.search(r'<a id="totp-uri" href="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    query = {name: values[0] for name, values in parse_qs(urlsplit(uri).query).items()}
    assert query.get("period", "30") == "30" and query.get("algorithm", "SHA1").upper() == "SHA1"
    assert query.get("digits", "6") == "6" and len(key) * 8 == 160


@clause("RFC 6238 4.2: a code is valid for its 30 s step (server side, through the sign-in)")
def test_the_current_code_signs_in(provider):
    person, key, step = enrolled(provider)
    agent, page = code_step(provider, person)
    claims = accepted(provider, agent, page, hotp(key, step + 1))
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "mfa"


# -- drift ------------------------------------------------------------------------------------

@clause("RFC 6238 5.2: a phone clock one step ahead is accepted")
def test_one_step_ahead_is_accepted(provider):
    person, key, step = enrolled(provider)
    agent, page = code_step(provider, person)
    assert accepted(provider, agent, page, hotp(key, step + 1 + 1))["acr"] == "mfa"


@clause("RFC 6238 5.2: two steps of drift, either way, are refused")
@pytest.mark.parametrize("offset", [-2, 2, -3, 3, 10])
def test_two_steps_of_drift_are_refused(provider, offset):
    person, key, step = enrolled(provider)
    agent, page = code_step(provider, person)
    refused(agent, page, hotp(key, step + 1 + offset))


@clause("RFC 6238 5.2: a code one step behind is still in time (network delay)")
def test_previous_step_code_is_accepted(provider):
    _person, agent, page, key = enrolling(provider)
    step = mid_step(14)
    agent.go(f"{provider.url}/account/security/totp/confirm", "POST",
             {"csrf_token": agent.csrf(page), "code": hotp(key, step - 2)})  # refused: too old
    done = agent.go(f"{provider.url}/account/security/totp/confirm", "POST",
                    {"csrf_token": agent.csrf(agent.last_page), "code": hotp(key, step - 1)})
    assert 'data-totp="enrolled"' in done.text


# -- replay -------------------------------------------------------------------------------------

@clause("RFC 6238 5.2: the verifier must not accept the second attempt of a valid OTP")
def test_a_code_is_accepted_once(provider):
    person, key, step = enrolled(provider)
    agent, page = code_step(provider, person)
    accepted(provider, agent, page, hotp(key, step + 1))
    agent, page = code_step(provider, person)
    assert "already used" in refused(agent, page, hotp(key, step + 1)).text


@clause("RFC 6238 5.2: the enrollment's confirming code cannot sign in afterwards")
def test_confirming_code_is_spent(provider):
    person, key, step = enrolled(provider)
    agent, page = code_step(provider, person)
    refused(agent, page, hotp(key, step))


@clause("RFC 6238 5.2: no replay within the window: parallel sign-ins with one code, exactly one wins")
def test_a_code_posted_by_parallel_sign_ins_works_once(provider):
    person, key, step = enrolled(provider)
    steps = [code_step(provider, person) for _ in range(5)]
    barrier, answers = threading.Barrier(len(steps)), []
    code = hotp(key, step + 1)

    def submit(agent, page):
        url, data = agent.form_action(page), {"csrf_token": agent.csrf(page), "code": code}
        barrier.wait()
        answers.append(agent.http.post(url, data=data, allow_redirects=False, timeout=30))

    threads = [threading.Thread(target=submit, args=pair) for pair in steps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    one_passed(answers)


@clause("RFC 6238 5.2: after a later step is used, an earlier step's code is refused")
def test_earlier_step_after_later_is_refused(provider):
    person, key, step = enrolled(provider)
    agent, page = code_step(provider, person)
    accepted(provider, agent, page, hotp(key, step + 2))  # one ahead
    agent, page = code_step(provider, person)
    refused(agent, page, hotp(key, step + 1))  # the current step, but behind the used one


# -- guessing and the seed --------------------------------------------------------------------

@clause("RFC 4226 7.3 / RFC 6238 5.1: throttling: after a few wrong codes even the right one is refused")
def test_guessing_is_bounded(provider):
    person, key, step = enrolled(provider)
    agent, page = code_step(provider, person)
    right = hotp(key, step + 1)
    for guess in range(provider.op.settings.totp_recovery.max_tries):
        page = refused(agent, page, f"{(int(right) + 1 + guess) % 10**6:06d}")
    refused(agent, page, right)
    assert provider.op.settings.totp_recovery.max_tries <= 10


@clause("RFC 4226 7.5 / RFC 6238 5.1: the seed is protected at rest (encrypted, never stored in clear)")
def test_the_seed_is_not_stored_in_clear(provider):
    person, key, _ = enrolled(provider)
    with provider.app.app_context():
        from oidc_provider.extensions import db

        rows = db.session.execute(text("SELECT secret, data FROM authenticators WHERE user_id = :u AND kind = 'totp'"),
                                  {"u": person["sub"]}).all()
    assert len(rows) == 1
    stored = rows[0][0]
    stored_bytes = stored if isinstance(stored, (bytes, memoryview)) else str(stored).encode()
    stored_bytes = bytes(stored_bytes)
    for form in (key, b32(key).encode(), b32(key).lower().encode(), key.hex().encode()):
        assert form not in stored_bytes
    assert b32(key) not in str(rows[0][1])


@clause("RFC 6238 5.2: codes are compared per step in constant time, never by prefix")
@pytest.mark.parametrize("typed", ["", "1", "12345", "1234567", "abcdef", "１２３４５６", "123 456 7"])
def test_malformed_codes_never_match(typed):
    assert totp_codes.matching_step(b32(SEED), typed, at=time.time()) is None
