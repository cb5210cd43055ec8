"""TOTP (RFC 6238): the pyotp wrapper against an independent implementation and the RFC's
test vectors; the factor's rules (confirmation, drift, replay, try limit, secrets at rest)
against the real databases."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from oidc_provider.authn import totp_codes
from oidc_provider.crypto import SecretBoxError
from tests.conftest import BACKENDS, start_provider

PERIOD = 30
RFC_KEYS = {  # RFC 6238 Appendix B: the seeds for each hash function
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC_VECTORS = [  # (time, SHA1, SHA256, SHA512), 8 digits
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


def rfc6238(key: bytes, at: float, digits: int = 6, period: int = PERIOD, digest: str = "sha1") -> str:
    """RFC 6238 / RFC 4226, written from the RFCs with hmac and struct (independent of pyotp)."""
    counter = int(at // period)
    mac = hmac.new(key, struct.pack(">Q", counter), getattr(hashlib, digest)).digest()
    offset = mac[-1] & 0x0F  # RFC 4226 5.3 dynamic truncation
    binary = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def b32(key: bytes) -> str:
    return base64.b32encode(key).decode().rstrip("=")


@pytest.mark.parametrize("at, sha1, sha256, sha512", RFC_VECTORS)
def test_the_independent_implementation_gives_the_rfc_6238_vectors(at, sha1, sha256, sha512):
    assert rfc6238(RFC_KEYS["sha1"], at, 8) == sha1
    assert rfc6238(RFC_KEYS["sha256"], at, 8, digest="sha256") == sha256
    assert rfc6238(RFC_KEYS["sha512"], at, 8, digest="sha512") == sha512


@pytest.mark.parametrize("at, sha1, _sha256, _sha512", RFC_VECTORS)
def test_the_wrapper_accepts_the_rfc_6238_sha1_vectors_at_their_step(at, sha1, _sha256, _sha512):
    secret = b32(RFC_KEYS["sha1"])
    assert totp_codes.matching_step(secret, sha1, at=at, digits=8, drift=0) == at // PERIOD
    assert totp_codes.code_at(secret, at, digits=8) == sha1
    wrong = f"{(int(sha1) + 1) % 10**8:08d}"
    assert totp_codes.matching_step(secret, wrong, at=at, digits=8, drift=1) is None


def test_one_step_of_drift_either_way_is_accepted_two_are_not():
    key = RFC_KEYS["sha1"]
    secret, now = b32(key), 1_700_000_015.0
    step = int(now // PERIOD)
    for offset in (-1, 0, 1):
        code = rfc6238(key, now + offset * PERIOD)
        assert totp_codes.matching_step(secret, code, at=now) == step + offset
    for offset in (-3, -2, 2, 3):
        code = rfc6238(key, now + offset * PERIOD)
        assert totp_codes.matching_step(secret, code, at=now) is None
    # with drift 0 only the current step counts
    assert totp_codes.matching_step(secret, rfc6238(key, now - PERIOD), at=now, drift=0) is None


def test_a_code_expires_once_it_is_more_than_one_step_old():
    key = RFC_KEYS["sha1"]
    secret, issued = b32(key), 1_700_000_010.0  # the start of a step
    code = rfc6238(key, issued)
    assert totp_codes.matching_step(secret, code, at=issued + 59.9) is not None  # previous step: drift
    assert totp_codes.matching_step(secret, code, at=issued + 60) is None
    assert totp_codes.matching_step(secret, code, at=issued + 3600) is None


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "abcdef", "12345a", "１２３４５６"])
def test_malformed_codes_never_match(typed):
    secret = totp_codes.new_secret()
    assert totp_codes.matching_step(secret, typed, at=time.time()) is None


def test_spaces_and_dashes_between_digit_groups_are_ignored():
    key = RFC_KEYS["sha1"]
    code = rfc6238(key, 1_700_000_000)
    spaced = f"{code[:3]} {code[3:]}"
    assert totp_codes.matching_step(b32(key), spaced, at=1_700_000_000) == 1_700_000_000 // PERIOD
    assert totp_codes.matching_step(b32(key), f"{code[:3]}-{code[3:]}", at=1_700_000_000) is not None


def test_new_secrets_are_160_random_bits_in_base32():
    seen = {totp_codes.new_secret() for _ in range(50)}
    assert len(seen) == 50
    for secret in seen:
        assert len(secret) == 32 and len(base64.b32decode(secret)) == 20


def test_the_provisioning_uri_follows_the_key_uri_format():
    secret = totp_codes.new_secret()
    uri = totp_codes.provisioning_uri(secret, account="ada@example.com", issuer="Example", digits=6, period=30)
    parts = urlsplit(uri)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/Example:ada@example.com"
    assert query["secret"] == secret and query["issuer"] == "Example"
    assert query.get("digits", "6") == "6" and query.get("period", "30") == "30"
    assert "digits=8" in totp_codes.provisioning_uri(secret, account="a", issuer="E", digits=8)


def test_grouped_secrets_read_back_to_the_secret():
    secret = totp_codes.new_secret()
    assert totp_codes.grouped(secret).replace(" ", "") == secret
    assert all(len(group) == 4 for group in totp_codes.grouped(secret).split(" "))


# -- the factor, against the real databases ----------------------------------------------------

@pytest.fixture(scope="module", params=list(BACKENDS))
def app(request, tmp_path_factory):
    running, stop = start_provider(tmp_path_factory.mktemp("totp-unit"), request.param, extra_settings={
        "factors": ["password", "email-otp", "sms", "voice", "email", "totp", "recovery-code"]})
    yield running.app
    stop()


def away_from_step_edge(margin: float = 6) -> float:
    """Wait until the current time step has `margin` seconds left, so a step computed here is
    still the server's step a moment later; returns now."""
    left = PERIOD - time.time() % PERIOD
    if left < margin:
        time.sleep(left + 0.2)
    return time.time()


def new_user(app):
    import uuid

    from oidc_provider.cli import create_user

    with app.app_context():
        return create_user(f"totp-{uuid.uuid4().hex[:8]}", "a long enough password", email=None).id


def load(user_id):
    from oidc_provider.extensions import db
    from oidc_provider.models import User

    return db.session.get(User, user_id)


def enroll(app, user_id, offset=0):
    """Enroll and confirm with the code `offset` steps from now; returns (raw key, step used)."""
    factor = app.extensions["op"].factors.get("totp")
    with app.app_context():
        user = load(user_id)
        pending = factor.start_enrollment(user)
        key = base64.b32decode(factor.enrollment_details(user, pending)["secret"].replace(" ", ""))
        now = away_from_step_edge()
        assert factor.confirm_enrollment(user, pending, rfc6238(key, now + offset * PERIOD)).ok
        return key, int(now // PERIOD) + offset


def verify(app, user_id, code):
    factor = app.extensions["op"].factors.get("totp")
    with app.app_context():
        return factor.verify(load(user_id), {"code": code}, {})


def test_an_unconfirmed_app_never_verifies_a_sign_in(app):
    factor = app.extensions["op"].factors.get("totp")
    user_id = new_user(app)
    with app.app_context():
        user = load(user_id)
        pending = factor.start_enrollment(user)
        key = base64.b32decode(factor.enrollment_details(user, pending)["secret"].replace(" ", ""))
        assert not factor.available_for(user)
    result = verify(app, user_id, rfc6238(key, time.time()))
    assert not result.ok and result.reason == "no authenticator app"


def test_confirmation_needs_a_valid_code_and_its_code_cannot_sign_in(app):
    factor = app.extensions["op"].factors.get("totp")
    user_id = new_user(app)
    with app.app_context():
        user = load(user_id)
        pending = factor.start_enrollment(user)
        key = base64.b32decode(factor.enrollment_details(user, pending)["secret"].replace(" ", ""))
        now = away_from_step_edge()
        assert not factor.confirm_enrollment(user, pending, rfc6238(key, now + 2 * PERIOD)).ok
        assert not factor.available_for(user)
        code = rfc6238(key, now)
        assert factor.confirm_enrollment(user, pending, code).ok
        assert factor.available_for(load(user_id))
    assert verify(app, user_id, code).reason == "code already used"


def test_each_step_is_accepted_once_and_never_an_earlier_one(app):
    user_id = new_user(app)
    key, step = enroll(app, user_id, offset=-1)  # the previous step confirmed it
    now = step * PERIOD + PERIOD
    assert verify(app, user_id, rfc6238(key, now)).ok
    assert verify(app, user_id, rfc6238(key, now)).reason == "code already used"  # replay
    assert verify(app, user_id, rfc6238(key, now + PERIOD)).ok  # the next step, one ahead
    assert verify(app, user_id, rfc6238(key, now)).reason == "code already used"  # older than the last


def test_the_same_code_submitted_concurrently_is_accepted_exactly_once(app):
    user_id = new_user(app)
    key, step = enroll(app, user_id, offset=-1)
    code = rfc6238(key, (step + 1) * PERIOD)
    tries = app.extensions["op"].settings.totp_recovery.max_tries  # all of them reach the comparison
    barrier, results = threading.Barrier(tries), []

    def attempt():
        barrier.wait()
        results.append(verify(app, user_id, code))

    threads = [threading.Thread(target=attempt) for _ in range(tries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == tries
    assert sum(result.ok for result in results) == 1
    assert {result.reason for result in results if not result.ok} == {"code already used"}


def test_guesses_are_limited_per_user_before_the_code_is_compared(app):
    user_id = new_user(app)
    key, step = enroll(app, user_id, offset=-1)
    good = rfc6238(key, (step + 1) * PERIOD)
    wrong = f"{(int(good) + 1) % 10**6:06d}"
    limit = app.extensions["op"].settings.totp_recovery.max_tries
    for _ in range(limit):
        assert verify(app, user_id, wrong).reason == "wrong code"
    assert verify(app, user_id, good).reason == "throttled"  # even the right code, now
    app.extensions["op"].store.delete(f"totp-tries:{user_id}")
    assert verify(app, user_id, good).ok


def test_the_seed_is_encrypted_at_rest_and_bound_to_its_user(app):
    from oidc_provider.models import Authenticator, confirmed_authenticators

    user_id, other_id = new_user(app), new_user(app)
    key, _ = enroll(app, user_id)
    op = app.extensions["op"]
    with app.app_context():
        (row,) = confirmed_authenticators(user_id, "totp")
        assert row.secret.startswith("v1:") and b32(key) not in row.secret
        assert row.lookup is None and b32(key) not in str(row.data)
        assert op.secret_box.decrypt(row.secret, f"totp-seed:{user_id}") == b32(key).encode()
        with pytest.raises(SecretBoxError):  # copied to another account it does not decrypt
            op.secret_box.decrypt(row.secret, f"totp-seed:{other_id}")
        assert isinstance(row, Authenticator)


def test_a_new_app_replaces_the_old_one_only_once_confirmed(app):
    from oidc_provider.models import confirmed_authenticators

    factor = app.extensions["op"].factors.get("totp")
    user_id = new_user(app)
    old_key, step = enroll(app, user_id, offset=-1)
    with app.app_context():
        user = load(user_id)
        pending = factor.start_enrollment(user)
        new_key = base64.b32decode(factor.enrollment_details(user, pending)["secret"].replace(" ", ""))
    assert new_key != old_key
    assert verify(app, user_id, rfc6238(old_key, (step + 1) * PERIOD)).ok  # still the old app
    with app.app_context():
        assert factor.confirm_enrollment(load(user_id), factor.pending(load(user_id)),
                                         rfc6238(new_key, (step + 1) * PERIOD)).ok
        assert len(confirmed_authenticators(user_id, "totp")) == 1
    assert verify(app, user_id, rfc6238(old_key, (step + 2) * PERIOD)).reason == "wrong code"
    assert verify(app, user_id, rfc6238(new_key, (step + 2) * PERIOD)).ok


def test_removing_the_app_ends_it(app):
    factor = app.extensions["op"].factors.get("totp")
    user_id = new_user(app)
    key, step = enroll(app, user_id, offset=-1)
    with app.app_context():
        assert factor.remove(load(user_id))
        assert not factor.available_for(load(user_id))
    assert not verify(app, user_id, rfc6238(key, (step + 1) * PERIOD)).ok


def test_a_setup_left_unconfirmed_expires(app):
    from oidc_provider.authn.factors.totp import PENDING_LIFETIME
    from oidc_provider.extensions import db

    factor = app.extensions["op"].factors.get("totp")
    user_id = new_user(app)
    with app.app_context():
        pending = factor.start_enrollment(load(user_id))
        stale_seed = pending.secret
        assert factor.pending(load(user_id)).secret == stale_seed
        pending.created_at = time.time() - PENDING_LIFETIME - 1
        db.session.commit()
        assert factor.pending(load(user_id)) is None
        fresh_seed = factor.start_enrollment(load(user_id)).secret  # a new setup replaces the stale one
        assert factor.pending(load(user_id)).secret == fresh_seed != stale_seed
