"""W3C WebAuthn Level 3 (and Level 2), the relying party's verification steps: 7.2 for an
assertion at sign-in, 7.1 for registration. Each case breaks one step with the software
authenticator (tests/unit/webauthn_authenticator.py) or an assertion written out here, over
the provider's own pages."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import UserAgent, callback_params, post
from tests.unit.test_webauthn import (BASE, answer, with_key, audit, claims_of, finish, last_failure, options_of, refused,
                                      register, registration_options, signed_in, webauthn_step)
from tests.unit.webauthn_authenticator import UP, UV, SoftAuthenticator, b64url
from tests.webauthn_helpers import on_localhost, webauthn_provider

clause = pytest.mark.clause

FACTORS = ["password", "email-otp", "webauthn-key", "webauthn-platform", "passkey"]


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with webauthn_provider(tmp_path_factory, "webauthn-rp", FACTORS) as running:
        yield running


@pytest.fixture
def origin(provider):
    return on_localhost(provider)


@pytest.fixture
def person(provider):
    return provider.add_user(email_verified=True)


def enrolled(provider, person, origin, kind="webauthn-key", **authenticator) -> SoftAuthenticator:
    device = SoftAuthenticator(origin, **authenticator)
    register(signed_in(provider, person), device, kind)
    return device


def only_credential(device):
    return next(iter(device.credentials.values()))


def written_out(credential, options, origin, *, client_data=None, rp_id="localhost", flags=UP | UV,
                signer=None, tamper=None) -> dict:
    """An assertion composed here byte by byte (WebAuthn 6.1 authenticator data, 5.8.1 client
    data), so that any field can be what an attacker wants; `tamper` edits the authenticator
    data after it was signed."""
    credential.sign_count += 1
    data = {"type": "webauthn.get", "challenge": options["challenge"], "origin": origin, "crossOrigin": False,
            **(client_data or {})}
    client_data_json = json.dumps(data).encode()
    auth_data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", credential.sign_count)
    signature = (signer or credential.key).sign(auth_data + hashlib.sha256(client_data_json).digest(),
                                                ec.ECDSA(hashes.SHA256()))
    if tamper:
        auth_data = tamper(auth_data)
    return {"id": credential.id_b64, "rawId": credential.id_b64, "type": "public-key",
            "response": {"clientDataJSON": b64url(client_data_json), "authenticatorData": b64url(auth_data),
                         "signature": b64url(signature), "userHandle": b64url(credential.user_handle)},
            "authenticatorAttachment": "cross-platform", "clientExtensionResults": {}}


def signs_in(agent, page, assertion) -> bool:
    return "code" in callback_params(answer(agent, page, assertion))


# -- 7.2: verifying an authentication assertion ------------------------------------------------

@clause("WebAuthn L3 7.2 step 5: a credential not in allowCredentials is refused")
def test_credential_not_offered_is_refused(provider, person, origin):
    key = enrolled(provider, person, origin)
    passkey = with_key(provider, person, origin, kind="passkey", using=key)  # the same person's, another factor's
    agent, page = webauthn_step(provider, person, "webauthn-key")
    request = options_of(page)
    assert only_credential(passkey).id_b64 not in [c["id"] for c in request["allowCredentials"]]
    refused(answer(agent, page, passkey.get(request, credential=only_credential(passkey))))


@clause("WebAuthn L3 7.2 step 6: the credential must belong to the user being signed in")
def test_credential_of_another_user_is_refused(provider, person, origin):
    enrolled(provider, person, origin)
    mallory = provider.add_user()
    mallory_key = enrolled(provider, mallory, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, mallory_key.get(options_of(page), credential=only_credential(mallory_key))))
    assert last_failure(provider, person) == "credential of another account"


@clause("WebAuthn L3 7.2 step 6: a userHandle must map to the credential's owner")
def test_user_handle_of_another_account_is_refused(provider, person, origin):
    key = enrolled(provider, person, origin)
    mallory = provider.add_user()
    mallory_passkey = enrolled(provider, mallory, origin, kind="passkey")
    agent, page = webauthn_step(provider, person, "webauthn-key")
    forged = key.get(options_of(page), user_handle=only_credential(mallory_passkey).user_handle)
    refused(answer(agent, page, forged))
    assert "user handle" in last_failure(provider, person)


@clause("WebAuthn L3 7.2 step 6: a usernameless assertion without userHandle names nobody")
def test_usernameless_assertion_without_user_handle_is_refused(provider, person, origin):
    phone = enrolled(provider, person, origin, kind="passkey")
    agent = UserAgent(provider)
    page = post(agent, agent.authorize(client_id="web"), "start", {"factor": "passkey"})
    refused(answer(agent, page, phone.get(options_of(page), user_handle=None)))


@clause("WebAuthn L3 7.2 step 7: an unknown credential id is refused")
def test_unregistered_credential_is_refused(provider, person, origin):
    enrolled(provider, person, origin)
    stranger = SoftAuthenticator(origin)
    stranger.create({"rp": {"id": "localhost"}, "user": {"id": b64url(b"x" * 32)}, "challenge": b64url(b"c" * 32)})
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, stranger.get(options_of(page), credential=only_credential(stranger))))


@clause("WebAuthn L3 7.2 step 11: clientData type must be webauthn.get")
@pytest.mark.parametrize("kind", ["webauthn.create", "payment.get", ""])
def test_client_data_type_other_than_get_is_refused(provider, person, origin, kind):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, written_out(only_credential(key), options_of(page), origin,
                                            client_data={"type": kind})))
    assert "type" in last_failure(provider, person)


@clause("WebAuthn L3 7.2 step 12: the challenge must be the one issued for this sign-in")
def test_wrong_challenge_is_refused(provider, person, origin):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    _, other_page = webauthn_step(provider, person, "webauthn-key")  # a challenge of another sign-in
    refused(answer(agent, page, key.get(options_of(page), challenge=options_of(other_page)["challenge"])))
    assert "challenge" in last_failure(provider, person)


@clause("WebAuthn L3 7.2 step 13: the origin must be one the relying party expects")
@pytest.mark.parametrize("bad_origin", ["https://evil.example", "http://localhost.evil.example",
                                        "https://localhost", "null", "http://localhost:1"])
def test_unexpected_origin_is_refused(provider, person, origin, bad_origin):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, key.get(options_of(page), origin=bad_origin)))
    assert "origin" in last_failure(provider, person)


@clause("WebAuthn L3 7.2 step 14 / 5.8.1: a ceremony in a cross-origin frame (topOrigin, crossOrigin) is refused")
@pytest.mark.parametrize("framing", [{"crossOrigin": True}, {"topOrigin": "https://evil.example"},
                                     {"crossOrigin": True, "topOrigin": "https://evil.example"}])
def test_cross_origin_frame_is_refused(provider, person, origin, framing):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, written_out(only_credential(key), options_of(page), origin, client_data=framing)))
    assert "frame" in last_failure(provider, person)


@clause("WebAuthn L3 7.2 step 15: rpIdHash must be the SHA-256 of our rp id")
@pytest.mark.parametrize("rp_id", ["example.evil", "localhost.evil", "LOCALHOST", "127.0.0.1"])
def test_wrong_rp_id_hash_is_refused(provider, person, origin, rp_id):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, key.get(options_of(page), rp_id=rp_id)))
    assert "RP ID hash" in last_failure(provider, person)


@clause("WebAuthn L3 7.2 step 16: the UP (user present) flag must be set")
def test_missing_user_presence_is_refused(provider, person, origin):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, key.get(options_of(page), up=False)))
    assert "present" in last_failure(provider, person)


@clause("WebAuthn L3 7.2 step 17: UV is required for device biometrics and passkeys")
@pytest.mark.parametrize("kind", ["webauthn-platform", "passkey"])
def test_missing_user_verification_is_refused_where_required(provider, person, origin, kind):
    device = enrolled(provider, person, origin, kind=kind, attachment="platform")
    if kind == "passkey":
        agent = UserAgent(provider)
        page = post(agent, agent.authorize(client_id="web"), "start", {"factor": "passkey"})
    else:
        agent, page = webauthn_step(provider, person, kind)
    assert options_of(page)["userVerification"] == "required"
    refused(answer(agent, page, device.get(options_of(page), uv=False)))
    failures = audit(provider, "factor.failed", None if kind == "passkey" else person["sub"])
    assert "verif" in failures[-1]["reason"]


@clause("WebAuthn L3 7.2 step 17: UV merely preferred for a security key (a second factor)")
def test_security_key_without_user_verification_is_accepted(provider, person, origin):
    key = enrolled(provider, person, origin, uv=False)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    assert options_of(page)["userVerification"] == "preferred"
    assert signs_in(agent, page, key.get(options_of(page)))


@clause("WebAuthn L3 7.2 step 21: a signature by another key is refused")
def test_signature_by_another_key_is_refused(provider, person, origin):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    impostor = ec.generate_private_key(ec.SECP256R1())
    refused(answer(agent, page, written_out(only_credential(key), options_of(page), origin, signer=impostor)))
    assert "signature" in last_failure(provider, person)


@clause("WebAuthn L3 7.2 step 21: authenticator data changed after signing (UV flag added) is refused")
def test_flags_edited_after_signing_are_refused(provider, person, origin):
    device = enrolled(provider, person, origin, kind="webauthn-platform", attachment="platform")
    agent, page = webauthn_step(provider, person, "webauthn-platform")

    def add_uv(auth_data: bytes) -> bytes:
        return auth_data[:32] + bytes([auth_data[32] | UV]) + auth_data[33:]

    refused(answer(agent, page, written_out(only_credential(device), options_of(page), origin, flags=UP,
                                            tamper=add_uv)))
    assert "signature" in last_failure(provider, person)


@clause("WebAuthn L3 7.2 step 22: a sign count that does not grow is refused and audited")
def test_sign_count_regression_is_refused(provider, person, origin):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    assert signs_in(agent, page, key.get(options_of(page), sign_count=7))
    for count in (6, 7):
        agent, page = webauthn_step(provider, person, "webauthn-key")
        refused(answer(agent, page, key.get(options_of(page), sign_count=count)))
    regressions = audit(provider, "webauthn.sign_count_regression", person["sub"])
    assert [(r["stored"], r["received"]) for r in regressions] == [(7, 6), (7, 7)]


@clause("WebAuthn L3 13.4.3: a challenge is single use; an accepted assertion replayed is refused")
def test_replayed_assertion_is_refused(provider, person, origin):
    key = enrolled(provider, person, origin, uv=False)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    accepted = key.get(options_of(page))
    assert signs_in(agent, page, accepted)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, accepted))
    # the same assertion posted straight to the step it answered, after that step finished
    assert "challenge" in last_failure(provider, person)


@clause("WebAuthn L3 13.4.3: a challenge answered wrongly once cannot be answered again")
def test_challenge_is_consumed_by_a_failed_answer(provider, person, origin):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    request = options_of(page)
    refused(answer(agent, page, key.get(request, up=False)))
    refused(post(agent, page, "verify", {"credential": json.dumps(key.get(request))}))
    assert last_failure(provider, person) == "challenge unknown, expired or already used"


@clause("WebAuthn L3 5.1 (PublicKeyCredential.type): a credential type other than public-key is refused")
def test_credential_type_must_be_public_key(provider, person, origin):
    key = enrolled(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    assertion = key.get(options_of(page))
    assertion["type"] = "password"
    refused(answer(agent, page, assertion))


# -- 7.1: registering a new credential -----------------------------------------------------------

def registration_refused(agent, csrf, credential):
    page = finish(agent, csrf, credential)
    assert page.status_code == 400 and "could not be added" in page.text, page.text[:300]


@clause("WebAuthn L3 7.1 step 7: registration clientData type must be webauthn.create")
def test_registration_with_get_type_is_refused(provider, person, origin):
    agent = signed_in(provider, person)
    options, csrf = registration_options(agent, "webauthn-key")
    device = SoftAuthenticator(origin)
    device._client_data = lambda kind, challenge, at: json.dumps(  # what a get() would have said
        {"type": "webauthn.get", "challenge": challenge, "origin": at or origin}).encode()
    registration_refused(agent, csrf, device.create(options))


@clause("WebAuthn L3 7.1 step 8: registration challenge must be the one issued to this session")
def test_registration_with_wrong_challenge_is_refused(provider, person, origin):
    agent = signed_in(provider, person)
    options, csrf = registration_options(agent, "webauthn-key")
    registration_refused(agent, csrf, SoftAuthenticator(origin).create(options, challenge=b64url(b"z" * 32)))


@clause("WebAuthn L3 7.1 steps 9-10: registration from another origin or in a cross-origin frame is refused")
@pytest.mark.parametrize("framing", [{"origin": "https://evil.example"}, {"crossOrigin": True},
                                     {"topOrigin": "https://evil.example"}])
def test_registration_from_elsewhere_is_refused(provider, person, origin, framing):
    agent = signed_in(provider, person)
    options, csrf = registration_options(agent, "webauthn-key")
    device = SoftAuthenticator(origin)
    device._client_data = lambda kind, challenge, at: json.dumps(
        {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False, **framing}).encode()
    registration_refused(agent, csrf, device.create(options))
    reason = audit(provider, "webauthn.registration_failed", person["sub"])[-1]["reason"]
    assert "origin" in reason or "frame" in reason


@clause("WebAuthn L3 7.1 steps 13-15: registration rpIdHash, UP, and UV where required")
@pytest.mark.parametrize("kind, change", [("webauthn-key", {"rp_id": "example.evil"}), ("webauthn-key", {"up": False}),
                                          ("webauthn-platform", {"uv": False}), ("passkey", {"uv": False})])
def test_registration_flags_and_rp_id_are_checked(provider, person, origin, kind, change):
    agent = signed_in(provider, person)
    options, csrf = registration_options(agent, kind)
    registration_refused(agent, csrf, SoftAuthenticator(origin, attachment="platform").create(options, **change))
    page = agent.go(f"{provider.url}{BASE}")
    assert 'data-credential="' not in page.text  # nothing was added


@clause("WebAuthn L3 7.1 step 22 (L2 step 22): a credential id registered to another account is refused")
def test_registration_of_a_taken_credential_id_is_refused(provider, person, origin):
    victim = enrolled(provider, person, origin)
    mallory = signed_in(provider, provider.add_user())
    options, csrf = registration_options(mallory, "webauthn-key")
    taken = only_credential(victim).id
    registration_refused(mallory, csrf, SoftAuthenticator(origin).create(options, credential_id=taken))
    agent, page = webauthn_step(provider, person, "webauthn-key")
    claims = claims_of(provider, answer(agent, page, victim.get(options_of(page))))
    assert claims["sub"] == person["sub"]
