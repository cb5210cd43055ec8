"""Fault injection on a real production server (SPEC 7): `oidc-provider serve` with two workers,
whose Redis is a private redis-server the test kills and starts again, whose PostgreSQL is
reached through a TCP proxy the test cuts (tests/tcp_proxy.py), and whose clock is moved with
libfaketime. Whatever fails, the provider answers with a clear, retryable error in the
protocol's own format (never a 500 page with a traceback, never a token it should not issue),
recovers by itself, and keeps every user, authenticator and audit record.

What was seen and is asserted here:
- Redis down: pages answer 503 "try again", the protocol endpoints 503 `temporarily_unavailable`
  JSON with Retry-After, /readyz 503; a valid access token is refused (its revocation cannot be
  checked: fail closed). Back up (empty): logins under way are asked to start again.
- PostgreSQL cut: the same 503s; the pool pings doubtful connections and reconnects once it is back, no restart.
  A refresh token rotation is one transaction: cut before its COMMIT, the old token still works.
- A worker SIGKILLed: its clients see a connection error, Granian starts a new worker, no code
  ever gives tokens twice.
- The clock moved forward: logins and codes older than their lifetime by this server's clock
  are refused with "start again" / "has expired" pages. Moved back: tokens issued before still
  validate (only `exp` is compared); DPoP proofs made by a client with the right time are
  refused as issued in the future (`invalid_dpop_proof`, 400).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import threading
from dataclasses import dataclass

import pytest
import requests
import yaml

from oidc_provider.extensions import db
from oidc_provider.models import AuditEvent, Authenticator, RefreshToken, User
from tests.conftest import (REDIRECT, UserAgent, _free_port, asked_recovery_code, callback_params, pkce_pair, post,
                            require_service, token_request)
from tests.dpop_proofs import DPoPKey
from tests.multiworker import PrivateRedis, race, wait_for, worker_pids
from tests.production import production_home, serve
from tests.servers import email_code
from tests.tcp_proxy import TcpProxy

clause = pytest.mark.clause

LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))), None)
START_AGAIN = "This sign-in page has expired. Go back to the application and start again."
TRY_AGAIN = "Something went wrong on our side. Please try again."


@dataclass
class Faulty:
    """The served provider and the handles on what can fail under it."""

    op: object  # tests/conftest Provider for the served URL
    served: object
    redis: PrivateRedis | None = None
    proxy: TcpProxy | None = None
    clock: object = None  # the FAKETIME_TIMESTAMP_FILE

    def move_clock(self, offset: str) -> None:
        """libfaketime's relative offset, e.g. "+20m" or "-5m"; every later clock read sees it."""
        self.clock.write_text(f"{offset}\n")

    def audit_count(self) -> int:
        with self.op.app.app_context():
            return db.session.execute(db.select(db.func.count()).select_from(AuditEvent)).scalar_one()

    def problems(self, since: int) -> list:
        """Log lines after `since` that show a request meeting an unexpected error (a traceback)."""
        found = []
        for line in self.served.log.read_text().splitlines()[since:]:
            try:
                entry = json.loads(line)
            except ValueError:
                if "Traceback" in line:
                    found.append(line)
                continue
            if entry["message"].startswith(("unexpected error", "Exception on")):
                found.append(entry)
        return found

    def log_length(self) -> int:
        return len(self.served.log.read_text().splitlines())


def provider_settings(smtp, **extra) -> dict:
    return {"email": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "timeout": 5},
            "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000, "per_user_limit": 50}, **extra}


@pytest.fixture(scope="module")
def broken(tmp_path_factory, plain_smtp):
    """Two workers on a private Redis and behind a TCP proxy to PostgreSQL."""
    base = tmp_path_factory.mktemp("faults")
    redis_server = PrivateRedis(base)
    port = _free_port()
    try:
        home = production_home(base, f"http://127.0.0.1:{port}", provider_settings(plain_smtp, store={
            "backend": "redis", "redis_url": redis_server.url, "prefix": "faults:", "timeout": 2}))
    except BaseException:
        redis_server.kill()
        raise
    proxy = TcpProxy("127.0.0.1", 5432)
    settings = yaml.safe_load(home.config.read_text())  # the served workers reach PostgreSQL through the proxy
    settings["database_url"] = settings["database_url"].replace(":5432/", f":{proxy.port}/")
    home.config.write_text(yaml.safe_dump(settings))
    try:
        served = serve(home, port, workers=2)
    except BaseException:
        proxy.stop()
        redis_server.kill()
        home.close()
        raise
    try:
        yield Faulty(home.provider(served.url), served, redis=redis_server, proxy=proxy)
    finally:
        served.stop()
        proxy.stop()
        redis_server.kill()
        home.close()


@pytest.fixture
def faulty(broken):
    """Each case starts, and leaves, everything working; no request ever meets an unexpected error."""
    def heal():
        broken.proxy.restore()
        if not broken.redis.running:
            broken.redis.start()
        wait_for(lambda: requests.get(f"{broken.op.url}/readyz", timeout=10).status_code == 200, "readiness")

    heal()
    since = broken.log_length()
    yield broken
    heal()
    assert not broken.problems(since)


@pytest.fixture(scope="module")
def timewarp(tmp_path_factory, plain_smtp):
    """Two workers whose wall clock (only theirs: PostgreSQL and Redis keep the true time) is
    moved by libfaketime through a timestamp file it reads at every clock read. Monotonic
    clocks stay true (FAKETIME_DONT_FAKE_MONOTONIC): libfaketime 0.9.10 breaks Python's
    Event.wait when it fakes them, and its time.sleep when it does not, which Granian's
    master uses to respawn a worker (so no worker is killed here)."""
    if not LIBFAKETIME:
        require_service("libfaketime (`make faketime`, or apt-get install faketime)",
                        lambda: (_ for _ in ()).throw(FileNotFoundError("libfaketimeMT.so.1")))
    base = tmp_path_factory.mktemp("timewarp")
    port = _free_port()
    home = production_home(base, f"http://127.0.0.1:{port}", provider_settings(plain_smtp))
    clock = base / "clock"
    clock.write_text("+0\n")
    try:
        served = serve(home, port, workers=2, LD_PRELOAD=LIBFAKETIME, FAKETIME_TIMESTAMP_FILE=str(clock),
                       FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
    except BaseException:
        home.close()
        raise
    try:
        yield Faulty(home.provider(served.url), served, clock=clock)
    finally:
        served.stop()
        home.close()


@pytest.fixture
def clocked(timewarp):
    timewarp.move_clock("+0")
    since = timewarp.log_length()
    yield timewarp
    timewarp.move_clock("+0")
    assert not timewarp.problems(since)


# -- what a client sees ------------------------------------------------------------------------------

def retryable_json(answer: requests.Response) -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text[:300])
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["error"] == "temporarily_unavailable"
    assert int(answer.headers["Retry-After"]) > 0


def retryable_page(answer: requests.Response) -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text[:300])
    assert answer.headers["Content-Type"].startswith("text/html")
    assert TRY_AGAIN in answer.text and "Traceback" not in answer.text
    assert int(answer.headers["Retry-After"]) > 0


def start_again(answer: requests.Response) -> None:
    assert answer.status_code == 400, (answer.status_code, answer.text[:300])
    assert START_AGAIN in answer.text and "Traceback" not in answer.text


def code_flow(op, person, **params) -> tuple[dict, str]:
    """A browser signs in with the password; returns the client's callback and the PKCE verifier."""
    verifier, challenge = pkce_pair()
    answer = UserAgent(op).sign_in(person["username"], client_id="web", code_challenge=challenge,
                                   code_challenge_method="S256", **params)
    return answer, verifier


def tokens_for(op, person, scope="openid offline_access") -> dict:
    answer, verifier = code_flow(op, person, scope=scope)
    tokens = token_request(op, {"grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
                                "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    return tokens.json()


def refresh(op, refresh_token: str) -> requests.Response:
    return token_request(op, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def userinfo(op, access_token: str) -> requests.Response:
    return requests.get(f"{op.url}/oidc/userinfo", headers={"Authorization": f"Bearer {access_token}"}, timeout=15)


def durable(op, user_id: str) -> dict:
    """What must survive any fault: the account, its authenticators and its audit trail."""
    with op.app.app_context():
        user = db.session.get(User, user_id)
        return {
            "user": (user.username, user.password_hash, user.email) if user else None,
            "authenticators": sorted(db.session.execute(db.select(Authenticator.id).filter_by(
                user_id=user_id)).scalars()),
            "audit": sorted(db.session.execute(db.select(AuditEvent.id).filter_by(user_id=user_id)).scalars()),
        }


# -- Redis restarts in the middle of a login ---------------------------------------------------------

@clause("SPEC 7: Redis restarted between the password and the second factor: start again, nothing durable lost")
def test_a_redis_restart_mid_login_asks_to_start_again_and_loses_no_durable_data(faulty, plain_smtp):
    op = faulty.op
    person = op.add_user(email_verified=True)
    with op.app.app_context():
        codes = op.op.factors.get("recovery-code").generate(db.session.get(User, person["sub"]))
    agent = UserAgent(op)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"])
    assert "One more step" in choice.text
    before = durable(op, person["sub"])

    faulty.redis.kill()
    retryable_page(post(agent, choice, "start", {"factor": "email-otp"}))  # while it is down
    faulty.redis.start()  # back, empty: the login's state is gone
    start_again(post(agent, choice, "start", {"factor": "email-otp"}))

    after = durable(op, person["sub"])
    assert after["user"] == before["user"] and after["authenticators"] == before["authenticators"]
    assert set(before["audit"]) <= set(after["audit"])
    # a new login works, with the same durable second factor
    browser = UserAgent(op)
    choice = browser.login(browser.authorize(client_id="web", acr_values="mfa"), person["username"])
    page = post(browser, choice, "start", {"factor": "recovery-code"})
    code = callback_params(browser.submit(page, {"code": asked_recovery_code(page, codes)}))["code"]
    tokens = token_request(op, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT})
    assert tokens.status_code == 200, tokens.text


@clause("SPEC 7 / RFC 6749 5.2: while Redis is down, readiness fails and the API answers retryable JSON errors")
def test_while_redis_is_down_the_api_answers_retryable_json_and_fails_closed(faulty):
    op = faulty.op
    person = op.add_user()
    tokens = tokens_for(op, person)
    answer, verifier = code_flow(op, person)

    faulty.redis.kill()
    ready = requests.get(f"{op.url}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["store"] == "unreachable"
    assert requests.get(f"{op.url}/healthz", timeout=10).status_code == 200  # alive, only not ready
    retryable_json(token_request(op, {"grant_type": "authorization_code", "code": answer["code"],
                                      "redirect_uri": REDIRECT, "code_verifier": verifier}))
    retryable_json(userinfo(op, tokens["access_token"]))  # revocation cannot be checked: not accepted
    retryable_json(requests.post(f"{op.url}/oidc/par", auth=("web", op.secrets["web"]), timeout=15,
                                 data={"response_type": "code", "scope": "openid", "redirect_uri": REDIRECT}))
    retryable_page(UserAgent(op).authorize(client_id="web"))

    faulty.redis.start()
    wait_for(lambda: requests.get(f"{op.url}/readyz", timeout=10).status_code == 200, "readiness after the restart")
    assert userinfo(op, tokens["access_token"]).status_code == 200
    assert refresh(op, tokens["refresh_token"]).status_code == 200  # durable: refresh tokens live in PostgreSQL
    # the code's record was in Redis: gone, it is refused like any unknown code, never redeemed
    late = token_request(op, {"grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
                              "code_verifier": verifier})
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"


# -- PostgreSQL unavailable for a moment -------------------------------------------------------------

@clause("SPEC 7: PostgreSQL unreachable: retryable errors, then recovery without a restart")
def test_a_database_cut_gives_retryable_errors_and_the_provider_recovers_by_itself(faulty):
    op = faulty.op
    person = op.add_user()
    tokens = tokens_for(op, person)
    agent = UserAgent(op)
    page = agent.authorize(client_id="web")
    audit_before = faulty.audit_count()

    faulty.proxy.cut()
    retryable_json(refresh(op, tokens["refresh_token"]))
    retryable_json(userinfo(op, tokens["access_token"]))
    retryable_page(agent.login(page, person["username"]))
    ready = requests.get(f"{op.url}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["database"] == "unreachable"

    faulty.proxy.restore()  # the same processes: their pools reconnect (closed connections are pinged)
    for _ in range(4):  # each worker, more than once
        assert requests.get(f"{op.url}/readyz", timeout=10).status_code == 200
    refreshed = refresh(op, tokens["refresh_token"])  # nothing of the refused rotation was kept
    assert refreshed.status_code == 200, refreshed.text
    assert userinfo(op, refreshed.json()["access_token"]).status_code == 200

    # markers among a statement's parameters, which reach the server even once it is prepared
    faulty.proxy.cut_before(person["username"].encode())  # the password check's count of the attempt
    retryable_page(agent.login(page, person["username"]))
    faulty.proxy.restore()
    with op.app.app_context():
        user = db.session.get(User, person["sub"])
        assert not user.failed_attempts  # the cut attempt was never counted
        last_login = user.last_login
    audit_rows = faulty.audit_count()
    assert audit_rows >= audit_before  # no durable record lost to the cuts
    faulty.proxy.cut_before(b"factor.succeeded")  # after the check: the sign-in's records, pipelined
    retryable_page(agent.login(page, person["username"]))
    faulty.proxy.restore()
    with op.app.app_context():  # nothing of the sign-in kept; its counted attempt stays counted (the safe side)
        user = db.session.get(User, person["sub"])
        assert user.failed_attempts == 1 and user.last_login == last_login and faulty.audit_count() == audit_rows
    assert "code" in callback_params(agent.login(page, person["username"]))  # the same page, submitted again
    with op.app.app_context():
        user = db.session.get(User, person["sub"])
        assert not user.failed_attempts and user.last_login["at"] > last_login["at"]
    assert faulty.audit_count() > audit_rows


@clause("RFC 9700 4.14.2 / SPEC 7: a refresh token rotation cut before any of its statements leaves the old "
        "or the new token working")
def test_a_refresh_rotation_cut_at_each_statement_never_leaves_both_tokens_dead(faulty):
    op = faulty.op
    person = op.add_user()
    current = tokens_for(op, person)["refresh_token"]
    outcomes = []
    for skip in range(8):
        # the 1st, 2nd, ... statement naming the presented token (its hash: the claim that stores
        # the successor, then any other) is dropped before the server sees it
        faulty.proxy.cut_before(hashlib.sha256(current.encode()).hexdigest().encode(), skip=skip)
        answer = refresh(op, current)
        cut = not faulty.proxy.armed
        faulty.proxy.restore()
        outcomes.append((skip, cut, answer.status_code))
        if answer.status_code == 200:
            current = answer.json()["refresh_token"]  # the client has the new token: it must work next time
        else:
            retryable_json(answer)
            retried = refresh(op, current)  # the old token must still work
            assert retried.status_code == 200, (outcomes, retried.text)
            current = retried.json()["refresh_token"]
        if not cut:
            break  # a rotation with fewer statements than skipped: every cut point was tried
    assert outcomes[0] == (0, True, 503), outcomes  # the claim
    assert not outcomes[-1][1], f"more statements than tried: {outcomes}"
    with op.app.app_context():
        rows = db.session.execute(db.select(RefreshToken).filter_by(user_id=person["sub"])).scalars().all()
        live = [row for row in rows if row.rotated_at is None and row.revoked_at is None]
    assert len(live) == 1 and len({row.family_id for row in rows}) == 1  # one chain, never forked or lost


# -- a worker killed during token requests -----------------------------------------------------------

@clause("SPEC 7 / RFC 6749 4.1.2: a worker killed mid-request: errors or answers, never two token sets for a code")
def test_a_worker_killed_during_token_requests_is_replaced_and_no_code_pays_twice(faulty):
    op, served = faulty.op, faulty.served
    person = op.add_user()
    flows = [code_flow(op, person) for _ in range(12)]
    workers = worker_pids(served)
    assert len(workers) == 2
    victim = workers[0]

    killed = threading.Event()

    def redeem(index, kill=False):
        answer, verifier = flows[index // 2]  # every code sent twice at once, as a client retrying
        response = token_request(op, {"grant_type": "authorization_code", "code": answer["code"],
                                      "redirect_uri": REDIRECT, "code_verifier": verifier})
        if kill and not killed.is_set():  # the first answer is in: the others are still in flight
            killed.set()
            os.kill(victim, signal.SIGKILL)
        return response

    first = race(2 * len(flows), lambda index: redeem(index, kill=True))
    lost = [outcome for outcome in first if isinstance(outcome, requests.ConnectionError)]
    assert killed.is_set() and lost, "the worker should have died with requests in flight"
    # every client saw a connection error or a proper answer, never a 5xx
    for outcome in first:
        assert isinstance(outcome, requests.ConnectionError) or outcome.status_code in (200, 400), outcome
    wait_for(lambda: len(worker_pids(served)) == 2 and victim not in worker_pids(served), "a new worker")
    # clients that lost their connection try again: a code still never gives two token sets
    retried = [redeem(index) if isinstance(outcome, requests.ConnectionError) else outcome
               for index, outcome in enumerate(first)]
    for index in range(len(flows)):
        pair = retried[2 * index:2 * index + 2]
        assert sum(a.status_code == 200 for a in pair) <= 1, [a.text[:100] for a in pair]
        assert all(a.status_code in (200, 400) for a in pair)
    # and the server serves normally again, on both workers
    for _ in range(10):
        answer, verifier = code_flow(op, person)
        tokens = token_request(op, {"grant_type": "authorization_code", "code": answer["code"],
                                    "redirect_uri": REDIRECT, "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text


# -- the clock moved ---------------------------------------------------------------------------------

@clause("SPEC 7 / NIST SP 800-63B 7.1: the clock jumps past the login's lifetime mid-login: start again")
def test_a_clock_jump_past_the_login_lifetime_asks_to_start_again(clocked):
    op = clocked.op
    person = op.add_user(email_verified=True, phone="+15550100", phone_verified=True)
    agent = UserAgent(op)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"])
    assert "One more step" in choice.text
    clocked.move_clock("+20m")  # lifetimes.interaction is 15 minutes
    start_again(post(agent, choice, "start", {"factor": "email-otp"}))
    # a new login under the moved clock works, and what it issues is consistent with that clock
    tokens = tokens_for(op, person)
    assert userinfo(op, tokens["access_token"]).status_code == 200


@clause("NIST SP 800-63B 5.1.3.2 / SPEC 7: the clock jumps past an OTP's lifetime: the code has expired")
def test_a_clock_jump_past_the_code_lifetime_refuses_the_code_cleanly(clocked, plain_smtp):
    op = clocked.op
    person = op.add_user(email_verified=True)
    agent = UserAgent(op)
    page = post(agent, agent.authorize(client_id="web"), "start", {"login": person["username"], "factor": "email-otp"})
    code = email_code(plain_smtp, f"{person['username']}@example.com")
    clocked.move_clock("+6m")  # otp.lifetime is 5 minutes, the login's 15
    refused = agent.submit(page, {"code": code})
    assert refused.status_code == 401 and "has expired" in refused.text
    reasons = [e.detail["reason"] for e in audit_of(op, person["sub"], "factor.failed")]
    assert reasons == ["expired"]
    resent = post(agent, refused, "resend")  # a new code, under the same clock, works
    new_code = email_code(plain_smtp, f"{person['username']}@example.com", after=1)
    assert "code" in callback_params(agent.submit(resent, {"code": new_code}))


def audit_of(op, user_id: str, event: str) -> list[AuditEvent]:
    with op.app.app_context():
        return db.session.execute(db.select(AuditEvent).filter_by(user_id=user_id, event=event)).scalars().all()


@clause("RFC 7519 4.1.4 / RFC 9449 11.1: after a jump backwards, earlier tokens still validate; fresh proofs are refused cleanly")
def test_tokens_from_before_a_jump_backwards_still_work_and_future_proofs_are_refused(clocked):
    op = clocked.op
    person = op.add_user()
    tokens = tokens_for(op, person)
    clocked.move_clock("-5m")
    assert userinfo(op, tokens["access_token"]).status_code == 200  # exp is still ahead; iat is not compared
    refreshed = refresh(op, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert userinfo(op, refreshed.json()["access_token"]).status_code == 200
    # a DPoP client with the right time: its proof looks 5 minutes early here (clock_skew is 5 s)
    proof = DPoPKey().proof("POST", f"{op.url}/oidc/token")
    early = requests.post(f"{op.url}/oidc/token", data={"grant_type": "client_credentials"}, timeout=15,
                          auth=("backend", op.secrets["backend"]), headers={"DPoP": proof})
    assert early.status_code == 400 and early.json()["error"] == "invalid_dpop_proof", early.text
    # and a whole new login works under the moved clock
    assert "code" in code_flow(op, person)[0]
