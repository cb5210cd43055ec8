"""Two instances behind one issuer (SPEC section 6): real `oidc-provider serve` processes
(Granian, two workers each) on different ports sharing one PostgreSQL database, one Redis
prefix, the keys/ folder and the master secret. A browser (one cookie jar: cookies do not
depend on the port) moves between them at every step, as a load balancer without sticky
sessions would send it; the relying party talks to whichever instance it reaches."""

from __future__ import annotations

import time

import jwt
import pytest
import requests

from tests.conftest import UserAgent, callback_params, pkce_pair, post, token_request, REDIRECT, _free_port
from tests.production import production_home, serve
from tests.servers import email_code

LOGGED_OUT = "http://127.0.0.1:9/bye"


@pytest.fixture(scope="module")
def instances(tmp_path_factory, plain_smtp):
    port_a = _free_port()
    issuer = f"http://127.0.0.1:{port_a}"  # the load balancer's address, in real life
    home = production_home(tmp_path_factory.mktemp("two-instances"), issuer, {
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5},
        "otp": {"per_ip_limit": 10_000},
    })
    served = []
    try:
        served.append(serve(home, port_a))
        served.append(serve(home))
        yield home.provider(served[0].url), home.provider(served[1].url)
    finally:
        for instance in served:
            instance.stop()
        home.close()


def browser_on(a, b) -> tuple[UserAgent, UserAgent]:
    """One browser (one cookie jar) that can be pointed at either instance."""
    on_a, on_b = UserAgent(a), UserAgent(b)
    on_b.http = on_a.http
    return on_a, on_b


def verified(token: str, jwks_url: str, audience: str, issuer: str) -> dict:
    """What a relying party does: the signature checked with keys from the JWKS it was given."""
    key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256", "ES256"], audience=audience, issuer=issuer)


def test_a_login_started_on_one_instance_finishes_on_the_other(instances, plain_smtp):
    a, b = instances
    issuer = a.discovery()["issuer"]
    assert b.discovery()["issuer"] == issuer  # one provider, two doors
    person = a.add_user(phone="+15550199", phone_verified=True, email_verified=True)
    address = f"{person['username']}@example.com"
    on_a, on_b = browser_on(a, b)

    # authorization request and first factor on A
    verifier, challenge = pkce_pair()
    page = on_a.authorize(client_id="web", scope="openid email offline_access", acr_values="mfa", state="s-1",
                          nonce="n-1", code_challenge=challenge, code_challenge_method="S256")
    choice = on_a.login(page, person["username"])
    assert choice.status_code == 200 and "One more step" in choice.text

    # second factor on B: B sends the code (its own SMTP connection), B checks it and issues the code
    code_page = post(on_b, choice, "start", {"factor": "email-otp"})
    assert code_page.status_code == 200 and code_page.url.startswith(b.url)
    answer = callback_params(on_b.submit(code_page, {"code": email_code(plain_smtp, address)}))
    assert answer["state"] == "s-1" and answer["iss"] == issuer

    # the relying party redeems the code at A; the ID token checks out with keys from B
    tokens = token_request(a, {"grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
                               "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    tokens = tokens.json()
    claims = verified(tokens["id_token"], f"{b.url}/oidc/jwks", "web", issuer)
    assert claims["sub"] == person["sub"] and claims["nonce"] == "n-1"
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "eml", "mfa"]

    # refresh at B (rotation); the rotated token replayed at A is refused and revokes the family
    refreshed = token_request(b, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    refreshed = refreshed.json()
    assert verified(refreshed["id_token"], f"{a.url}/oidc/jwks", "web", issuer)["acr"] == "mfa"
    bearer = {"Authorization": f"Bearer {refreshed['access_token']}"}
    assert requests.get(f"{a.url}/oidc/userinfo", headers=bearer, timeout=10).status_code == 200
    replay = token_request(a, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert replay.json()["error"] == "invalid_grant"
    assert requests.get(f"{b.url}/oidc/userinfo", headers=bearer, timeout=10).status_code == 401

    # single sign-on across instances: the session made on A and B is one session
    again = callback_params(on_a.authorize(client_id="web", prompt="none", state="s-2"))
    assert "code" in again and again["state"] == "s-2"
    redeem = {"grant_type": "authorization_code", "code": again["code"], "redirect_uri": REDIRECT}
    fresh = token_request(b, redeem).json()
    bearer = {"Authorization": f"Bearer {fresh['access_token']}"}
    info = requests.get(f"{a.url}/oidc/userinfo", headers=bearer, timeout=10)
    assert info.status_code == 200 and info.json()["sub"] == person["sub"]
    # the code is single-use across instances: a replay at A fails and revokes what B issued
    assert token_request(a, redeem).json()["error"] == "invalid_grant"
    assert requests.get(f"{b.url}/oidc/userinfo", headers=bearer, timeout=10).status_code == 401

    # logout on B ends the session everywhere
    bye = on_b.go(requests.Request("GET", f"{b.url}/oidc/logout", params={
        "id_token_hint": fresh["id_token"], "post_logout_redirect_uri": LOGGED_OUT, "state": "s-3"}).prepare().url)
    assert bye.status_code == 302 and bye.headers["Location"] == f"{LOGGED_OUT}?state=s-3"
    after = callback_params(on_a.authorize(client_id="web", prompt="none", state="s-4"))
    assert after["error"] == "login_required"


def test_counters_are_shared_a_wrong_code_on_one_counts_on_the_other(instances, plain_smtp):
    """Attempt counters live in Redis: five wrong codes spread over both instances kill the code."""
    a, b = instances
    person = a.add_user(email_verified=True)
    on_a, on_b = browser_on(a, b)
    page = post(on_a, on_a.authorize(client_id="web"), "start",
                {"login": person["username"], "factor": "email-otp"})
    code = email_code(plain_smtp, f"{person['username']}@example.com")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for index in range(5):
        agent = on_a if index % 2 else on_b
        refused = agent.submit(page, {"code": wrong})
        assert refused.status_code == 401
    late = on_a.submit(page, {"code": code})  # the right code, after five wrong ones on two instances
    assert late.status_code == 401


def test_a_message_whose_process_died_is_sent_by_a_running_instance(instances, plain_smtp):
    """The background queue is kept in Redis. A message queued by a process that never sent it
    (this test's own app, its sending threads stopped as if it had died) goes out from a serving
    instance; one whose sender died during its try goes out once that sender's lease has run
    out. While it waits, neither its code nor its address can be read in Redis."""
    import redis

    from tests.conftest import REDIS_URL

    a, b = instances
    op = a.app.extensions["op"]
    op.delivery.queue.stop()
    jobs = f"{op.store.prefix}queue:{{delivery}}:jobs"
    with a.app.test_request_context():
        left = op.delivery.email("left@example.com", "otp", {"code": "731946", "purpose": "sign in", "minutes": 10})
        held = op.delivery.email("held@example.com", "otp", {"code": "582013", "purpose": "sign in", "minutes": 10})
    op.delivery.queue.submit(left, delay=2)
    sealed = redis.Redis.from_url(REDIS_URL).hvals(jobs)
    assert len(sealed) == 1 and b"v1:" in sealed[0]
    assert b"731946" not in sealed[0] and b"left@" not in sealed[0] and b"sign in" not in sealed[0]
    assert email_code(plain_smtp, "left@example.com") == "731946"

    op.delivery.queue.submit(held, delay=30)
    now = time.time()
    claimed = op.store.claim_job("delivery", now + 60, now + 2)  # a worker takes it, then dies
    assert claimed is not None
    time.sleep(1)
    assert not [got for got in plain_smtp.mailbox._messages if "held@example.com" in got.rcpt_tos]  # held
    assert email_code(plain_smtp, "held@example.com") == "582013"
    assert time.time() >= now + 2


def test_a_starting_instance_sends_what_was_queued_before_any_request(tmp_path_factory, plain_smtp):
    """A message queued while no instance ran (by this test's own app, its sending threads
    stopped) goes out as soon as an instance starts, before any request reaches it: after a
    restart the queue does not wait for traffic."""
    home = production_home(tmp_path_factory.mktemp("cold-start"), "http://127.0.0.1:9", {
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5}})
    instance = None
    try:
        op = home.app.extensions["op"]
        op.delivery.queue.stop()
        with home.app.test_request_context():
            waiting = op.delivery.email("cold@example.com", "otp", {"code": "264810", "purpose": "sign in",
                                                                     "minutes": 10})
        op.delivery.queue.submit(waiting)
        assert op.store.count_jobs("delivery") == 1
        instance = serve(home, until_healthy=False)
        assert email_code(plain_smtp, "cold@example.com") == "264810"
        assert not [line for line in instance.log_lines() if line.get("http")]  # no request was answered
    finally:
        if instance:
            instance.stop()
        home.close()
