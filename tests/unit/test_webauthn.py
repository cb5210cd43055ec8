"""WebAuthn through the provider's own pages, with a software authenticator
(tests/unit/webauthn_authenticator.py): registration, sign-in, and the attacks."""

from __future__ import annotations

import json
import re
import uuid

import jwt
import pytest

from oidc_provider.authn.webauthn_ceremonies import CeremonyFailed, RelyingParty, new_challenge
from oidc_provider.settings import ConfigError, load_settings
from tests.conftest import post, REDIRECT, UserAgent, callback_params, start_provider, token_request
from tests.unit.webauthn_authenticator import SoftAuthenticator, attestation_certificate, from_b64url
from tests.webauthn_helpers import on_localhost, webauthn_provider

BASE = "/account/security/webauthn"


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with webauthn_provider(tmp_path_factory, "webauthn") as running:
        yield running


@pytest.fixture
def origin(provider):
    return on_localhost(provider)


@pytest.fixture
def person(provider):
    return provider.add_user(email_verified=True)


def signed_in(provider, person) -> UserAgent:
    agent = UserAgent(provider)
    assert "code" in agent.sign_in(person["username"], client_id="web")
    return agent


def registration_options(agent, kind, name="") -> tuple[dict, str]:
    csrf = agent.csrf(agent.go(f"{agent.provider.url}{BASE}/add"))
    answer = agent.http.post(f"{agent.provider.url}{BASE}/options", data={"csrf_token": csrf, "kind": kind,
                                                                        "name": name}, timeout=15)
    assert answer.status_code == 200, answer.text
    return answer.json(), csrf


def finish(agent, csrf, credential):
    return agent.go(f"{agent.provider.url}{BASE}/register", "POST",
                    {"csrf_token": csrf, "credential": json.dumps(credential)})


def register(agent, authenticator, kind, name="", **create):
    options, csrf = registration_options(agent, kind, name)
    page = finish(agent, csrf, authenticator.create(options, **create))
    assert page.status_code == 200 and "could not be added" not in page.text, page.text[:500]
    return page


def webauthn_step(provider, person, factor, acr="phr") -> tuple[UserAgent, object]:
    """A new browser: password, then the WebAuthn step the level asks for."""
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values=acr), person["username"])
    assert "One more step" in choice.text, choice.text[:500]
    assert factor in re.findall(r'name="factor" value="([^"]+)"', choice.text)
    return agent, post(agent, choice, "start", {"factor": factor})


def options_of(page) -> dict:
    block = re.search(r'<script type="application/json" id="webauthn-options">(.*?)</script>', page.text, re.S)
    assert block, page.text[:500]
    return json.loads(block.group(1))


def answer(agent, page, credential):
    return agent.submit(page, {"credential": json.dumps(credential)})


def claims_of(provider, redirect) -> dict:
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": callback_params(redirect)["code"],
                                      "redirect_uri": REDIRECT}).json()
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})


def refused(page):
    assert page.status_code == 401, (page.status_code, page.text[:300])
    assert "was not accepted" in page.text and "Try again" in page.text


def audit(provider, event, user_id) -> list[dict]:
    from oidc_provider.models import AuditEvent

    with provider.app.app_context():
        from oidc_provider.extensions import db

        rows = db.session.execute(db.select(AuditEvent).filter_by(event=event, user_id=user_id)).scalars()
        return [row.detail for row in rows]


def last_failure(provider, person) -> str:
    return audit(provider, "factor.failed", person["sub"])[-1]["reason"]


def with_key(provider, person, origin, kind="webauthn-key", using=None, **authenticator):
    """Register a credential; a person who already has a key (`using`) signs in with it first,
    since adding a factor needs a fresh sign-in with the second factor too."""
    authenticator = SoftAuthenticator(origin, **authenticator)
    register(mfa_session(provider, person, using) if using else signed_in(provider, person), authenticator, kind)
    return authenticator


def mfa_session(provider, person, key) -> UserAgent:
    """A fresh sign-in with the password and the person's security key."""
    agent, page = webauthn_step(provider, person, "webauthn-key", acr="mfa")
    assert "code" in callback_params(answer(agent, page, key.get(options_of(page))))
    return agent


# -- the journeys ---------------------------------------------------------------------------------

def test_a_security_key_is_registered_and_phr_after_a_password_asks_for_it(provider, person, origin):
    agent = signed_in(provider, person)
    key = SoftAuthenticator(origin)
    options, csrf = registration_options(agent, "webauthn-key", "Blue key")
    assert options["rp"]["id"] == "localhost" and options["attestation"] == "none"
    assert options["authenticatorSelection"]["authenticatorAttachment"] == "cross-platform"
    assert len(from_b64url(options["challenge"])) >= 16 and options["user"]["id"] != person["sub"]
    page = finish(agent, csrf, key.create(options))
    assert "Blue key" in page.text and "Security key" in page.text

    agent, page = webauthn_step(provider, person, "webauthn-key", acr="phr")
    request = options_of(page)
    credential = next(iter(key.credentials.values()))
    assert [c["id"] for c in request["allowCredentials"]] == [credential.id_b64]
    assert request["rpId"] == "localhost" and request["userVerification"] == "preferred"
    claims = claims_of(provider, answer(agent, page, key.get(request)))
    assert claims["sub"] == person["sub"] and claims["acr"] == "phr"
    assert claims["amr"] == ["pwd", "webauthn", "mfa"]
    listing = signed_in(provider, person).go(f"{provider.url}{BASE}").text
    assert "never" not in listing  # last used is shown


def test_a_security_key_without_user_verification_is_a_second_factor_for_mfa(provider, person, origin):
    key = with_key(provider, person, origin, uv=False)
    agent, page = webauthn_step(provider, person, "webauthn-key", acr="mfa")
    claims = claims_of(provider, answer(agent, page, key.get(options_of(page))))
    assert claims["acr"] == "mfa" and "webauthn" in claims["amr"]


def test_device_biometrics_need_user_verification_at_registration_and_sign_in(provider, person, origin):
    agent = signed_in(provider, person)
    device = SoftAuthenticator(origin, attachment="platform", transports=["internal"])
    options, csrf = registration_options(agent, "webauthn-platform")
    assert options["authenticatorSelection"] == {"authenticatorAttachment": "platform", "residentKey": "discouraged",
                                                 "requireResidentKey": False, "userVerification": "required"}
    page = finish(agent, csrf, device.create(options, uv=False))
    assert page.status_code == 400 and "could not be added" in page.text
    assert "verif" in audit(provider, "webauthn.registration_failed", person["sub"])[-1]["reason"]
    register(agent, device, "webauthn-platform")

    agent, page = webauthn_step(provider, person, "webauthn-platform")
    refused(answer(agent, page, device.get(options_of(page), uv=False)))
    assert "verif" in last_failure(provider, person)
    agent, page = webauthn_step(provider, person, "webauthn-platform")
    assert options_of(page)["userVerification"] == "required"
    claims = claims_of(provider, answer(agent, page, device.get(options_of(page))))
    assert claims["acr"] == "phr" and claims["amr"] == ["pwd", "webauthn", "mfa"]


def test_a_passkey_signs_in_with_no_username_at_all(provider, person, origin):
    phone = SoftAuthenticator(origin, attachment="platform", transports=["internal", "hybrid"])
    agent = signed_in(provider, person)
    options, csrf = registration_options(agent, "passkey", "My phone")
    assert options["authenticatorSelection"]["residentKey"] == "required"
    finish(agent, csrf, phone.create(options))

    agent = UserAgent(provider)
    login = agent.authorize(client_id="web")
    assert ">Sign in with a passkey<" in login.text and login.text.count(">Sign in with a passkey<") == 1
    page = post(agent, login, "start", {"factor": "passkey"})  # no login field at all
    request = options_of(page)
    assert request["allowCredentials"] == [] and request["userVerification"] == "required"
    claims = claims_of(provider, answer(agent, page, phone.get(request)))
    assert claims["sub"] == person["sub"] and claims["amr"] == ["webauthn"] and claims["acr"] == "phr"


def test_a_passkey_without_user_verification_or_user_handle_is_refused(provider, person, origin):
    phone = with_key(provider, person, origin, kind="passkey")
    for kwargs in ({"uv": False}, {"user_handle": None}):
        agent = UserAgent(provider)
        login = agent.authorize(client_id="web")
        page = post(agent, login, "start", {"factor": "passkey"})
        page = answer(agent, page, phone.get(options_of(page), **kwargs))
        assert page.status_code == 401 and "was not accepted" in page.text


def test_several_named_credentials_can_be_renamed_and_removed(provider, person, origin):
    agent = signed_in(provider, person)
    first, second = SoftAuthenticator(origin), SoftAuthenticator(origin)
    register(agent, first, "webauthn-key", "Work key")
    agent = mfa_session(provider, person, first)  # the person has MFA now: adding more needs it fresh
    page = register(agent, second, "webauthn-key", "Home key")
    ids = re.findall(r'<tr data-credential="(\d+)">', page.text)
    assert len(ids) == 2 and "Work key" in page.text and "Home key" in page.text
    csrf = agent.csrf(page)
    page = agent.go(f"{provider.url}{BASE}/{ids[0]}/rename", "POST", {"csrf_token": csrf, "name": "  Office\tkey "})
    assert "Office key" in page.text and "Work key" not in page.text
    stranger = signed_in(provider, provider.add_user())
    other_csrf = stranger.csrf(stranger.go(f"{provider.url}{BASE}/add"))
    assert stranger.go(f"{provider.url}{BASE}/{ids[1]}/remove", "POST", {"csrf_token": other_csrf}).status_code == 404
    page = agent.go(f"{provider.url}{BASE}/{ids[1]}/remove", "POST", {"csrf_token": csrf})
    assert "Home key" not in page.text and "Office key" in page.text
    assert [e["name"] for e in audit(provider, "webauthn.removed", person["sub"])] == ["Home key"]

    agent, page = webauthn_step(provider, person, "webauthn-key")  # the removed key no longer signs in
    refused(answer(agent, page, second.get(options_of(page), credential=next(iter(second.credentials.values())))))


def test_the_pages_need_a_signed_in_user(provider):
    agent = UserAgent(provider)
    assert agent.go(f"{provider.url}{BASE}").status_code == 401
    csrf = agent.csrf(agent.authorize(client_id="web"))  # a form token, but nobody signed in
    signed_out = agent.http.post(f"{provider.url}{BASE}/options", data={"csrf_token": csrf, "kind": "passkey"},
                                 timeout=15)
    assert signed_out.status_code == 401 and signed_out.json()["error"] == "signed_out"
    signed = signed_in(provider, provider.add_user())
    csrf = signed.csrf(signed.go(f"{provider.url}{BASE}/add"))
    bad_kind = signed.http.post(f"{provider.url}{BASE}/options", data={"csrf_token": csrf, "kind": "totp"}, timeout=15)
    assert bad_kind.status_code == 400 and bad_kind.json()["error"] == "webauthn_kind"


# -- attacks on sign-in ---------------------------------------------------------------------------

def test_an_assertion_from_another_origin_is_refused(provider, person, origin):
    key = with_key(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, key.get(options_of(page), origin="https://login.example.evil")))
    assert "origin" in last_failure(provider, person)


def test_an_assertion_for_another_rp_id_is_refused(provider, person, origin):
    key = with_key(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, key.get(options_of(page), rp_id="example.evil")))
    assert "RP ID hash" in last_failure(provider, person)


def test_a_challenge_is_used_once(provider, person, origin):
    key = with_key(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    request = options_of(page)
    refused(answer(agent, page, key.get(request, origin="https://evil.example")))
    # the honest answer to the same challenge now comes too late: it was used by the refused one
    refused(post(agent, page, "verify", {"credential": json.dumps(key.get(request))}))
    assert last_failure(provider, person) == "challenge unknown, expired or already used"
    page = agent.submit(agent.last_page, {})  # "Try again": a new challenge
    assert options_of(page)["challenge"] != request["challenge"]
    accepted = key.get(options_of(page))
    assert "code" in callback_params(answer(agent, page, accepted))

    # the accepted assertion replayed in another sign-in: another challenge is expected there
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(answer(agent, page, accepted))
    assert "challenge" in last_failure(provider, person)


def test_another_users_credential_is_refused(provider, person, origin):
    """Mallory knows Alice's password; her own key (and her own passkey) must not do for Alice's."""
    key = with_key(provider, person, origin)
    with_key(provider, person, origin, kind="passkey", using=key)
    mallory = provider.add_user()
    mallory_key = with_key(provider, mallory, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    request = options_of(page)
    forged = mallory_key.get(request, credential=next(iter(mallory_key.credentials.values())))
    refused(answer(agent, page, forged))
    assert last_failure(provider, person) == "credential of another account"

    mallory_passkey = with_key(provider, mallory, origin, kind="passkey", using=mallory_key)
    agent = UserAgent(provider)
    page = post(agent, agent.authorize(client_id="web"), "start", {"factor": "passkey", "login": person["username"]})
    page = answer(agent, page, mallory_passkey.get(options_of(page)))
    assert page.status_code == 401 and last_failure(provider, person) == "credential of another account"


def test_a_sign_count_that_goes_back_is_refused_and_recorded(provider, person, origin):
    key = with_key(provider, person, origin)
    for _ in range(2):  # counts 1 and 2
        agent, page = webauthn_step(provider, person, "webauthn-key")
        assert "code" in callback_params(answer(agent, page, key.get(options_of(page))))
    for count in (1, 2):  # lower, then equal
        agent, page = webauthn_step(provider, person, "webauthn-key")
        refused(answer(agent, page, key.get(options_of(page), sign_count=count)))
    regressions = audit(provider, "webauthn.sign_count_regression", person["sub"])
    assert [(r["stored"], r["received"]) for r in regressions] == [(2, 1), (2, 2)]
    agent, page = webauthn_step(provider, person, "webauthn-key")
    assert "code" in callback_params(answer(agent, page, key.get(options_of(page), sign_count=3)))


def test_a_forged_signature_is_refused(provider, person, origin):
    key = with_key(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    assertion = key.get(options_of(page))
    assertion["response"]["signature"] = key.get(options_of(page), sign_count=99)["response"]["signature"]
    refused(answer(agent, page, assertion))
    assert "signature" in last_failure(provider, person)
    assert audit(provider, "webauthn.sign_count_regression", person["sub"]) == []


@pytest.mark.parametrize("credential", ["", "not json", "[]", '{"id": 5}', '{"id": "x", "response": 1}'])
def test_malformed_answers_are_refused_cleanly(provider, person, origin, credential):
    with_key(provider, person, origin)
    agent, page = webauthn_step(provider, person, "webauthn-key")
    refused(agent.submit(page, {"credential": credential}))


# -- attacks on registration ----------------------------------------------------------------------

def test_registration_is_refused_from_another_origin_and_answered_once(provider, person, origin):
    agent = signed_in(provider, person)
    key = SoftAuthenticator(origin)
    options, csrf = registration_options(agent, "webauthn-key")
    page = finish(agent, csrf, key.create(options, origin="https://evil.example"))
    assert page.status_code == 400
    page = finish(agent, csrf, key.create(options))  # the challenge went with the refused answer
    assert page.status_code == 400
    reasons = [e["reason"] for e in audit(provider, "webauthn.registration_failed", person["sub"])]
    assert "origin" in reasons[-2] and "no registration under way" in reasons[-1]

    options, csrf = registration_options(agent, "webauthn-key")
    response = key.create(options)
    assert finish(agent, csrf, response).status_code == 200
    agent = mfa_session(provider, person, key)  # the person has MFA now: changes need it fresh
    assert finish(agent, agent.csrf(agent.go(f"{provider.url}{BASE}/add")), response).status_code == 400  # replayed
    other = mfa_session(provider, person, key)  # another session of the same person cannot finish it
    options, csrf = registration_options(agent, "webauthn-key")
    assert finish(other, other.csrf(other.go(f"{provider.url}{BASE}/add")), key.create(options)).status_code == 400


def test_a_credential_id_already_registered_is_refused(provider, person, origin):
    """WebAuthn 7.1 step 22: nobody can register another account's credential id as their own."""
    victim_key = with_key(provider, person, origin)
    mallory = signed_in(provider, provider.add_user())
    options, csrf = registration_options(mallory, "webauthn-key")
    taken = next(iter(victim_key.credentials))
    assert finish(mallory, csrf, SoftAuthenticator(origin).create(options, credential_id=taken)).status_code == 400
    agent, page = webauthn_step(provider, person, "webauthn-key")  # the victim's key still works
    assert "code" in callback_params(answer(agent, page, victim_key.get(options_of(page))))


def test_registration_for_another_rp_id_is_refused(provider, person, origin):
    agent = signed_in(provider, person)
    options, csrf = registration_options(agent, "webauthn-key")
    assert finish(agent, csrf, SoftAuthenticator(origin).create(options, rp_id="example.evil")).status_code == 400


# -- attestation and settings ---------------------------------------------------------------------

ALLOWED = bytes.fromhex("2fc0579f811347eab116bb5a8db9202a")


@pytest.mark.parametrize("aaguid, fmt, certified, accepted", [
    (ALLOWED, "packed", True, True),
    (bytes.fromhex("00112233445566778899aabbccddeeff"), "packed", True, False),  # a model not listed
    (ALLOWED, "packed", False, False),  # self attestation: the AAGUID is only the device's claim
    (ALLOWED, "none", False, False),
])
def test_direct_attestation_accepts_only_listed_models(aaguid, fmt, certified, accepted):
    rp = RelyingParty("localhost", "Test", ["http://localhost:8000"], "direct",
                      ["2fc0579f-8113-47ea-b116-bb5a8db9202a"])
    challenge = new_challenge()
    options = rp.registration_options("webauthn-key", user_handle=b"h" * 32, user_name="ada", display_name="Ada",
                                      exclude=[], challenge=challenge)
    assert options["attestation"] == "direct"
    key, certificate = attestation_certificate(aaguid) if certified else (None, None)
    made = SoftAuthenticator("http://localhost:8000", aaguid=aaguid).create(
        options, fmt=fmt, attestation_key=key, attestation_cert=certificate)
    if accepted:
        assert rp.verify_registration("webauthn-key", json.dumps(made), challenge).aaguid == str(uuid.UUID(bytes=aaguid))
    else:
        with pytest.raises(CeremonyFailed):
            rp.verify_registration("webauthn-key", json.dumps(made), challenge)


def test_attestation_none_is_the_default_and_origins_follow_the_issuer():
    settings = load_settings(None, {"issuer": "https://login.example.com"})
    rp = RelyingParty.from_settings(settings)
    assert (rp.id, rp.origins, rp.attestation) == ("login.example.com", ["https://login.example.com"], "none")
    with pytest.raises(ConfigError, match="webauthn.origins"):
        RelyingParty.from_settings(load_settings(None, {"issuer": "https://login.example.com",
                                                        "webauthn": {"origins": ["https://example.evil"]}}))
    with pytest.raises(ConfigError, match="allowed_aaguids"):
        load_settings(None, {"webauthn": {"attestation": "direct"}})
    with pytest.raises(ConfigError, match="https"):
        load_settings(None, {"webauthn": {"origins": ["http://login.example.com"]}})


def test_the_pages_do_not_exist_without_a_webauthn_factor(tmp_path):
    running, stop = start_provider(tmp_path, "sqlite-sql", extra_settings={"factors": ["password", "email"]})
    try:
        assert UserAgent(running).go(f"{running.url}{BASE}").status_code == 404
    finally:
        stop()
