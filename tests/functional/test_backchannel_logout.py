"""Back-Channel Logout 1.0 as relying parties see it: a real HTTP server on loopback stands in
for the RPs' backchannel_logout_uri, and every logout token is checked with PyJWT against
the provider's JWKS, never with the provider's own code."""

from __future__ import annotations

import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
import pytest
import requests
import yaml

from oidc_provider.models import AuditEvent
from oidc_provider.oauth.backchannel import outbox
from tests.conftest import BACKENDS, REDIRECT, UserAgent, register_clients, run_cli, start_provider, token_request
from tests.servers import serving

EVENT = "http://schemas.openid.net/event/backchannel-logout"


# -- a relying party's back-channel endpoint ----------------------------------------------------

class RelyingParties(ThreadingHTTPServer):
    """Records every logout token POSTed to it, by path; answers each path's scripted statuses
    first (e.g. one 500), then 200, after that path's delay."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, dict, str]] = []  # (path, form, content type)
        self.script: dict[str, list[int]] = {}
        self.delay: dict[str, float] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def tokens(self, path: str) -> list[str]:
        with self.lock:
            return [form["logout_token"] for got, form, _ in self.received if got == path]

    def reset(self):
        with self.lock:
            self.received.clear()
            self.script.clear()
            self.delay.clear()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        form = {key: values[0] for key, values in parse_qs(body).items()}
        server: RelyingParties = self.server
        with server.lock:
            server.received.append((self.path, form, self.headers.get("Content-Type", "")))
            statuses = server.script.get(self.path) or []
            status = statuses.pop(0) if statuses else 200
        time.sleep(server.delay.get(self.path, 0))
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def rps():
    with serving(RelyingParties()) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_rps(rps):
    rps.reset()
    yield


def wait_for(predicate, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def add_clients(provider, rps) -> None:
    """Relying parties with back-channel logout URIs on the loopback server."""
    base = {"redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"],
            "scopes": ["openid", "profile", "offline_access"], "first_party": True}
    register_clients(provider, [{**base, **client} for client in (
        {"client_id": "rp-a", "backchannel_logout_uri": f"{rps.url}/a", "backchannel_logout_session_required": True},
        {"client_id": "rp-b", "backchannel_logout_uri": f"{rps.url}/b", "id_token_signed_response_alg": "ES256"},
        {"client_id": "rp-c", "backchannel_logout_uri": f"{rps.url}/c"},
        {"client_id": "rp-fail", "backchannel_logout_uri": f"{rps.url}/fail"},
    )])


def settings_for(port, **backchannel):
    return {"backchannel_logout": {"enabled": True, "backoff": 0.2, "attempts": 3, "timeout": 3,
                                   "sweep_interval": 0, **backchannel}}


def share_settings_with_cli(provider) -> None:
    """The CLI reads the running provider's settings from the base directory's provider.yaml."""
    (provider.base_dir / "config").mkdir(exist_ok=True)
    (provider.base_dir / "config" / "provider.yaml").write_text(
        yaml.safe_dump(provider.op.settings.model_dump(mode="json")))


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, rps):
    running, stop = start_provider(tmp_path_factory.mktemp("backchannel"), request.param, extra_settings=settings_for)
    add_clients(running, rps)
    share_settings_with_cli(running)
    yield running
    stop()


def sign_in_to(agent: UserAgent, provider, person, client_id: str, scope="openid") -> dict:
    """A code flow for one client in this browser (SSO after the first); returns the tokens."""
    params = agent.sign_in(person["username"], client_id=client_id, scope=scope, nonce=secrets.token_hex(8))
    answer = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                      "redirect_uri": REDIRECT}, client=client_id)
    assert answer.status_code == 200, answer.text
    return answer.json()


def claims_of(id_token: str) -> dict:
    return jwt.decode(id_token, options={"verify_signature": False})


def verified_logout_token(provider, token: str, client_id: str) -> tuple[dict, dict]:
    """Checked by PyJWT against our JWKS: signature, iss, aud, exp, iat, and the spec's rules."""
    key = jwt.PyJWKClient(f"{provider.url}/oidc/jwks").get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["RS256", "ES256"], audience=client_id, issuer=provider.url,
                        options={"require": ["iss", "aud", "iat", "exp", "jti"]})
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "logout+jwt"  # spec 2.4: explicitly typed
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims  # spec 2.4: a logout token never carries a nonce
    assert 0 < claims["exp"] - claims["iat"] <= 120
    assert claims.get("sid") or claims.get("sub")
    return header, claims


def logout(agent, provider, id_token: str) -> requests.Response:
    return agent.go(f"{provider.url}/oidc/logout?id_token_hint={id_token}")


# -- discovery ---------------------------------------------------------------------------------

def test_discovery_advertises_back_channel_logout_only_when_enabled(provider, sqlite_provider):
    enabled = provider.discovery()
    assert enabled["backchannel_logout_supported"] is True
    assert enabled["backchannel_logout_session_supported"] is True
    default = sqlite_provider.discovery()
    assert default["backchannel_logout_supported"] is False
    assert "backchannel_logout_session_supported" not in default


# -- RP-initiated logout --------------------------------------------------------------------------

def test_logout_notifies_every_client_of_the_session_and_no_other(provider, rps):
    person = provider.add_user()
    agent = UserAgent(provider)
    first = sign_in_to(agent, provider, person, "rp-a")
    sign_in_to(agent, provider, person, "rp-b")
    other = UserAgent(provider)  # the same user in another browser, with rp-c: another session
    sign_in_to(other, provider, person, "rp-c")
    sid, sub = claims_of(first["id_token"])["sid"], claims_of(first["id_token"])["sub"]

    page = logout(agent, provider, first["id_token"])
    assert page.status_code == 200 and "signed out" in page.text

    assert wait_for(lambda: rps.tokens("/a") and rps.tokens("/b"))
    header_a, claims_a = verified_logout_token(provider, rps.tokens("/a")[0], "rp-a")
    header_b, claims_b = verified_logout_token(provider, rps.tokens("/b")[0], "rp-b")
    assert claims_a["sid"] == claims_b["sid"] == sid and claims_a["sub"] == claims_b["sub"] == sub
    assert header_a["alg"] == "RS256" and header_b["alg"] == "ES256"  # signed like each client's ID tokens
    assert claims_a["jti"] != claims_b["jti"]
    assert all(kind.startswith("application/x-www-form-urlencoded") for path, _, kind in rps.received)
    time.sleep(0.5)
    assert rps.tokens("/c") == [] and len(rps.tokens("/a")) == 1  # rp-c took no part; nobody told twice


def test_logout_does_not_wait_for_a_slow_relying_party(provider, rps):
    person = provider.add_user()
    agent = UserAgent(provider)
    tokens = sign_in_to(agent, provider, person, "rp-a")
    rps.delay["/a"] = 2.0
    started = time.monotonic()
    assert logout(agent, provider, tokens["id_token"]).status_code == 200
    assert time.monotonic() - started < 1.5
    assert wait_for(lambda: rps.tokens("/a"), 10)


def test_refresh_tokens_of_the_session_are_revoked_unless_offline_access(provider, rps):
    """Back-Channel Logout 2.7: online refresh tokens end with the session; offline_access ones stay."""
    person = provider.add_user()
    agent = UserAgent(provider)
    online = sign_in_to(agent, provider, person, "rp-a")
    offline = sign_in_to(agent, provider, person, "rp-b", scope="openid offline_access")
    logout(agent, provider, online["id_token"])
    assert wait_for(lambda: rps.tokens("/b"))
    refused = token_request(provider, {"grant_type": "refresh_token", "refresh_token": online["refresh_token"]},
                            client="rp-a")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    kept = token_request(provider, {"grant_type": "refresh_token", "refresh_token": offline["refresh_token"]},
                         client="rp-b")
    assert kept.status_code == 200, kept.text


def test_a_relying_party_that_answers_500_first_gets_the_token_again(provider, rps):
    person = provider.add_user()
    agent = UserAgent(provider)
    tokens = sign_in_to(agent, provider, person, "rp-a")
    rps.script["/a"] = [500]
    logout(agent, provider, tokens["id_token"])
    received = wait_for(lambda: len(rps.tokens("/a")) >= 2 and rps.tokens("/a"))
    assert len(received) == 2
    _, first = verified_logout_token(provider, received[0], "rp-a")
    _, second = verified_logout_token(provider, received[1], "rp-a")
    assert first["sid"] == second["sid"] and first["jti"] != second["jti"]  # a fresh token for each try


def test_a_relying_party_that_keeps_failing_is_tried_a_bounded_number_of_times_and_audited(provider, rps):
    person = provider.add_user()
    agent = UserAgent(provider)
    tokens = sign_in_to(agent, provider, person, "rp-fail")
    rps.script["/fail"] = [503] * 10

    logout(agent, provider, tokens["id_token"])

    def failure():
        with provider.app.app_context():
            return AuditEvent.query.filter_by(event="backchannel_logout.failed", user_id=person["sub"]).first()

    event = wait_for(failure, 10)
    assert event is not None and event.client_id == "rp-fail" and event.detail["attempts"] == 3
    time.sleep(0.5)
    assert len(rps.tokens("/fail")) == 3  # attempts: 3, then no more


def test_another_user_signing_in_on_the_browser_ends_the_first_session(provider, rps):
    first, second = provider.add_user(), provider.add_user()
    agent = UserAgent(provider)
    tokens = sign_in_to(agent, provider, first, "rp-a")
    page = agent.authorize(client_id="rp-b", prompt="login")
    agent.login(page, second["username"])
    assert wait_for(lambda: rps.tokens("/a"))
    _, claims = verified_logout_token(provider, rps.tokens("/a")[0], "rp-a")
    assert claims["sub"] == first["sub"] and claims["sid"] == claims_of(tokens["id_token"])["sid"]


# -- an operator ends sessions ---------------------------------------------------------------------

def test_sessions_end_signs_a_user_out_everywhere(provider, rps):
    person = provider.add_user()
    laptop, phone = UserAgent(provider), UserAgent(provider)
    on_laptop = sign_in_to(laptop, provider, person, "rp-a")
    on_phone = sign_in_to(phone, provider, person, "rp-b")

    result = run_cli(provider.base_dir, "sessions", "end", person["username"])
    assert "ended 2 session(s)" in result.stdout

    _, a = verified_logout_token(provider, rps.tokens("/a")[0], "rp-a")  # delivered before the command ends
    _, b = verified_logout_token(provider, rps.tokens("/b")[0], "rp-b")
    assert {a["sid"], b["sid"]} == {claims_of(on_laptop["id_token"])["sid"], claims_of(on_phone["id_token"])["sid"]}
    # both browsers are signed out: a new authorization asks for the password again
    assert 'name="password"' in laptop.authorize(client_id="rp-a").text
    assert 'name="password"' in phone.authorize(client_id="rp-b").text


def test_sessions_end_with_a_sid_ends_only_that_session(provider, rps):
    person = provider.add_user()
    laptop, phone = UserAgent(provider), UserAgent(provider)
    on_laptop = sign_in_to(laptop, provider, person, "rp-a")
    sign_in_to(phone, provider, person, "rp-b")
    sid = claims_of(on_laptop["id_token"])["sid"]

    run_cli(provider.base_dir, "sessions", "end", person["username"], "--sid", sid)
    assert len(rps.tokens("/a")) == 1 and rps.tokens("/b") == []
    assert 'name="password"' in laptop.authorize(client_id="rp-a").text
    assert "code" in phone.sign_in(person["username"], client_id="rp-b")  # still signed in there

    unknown = run_cli(provider.base_dir, "sessions", "end", person["username"], "--sid", "nope", ok=False)
    assert "no session" in unknown.stderr


# -- expiry ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_sessions(tmp_path_factory, rps):
    """Sessions of 2 s; the app itself sweeps every second."""
    running, stop = start_provider(tmp_path_factory.mktemp("expiry"), "sqlite-sql", extra_settings=lambda port: {
        **settings_for(port, sweep_interval=1), "lifetimes": {"session": 2}})
    add_clients(running, rps)
    yield running
    outbox(running.app).stop()  # and the app's sweeper with it
    stop()


def test_an_expired_session_is_swept_by_the_app_and_its_clients_are_told(short_sessions, rps):
    person = short_sessions.add_user()
    agent = UserAgent(short_sessions)
    tokens = sign_in_to(agent, short_sessions, person, "rp-a")
    assert rps.tokens("/a") == []
    received = wait_for(lambda: rps.tokens("/a"), 10)
    assert len(received) == 1
    _, claims = verified_logout_token(short_sessions, received[0], "rp-a")
    assert claims["sid"] == claims_of(tokens["id_token"])["sid"]
    time.sleep(1.5)
    assert len(rps.tokens("/a")) == 1  # swept once


def test_a_process_whose_first_request_never_reaches_flask_sweeps_too(tmp_path_factory, rps):
    """The sweeper starts at a process's first request, also one the fast path answers."""
    def sweepers():
        return sum(thread.name == "session-sweeper" for thread in threading.enumerate())

    running, stop = start_provider(tmp_path_factory.mktemp("sweep-fast"), "sqlite-sql", extra_settings=lambda port: {
        **settings_for(port, sweep_interval=1)})
    try:
        before = sweepers()
        assert requests.get(f"{running.url}/oidc/jwks", timeout=10).status_code == 200  # answered before Flask
        assert sweepers() == before + 1
        assert requests.get(f"{running.url}/.well-known/openid-configuration", timeout=10).status_code == 200
        assert sweepers() == before + 1  # once per process
    finally:
        outbox(running.app).stop()
        stop()


def test_sessions_sweep_from_the_command_line(tmp_path_factory, rps):
    running, stop = start_provider(tmp_path_factory.mktemp("sweep-cli"), "sqlite-sql", extra_settings=lambda port: {
        **settings_for(port), "lifetimes": {"session": 1}})
    try:
        add_clients(running, rps)
        share_settings_with_cli(running)
        person = running.add_user()
        sign_in_to(UserAgent(running), running, person, "rp-b")
        time.sleep(1.2)
        assert rps.tokens("/b") == []  # expiry alone tells nobody
        assert "1 expired session(s) ended" in run_cli(running.base_dir, "sessions", "sweep").stdout
        verified_logout_token(running, rps.tokens("/b")[0], "rp-b")
        assert "0 expired session(s) ended" in run_cli(running.base_dir, "sessions", "sweep").stdout
    finally:
        stop()
