"""The admin API as an admin backend uses it: a client token with admin scopes, users and
their factors, lockout, MFA policy, the audit log; and the tokens it must refuse.

Real parts only: a live provider per backend, a real SMTP server for the notices, sign-ins
driven over HTTP like a browser.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import PASSWORD, REDIRECT, UserAgent, start_provider, token_request
from tests.servers import text_of

ADMIN_SCOPES = "admin:users admin:audit"


@pytest.fixture(scope="module", params=["sqlite-sql", "postgres-redis"])
def provider(request, tmp_path_factory, plain_smtp):
    running, stop = start_provider(tmp_path_factory.mktemp("admin-api"), request.param, extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
        "lockout": {"max_failures": 3, "duration": 600},
    })
    yield running
    stop()


def bearer(provider, scope: str, client: str = "admin-console", **extra) -> dict:
    answer = token_request(provider, {"grant_type": "client_credentials", "scope": scope, **extra}, client=client)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def admin(provider):
    return bearer(provider, ADMIN_SCOPES)


def call(provider, headers, method, path, **kwargs):
    return requests.request(method, f"{provider.url}/admin/v1{path}", headers=headers, timeout=15, **kwargs)


def ok(response) -> dict:
    assert response.status_code == 200, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


def refused(response, status: int, error: str) -> dict:
    assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == error, body
    return body


@pytest.fixture
def person(provider):
    user = provider.add_user(phone="+15550188", phone_verified=True, email_verified=True)
    return user | {"email": f"{user['username']}@example.com"}


def enroll_totp_and_codes(provider, sub: str) -> list[str]:
    """An authenticator app and recovery codes, as the account pages leave them."""
    from oidc_provider.extensions import db
    from oidc_provider.models import User

    with provider.app.app_context():
        user = db.session.get(User, sub)
        pending = provider.op.factors.get("totp").start_enrollment(user)
        pending.confirmed = True
        db.session.commit()
        return provider.op.factors.get("recovery-code").generate(user)


def trust_a_device(provider, sub: str) -> None:
    from oidc_provider.extensions import db
    from oidc_provider.models import UserDevice

    with provider.app.app_context():
        db.session.add(UserDevice(user_id=sub, device_hash="ab" * 32, user_agent="Firefox on a laptop",
                                  trusted_until=time.time() + 86400, last_ip="198.51.100.7"))
        db.session.commit()


def second_step(provider, username: str, **params):
    """Sign in with the password; the page that follows (a choice of second factors, or the code)."""
    agent = UserAgent(provider)
    return agent.login(agent.authorize(client_id="web", **params), username)


# -- who may call it ---------------------------------------------------------------------------

def test_tokens_without_the_admin_scope_or_of_a_user_are_refused(provider, admin, person):
    path = f"/users/{person['sub']}"
    missing = refused(call(provider, {}, "GET", path), 401, "invalid_token")
    assert "Bearer" in missing["error_description"]
    assert call(provider, {}, "GET", path).headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    refused(call(provider, {"Authorization": "Bearer not-a-token"}, "GET", path), 401, "invalid_token")
    refused(call(provider, {"Authorization": "Basic YWRtaW4tY29uc29sZTp4"}, "GET", path), 401, "invalid_token")

    # a client token with other scopes: the direct API's backend
    direct = call(provider, bearer(provider, "auth.email", client="api-backend"), "GET", path)
    refused(direct, 403, "insufficient_scope")
    assert direct.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="admin:users"'
    # each admin scope opens only its own part
    refused(call(provider, bearer(provider, "admin:audit"), "GET", path), 403, "insufficient_scope")
    refused(call(provider, bearer(provider, "admin:users"), "GET", "/audit"), 403, "insufficient_scope")
    # a token minted for another resource (RFC 8707) is not for this API
    elsewhere = bearer(provider, ADMIN_SCOPES, resource="https://api.example.com")
    refused(call(provider, elsewhere, "GET", path), 401, "invalid_token")

    # a user who signed in to the admin console holds admin:users, but is not the admin client
    params = UserAgent(provider).sign_in(person["username"], client_id="admin-console",
                                         scope="openid admin:users admin:audit")
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                      "redirect_uri": REDIRECT}, client="admin-console").json()
    assert "admin:users" in tokens["scope"].split()
    user_token = {"Authorization": f"Bearer {tokens['access_token']}"}
    for method, where in (("GET", path), ("POST", f"{path}/unlock"), ("DELETE", f"{path}/factors"),
                          ("GET", "/audit")):
        refused(call(provider, user_token, method, where), 401, "invalid_token")

    assert ok(call(provider, admin, "GET", path))["username"] == person["username"]


def test_unknown_users_routes_and_bad_input_answer_json(provider, admin, person):
    refused(call(provider, admin, "GET", "/users/00000000-0000-0000-0000-000000000000"), 404, "not_found")
    refused(call(provider, admin, "GET", "/users/not%00an-id"), 404, "not_found")
    refused(call(provider, admin, "GET", "/nothing-here"), 404, "not_found")
    refused(call(provider, admin, "PUT", f"/users/{person['sub']}"), 405, "invalid_request")
    path = f"/users/{person['sub']}"
    refused(call(provider, admin, "PATCH", path, data="not json"), 400, "invalid_request")
    refused(call(provider, admin, "PATCH", path, json=["mfa_policy"]), 400, "invalid_request")
    refused(call(provider, admin, "PATCH", path, json={"mfa_polcy": "always"}), 400, "invalid_request")
    refused(call(provider, admin, "PATCH", path, json={"mfa_policy": "sometimes"}), 400, "invalid_request")
    refused(call(provider, admin, "PATCH", path, json={"mfa_enrollment_required": "yes"}), 400, "invalid_request")
    refused(call(provider, admin, "PATCH", path, json={"reason": "x" * 257}), 400, "invalid_request")
    refused(call(provider, admin, "POST", f"{path}/lock", json={"minutes": 0}), 400, "invalid_request")
    refused(call(provider, admin, "POST", f"{path}/lock", json={"minutes": True}), 400, "invalid_request")
    refused(call(provider, admin, "GET", "/users", params={"limit": "0"}), 400, "invalid_request")
    refused(call(provider, admin, "GET", "/users", params={"username": "a\x00b"}), 400, "invalid_request")
    assert ok(call(provider, admin, "GET", f"{path}"))["lockout"]["locked"] is False  # nothing changed


def test_find_users_by_name_and_page_through_them(provider, admin, person):
    found = ok(call(provider, admin, "GET", "/users", params={"username": person["username"]}))
    assert [user["id"] for user in found["users"]] == [person["sub"]] and found["next_cursor"] is None
    by_email = ok(call(provider, admin, "GET", "/users", params={"email": person["email"].upper()}))
    assert [user["id"] for user in by_email["users"]] == [person["sub"]]
    for _ in range(2):
        provider.add_user()
    seen, cursor = [], None
    while True:
        page = ok(call(provider, admin, "GET", "/users", params={"limit": 2, **({"cursor": cursor} if cursor else {})}))
        seen += [user["username"] for user in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) >= 3 and person["username"] in seen


# -- factors -----------------------------------------------------------------------------------

def test_a_users_factors_are_listed(provider, admin, person):
    enroll_totp_and_codes(provider, person["sub"])
    trust_a_device(provider, person["sub"])
    listed = ok(call(provider, admin, "GET", f"/users/{person['sub']}/factors"))["factors"]
    by_type = {factor["type"]: factor for factor in listed}
    assert set(by_type) == {"password", "email", "phone", "totp", "recovery-code", "trusted-device"}
    assert by_type["password"]["resettable"] is False
    assert by_type["phone"]["id"] == "phone" and by_type["phone"]["detail"] == {"number": "+15550188"}
    assert by_type["recovery-code"]["detail"] == {"remaining": 10}
    assert by_type["totp"]["id"].startswith("totp:") and by_type["totp"]["label"] == "Authenticator app"
    assert by_type["trusted-device"]["detail"]["user_agent"] == "Firefox on a laptop"
    assert all(factor["created_at"] is None or factor["created_at"].endswith("Z") for factor in listed)


def test_reset_one_factor_then_the_sign_in_no_longer_offers_it(provider, admin, person, plain_smtp):
    enroll_totp_and_codes(provider, person["sub"])
    choices = second_step(provider, person["username"], acr_values="mfa")
    assert 'value="totp"' in choices.text and 'value="sms"' in choices.text

    factors = ok(call(provider, admin, "GET", f"/users/{person['sub']}/factors"))["factors"]
    totp = next(factor["id"] for factor in factors if factor["type"] == "totp")
    answer = ok(call(provider, admin, "DELETE", f"/users/{person['sub']}/factors/{totp}",
                     params={"reason": "lost phone, ticket 4711"}))
    assert [factor["id"] for factor in answer["removed"]] == [totp] and answer["notified"] is True
    notice = text_of(plain_smtp.mailbox.to(person["email"])[-1].message)
    assert "Authenticator app" in notice and "administrator removed" in notice

    choices = second_step(provider, person["username"], acr_values="mfa")
    assert 'value="totp"' not in choices.text and 'value="sms"' in choices.text
    ok(call(provider, admin, "DELETE", f"/users/{person['sub']}/factors/phone"))
    choices = second_step(provider, person["username"], acr_values="mfa")
    assert 'value="sms"' not in choices.text and 'value="voice"' not in choices.text
    assert 'value="recovery-code"' in choices.text

    # gone is gone: a second reset is a 404; the password is changed elsewhere, not removed
    refused(call(provider, admin, "DELETE", f"/users/{person['sub']}/factors/{totp}"), 404, "not_found")
    refused(call(provider, admin, "DELETE", f"/users/{person['sub']}/factors/password"), 400, "invalid_request")
    audit = ok(call(provider, bearer(provider, "admin:audit"), "GET", "/audit",
                    params={"user": person["sub"], "event": "factor.reset"}))["events"]
    assert [event["detail"]["factor"] for event in audit] == ["phone", totp]  # newest first
    assert audit[1]["client_id"] == "admin-console" and audit[1]["detail"]["actor"] == "admin-console"
    assert audit[1]["detail"]["reason"] == "lost phone, ticket 4711" and audit[1]["ip"] == "127.0.0.1"


def test_reset_all_keeps_the_password_and_email(provider, admin, person):
    enroll_totp_and_codes(provider, person["sub"])
    trust_a_device(provider, person["sub"])
    answer = ok(call(provider, admin, "DELETE", f"/users/{person['sub']}/factors"))
    assert {factor["type"] for factor in answer["removed"]} == {"phone", "totp", "recovery-code", "trusted-device"}
    left = ok(call(provider, admin, "GET", f"/users/{person['sub']}/factors"))["factors"]
    assert [factor["type"] for factor in left] == ["password", "email"]
    user = ok(call(provider, admin, "GET", f"/users/{person['sub']}"))
    assert user["phone_number"] == "+15550188" and user["phone_number_verified"] is False
    assert ok(call(provider, admin, "DELETE", f"/users/{person['sub']}/factors")) == {"removed": [], "notified": False}
    # a single-flow user may still sign in with the password and the email address
    assert "code" in UserAgent(provider).sign_in(person["username"], client_id="web")


# -- lockout -----------------------------------------------------------------------------------

def test_failed_attempts_lock_the_account_visibly_and_an_admin_unlocks_it(provider, admin, person):
    agent = UserAgent(provider)
    for guess in ("wrong one", "wrong two", "wrong three"):
        assert agent.login(agent.authorize(client_id="web"), person["username"], guess).status_code == 401
    user = ok(call(provider, admin, "GET", f"/users/{person['sub']}"))
    assert user["lockout"]["locked"] is True and user["lockout"]["failed_attempts"] == 3
    until = user["lockout"]["locked_until"]
    assert until and until > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 500))
    assert agent.login(agent.authorize(client_id="web"), person["username"], PASSWORD).status_code == 401

    unlocked = ok(call(provider, admin, "POST", f"/users/{person['sub']}/unlock", json={"reason": "called in"}))
    assert unlocked["lockout"] == {"locked": False, "locked_until": None, "failed_attempts": 0, "max_failures": 3}
    assert "code" in UserAgent(provider).sign_in(person["username"], client_id="web")


def test_an_admin_lock_blocks_sign_in_until_unlocked(provider, admin, person):
    locked = ok(call(provider, admin, "POST", f"/users/{person['sub']}/lock"))  # no body: until unlocked
    assert locked["lockout"]["locked"] is True and locked["lockout"]["locked_until"] == "9999-12-31T23:59:59Z"
    page = second_step(provider, person["username"])  # the right password
    assert page.status_code == 401 and "The username or password is not right" in page.text
    ok(call(provider, admin, "POST", f"/users/{person['sub']}/unlock"))
    timed = ok(call(provider, admin, "POST", f"/users/{person['sub']}/lock", json={"minutes": 5, "reason": None}))
    assert timed["lockout"]["locked"] is True and timed["lockout"]["locked_until"] < "9999"
    ok(call(provider, admin, "POST", f"/users/{person['sub']}/unlock"))
    assert "code" in UserAgent(provider).sign_in(person["username"], client_id="web")
    events = ok(call(provider, admin, "GET", "/audit", params={"user": person["sub"], "event": "account.*"}))
    assert [event["event"] for event in events["events"]] == ["account.unlocked", "account.locked"] * 2


# -- MFA policy and enrollment -----------------------------------------------------------------

def test_per_user_policy_and_enrollment_flag(provider, admin, person):
    from oidc_provider.admin import enrollment_required
    from oidc_provider.extensions import db
    from oidc_provider.models import User

    path = f"/users/{person['sub']}"
    assert "code" in UserAgent(provider).sign_in(person["username"], client_id="web")  # policy never
    changed = ok(call(provider, admin, "PATCH", path, json={"mfa_policy": "always", "mfa_enrollment_required": True,
                                                            "reason": "finance team"}))
    assert changed["mfa_policy"] == "always" and changed["mfa_enrollment_required"] is True
    choices = second_step(provider, person["username"])
    assert choices.status_code == 200 and 'value="sms"' in choices.text  # a second factor now
    with provider.app.app_context():
        assert enrollment_required(db.session.get(User, person["sub"])) is True

    back = ok(call(provider, admin, "PATCH", path, json={"mfa_policy": None, "mfa_enrollment_required": False}))
    assert back["mfa_policy"] is None and back["mfa_enrollment_required"] is False
    assert "code" in UserAgent(provider).sign_in(person["username"], client_id="web")
    assert ok(call(provider, admin, "PATCH", path, json={})) == ok(call(provider, admin, "GET", path))  # no change
    events = ok(call(provider, admin, "GET", "/audit", params={"user": person["sub"], "event": "user.*"}))["events"]
    assert [(event["event"], event["detail"].get("reason")) for event in events] == [
        ("user.enrollment_required", None), ("user.mfa_policy_set", None),
        ("user.enrollment_required", "finance team"), ("user.mfa_policy_set", "finance team"),
        ("user.created", None)]


# -- the audit log -----------------------------------------------------------------------------

def test_the_audit_log_filters_and_pages(provider, admin, person):
    assert "code" in UserAgent(provider).sign_in(person["username"], client_id="web")
    agent = UserAgent(provider)
    agent.login(agent.authorize(client_id="web-post"), person["username"], "not the password")
    mine = ok(call(provider, admin, "GET", "/audit", params={"user": person["sub"]}))["events"]
    assert {"user.created", "policy.decision", "factor.succeeded", "authorization.code_issued",
            "factor.failed"} <= {event["event"] for event in mine}
    assert [event["id"] for event in mine] == sorted((event["id"] for event in mine), reverse=True)
    failed = ok(call(provider, admin, "GET", "/audit", params={"user": person["sub"], "event": "factor.failed"}))
    assert [(e["client_id"], e["detail"]["factor"], e["ip"]) for e in failed["events"]] == [
        ("web-post", "password", "127.0.0.1")]
    assert failed["events"][0]["detail"]["reason"]
    by_client = ok(call(provider, admin, "GET", "/audit", params={"user": person["sub"], "client": "web-post"}))
    assert {event["client_id"] for event in by_client["events"]} == {"web-post"}

    paged, cursor = [], None
    while True:
        page = ok(call(provider, admin, "GET", "/audit", params={"user": person["sub"], "limit": 2,
                                                                  **({"cursor": cursor} if cursor else {})}))
        paged += page["events"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert paged == mine

    assert ok(call(provider, admin, "GET", "/audit", params={"user": person["sub"], "since": "1h"}))["events"] == mine
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert ok(call(provider, admin, "GET", "/audit", params={"since": future}))["events"] == []
    for bad in ({"since": "yesterday"}, {"event": "Factor Failed"}, {"cursor": "abc"}, {"limit": "1001"}):
        refused(call(provider, admin, "GET", "/audit", params=bad), 400, "invalid_request")


def test_the_description_is_served(provider):
    answer = requests.get(f"{provider.url}/admin/v1/openapi.json", timeout=10)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "public, max-age=300"
    assert answer.json()["servers"] == [{"url": provider.url, "description": "The provider."}]


def test_a_dpop_bound_admin_token_is_refused_as_bearer(provider):
    """RFC 9449 7.2: a token bound to a DPoP key is no Bearer token, for the admin API too."""
    from tests.dpop_proofs import DPoPKey

    key = DPoPKey()
    answer = requests.post(f"{provider.url}/oidc/token", data={"grant_type": "client_credentials", "scope": ADMIN_SCOPES},
                           auth=("admin-console", provider.secrets["admin-console"]),
                           headers={"DPoP": key.proof("POST", f"{provider.url}/oidc/token")}, timeout=15)
    assert answer.status_code == 200 and answer.json()["token_type"] == "DPoP", answer.text
    stolen = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    refused(call(provider, stolen, "GET", "/audit"), 401, "invalid_token")
