"""Social login: signing in at an upstream OpenID provider, as users and relying parties see it.

The upstream is a second instance of this provider ("corp", its own database, keys and
clients), reached over real HTTP on loopback. It runs as http://localhost:<port> while
the provider under test ("shop") runs as http://127.0.0.1:<port>: cookies ignore ports,
so two providers on one host name would overwrite each other's cookies in any browser.
Attacks use a small upstream of our own making ("fake") whose ID tokens we sign, wrongly
on purpose, with keys we control.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import jwt
import pytest
import requests
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from oidc_provider.oauth.keys import MasterSecret
from oidc_provider.settings.clients import hash_client_secret
from tests.conftest import REDIRECT, UserAgent, callback_params, start_provider, token_request
from tests.servers import serving, sms_code


class Browser(UserAgent):
    """The conftest user agent, following redirects across several sites; stops at the client."""

    def __init__(self, provider, *sites: str):
        super().__init__(provider)
        self.sites = (provider.url, *sites)
        self.visited: list[str] = []
        self.shown: list[tuple[str, str]] = []  # (address, page) of each page that was not a redirect

    def go(self, url: str, method: str = "GET", data: dict | None = None) -> requests.Response:
        self.visited.append(url)
        response = self.http.request(method, url, data=data, allow_redirects=False, timeout=15)
        hops = 0
        while response.status_code in (301, 302, 303, 307) and hops < 15:
            target = urljoin(url, response.headers["Location"])
            if not target.startswith(self.sites):
                break  # the client's redirect_uri, or a site this browser does not follow
            url, hops = target, hops + 1
            self.visited.append(url)
            response = self.http.get(target, allow_redirects=False, timeout=15)
        self.shown.append((url, response.text))
        self.last_page = response
        return response


# -- the fake upstream ------------------------------------------------------------------------

def b64json(part: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


class FakeHandler(BaseHTTPRequestHandler):
    server: FakeUpstream

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        fake, url = self.server, urlsplit(self.path)
        if url.path == "/.well-known/openid-configuration":
            return self._json(200, {"issuer": fake.url, "authorization_endpoint": f"{fake.url}/authorize",
                                    "token_endpoint": f"{fake.url}/token", "jwks_uri": f"{fake.url}/jwks"})
        if url.path == "/jwks":
            return self._json(200, {"keys": [fake.key.as_dict(private=False)]})
        if url.path == "/authorize":  # the user signs in at once
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            code = secrets.token_urlsafe(16)
            fake.codes[code] = query
            fake.authorize_queries.append(query)
            issuer = "http://evil.example" if fake.case == "mixup" else fake.url
            answer = {"code": code, "state": query["state"], "iss": issuer}
            self.send_response(302)
            self.send_header("Location", f"{query['redirect_uri']}?{urlencode(answer)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._json(404, {"error": "not_found"})

    def do_POST(self):
        fake = self.server
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
        fake.token_requests.append(form)
        basic = base64.b64encode(f"{fake.client_id}:{fake.client_secret}".encode()).decode()
        asked = fake.codes.pop(form.get("code"), None)
        posted = (form.get("client_id"), form.get("client_secret")) == (fake.client_id, fake.client_secret)
        if self.headers.get("Authorization") != f"Basic {basic}" and not posted:
            return self._json(401, {"error": "invalid_client"})
        challenge = base64.urlsafe_b64encode(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
        if asked is None or asked["code_challenge"] != challenge.rstrip(b"=").decode() \
                or form.get("redirect_uri") != asked["redirect_uri"]:
            return self._json(400, {"error": "invalid_grant"})
        now = int(time.time())
        claims = {"iss": fake.url, "aud": fake.client_id, "sub": fake.subject, "iat": now, "exp": now + 300,
                  "auth_time": now, "nonce": asked["nonce"], "email": fake.email, "email_verified": True,
                  "name": "Fake Person", "oid": f"oid-{fake.subject}", "mail": f"mail-{fake.email}",
                  "mail_confirmed": True}
        key, header = fake.key, {"alg": "RS256", "kid": "fake-1"}
        if fake.case == "wrong_iss":
            claims["iss"] = "http://evil.example"
        elif fake.case == "wrong_aud":
            claims["aud"] = "another-client"
        elif fake.case == "wrong_nonce":
            claims["nonce"] = secrets.token_urlsafe(16)
        elif fake.case == "bad_signature":  # the same kid, another private key
            key = fake.forged
        elif fake.case == "expired":
            claims.update(iat=now - 7200, exp=now - 3600)
        elif fake.case == "stale_login":  # an upstream session from an hour ago, not a new login
            claims["auth_time"] = now - 3600
        if fake.case == "alg_none":
            id_token = f"{b64json({'alg': 'none'})}.{b64json(claims)}."
        else:
            id_token = jose_jwt.encode(header, claims, key)
        return self._json(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                "expires_in": 300, "id_token": id_token})

    def log_message(self, *args):
        pass


class FakeUpstream(ThreadingHTTPServer):
    client_id, client_secret = "shop-at-fake", "fake-secret"

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.key = RSAKey.generate_key(2048, parameters={"kid": "fake-1"})
        self.forged = RSAKey.generate_key(2048, parameters={"kid": "fake-1"})
        self.codes: dict[str, dict] = {}
        self.token_requests: list[dict] = []
        self.authorize_queries: list[dict] = []
        self.case = "good"
        self.subject, self.email = "fake-user", "fake-user@example.net"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


# -- the providers ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake():
    with serving(FakeUpstream()) as server:
        yield server


@pytest.fixture
def fake_case(fake):
    fake.case = "good"
    fake.subject = f"fake-{uuid.uuid4().hex[:8]}"
    fake.email = f"{fake.subject}@example.net"
    yield fake
    fake.case = "good"


@pytest.fixture(scope="module")
def corp(tmp_path_factory):
    """The upstream: another instance of this provider, under the host name localhost."""
    running, stop = start_provider(tmp_path_factory.mktemp("corp"), "sqlite-sql",
                                   lambda port: {"issuer": f"http://localhost:{port}"})
    running.url = running.app.extensions["op"].settings.issuer_url
    yield running
    stop()


def register_at_corp(corp, client_id: str, secret: str, redirect_uri: str) -> None:
    """What corp's operator does: add a client to its clients file (reloaded within a second)."""
    path = corp.base_dir / "clients.yaml"
    key = MasterSecret.load(corp.base_dir / "keys").derive("client-secret")
    data = json.loads(path.read_text())
    data["clients"].append({"client_id": client_id, "client_name": "Shop",
                            "client_secret_hash": hash_client_secret(secret, key),
                            "redirect_uris": [redirect_uri], "grant_types": ["authorization_code"],
                            "scopes": ["openid", "email", "profile"], "first_party": True})
    path.write_text(json.dumps(data))
    deadline = time.time() + 10
    while time.time() < deadline:
        answer = requests.get(f"{corp.url}/oidc/auth", allow_redirects=False, timeout=10, params={
            "client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code", "scope": "openid"})
        if answer.status_code == 200 and 'name="password"' in answer.text:  # its login page, not an error
            return
        time.sleep(0.2)
    raise AssertionError("corp never loaded the shop's client")


@pytest.fixture(scope="module")
def shop(tmp_path_factory, corp, fake, gateway_server):
    """The provider under test, with corp and fake as its upstreams."""
    secret = secrets.token_urlsafe(32)
    callbacks = []

    def settings(port):
        callbacks.append(f"http://127.0.0.1:{port}/federation/callback")
        return {
            "upstreams": {
                "corp": {"discovery_url": f"{corp.url}/.well-known/openid-configuration", "client_id": "shop",
                         "client_secret": secret, "display_name": "Corp"},
                "fake": {"issuer": fake.url, "client_id": fake.client_id, "client_secret": fake.client_secret},
                "mapped": {"issuer": fake.url, "client_id": fake.client_id, "client_secret": fake.client_secret,
                           "token_endpoint_auth_method": "client_secret_post",
                           "claims": {"sub": "oid", "email": "mail", "email_verified": "mail_confirmed"}},
            },
            "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms"},
            "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
        }

    running, stop = start_provider(tmp_path_factory.mktemp("shop"), "sqlite-sql", settings)
    register_at_corp(corp, "shop", secret, callbacks[0])
    yield running
    stop()


def browser(shop, corp, fake=None) -> Browser:
    return Browser(shop, corp.url, *([fake.url] if fake else []))


def tokens_for(shop, response) -> dict:
    params = callback_params(response)
    assert "code" in params, params
    answer = token_request(shop, {"grant_type": "authorization_code", "code": params["code"],
                                  "redirect_uri": REDIRECT})
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    tokens["claims"] = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    tokens["state"] = params.get("state")
    return tokens


def userinfo(shop, tokens) -> dict:
    return requests.get(f"{shop.url}/oidc/userinfo", timeout=10,
                        headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()


def sign_in_at_corp(agent: Browser, corp, page, username: str):
    assert page.status_code == 200 and page.url.startswith(corp.url), (page.status_code, page.url)
    return agent.login(page, username)


def login_pages_seen(agent: Browser, site: str) -> list[str]:
    """The addresses at `site` that showed its login form."""
    return [url for url, page in agent.shown if url.startswith(site + "/") and 'name="password"' in page]


def choose(agent: Browser, page, factor: str):
    """Press a factor's button on the "One more step" page."""
    uid = re.search(r'action="/interaction/([^/"]+)/start"', page.text).group(1)
    return agent.go(f"{agent.provider.url}/interaction/{uid}/start", "POST",
                    {"csrf_token": agent.csrf(page), "factor": factor})


# -- journeys -----------------------------------------------------------------------------------

def test_direct_acr_skips_the_login_page_and_signs_in_at_the_upstream(shop, corp):
    email = f"{uuid.uuid4().hex[:10]}@corp.example"
    person = corp.add_user(name="Grace Hopper", email=email, email_verified=True)
    agent = browser(shop, corp)
    page = agent.authorize(client_id="web", acr_values="urn:corp:corp_direct", scope="openid email profile",
                           state="s1", nonce="n1")
    assert not login_pages_seen(agent, shop.url)  # straight to corp
    tokens = tokens_for(shop, sign_in_at_corp(agent, corp, page, person["username"]))
    claims = tokens["claims"]
    assert tokens["state"] == "s1" and claims["nonce"] == "n1"
    assert claims["amr"] == ["fed"] and "acr" not in claims
    assert claims["sub"] != person["sub"]  # our own user, linked to corp's
    info = userinfo(shop, tokens)
    assert info["email"] == email and info["email_verified"] is True and info["name"] == "Grace Hopper"


def test_a_second_sign_in_finds_the_same_user(shop, corp):
    person = corp.add_user(email=f"{uuid.uuid4().hex[:10]}@corp.example", email_verified=True)
    subs = []
    for _ in range(2):  # two browsers: two logins at corp, one linked user here
        agent = browser(shop, corp)
        page = agent.authorize(client_id="web", acr_values="urn:whatever:corp_direct")
        subs.append(tokens_for(shop, sign_in_at_corp(agent, corp, page, person["username"]))["claims"]["sub"])
    assert subs[0] == subs[1]
    # the same browser again with prompt=login: corp is asked for a fresh login too (max_age=0)
    again = agent.authorize(client_id="web", acr_values="urn:whatever:corp_direct", prompt="login")
    assert any(url.startswith(f"{corp.url}/oidc/auth?") and "max_age=0" in url for url in agent.visited)
    assert tokens_for(shop, sign_in_at_corp(agent, corp, again, person["username"]))["claims"]["sub"] == subs[0]


def test_an_existing_user_with_the_same_verified_email_is_linked(shop, corp):
    email = f"{uuid.uuid4().hex[:10]}@example.org"
    here = shop.add_user(email=email, email_verified=True)
    there = corp.add_user(email=email, email_verified=True)
    agent = browser(shop, corp)
    page = agent.authorize(client_id="web", acr_values="urn:transmit:corp_direct")
    assert tokens_for(shop, sign_in_at_corp(agent, corp, page, there["username"]))["claims"]["sub"] == here["sub"]


@pytest.mark.parametrize("verified_there, verified_here", [(False, True), (True, False)])
def test_an_email_not_verified_on_both_sides_never_links(shop, corp, verified_there, verified_here):
    email = f"{uuid.uuid4().hex[:10]}@example.org"
    here = shop.add_user(email=email, email_verified=verified_here)
    there = corp.add_user(email=email, email_verified=verified_there)
    agent = browser(shop, corp)
    page = agent.authorize(client_id="web", acr_values="urn:transmit:corp_direct", scope="openid email")
    tokens = tokens_for(shop, sign_in_at_corp(agent, corp, page, there["username"]))
    assert tokens["claims"]["sub"] != here["sub"]
    assert "email" not in userinfo(shop, tokens)  # the address stays with the account that had it


def test_mfa_with_the_upstream_asks_for_a_second_factor_here(shop, corp, gateway_server):
    email, phone = f"{uuid.uuid4().hex[:10]}@example.org", f"+1555{uuid.uuid4().int % 10**7:07d}"
    here = shop.add_user(email=email, email_verified=True, phone=phone, phone_verified=True)
    there = corp.add_user(email=email, email_verified=True)
    agent = browser(shop, corp)
    page = agent.authorize(client_id="web", acr_values="mfa urn:transmit:corp_direct")
    choice = sign_in_at_corp(agent, corp, page, there["username"])
    assert choice.url.startswith(shop.url) and "One more step" in choice.text
    offered = set(re.findall(r'name="factor" value="([^"]+)"', choice.text))
    assert "sms" in offered and "fed" not in offered
    code_page = choose(agent, choice, "sms")
    claims = tokens_for(shop, agent.submit(code_page, {"code": sms_code(gateway_server, phone)}))["claims"]
    assert claims["sub"] == here["sub"] and claims["acr"] == "mfa" and claims["amr"] == ["fed", "sms", "mfa"]


def test_the_upstream_is_a_first_factor_only(shop, corp):
    """Not offered as a second step, and not reachable as one by its address either."""
    person = shop.add_user(email_verified=True, phone=f"+1555{uuid.uuid4().int % 10**7:07d}", phone_verified=True)
    agent = browser(shop, corp)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"])
    assert "One more step" in choice.text and 'value="fed"' not in choice.text
    uid = re.search(r'action="/interaction/([^/"]+)/start"', choice.text).group(1)
    page = agent.go(f"{shop.url}/interaction/{uid}/upstream/corp")
    assert "One more step" in page.text and not any(url.startswith(corp.url) for url in agent.visited)


@pytest.mark.parametrize("prefix", ["", "/cis"])
def test_the_social_login_url_starts_the_same_flow(shop, corp, gateway_server, prefix):
    email, phone = f"{uuid.uuid4().hex[:10]}@example.org", f"+1555{uuid.uuid4().int % 10**7:07d}"
    shop.add_user(email=email, email_verified=True, phone=phone, phone_verified=True)
    there = corp.add_user(email=email, email_verified=True)
    agent = browser(shop, corp)
    query = urlencode({"client_id": "web", "redirect_uri": REDIRECT, "require_mfa": "true", "state": "t1"})
    page = agent.go(f"{shop.url}{prefix}/v1/auth/social/corp?{query}")
    assert not login_pages_seen(agent, shop.url)
    choice = sign_in_at_corp(agent, corp, page, there["username"])
    code_page = choose(agent, choice, "sms")
    tokens = tokens_for(shop, agent.submit(code_page, {"code": sms_code(gateway_server, phone)}))
    assert tokens["state"] == "t1" and tokens["claims"]["amr"] == ["fed", "sms", "mfa"]
    # without require_mfa the upstream alone is enough
    plain = browser(shop, corp)
    query = urlencode({"client_id": "web", "redirect_uri": REDIRECT})
    page = plain.go(f"{shop.url}{prefix}/v1/auth/social/corp?{query}")
    assert tokens_for(shop, sign_in_at_corp(plain, corp, page, there["username"]))["claims"]["amr"] == ["fed"]


def test_the_social_login_url_checks_client_redirect_uri_and_provider(shop):
    base = f"{shop.url}/cis/v1/auth/social"
    unknown_client = requests.get(f"{base}/corp", params={"client_id": "nobody", "redirect_uri": REDIRECT},
                                  allow_redirects=False, timeout=10)
    assert unknown_client.status_code == 400 and "Location" not in unknown_client.headers
    no_uri = requests.get(f"{base}/corp", params={"client_id": "web"}, allow_redirects=False, timeout=10)
    assert no_uri.status_code == 400 and "Location" not in no_uri.headers
    foreign_uri = requests.get(f"{base}/corp", params={"client_id": "web", "redirect_uri": "https://evil.example/cb"},
                               allow_redirects=False, timeout=10)
    assert foreign_uri.status_code == 400 and "Location" not in foreign_uri.headers
    unknown_provider = requests.get(f"{base}/nobody", params={"client_id": "web", "redirect_uri": REDIRECT,
                                                             "state": "u1"}, allow_redirects=False, timeout=10)
    params = callback_params(unknown_provider)
    assert params["error"] == "invalid_request" and params["state"] == "u1"


def test_the_login_page_offers_each_upstream(shop, corp):
    person = corp.add_user(email_verified=True)
    agent = browser(shop, corp)
    page = agent.authorize(client_id="web")
    assert page.url.startswith(shop.url) and 'name="password"' in page.text
    assert "Continue with Corp" in page.text and "Continue with fake" in page.text
    assert 'value="fed"' not in page.text  # not one of the methods that ask for a login name
    link = re.search(r'href="([^"]+/upstream/corp)"', page.text).group(1)
    page = agent.go(urljoin(page.url, link))
    assert tokens_for(shop, sign_in_at_corp(agent, corp, page, person["username"]))["claims"]["amr"] == ["fed"]


def test_an_unknown_upstream_in_acr_values_is_ignored(shop, corp):
    agent = browser(shop, corp)
    page = agent.authorize(client_id="web", acr_values="urn:transmit:nobody_direct")
    assert page.status_code == 200 and page.url.startswith(shop.url) and 'name="password"' in page.text


# -- attacks ----------------------------------------------------------------------------------

def test_the_fake_upstream_signs_in_when_nothing_is_wrong(shop, corp, fake_case):
    """The baseline for the attacks below: the same upstream, every check passing."""
    agent = browser(shop, corp, fake_case)
    tokens = tokens_for(shop, agent.authorize(client_id="web", acr_values="urn:any:fake_direct",
                                              scope="openid email"))
    assert tokens["claims"]["amr"] == ["fed"]
    assert userinfo(shop, tokens)["email"] == fake_case.email  # mapped from the fake's ID token


def test_claims_are_mapped_as_configured(shop, corp, fake_case):
    """`claims:` names the upstream's claims; here the credentials go in the body (client_secret_post)."""
    agent = browser(shop, corp, fake_case)
    tokens = tokens_for(shop, agent.authorize(client_id="web", acr_values="urn:any:mapped_direct",
                                              scope="openid email"))
    assert userinfo(shop, tokens)["email"] == f"mail-{fake_case.email}"
    assert fake_case.token_requests[-1]["client_secret"] == fake_case.client_secret
    with shop.app.app_context():
        from oidc_provider.extensions import db
        from oidc_provider.models import FederatedIdentity

        link = db.session.execute(db.select(FederatedIdentity).filter_by(provider="mapped")).scalars().all()
        assert [(row.subject, row.user_id) for row in link] == [(f"oid-{fake_case.subject}", tokens["claims"]["sub"])]


@pytest.mark.parametrize("case", ["wrong_iss", "wrong_aud", "wrong_nonce", "bad_signature", "expired", "alg_none"])
def test_an_upstream_id_token_that_fails_validation_is_refused(shop, corp, fake_case, case):
    fake_case.case = case
    before = len(fake_case.token_requests)
    agent = browser(shop, corp, fake_case)
    page = agent.authorize(client_id="web", acr_values="urn:any:fake_direct")
    assert len(fake_case.token_requests) == before + 1  # refused after the exchange, at validation
    assert page.status_code == 502 and 'data-error="upstream_failed"' in page.text
    assert agent.cookie("op_session") is None and "code=" not in page.headers.get("Location", "")


def test_an_answer_naming_another_issuer_is_refused_before_the_exchange(shop, corp, fake_case):
    """RFC 9207: the `iss` of the authorization response must be the upstream's (mix-up)."""
    fake_case.case = "mixup"
    before = len(fake_case.token_requests)
    agent = browser(shop, corp, fake_case)
    page = agent.authorize(client_id="web", acr_values="urn:any:fake_direct")
    assert page.status_code == 502 and len(fake_case.token_requests) == before
    assert agent.cookie("op_session") is None


@pytest.mark.parametrize("case, refused", [("good", False), ("stale_login", True)])
def test_prompt_login_needs_a_fresh_login_at_the_upstream(shop, corp, fake_case, case, refused):
    """OIDC Core 3.1.2.1: max_age=0 goes upstream and the ID token's auth_time must honour it."""
    fake_case.case = case
    agent = browser(shop, corp, fake_case)
    page = agent.authorize(client_id="web", acr_values="urn:any:fake_direct", prompt="login")
    assert fake_case.authorize_queries[-1]["max_age"] == "0"
    if refused:
        assert page.status_code == 502 and agent.cookie("op_session") is None
    else:
        assert tokens_for(shop, page)["claims"]["amr"] == ["fed"]


def callback_url_for(agent: Browser, fake) -> str:
    """Start a sign-in at the fake upstream and keep its answer instead of delivering it."""
    start = agent.authorize(client_id="web", acr_values="urn:any:fake_direct")
    assert start.status_code == 303 and start.headers["Location"].startswith(fake.url)
    answer = requests.get(start.headers["Location"], allow_redirects=False, timeout=10)
    return answer.headers["Location"]


def test_a_state_from_another_browser_is_refused(shop, fake_case):
    victim = Browser(shop)  # follows only the shop: stops on the way to the upstream
    callback = callback_url_for(victim, fake_case)
    attacker = Browser(shop)
    attacker.authorize(client_id="web")  # with an interaction cookie of its own
    stolen = attacker.go(callback)
    assert stolen.status_code == 400 and 'data-error="upstream_state"' in stolen.text
    assert attacker.cookie("op_session") is None
    # the attempt used nothing up: the browser that started the sign-in completes it
    assert tokens_for(shop, victim.go(callback))["claims"]["amr"] == ["fed"]


def test_a_replayed_state_is_refused(shop, fake_case):
    agent = Browser(shop)
    callback = callback_url_for(agent, fake_case)
    tokens_for(shop, agent.go(callback))
    replay = agent.go(callback)
    assert replay.status_code == 400 and 'data-error="upstream_state"' in replay.text
    # and a refused answer also uses its state up
    agent, fake_case.case = Browser(shop), "wrong_nonce"
    callback = callback_url_for(agent, fake_case)
    assert agent.go(callback).status_code == 502
    fake_case.case = "good"
    replay = agent.go(callback)
    assert replay.status_code == 400 and 'data-error="upstream_state"' in replay.text


def test_a_factors_list_without_fed_turns_the_upstreams_off(tmp_path):
    running, stop = start_provider(tmp_path, "sqlite-sql", {
        "factors": ["password", "email-otp"],
        "upstreams": {"corp": {"issuer": "http://127.0.0.1:9", "client_id": "x", "client_secret": "s"}},
    })
    try:
        agent = UserAgent(running)
        page = agent.authorize(client_id="web", acr_values="urn:transmit:corp_direct")
        assert page.status_code == 200 and 'name="password"' in page.text and "Continue with" not in page.text
        social = requests.get(f"{running.url}/v1/auth/social/corp", allow_redirects=False, timeout=10,
                              params={"client_id": "web", "redirect_uri": REDIRECT})
        assert callback_params(social)["error"] == "invalid_request"
    finally:
        stop()
