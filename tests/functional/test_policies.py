"""Policies (Never / Adaptive / Always; global, per client, per user) and ordered rules, seen
end to end: what the user is asked, what the relying party gets, and the recorded reason."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import yaml

from tests.conftest import post, BACKENDS, REDIRECT, UserAgent, callback_params, start_provider, token_request
from tests.servers import sms_code
from tests.unit.test_geoip import write_mmdb


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, gateway_server):
    base = tmp_path_factory.mktemp("policies")
    write_mmdb(base / "geo.mmdb", {"127.0.0.0/8": {"country": {"iso_code": "FR"},
                                                   "location": {"latitude": 48.85, "longitude": 2.35}}}, 4)
    running, stop = start_provider(base, request.param, extra_settings={
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms"},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
        "trusted_devices": {"enabled": True, "days": 30},
    })
    running.op.policy.CHECK_INTERVAL = 0  # pick up each test's policy file at once
    yield running
    stop()


def set_policy(provider, **config):
    path = provider.base_dir / "config" / "policy.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"geoip_database": "geo.mmdb", **config}))
    time.sleep(0.01)
    assert provider.op.policy.value.model_dump()["rules"] is not None and provider.op.policy.last_error is None


@pytest.fixture
def person(provider):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    return provider.add_user(phone=phone, phone_verified=True, email_verified=True) | {"phone": phone}


def password_step(agent, person, client="web", **params):
    """Sign in with the password: the next page (a second step, or the redirect to the client)."""
    return agent.login(agent.authorize(client_id=client, **params), person["username"])


def forget_session(agent) -> None:
    """Sign out of the IdP session but keep the device's cookies (a later visit, same browser)."""
    for cookie in list(agent.http.cookies):
        if cookie.name == agent.provider.cookie_name("op_session"):
            agent.http.cookies.clear(cookie.domain, cookie.path, cookie.name)


def asks_second_factor(page) -> bool:
    return page.status_code == 200 and "One more step" in page.text


def finish_with_sms(provider, agent, page, person, gateway) -> dict:
    code_page = post(agent, page, "start", {"factor": "sms"})
    answer = agent.submit(code_page, {"code": sms_code(gateway, person["phone"]), "remember": "on"})
    params = callback_params(answer)
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                      "redirect_uri": REDIRECT}, client="web" if "strict" not in answer.url else "web")
    return jwt.decode(tokens.json()["id_token"], options={"verify_signature": False})


def last_decision(provider, user_id) -> dict:
    with provider.app.app_context():
        from oidc_provider.extensions import db
        from oidc_provider.models import AuditEvent

        event = db.session.execute(db.select(AuditEvent).filter_by(user_id=user_id, event="policy.decision")
                                   .order_by(AuditEvent.id.desc())).scalars().first()
        return event.detail["decision"]


# -- policies -----------------------------------------------------------------------------------

def test_global_never_and_always(provider, person, gateway_server):
    set_policy(provider, policy="never")
    assert "code" in callback_params(password_step(UserAgent(provider), person))
    set_policy(provider, policy="always")
    agent = UserAgent(provider)
    page = password_step(agent, person)
    assert asks_second_factor(page)
    assert finish_with_sms(provider, agent, page, person, gateway_server)["acr"] == "mfa"
    assert last_decision(provider, person["sub"])["reason"].startswith("always policy (global)")


def test_client_policy_always(provider, person):
    set_policy(provider, policy="never")
    assert asks_second_factor(password_step(UserAgent(provider), person, client="strict-app"))
    assert "code" in callback_params(password_step(UserAgent(provider), person, client="web"))


def test_user_policy_wins_over_client_and_global(provider, person):
    set_policy(provider, policy="always")
    with provider.app.app_context():
        from oidc_provider.extensions import db
        from oidc_provider.models import User

        db.session.get(User, person["sub"]).mfa_policy = "never"
        db.session.commit()
    assert "code" in callback_params(password_step(UserAgent(provider), person, client="strict-app"))


def test_adaptive_asks_on_a_new_device_and_not_on_a_known_one(provider, person, gateway_server):
    set_policy(provider, policy="adaptive", adaptive={"threshold": 0.4})
    agent = UserAgent(provider)
    page = password_step(agent, person)
    assert asks_second_factor(page)
    assert "new device" in last_decision(provider, person["sub"])["reason"]
    finish_with_sms(provider, agent, page, person, gateway_server)
    forget_session(agent)
    assert "code" in callback_params(password_step(agent, person))  # same browser: known device


def test_a_trusted_device_relaxes_only_the_adaptive_policy(provider, person, gateway_server):
    set_policy(provider, policy="adaptive", adaptive={"threshold": 0.1, "weights": {"new_device": 0.0,
                                                                                     "recent_failure": 0.2}})
    agent = UserAgent(provider)
    agent.login(agent.authorize(client_id="web"), person["username"], "wrong password")  # a recent failure
    page = password_step(agent, person)
    assert asks_second_factor(page)
    finish_with_sms(provider, agent, page, person, gateway_server)  # with "remember this device"
    assert agent.cookie("op_trust")
    forget_session(agent)
    agent.login(agent.authorize(client_id="web"), person["username"], "wrong again")
    assert "code" in callback_params(password_step(agent, person))
    assert last_decision(provider, person["sub"])["reason"].startswith("trusted device")
    forget_session(agent)
    assert asks_second_factor(password_step(agent, person, acr_values="mfa"))  # never instead of a factor


# -- rules --------------------------------------------------------------------------------------

def now_window(hours_from: int, hours_to: int) -> dict:
    start = datetime.now(timezone.utc) + timedelta(hours=hours_from)
    end = datetime.now(timezone.utc) + timedelta(hours=hours_to)
    return {"timezone": "UTC", "from": start.strftime("%H:%M"), "to": end.strftime("%H:%M")}


@pytest.mark.parametrize("condition, matches", [
    ({"ip_ranges": ["127.0.0.0/8"]}, True),
    ({"ip_ranges": ["10.0.0.0/8"]}, False),
    ({"not_ip_ranges": ["10.0.0.0/8"]}, True),
    ({"countries": ["FR"]}, True),
    ({"countries": ["DE"]}, False),
    ({"not_countries": ["FR"]}, False),
    ({"time": now_window(-1, 1)}, True),
    ({"time": now_window(2, 3)}, False),
    ({"new_device": True}, True),
    ({"clients": ["web"]}, True),
    ({"clients": ["strict-app"]}, False),
    ({"groups": ["admins"]}, True),
    ({"groups": ["nobody"]}, False),
    ({"attributes": {"department": "finance"}}, True),
    ({"attributes": {"department": "sales"}}, False),
], ids=lambda value: str(value)[:40])
def test_each_rule_condition(provider, condition, matches):
    person = provider.add_user(groups=["admins"], attributes={"department": "finance"})
    set_policy(provider, policy="never", rules=[{"name": "under-test", "if": condition, "then": "deny"}])
    answer = callback_params(password_step(UserAgent(provider), person, state="r1"))
    if matches:
        assert answer["error"] == "access_denied" and answer["state"] == "r1"
        assert last_decision(provider, person["sub"])["rule"] == "under-test"
    else:
        assert "code" in answer


def test_rules_in_order_and_before_the_policy(provider, person):
    set_policy(provider, policy="always", rules=[
        {"name": "office", "if": {"ip_ranges": ["127.0.0.0/8"]}, "then": "allow"},
        {"name": "never-reached", "if": {}, "then": "deny"},
    ])
    assert "code" in callback_params(password_step(UserAgent(provider), person))
    assert last_decision(provider, person["sub"])["rule"] == "office"


def test_require_acr_action_and_deny_after_a_successful_factor(provider, person, gateway_server):
    set_policy(provider, rules=[{"name": "mfa-here", "if": {"countries": ["FR"]}, "then": {"require_acr": "mfa"}}])
    agent = UserAgent(provider)
    page = password_step(agent, person)
    assert asks_second_factor(page)
    assert finish_with_sms(provider, agent, page, person, gateway_server)["acr"] == "mfa"
    set_policy(provider, rules=[{"name": "blocked", "if": {}, "then": "deny"}])
    denied = callback_params(agent.authorize(client_id="web"))  # an MFA session, still refused
    assert denied["error"] == "access_denied"


def test_trusted_devices_are_listed_and_revoked_with_the_cli(provider, person, gateway_server):
    import os
    import subprocess
    from pathlib import Path

    set_policy(provider, policy="always")
    agent = UserAgent(provider)
    finish_with_sms(provider, agent, password_step(agent, person), person, gateway_server)
    cli = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "oidc-provider")
    config = provider.base_dir / "provider-cli.yaml"
    config.write_text(yaml.safe_dump({"database_url": provider.app.config["SQLALCHEMY_DATABASE_URI"].replace(
        "postgresql+psycopg://", "postgresql://"), "keys_dir": "keys", "clients_file": "clients.yaml"}))
    env = {**os.environ, "OIDC_PROVIDER_HOME": str(provider.base_dir), "OIDC_PROVIDER_CONFIG": str(config)}
    listing = subprocess.run([cli, "devices", "list", person["username"]], env=env, capture_output=True,
                             text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    device_id = int(listing.stdout.splitlines()[1].split()[0])
    assert " - " not in listing.stdout.splitlines()[1].split("127.0.0.1")[1][:20]  # a trusted-until date
    revoked = subprocess.run([cli, "devices", "revoke", person["username"], str(device_id)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0 and "revoked 1" in revoked.stdout
    with provider.app.app_context():
        from oidc_provider.extensions import db
        from oidc_provider.models import UserDevice

        assert db.session.get(UserDevice, device_id).trusted is False
