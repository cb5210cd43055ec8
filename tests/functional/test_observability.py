"""Observability as an operator sees it (SPEC section 6): Prometheus metrics of a served
instance (two workers, added up through PROMETHEUS_MULTIPROC_DIR) that move with what
users and clients do, /metrics closed without the bearer token, /healthz and /readyz, and
log lines that are JSON objects carrying the request id."""

from __future__ import annotations

import re
import time
import uuid

import pytest
import requests

from tests.conftest import REDIRECT, UserAgent, callback_params, post, start_provider, token_request, _free_port
from tests.production import METRICS_TOKEN, metric_value, production_home, serve
from tests.servers import email_code

LOCK_AFTER = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory, plain_smtp):
    port = _free_port()
    home = production_home(tmp_path_factory.mktemp("observed"), f"http://127.0.0.1:{port}", {
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5},
        "otp": {"per_ip_limit": 10_000, "resend_cooldown": 0},
        "lockout": {"max_failures": LOCK_AFTER},
        "logging": {"requests": True},
    })
    instance = serve(home, port)
    try:
        yield home.provider(instance.url), instance
    finally:
        instance.stop()
        home.close()


class Scrape:
    """Differences between two scrapes of /metrics."""

    def __init__(self, instance):
        self.instance = instance
        self.before = instance.metrics()

    def delta(self, name: str, **labels) -> float:
        self.after = self.instance.metrics()
        return metric_value(self.after, name, **labels) - metric_value(self.before, name, **labels)


# -- /metrics --------------------------------------------------------------------------------

def test_metrics_need_the_bearer_token(served):
    _, instance = served
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {METRICS_TOKEN}"}):
        refused = requests.get(f"{instance.url}/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "oidc_" not in refused.text
    allowed = requests.get(f"{instance.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert allowed.status_code == 200 and allowed.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE oidc_http_request_duration_seconds histogram" in allowed.text


def test_without_a_configured_token_there_is_no_metrics_route(sqlite_provider):
    assert requests.get(f"{sqlite_provider.url}/metrics", timeout=10).status_code == 404


def test_counters_move_with_logins_tokens_and_factor_failures(served, plain_smtp):
    provider, instance = served
    scrape = Scrape(instance)
    person = provider.add_user(phone="+15550142", phone_verified=True, email_verified=True)
    address = f"{person['username']}@example.com"
    agent = UserAgent(provider)

    # a password login with one wrong try, then the code exchanged for tokens
    page = agent.authorize(client_id="web", state="o-1")
    assert agent.login(page, person["username"], "not the password").status_code == 401
    answer = callback_params(agent.login(agent.last_page, person["username"]))
    assert token_request(provider, {"grant_type": "authorization_code", "code": answer["code"],
                                    "redirect_uri": REDIRECT}).status_code == 200
    # step-up to mfa: email OTP, one wrong code, then the right one
    choice = agent.authorize(client_id="web", acr_values="mfa")
    code_page = post(agent, choice, "start", {"factor": "email-otp"})
    code = email_code(plain_smtp, address)
    assert agent.submit(code_page, {"code": f"{(int(code) + 1) % 1_000_000:06d}"}).status_code == 401
    stepped = callback_params(agent.submit(agent.last_page, {"code": code}))
    assert token_request(provider, {"grant_type": "authorization_code", "code": stepped["code"],
                                    "redirect_uri": REDIRECT}).json()["token_type"] == "Bearer"
    # a step-up that prompt=none cannot do
    other = UserAgent(provider)
    other.sign_in(person["username"], client_id="web")
    answer = callback_params(other.authorize(client_id="web", acr_values="mfa", prompt="none"))
    assert answer["error"] == "unmet_authentication_requirements"
    # a client_credentials grant
    assert token_request(provider, {"grant_type": "client_credentials", "scope": "orders:read"},
                         client="backend").status_code == 200
    # an email code asked for, then the user chooses the magic link instead: the code is abandoned
    third = UserAgent(provider)
    waiting = post(third, third.authorize(client_id="web"), "start", {"login": person["username"], "factor": "email-otp"})
    chooser = post(third, waiting, "restart")
    post(third, chooser, "start", {"login": person["username"], "factor": "email"})
    # an account locked by wrong passwords
    victim = provider.add_user()
    fourth = UserAgent(provider)
    page = fourth.authorize(client_id="web")
    for _ in range(LOCK_AFTER):
        page = fourth.login(page, victim["username"], "guess-guess-guess")
        assert page.status_code == 401

    assert scrape.delta("oidc_tokens_issued_total", grant_type="authorization_code") == 2
    assert scrape.delta("oidc_tokens_issued_total", grant_type="client_credentials") == 1
    assert scrape.delta("oidc_factor_results_total", factor="password", result="failure") == 1 + LOCK_AFTER
    assert scrape.delta("oidc_factor_results_total", factor="password", result="success") == 2
    assert scrape.delta("oidc_factor_challenges_total", factor="email-otp") == 2
    assert scrape.delta("oidc_factor_results_total", factor="email-otp", result="failure") == 1
    assert scrape.delta("oidc_factor_results_total", factor="email-otp", result="success") == 1
    assert scrape.delta("oidc_factor_results_total", factor="email-otp", result="abandoned") == 1
    assert scrape.delta("oidc_factor_challenges_total", factor="email") == 1
    assert scrape.delta("oidc_step_up_total", outcome="asked") == 1
    assert scrape.delta("oidc_step_up_total", outcome="met") == 1
    assert scrape.delta("oidc_step_up_total", outcome="unmet") == 1
    assert scrape.delta("oidc_lockouts_total", factor="password") == 1
    assert scrape.delta("oidc_policy_decisions_total", action="allow", reason="policy:never") >= 3
    # latency per Flask endpoint, never per raw path (an interaction id is not a label)
    assert scrape.delta("oidc_http_request_duration_seconds_count", endpoint="oidc.token") == 3
    assert scrape.delta("oidc_http_request_duration_seconds_count", endpoint="interaction.verify") == 2
    assert scrape.delta("oidc_http_requests_total", endpoint="interaction.login", status="401") == 1 + LOCK_AFTER
    assert "/interaction/" not in scrape.after


def test_a_challenge_left_until_the_login_expires_counts_as_abandoned(tmp_path, plain_smtp):
    """The sweep counts it once the login's lifetime has passed (here 3 s, in 1 s buckets)."""
    token = "metrics-" + uuid.uuid4().hex
    provider, stop = start_provider(tmp_path, "sqlite-sql", extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
        "lifetimes": {"interaction": 3}, "metrics": {"token": token}})
    try:
        def abandoned() -> float:
            text = requests.get(f"{provider.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10).text
            return metric_value(text, "oidc_factor_results_total", factor="email-otp", result="abandoned")

        person = provider.add_user(email_verified=True)
        before = abandoned()
        agent = UserAgent(provider)
        post(agent, agent.authorize(client_id="web"), "start", {"login": person["username"], "factor": "email-otp"})
        time.sleep(3 + 3 + 1)  # the lifetime, the sweep's margin of two buckets, and one more
        assert abandoned() - before == 1
        assert abandoned() - before == 1  # counted once
    finally:
        stop()


def test_the_background_queue_backlog_is_a_gauge_read_from_the_store(served, plain_smtp):
    """oidc_background_jobs counts the jobs kept in the store, whichever process queued them: a
    message held back two seconds shows until the served instance has sent it."""
    provider, instance = served
    op = provider.app.extensions["op"]
    op.delivery.queue.stop()  # this test's own app only queues; the served instance sends
    with provider.app.test_request_context():
        message = op.delivery.email("backlog@example.com", "otp", {"code": "640213", "purpose": "sign in",
                                                                   "minutes": 10})
    op.delivery.queue.submit(message, delay=2)
    scraped = instance.metrics()
    assert metric_value(scraped, "oidc_background_jobs", queue="delivery") == 1
    assert metric_value(scraped, "oidc_background_jobs", queue="backchannel-logout") == 0
    assert email_code(plain_smtp, "backlog@example.com") == "640213"
    assert metric_value(instance.metrics(), "oidc_background_jobs", queue="delivery") == 0


# -- health and readiness ----------------------------------------------------------------------

def test_healthz_and_readyz_when_all_is_well(served):
    _, instance = served
    assert requests.get(f"{instance.url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{instance.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "store": "ok"}}


def test_readyz_is_503_when_the_database_is_gone(tmp_path):
    port = _free_port()
    home = production_home(tmp_path, f"http://127.0.0.1:{port}")
    instance = serve(home, port, workers=1)
    try:
        assert requests.get(f"{instance.url}/readyz", timeout=10).status_code == 200
        home.cleanups[0]()  # DROP DATABASE ... WITH (FORCE): the connections in the pool die too
        answer = requests.get(f"{instance.url}/readyz", timeout=20)
        assert answer.status_code == 503
        assert answer.json() == {"status": "unavailable", "checks": {"database": "unreachable", "store": "ok"}}
        assert requests.get(f"{instance.url}/healthz", timeout=10).status_code == 200  # alive, not ready
    finally:
        instance.stop()
        home.close()


def test_readyz_is_503_when_redis_is_unreachable(tmp_path):
    closed = _free_port()  # nothing listens there
    provider, stop = start_provider(tmp_path, "sqlite-sql", extra_settings={
        "store": {"backend": "redis", "redis_url": f"redis://127.0.0.1:{closed}/0", "timeout": 2}})
    try:
        answer = requests.get(f"{provider.url}/readyz", timeout=20)
        assert answer.status_code == 503
        assert answer.json() == {"status": "unavailable", "checks": {"database": "ok", "store": "unreachable"}}
    finally:
        stop()


# -- logs ---------------------------------------------------------------------------------------

def test_log_lines_are_json_with_the_request_id(served):
    provider, instance = served
    request_id = f"obs-{uuid.uuid4().hex}"
    agent = UserAgent(provider)
    page = agent.authorize(client_id="web")
    agent.http.headers["X-Request-ID"] = request_id
    refused = agent.login(page, "nobody-" + uuid.uuid4().hex[:6], "wrong-password")
    assert refused.status_code == 401 and refused.headers["X-Request-ID"] == request_id

    insane = requests.get(f"{instance.url}/healthz", headers={"X-Request-ID": "two words\t" + "x" * 300}, timeout=10)
    generated = insane.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert requests.get(f"{instance.url}/healthz", timeout=10).headers["X-Request-ID"] != generated

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = instance.log_lines()  # every line must be one JSON object (Granian's own too)
        mine = [line for line in lines if line.get("request_id") == request_id]
        if any(line["logger"] == "oidc_provider.audit" for line in mine):
            break
        time.sleep(0.2)
    audit = [line for line in mine if line["logger"] == "oidc_provider.audit"]
    assert audit and audit[0]["audit"]["event"] == "factor.failed" and audit[0]["level"] == "INFO"
    assert audit[0]["audit"]["detail"]["factor"] == "password" and "time" in audit[0]
    access = [line for line in mine if line.get("http")]
    assert access and access[0]["http"]["endpoint"] == "interaction.login" and access[0]["http"]["status"] == 401
    assert any(line["logger"] == "_granian" for line in lines)
    # the start says which argon2 build hashes the passwords (`make install` compiles it for the CPU)
    build = [line for line in lines if line["logger"] == "oidc_provider.serve" and "password_hashing" in line]
    assert len(build) == 1 and build[0]["password_hashing"] in ("compiled", "portable", "unknown")
    assert (build[0]["level"] == "WARNING") == (build[0]["password_hashing"] == "portable")
    assert all(set(line) >= {"time", "level", "logger", "message", "request_id"} for line in lines)
