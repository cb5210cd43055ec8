"""The MFA API as an application written against Auth0's uses it, over HTTP, on both backends.

The password grant answers Auth0's `mfa_required`; the application lists, enrolls and
challenges with the mfa_token, and finishes with the mfa-otp, mfa-oob and
mfa-recovery-code grants. TOTP codes are computed with pyotp from the secret /mfa/associate
returns; SMS and voice codes are read from the gateway server, email codes from the SMTP
server; push uses the reference device module. Then the attacks: another user's
authenticators, removing the last factor without re-authentication, an mfa_token reused,
expired or another client's, OTP guessing, enrolling on another user.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid

import jwt
import pyotp
import pytest
import requests

from oidc_provider.device_cli import Device
from oidc_provider.models import AuditEvent
from oidc_provider.oauth.keys import MasterSecret
from oidc_provider.settings.clients import hash_client_secret
from tests.conftest import BACKENDS, start_provider
from tests.servers import email_code, sms_code

AUTH0 = "http://auth0.com/oauth/grant-type/"
OWN = "urn:oidc-provider:params:oauth:grant-type:"
MFA_SCOPES = "enroll read:authenticators remove:authenticators"
SECRET = "mfa-api-client-secret"


def mfa_clients() -> list[dict]:
    """Clients of the kind Auth0 applications are: client_secret_post, password and MFA grants."""
    auth0_grants = ["password", "refresh_token", AUTH0 + "mfa-otp", AUTH0 + "mfa-oob", AUTH0 + "mfa-recovery-code"]
    scopes = ["openid", "profile", "email", "offline_access", *MFA_SCOPES.split()]
    client = {"token_endpoint_auth_method": "client_secret_post", "scopes": scopes}
    return [
        {**client, "client_id": "ropc", "client_name": "Native app", "grant_types": auth0_grants,
         "mfa_policy": "always"},
        {**client, "client_id": "ropc-b", "grant_types": auth0_grants, "mfa_policy": "always"},
        {**client, "client_id": "ropc-own", "grant_types": ["password", OWN + "mfa-otp", OWN + "mfa-oob"],
         "mfa_policy": "always"},
        {**client, "client_id": "ropc-plain", "grant_types": ["password", AUTH0 + "password-realm",
                                                               AUTH0 + "mfa-otp", AUTH0 + "mfa-oob"]},
    ]


def add_clients(provider) -> None:
    """Append the MFA API clients to the provider's clients.yaml and wait for the reload."""
    path = provider.base_dir / "clients.yaml"
    key = MasterSecret.load(provider.base_dir / "keys").derive("client-secret")
    data = json.loads(path.read_text())
    data["clients"] += [{**client, "client_secret_hash": hash_client_secret(SECRET, key)} for client in mfa_clients()]
    path.write_text(json.dumps(data))
    deadline = time.time() + 10
    while provider.op.clients.get("ropc-plain") is None:
        assert time.time() < deadline, provider.op.clients.last_error
        time.sleep(0.2)


def settings(smtp, gateway, **extra) -> dict:
    return {
        "email": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "timeout": 5},
        "sms": {"gateway": "webhook", "url": f"{gateway.url}/sms", "timeout": 5},
        "voice": {"gateway": "webhook", "url": f"{gateway.url}/voice", "timeout": 5},
        "push": {"gateway": "webhook", "url": f"{gateway.url}/push", "challenge_lifetime": 60},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000, "per_user_limit": 50, "per_destination_limit": 50},
        **extra,
    }


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("mfa-api"), request.param,
                                   extra_settings=settings(plain_smtp, gateway_server))
    add_clients(running)
    yield running
    stop()


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory, plain_smtp, gateway_server):
    """mfa_tokens that expire after two seconds; a second factor counts as recent for two."""
    running, stop = start_provider(tmp_path_factory.mktemp("mfa-api-short"), "sqlite-sql", extra_settings=settings(
        plain_smtp, gateway_server, mfa_api={"mfa_token_lifetime": 2, "reauth_max_age": 2}))
    add_clients(running)
    yield running
    stop()


@pytest.fixture
def person(provider):
    """Only a verified email address: no authenticator yet, as Auth0 counts them."""
    return provider.add_user(email_verified=True)


# -- the application's side --------------------------------------------------------------------------

def token(provider, grant: str, client: str = "ropc", **data) -> requests.Response:
    """A form-encoded request to Auth0's /oauth/token path, the client secret in the body."""
    body = {"grant_type": grant, "client_id": client, "client_secret": SECRET, **data}
    return requests.post(f"{provider.url}/oauth/token", data=body, timeout=15)


def password(provider, person, client: str = "ropc", **data) -> requests.Response:
    return token(provider, "password", client, username=person["username"], password=person["password"], **data)


def mfa_required(provider, person, client: str = "ropc", **data) -> str:
    """Sign in with the password; the answer must be Auth0's mfa_required, exactly."""
    answer = password(provider, person, client, **data)
    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert set(body) == {"error", "error_description", "mfa_token"}, body
    assert body["error"] == "mfa_required" and body["error_description"] == "Multifactor authentication required"
    assert answer.headers["Cache-Control"] == "no-store"
    return body["mfa_token"]


def bearer(value: str) -> dict:
    return {"Authorization": f"Bearer {value}"}


def authenticators(provider, value: str) -> requests.Response:
    return requests.get(f"{provider.url}/mfa/authenticators", headers=bearer(value), timeout=15)


def associate(provider, value: str, **body) -> requests.Response:
    return requests.post(f"{provider.url}/mfa/associate", json=body, headers=bearer(value), timeout=15)


def challenge(provider, mfa_token: str, client: str = "ropc", **body) -> requests.Response:
    return requests.post(f"{provider.url}/mfa/challenge", timeout=15, json={
        "mfa_token": mfa_token, "client_id": client, "client_secret": SECRET, **body})


def claims(value: str) -> dict:
    return jwt.decode(value, options={"verify_signature": False})


def error(answer: requests.Response, status: int, code: str, description: str | None = None) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == code, body
    if description is not None:
        assert body["error_description"] == description, body
    return body


def enroll_totp(provider, person) -> tuple[pyotp.TOTP, dict]:
    """The Auth0 journey for a user without authenticators: mfa_required, associate otp, mfa-otp.
    Returns the app and the token response."""
    mfa_token = mfa_required(provider, person)
    started = associate(provider, mfa_token, authenticator_types=["otp"])
    assert started.status_code == 200, started.text
    app = pyotp.TOTP(started.json()["secret"])
    answer = token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=app.now())
    assert answer.status_code == 200, answer.text
    return app, answer.json() | {"recovery_codes": started.json()["recovery_codes"]}


def next_code(app: pyotp.TOTP) -> str:
    """The next time step's code: accepted (one step of drift) and never used before."""
    return app.at(time.time() + app.interval)


def mfa_api_token(provider, person, app: pyotp.TOTP, scope: str = MFA_SCOPES) -> str:
    """A self-service access token for the MFA API, after a fresh second factor (Auth0: MFA
    is required for the MFA API's audience when the user has an authenticator)."""
    mfa_token = mfa_required(provider, person, audience=f"{provider.url}/mfa/", scope=scope)
    answer = token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=next_code(app))
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def audit_events(provider, user_id: str) -> list[str]:
    with provider.app.app_context():
        from oidc_provider.extensions import db

        rows = db.session.execute(db.select(AuditEvent).filter_by(user_id=user_id).order_by(AuditEvent.id)).scalars()
        return [row.event for row in rows]


# -- the password grant --------------------------------------------------------------------------------

def test_discovery_advertises_the_password_and_mfa_grants(provider):
    supported = provider.discovery()["grant_types_supported"]
    for grant in ("password", AUTH0 + "password-realm", AUTH0 + "mfa-otp", AUTH0 + "mfa-oob",
                  AUTH0 + "mfa-recovery-code", OWN + "mfa-otp", OWN + "mfa-oob", OWN + "mfa-recovery-code"):
        assert grant in supported


def test_the_password_grant_is_only_for_clients_that_list_it(provider, person):
    answer = requests.post(f"{provider.url}/oidc/token", auth=("web", provider.secrets["web"]), timeout=15,
                           data={"grant_type": "password", "username": person["username"],
                                 "password": person["password"]})
    error(answer, 400, "unauthorized_client")


def test_a_wrong_password_gets_auth0s_answer_and_counts_toward_the_lockout(provider, person):
    wrong = token(provider, "password", username=person["username"], password="not it")
    unknown = token(provider, "password", username="nobody-" + uuid.uuid4().hex[:6], password="not it")
    for answer in (wrong, unknown):
        error(answer, 403, "invalid_grant", "Wrong email or password.")
    with provider.app.app_context():
        from oidc_provider.extensions import db
        from oidc_provider.models import User

        assert db.session.get(User, person["sub"]).failed_attempts == 1
    assert "factor.failed" in audit_events(provider, person["sub"])


def test_without_an_mfa_policy_the_password_grant_issues_tokens(provider, person):
    answer = password(provider, person, client="ropc-plain", scope="openid profile")
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    id_token, access = claims(tokens["id_token"]), claims(tokens["access_token"])
    assert id_token["sub"] == person["sub"] and id_token["amr"] == ["pwd"] and "acr" not in id_token
    assert access["amr"] == ["pwd"] and access["aud"] == provider.url
    # Auth0's SDKs post JSON; the password-realm grant names the user database
    realm = requests.post(f"{provider.url}/oauth/token", timeout=15, json={
        "grant_type": AUTH0 + "password-realm", "realm": "Username-Password-Authentication",
        "username": person["username"], "password": person["password"], "client_id": "ropc-plain",
        "client_secret": SECRET})
    assert realm.status_code == 200 and "access_token" in realm.json(), realm.text
    unknown_realm = token(provider, AUTH0 + "password-realm", "ropc-plain", realm="elsewhere",
                          username=person["username"], password=person["password"])
    error(unknown_realm, 400, "invalid_request")


def test_the_policy_rules_of_the_browser_sign_in_apply(provider):
    """Rules take part as in the browser sign-in: deny, require_mfa, or a level (phr) that only
    WebAuthn reaches, which the MFA API cannot offer."""
    path = provider.base_dir / "config" / "policy.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"rules": [
        {"name": "blocked", "if": {"groups": ["blocked"]}, "then": "deny"},
        {"name": "staff", "if": {"groups": ["staff"]}, "then": "require_mfa"},
        {"name": "admins", "if": {"groups": ["admins"]}, "then": {"require_acr": "phr"}},
    ]}))
    provider.op.policy.CHECK_INTERVAL = 0
    assert [rule.name for rule in provider.op.policy.value.rules] == ["blocked", "staff", "admins"]
    blocked, staff, admin = (provider.add_user(email_verified=True, groups=[group])
                             for group in ("blocked", "staff", "admins"))
    error(password(provider, blocked, client="ropc-plain"), 403, "access_denied", "Sign-in refused by policy.")
    mfa_required(provider, staff, client="ropc-plain")  # the client has no MFA policy; the rule asks
    error(password(provider, admin, client="ropc-plain"), 403, "access_denied")


# -- TOTP ------------------------------------------------------------------------------------------------

def test_totp_enrollment_and_sign_in_through_the_mfa_api(provider, person):
    mfa_token = mfa_required(provider, person, scope="openid profile offline_access")
    listed = authenticators(provider, mfa_token)
    assert listed.status_code == 200 and [a["authenticator_type"] for a in listed.json()] == ["oob"]  # the email
    started = associate(provider, mfa_token, authenticator_types=["otp"], client_id="ropc", client_secret=SECRET)
    assert started.status_code == 200, started.text
    body = started.json()
    assert set(body) == {"authenticator_type", "secret", "barcode_uri", "recovery_codes"}
    assert body["authenticator_type"] == "otp" and f"secret={body['secret']}" in body["barcode_uri"]
    assert body["barcode_uri"].startswith("otpauth://totp/") and len(body["recovery_codes"]) == 10
    pending = [a for a in authenticators(provider, mfa_token).json() if a["authenticator_type"] == "otp"]
    assert len(pending) == 1 and pending[0]["active"] is False
    app = pyotp.TOTP(body["secret"])
    error(token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp="12345x"), 400, "invalid_grant",
          "Invalid otp_code.")
    answer = token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=app.now())
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    id_token = claims(tokens["id_token"])
    assert id_token["acr"] == "mfa" and id_token["amr"] == ["pwd", "otp", "mfa"] and "refresh_token" in tokens
    # single use on success
    error(token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=next_code(app)), 400, "invalid_grant",
          "Malformed mfa_token")
    # the next sign-in: challenge (otp sends nothing), then the app's next code
    mfa_token = mfa_required(provider, person)
    otp = [a for a in authenticators(provider, mfa_token).json() if a["authenticator_type"] == "otp"]
    assert len(otp) == 1 and otp[0]["active"] is True and otp[0]["id"].startswith("totp|dev_")
    error(associate(provider, mfa_token, authenticator_types=["otp"]), 403, "access_denied",
          "User is already enrolled.")
    asked = challenge(provider, mfa_token, challenge_type="otp", authenticator_id=otp[0]["id"])
    assert asked.status_code == 200 and asked.json() == {"challenge_type": "otp"}, asked.text
    again = token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=next_code(app))
    assert again.status_code == 200 and claims(again.json()["access_token"])["acr"] == "mfa", again.text
    events = audit_events(provider, person["sub"])
    for event in ("mfa.required", "mfa.enrollment_started", "mfa.authenticator_enrolled", "factor.succeeded",
                  "factor.failed", "token.issued"):
        assert event in events, (event, events)


def test_this_providers_own_grant_type_urns_work_too(provider, person):
    mfa_token = mfa_required(provider, person, client="ropc-own")
    secret = associate(provider, mfa_token, authenticator_types=["otp"]).json()["secret"]
    answer = token(provider, OWN + "mfa-otp", "ropc-own", mfa_token=mfa_token, otp=pyotp.TOTP(secret).now())
    assert answer.status_code == 200 and claims(answer.json()["access_token"])["acr"] == "mfa", answer.text


# -- out of band: SMS, voice, email, push ------------------------------------------------------------------

def test_sms_enrollment_then_an_sms_challenge(provider, person, gateway):
    number = f"+1555{uuid.uuid4().int % 10**7:07d}"
    mfa_token = mfa_required(provider, person)
    started = associate(provider, mfa_token, authenticator_types=["oob"], oob_channels=["sms"], phone_number=number)
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["oob_channel"] == "sms" and body["binding_method"] == "prompt" and body["recovery_codes"]
    error(token(provider, AUTH0 + "mfa-oob", mfa_token=mfa_token, oob_code=body["oob_code"], binding_code="000000x"),
          400, "invalid_grant", "Invalid binding_code.")
    answer = token(provider, AUTH0 + "mfa-oob", mfa_token=mfa_token, oob_code=body["oob_code"],
                   binding_code=sms_code(gateway, number))
    assert answer.status_code == 200, answer.text
    assert claims(answer.json()["id_token"])["amr"] == ["pwd", "sms", "mfa"]
    # the number is now the account's verified phone: SMS and voice authenticators
    mfa_token = mfa_required(provider, person)
    by_channel = {a["oob_channel"]: a for a in authenticators(provider, mfa_token).json() if a.get("oob_channel")}
    assert {"sms", "voice", "email"} <= set(by_channel) and by_channel["sms"]["name"].endswith(number[-2:])
    asked = challenge(provider, mfa_token, challenge_type="oob", authenticator_id=by_channel["sms"]["id"])
    assert asked.status_code == 200 and asked.json()["binding_method"] == "prompt", asked.text
    answer = token(provider, AUTH0 + "mfa-oob", mfa_token=mfa_token, oob_code=asked.json()["oob_code"],
                   binding_code=sms_code(gateway, number))
    assert answer.status_code == 200, answer.text


def test_voice_and_email_challenges(provider, gateway, plain_smtp):
    number = f"+1555{uuid.uuid4().int % 10**7:07d}"
    person = provider.add_user(email_verified=True, phone=number, phone_verified=True)
    mfa_token = mfa_required(provider, person)
    asked = challenge(provider, mfa_token, challenge_type="oob", oob_channel="voice")
    assert asked.status_code == 200, asked.text
    spoken = [r.json()["text"] for r in gateway.received if r.path == "/voice" and r.json()["to"] == number][-1]
    digits = re.search(r"code is ((?:\d ){5,9}\d)", spoken).group(1).replace(" ", "")
    answer = token(provider, AUTH0 + "mfa-oob", mfa_token=mfa_token, oob_code=asked.json()["oob_code"],
                   binding_code=digits)
    assert answer.status_code == 200 and "tel" in claims(answer.json()["access_token"])["amr"], answer.text
    mfa_token = mfa_required(provider, person)
    asked = challenge(provider, mfa_token, challenge_type="oob", oob_channel="email")
    assert asked.status_code == 200, asked.text
    code = email_code(plain_smtp, f"{person['username']}@example.com")
    answer = token(provider, AUTH0 + "mfa-oob", mfa_token=mfa_token, oob_code=asked.json()["oob_code"],
                   binding_code=code)
    assert answer.status_code == 200 and claims(answer.json()["access_token"])["amr"] == ["pwd", "eml", "mfa"]


def test_push_enrollment_and_approval_with_the_reference_device(provider, person, gateway):
    mfa_token = mfa_required(provider, person)
    started = associate(provider, mfa_token, authenticator_types=["oob"], oob_channels=["auth0"])
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["oob_channel"] == "auth0" and body["barcode_uri"].startswith(f"{provider.url}/push/devices?token=")
    poll = {"mfa_token": mfa_token, "oob_code": body["oob_code"]}
    error(token(provider, AUTH0 + "mfa-oob", **poll), 400, "authorization_pending")
    device = Device.enroll(body["barcode_uri"], "Ada's phone")
    answer = token(provider, AUTH0 + "mfa-oob", **poll)
    assert answer.status_code == 200 and claims(answer.json()["access_token"])["amr"] == ["pwd", "push", "mfa"]
    # the next sign-in: a push challenge, approved on the device
    mfa_token = mfa_required(provider, person)
    pushes = [a for a in authenticators(provider, mfa_token).json() if a.get("oob_channel") == "auth0"]
    assert [a["name"] for a in pushes] == ["Ada's phone"] and pushes[0]["id"] == f"push|dev_{device.device_id}"
    asked = challenge(provider, mfa_token, challenge_type="oob", authenticator_id=pushes[0]["id"])
    assert asked.status_code == 200 and "binding_method" not in asked.json(), asked.text
    assert any(r.path == "/push" for r in gateway.received)
    poll = {"mfa_token": mfa_token, "oob_code": asked.json()["oob_code"]}
    error(token(provider, AUTH0 + "mfa-oob", **poll), 400, "authorization_pending",
          "Authorization pending: please repeat the request in a few seconds.")
    (pending,) = device.pending()
    assert pending["client"] == "Native app"
    device.answer(pending["id"], "approve")
    answer = token(provider, AUTH0 + "mfa-oob", **poll)
    assert answer.status_code == 200 and "push" in claims(answer.json()["access_token"])["amr"], answer.text
    # a denial ends the sign-in
    mfa_token = mfa_required(provider, person)
    asked = challenge(provider, mfa_token, challenge_type="oob", oob_channel="auth0")
    device.answer(device.pending()[0]["id"], "deny")
    denied = token(provider, AUTH0 + "mfa-oob", mfa_token=mfa_token, oob_code=asked.json()["oob_code"])
    error(denied, 400, "invalid_grant", "MFA Authorization rejected.")


# -- recovery codes ---------------------------------------------------------------------------------------

def test_the_next_recovery_code_signs_in_once_and_a_new_one_comes_back(provider, person):
    _app, enrolled = enroll_totp(provider, person)
    codes = enrolled["recovery_codes"]  # numbered in this order: the first is number 1
    mfa_token = mfa_required(provider, person)
    for wrong in ("aaaa-bbbb-cccc", codes[1]):  # a wrong code, and an unused one that is not the next
        error(token(provider, AUTH0 + "mfa-recovery-code", mfa_token=mfa_token, recovery_code=wrong),
              400, "invalid_grant", "Invalid recovery_code. Use recovery code number 1.")
    answer = token(provider, AUTH0 + "mfa-recovery-code", mfa_token=mfa_token, recovery_code=codes[0])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert claims(body["access_token"])["amr"] == ["pwd", "rcv", "mfa"]
    assert re.fullmatch(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}", body["recovery_code"])
    assert body["recovery_code_number"] == len(codes) + 1  # after the others
    mfa_token = mfa_required(provider, person)
    for wrong in (codes[0], body["recovery_code"]):  # the used one; the new one, whose turn comes last
        error(token(provider, AUTH0 + "mfa-recovery-code", mfa_token=mfa_token, recovery_code=wrong), 400,
              "invalid_grant", "Invalid recovery_code. Use recovery code number 2.")
    answer = token(provider, AUTH0 + "mfa-recovery-code", mfa_token=mfa_token, recovery_code=codes[1])
    assert answer.status_code == 200, answer.text
    assert answer.json()["recovery_code_number"] == len(codes) + 2


# -- self-service with an access token for the MFA API -------------------------------------------------------

def test_self_service_with_an_mfa_api_access_token(provider, person, gateway, plain_smtp):
    app, _ = enroll_totp(provider, person)
    access = mfa_api_token(provider, person, app)
    token_claims = claims(access)
    assert token_claims["aud"] == f"{provider.url}/mfa/" and token_claims["scope"] == MFA_SCOPES
    assert "mfa" in token_claims["amr"]
    listed = authenticators(provider, access)
    assert listed.status_code == 200 and {a["authenticator_type"] for a in listed.json()} == {
        "otp", "oob", "recovery-code"}
    # add a phone with the access token; its code, with the access token as mfa_token, confirms it
    number = f"+1555{uuid.uuid4().int % 10**7:07d}"
    started = associate(provider, access, authenticator_types=["oob"], oob_channels=["sms"], phone_number=number)
    assert started.status_code == 200 and "recovery_codes" not in started.json(), started.text
    confirmed = token(provider, AUTH0 + "mfa-oob", mfa_token=access, oob_code=started.json()["oob_code"],
                      binding_code=sms_code(gateway, number))
    assert confirmed.status_code == 200, confirmed.text
    assert "refresh_token" not in confirmed.json() and "id_token" not in confirmed.json()
    channels = {a.get("oob_channel") for a in authenticators(provider, access).json()}
    assert {"sms", "voice"} <= channels
    # remove the SMS (and so voice) authenticator: a recent second factor is there
    sms = next(a for a in authenticators(provider, access).json() if a.get("oob_channel") == "sms")
    removed = requests.delete(f"{provider.url}/mfa/authenticators/{sms['id']}", headers=bearer(access), timeout=15)
    assert removed.status_code == 204, removed.text
    assert not {"sms", "voice"} & {a.get("oob_channel") for a in authenticators(provider, access).json()}
    assert "mfa.authenticator_removed" in audit_events(provider, person["sub"])


def test_self_service_adds_the_email_address_as_an_authenticator(provider, plain_smtp):
    person = provider.add_user()  # its address is not verified yet: no email authenticator
    app, _ = enroll_totp(provider, person)
    access = mfa_api_token(provider, person, app)
    address = f"{person['username']}@example.com"
    assert "email" not in {a.get("oob_channel") for a in authenticators(provider, access).json()}
    started = associate(provider, access, authenticator_types=["oob"], oob_channels=["email"], email=address.upper())
    assert started.status_code == 200 and started.json()["oob_channel"] == "email", started.text
    confirmed = token(provider, AUTH0 + "mfa-oob", mfa_token=access, oob_code=started.json()["oob_code"],
                      binding_code=email_code(plain_smtp, address))
    assert confirmed.status_code == 200, confirmed.text
    assert "email" in {a.get("oob_channel") for a in authenticators(provider, access).json()}


def test_scopes_are_checked(provider, person):
    app, _ = enroll_totp(provider, person)
    reader = mfa_api_token(provider, person, app, scope="read:authenticators")
    assert authenticators(provider, reader).status_code == 200
    otp = next(a for a in authenticators(provider, reader).json() if a["authenticator_type"] == "otp")
    error(requests.delete(f"{provider.url}/mfa/authenticators/{otp['id']}", headers=bearer(reader), timeout=15),
          403, "insufficient_scope")
    error(associate(provider, reader, authenticator_types=["otp"]), 403, "insufficient_scope")
    # a token for another audience is no MFA API token
    other = password(provider, person, client="ropc-plain")  # no MFA policy, not the MFA API's audience
    assert other.status_code == 200, other.text
    error(authenticators(provider, other.json()["access_token"]), 401, "invalid_token")


# -- attacks ------------------------------------------------------------------------------------------------

def test_a_users_token_never_touches_another_users_authenticators(provider):
    alice, bob = provider.add_user(email_verified=True), provider.add_user(email_verified=True)
    alice_app, _ = enroll_totp(provider, alice)
    bob_app, _ = enroll_totp(provider, bob)
    bob_token = mfa_api_token(provider, bob, bob_app)
    bob_otp = next(a for a in authenticators(provider, bob_token).json() if a["authenticator_type"] == "otp")
    alice_token = mfa_api_token(provider, alice, alice_app)
    listed = authenticators(provider, alice_token).json()
    assert bob_otp["id"] not in {a["id"] for a in listed}
    error(requests.delete(f"{provider.url}/mfa/authenticators/{bob_otp['id']}", headers=bearer(alice_token),
                          timeout=15), 404, "authenticator_not_found")
    assert bob_otp in authenticators(provider, bob_token).json()


def test_removing_the_last_factor_needs_a_recent_second_factor(provider):
    person = provider.add_user()  # no email, no phone: only what it enrolls
    # a password-only token for the MFA API (the user has no authenticator yet, so none is asked)
    first = password(provider, person, client="ropc-plain", audience=f"{provider.url}/mfa/", scope=MFA_SCOPES)
    assert first.status_code == 200, first.text
    weak = first.json()["access_token"]
    assert "mfa" not in claims(weak)["amr"]
    started = associate(provider, weak, authenticator_types=["otp"])
    assert started.status_code == 200, started.text
    app = pyotp.TOTP(started.json()["secret"])
    confirmed = token(provider, AUTH0 + "mfa-otp", "ropc-plain", mfa_token=weak, otp=app.now())
    assert confirmed.status_code == 200, confirmed.text
    otp = next(a for a in authenticators(provider, weak).json() if a["authenticator_type"] == "otp")
    refused = requests.delete(f"{provider.url}/mfa/authenticators/{otp['id']}", headers=bearer(weak), timeout=15)
    error(refused, 401, "insufficient_user_authentication")
    challenge_header = refused.headers["WWW-Authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge_header and 'acr_values="mfa"' in challenge_header
    assert "max_age=300" in challenge_header
    # nor may the weak token add a second factor now that there is one
    error(associate(provider, weak, authenticator_types=["oob"], oob_channels=["sms"], phone_number="+15550000001"),
          401, "insufficient_user_authentication")
    # re-authenticated with the factor: now it may go
    mfa_token = mfa_required(provider, person, client="ropc-plain", audience=f"{provider.url}/mfa/", scope=MFA_SCOPES)
    fresh = token(provider, AUTH0 + "mfa-otp", "ropc-plain", mfa_token=mfa_token, otp=next_code(app))
    assert fresh.status_code == 200, fresh.text
    access = fresh.json()["access_token"]
    removed = requests.delete(f"{provider.url}/mfa/authenticators/{otp['id']}", headers=bearer(access), timeout=15)
    assert removed.status_code == 204, removed.text
    assert [a for a in authenticators(provider, access).json() if a["authenticator_type"] == "otp"] == []


def test_an_mfa_token_never_adds_a_factor_beside_a_security_key(provider, person):
    """A WebAuthn credential is not an MFA API authenticator, but it is an enrollment: someone
    holding only the password must not enroll their own app beside it."""
    with provider.app.app_context():
        from oidc_provider.extensions import db
        from oidc_provider.models import Authenticator

        db.session.add(Authenticator(user_id=person["sub"], kind="webauthn-key", name="Security key",
                                     lookup=uuid.uuid4().hex, confirmed=True, data={}))
        db.session.commit()
    mfa_token = mfa_required(provider, person)
    error(associate(provider, mfa_token, authenticator_types=["otp"]), 403, "access_denied",
          "User is already enrolled.")
    error(associate(provider, mfa_token, authenticator_types=["oob"], oob_channels=["auth0"]), 403, "access_denied")


def test_an_mfa_token_cannot_delete(provider, person):
    enroll_totp(provider, person)
    mfa_token = mfa_required(provider, person)
    otp = next(a for a in authenticators(provider, mfa_token).json() if a["authenticator_type"] == "otp")
    error(requests.delete(f"{provider.url}/mfa/authenticators/{otp['id']}", headers=bearer(mfa_token), timeout=15),
          403, "insufficient_scope")


def test_otp_guessing_stops_at_the_limit(provider, person):
    app, _ = enroll_totp(provider, person)
    valid = {app.at(time.time() + offset) for offset in (-60, -30, 0, 30, 60)}
    wrong = next(f"{n:06d}" for n in range(1000, 999_999, 7919) if f"{n:06d}" not in valid)
    mfa_token = mfa_required(provider, person)
    for _ in range(5):  # mfa_api.max_attempts
        error(token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=wrong), 400, "invalid_grant",
              "Invalid otp_code.")
    # the token is dead: even the right code is refused
    error(token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=next_code(app)), 429, "too_many_attempts")
    error(token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=next_code(app)), 400, "invalid_grant",
          "Malformed mfa_token")
    # a new mfa_token does not reset the app's own try limit (5 per 5 minutes): still refused
    mfa_token = mfa_required(provider, person)
    error(token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=next_code(app)), 400, "invalid_grant",
          "Invalid otp_code.")
    assert "totp.throttled" in audit_events(provider, person["sub"])


def test_the_same_answer_twice_at_once_signs_in_once(provider, person):
    app, _ = enroll_totp(provider, person)
    mfa_token = mfa_required(provider, person)
    code, barrier, statuses = next_code(app), threading.Barrier(4), []

    def answer():
        barrier.wait()
        statuses.append(token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=code).status_code)

    threads = [threading.Thread(target=answer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200, 400, 400, 400]


def test_an_mfa_token_serves_only_the_client_it_was_issued_to(provider, person):
    app, _ = enroll_totp(provider, person)
    mfa_token = mfa_required(provider, person, client="ropc")
    error(token(provider, AUTH0 + "mfa-otp", "ropc-b", mfa_token=mfa_token, otp=next_code(app)), 400,
          "invalid_grant", "Malformed mfa_token")
    error(challenge(provider, mfa_token, client="ropc-b", challenge_type="otp"), 400, "invalid_grant")
    error(associate(provider, mfa_token, authenticator_types=["otp"], client_id="ropc-b", client_secret=SECRET),
          401, "invalid_token")
    # still good for its own client
    answer = token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=next_code(app))
    assert answer.status_code == 200, answer.text


def test_an_mfa_token_enrolls_only_its_own_user(provider, gateway):
    alice, bob = provider.add_user(email_verified=True), provider.add_user(email_verified=True)
    alice_token, bob_token = mfa_required(provider, alice), mfa_required(provider, bob)
    number = f"+1555{uuid.uuid4().int % 10**7:07d}"
    started = associate(provider, alice_token, authenticator_types=["oob"], oob_channels=["sms"], phone_number=number)
    assert started.status_code == 200, started.text
    code = sms_code(gateway, number)
    # Bob's login cannot use Alice's enrollment: the oob_code is bound to Alice's mfa_token
    error(token(provider, AUTH0 + "mfa-oob", mfa_token=bob_token, oob_code=started.json()["oob_code"],
                binding_code=code), 400, "invalid_grant", "Invalid oob_code.")
    otp_started = associate(provider, alice_token, authenticator_types=["otp"])
    secret = otp_started.json()["secret"]
    error(token(provider, AUTH0 + "mfa-otp", mfa_token=bob_token, otp=pyotp.TOTP(secret).now()), 400,
          "invalid_grant", "Invalid otp_code.")
    with provider.app.app_context():
        from oidc_provider.extensions import db
        from oidc_provider.models import Authenticator, User

        assert db.session.get(User, bob["sub"]).phone_number is None
        assert not db.session.execute(db.select(Authenticator).filter_by(user_id=bob["sub"])).scalars().all()


def test_an_mfa_token_expires(short_lived):
    person = short_lived.add_user(email_verified=True)
    mfa_token = mfa_required(short_lived, person)
    started = associate(short_lived, mfa_token, authenticator_types=["otp"])
    time.sleep(2.2)
    error(token(short_lived, AUTH0 + "mfa-otp", mfa_token=mfa_token, otp=pyotp.TOTP(started.json()["secret"]).now()),
          400, "expired_token", "mfa_token is expired")
    error(authenticators(short_lived, mfa_token), 401, "invalid_token", "mfa_token is expired")


def test_a_second_factor_counts_as_recent_only_for_reauth_max_age(short_lived):
    person = short_lived.add_user(email_verified=True)
    app, _ = enroll_totp(short_lived, person)
    access = mfa_api_token(short_lived, person, app)
    otp = next(a for a in authenticators(short_lived, access).json() if a["authenticator_type"] == "otp")
    time.sleep(3.1)
    refused = requests.delete(f"{short_lived.url}/mfa/authenticators/{otp['id']}", headers=bearer(access), timeout=15)
    error(refused, 401, "insufficient_user_authentication")
    assert "max_age=2" in refused.headers["WWW-Authenticate"]


# -- bad input --------------------------------------------------------------------------------------------

def test_bad_input_gets_json_errors(provider, person):
    error(requests.get(f"{provider.url}/mfa/authenticators", timeout=15), 401, "invalid_token")
    error(authenticators(provider, "not-a-token"), 401, "invalid_token", "Malformed mfa_token")
    mfa_token = mfa_required(provider, person)
    error(associate(provider, mfa_token, authenticator_types=["otp", "oob"]), 400, "invalid_request")
    error(associate(provider, mfa_token, authenticator_types=["oob"], oob_channels=["sms"], phone_number="12345"),
          400, "invalid_request")
    error(associate(provider, mfa_token, authenticator_types=["oob"], oob_channels=["email"],
                    email="someone-else@example.com"), 400, "invalid_request")
    error(challenge(provider, mfa_token, challenge_type="sms"), 400, "unsupported_challenge_type")
    error(challenge(provider, mfa_token, challenge_type="otp"), 400, "unsupported_challenge_type")
    bad_secret = requests.post(f"{provider.url}/mfa/challenge", timeout=15, json={
        "mfa_token": mfa_token, "client_id": "ropc", "client_secret": "wrong"})
    error(bad_secret, 401, "invalid_client")
    error(token(provider, AUTH0 + "mfa-otp", mfa_token=mfa_token), 400, "invalid_request")
    error(token(provider, AUTH0 + "mfa-oob", mfa_token=mfa_token, oob_code="nope"), 400, "invalid_grant",
          "Invalid oob_code.")
    answer = requests.post(f"{provider.url}/oauth/token", json={"grant_type": "password", "username": ["x"]},
                           timeout=15)
    error(answer, 400, "invalid_request")
    error(requests.put(f"{provider.url}/mfa/associate", timeout=15), 405, "invalid_request")
    error(requests.get(f"{provider.url}/mfa/elsewhere", timeout=15), 404, "not_found")
