"""The audit log: what sign-ins, factors, enrollments and removals leave in it, read back with
`oidc-provider audit` (the real console script) and GET /admin/v1/audit, on both backends;
and the log line each record also becomes."""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests

from tests.conftest import REDIRECT, UserAgent, cli_home, run_cli, start_provider, token_request


@pytest.fixture(scope="module", params=["sqlite-sql", "postgres-redis"])
def provider(request, tmp_path_factory):
    running, stop = start_provider(tmp_path_factory.mktemp("audit"), request.param)
    cli_home(running)
    yield running
    stop()


def audit_cli(provider, *args) -> list[dict]:
    """`oidc-provider audit --json ...`: one JSON object per line, oldest first."""
    output = run_cli(provider.base_dir, "audit", "--json", *args).stdout
    return [json.loads(line) for line in output.splitlines()]


def audit_api(provider, **params) -> list[dict]:
    token = token_request(provider, {"grant_type": "client_credentials", "scope": "admin:audit"},
                          client="admin-console").json()["access_token"]
    answer = requests.get(f"{provider.url}/admin/v1/audit", params=params, timeout=15,
                          headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


@pytest.fixture
def person(provider):
    return provider.add_user(email_verified=True)


def test_a_sign_in_leaves_its_decisions_in_order(provider, person):
    assert "code" in UserAgent(provider).sign_in(person["username"], client_id="web")
    events = audit_cli(provider, "--user", person["username"])
    assert [event["event"] for event in events] == [
        "user.created", "factor.succeeded", "policy.decision", "authorization.code_issued"]
    created, factor, decision, issued = events
    assert created["detail"] == {"actor": "cli"} and created["client_id"] is None
    assert (factor["client_id"], factor["ip"], factor["detail"]) == ("web", "127.0.0.1", {"factor": "password"})
    assert decision["detail"]["decision"]["action"] == "allow" and decision["detail"]["decision"]["reason"]
    assert issued["detail"]["amr"] == ["pwd"] and issued["user_id"] == person["sub"]
    assert all(event["at"].endswith("Z") and event["at"] >= created["at"] for event in events)
    # the API gives the same records, newest first
    assert audit_api(provider, user=person["sub"]) == events[::-1]


def test_failures_and_refusals_say_why(provider, person):
    agent = UserAgent(provider)
    page = agent.authorize(client_id="web-post")
    assert agent.login(page, person["username"], "wrong password").status_code == 401
    cancelled = agent.submit(page, {"action": "cancel", "login": "", "password": ""})
    assert "error=access_denied" in cancelled.headers["Location"]
    silent = UserAgent(provider).authorize(client_id="web-post", prompt="none")
    assert "error=login_required" in silent.headers["Location"]

    failed, = audit_api(provider, user=person["sub"], event="factor.failed")
    assert failed["client_id"] == "web-post" and failed["detail"]["factor"] == "password"
    assert failed["detail"]["reason"]
    denied = audit_api(provider, client="web-post", event="authorization.denied", limit=2)
    assert [(event["detail"]["error"], event["detail"]["reason"]) for event in denied] == [
        ("login_required", "login:no_session"), ("access_denied", "The user declined.")]


def test_direct_api_sign_ins_and_token_replays_are_recorded(provider, person):
    token = token_request(provider, {"grant_type": "client_credentials", "scope": "auth.password"},
                          client="api-backend").json()["access_token"]
    answer = requests.post(f"{provider.url}/v1/auth/password/login", timeout=15,
                           headers={"Authorization": f"Bearer {token}"},
                           json={"username": person["username"], "password": person["password"],
                                 "redirect_uri": REDIRECT, "client_attributes": {"ip_address": "203.0.113.9"}})
    assert answer.status_code == 200, answer.text
    succeeded, = audit_api(provider, user=person["sub"], event="factor.succeeded")
    assert (succeeded["client_id"], succeeded["ip"], succeeded["detail"]) == (
        "api-backend", "203.0.113.9", {"factor": "password", "via": "api"})

    params = UserAgent(provider).sign_in(person["username"], client_id="web", scope="openid offline_access")
    first = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                     "redirect_uri": REDIRECT}).json()
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    assert token_request(provider, refresh).status_code == 200
    assert token_request(provider, refresh).status_code == 400  # a rotated token again: a replay
    replay, = audit_api(provider, user=person["sub"], event="token.reuse_detected")
    assert replay["client_id"] == "web" and replay["detail"]["family"]


def test_enrollment_and_removal_on_the_account_pages_are_recorded(provider, person):
    agent = UserAgent(provider)
    assert "code" in agent.sign_in(person["username"], client_id="web")
    url = f"{provider.url}/account/security/recovery-codes"
    page = agent.go(url)
    assert agent.go(f"{url}/generate", "POST", {"csrf_token": agent.csrf(page)}).status_code == 200
    assert agent.go(f"{url}/remove", "POST", {"csrf_token": agent.csrf(agent.go(url))}).status_code == 200
    changes = audit_cli(provider, "--user", person["sub"], "--event", "recovery_codes.*")
    assert [(event["event"], event["ip"]) for event in changes] == [
        ("recovery_codes.generated", "127.0.0.1"), ("recovery_codes.removed", "127.0.0.1")]


def test_the_cli_filters(provider, person):
    other = provider.add_user()
    for who in (person, other):
        assert "code" in UserAgent(provider).sign_in(who["username"], client_id="web")
    assert "code" in UserAgent(provider).sign_in(person["username"], client_id="web-post", scope="openid")

    by_event = audit_cli(provider, "--user", person["username"], "--event", "factor.*")
    assert [(e["event"], e["client_id"]) for e in by_event] == [("factor.succeeded", "web"),
                                                                ("factor.succeeded", "web-post")]
    by_client = audit_cli(provider, "--client", "web-post", "--event", "authorization.code_issued")
    assert person["sub"] in {e["user_id"] for e in by_client} and other["sub"] not in {e["user_id"] for e in by_client}
    newest, = audit_cli(provider, "--limit", "1")
    assert newest == audit_cli(provider)[-1]
    assert len(audit_cli(provider, "--user", other["username"], "--since", "1h")) == 4
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600))
    assert audit_cli(provider, "--since", future) == []

    table = run_cli(provider.base_dir, "audit", "--user", person["username"], "--event", "factor.*").stdout
    first = table.splitlines()[0].split()
    assert first[1:6] == ["factor.succeeded", person["username"], "web", "127.0.0.1", 'factor="password"']
    assert run_cli(provider.base_dir, "audit", "--user", "nobody-at-all").stdout.strip() == "no matching events"


def test_each_record_is_also_one_log_line(provider, caplog):
    from oidc_provider.models import record_audit

    with caplog.at_level(logging.INFO, logger="oidc_provider.audit"), provider.app.app_context():
        record_audit("factor.failed", user_id="u-1", client_id="web", ip="192.0.2.1", factor="sms", reason="wrong code")
    line, = [r for r in caplog.records if r.name == "oidc_provider.audit"]
    assert "\n" not in line.getMessage() and line.getMessage().startswith("audit {")
    written = json.loads(line.getMessage().removeprefix("audit "))
    assert written == line.audit
    assert {key: written[key] for key in ("event", "user_id", "client_id", "ip", "detail")} == {
        "event": "factor.failed", "user_id": "u-1", "client_id": "web", "ip": "192.0.2.1",
        "detail": {"factor": "sms", "reason": "wrong code"}}
    assert abs(written["at"] - time.time()) < 60
