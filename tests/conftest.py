"""Fixtures: a live provider on loopback per backend, a browser-like user agent, clients.

Backends are real: SQLite files, the PostgreSQL server at 127.0.0.1:5432 and Redis at
127.0.0.1:6379. Without those servers the tests that need them skip locally and fail
in CI (CI=true), so the production backends are always exercised there.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

from oidc_provider import create_app
from oidc_provider.background import stop_all
from oidc_provider.cli import create_user, upgrade_database
from oidc_provider.cookies import secure_name
from oidc_provider.oauth.keys import JWKS_CACHE_SECONDS, KeyFolder, MasterSecret
from oidc_provider.settings.clients import ClientConfig, hash_client_secret

os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the RP library over loopback http

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the user agent stops at it


def require_service(name: str, check) -> None:
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means the service is not usable
        message = f"{name} is not reachable ({exc.__class__.__name__}: {exc})"
        if IN_CI:
            pytest.fail(f"{message}; CI must run the {name} tests")
        pytest.skip(f"{message}; start it to run these tests")


def _postgres_database():
    import psycopg

    name = f"oidc_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]

    def drop():
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class Provider:
    """A running provider and what tests need to talk to it."""

    url: str
    app: object
    base_dir: Path
    secrets: dict[str, str]
    client_keys: dict[str, RSAKey]
    backend: str
    _users: list = field(default_factory=list)

    def add_user(self, **kwargs) -> dict:
        username = kwargs.pop("username", f"user-{uuid.uuid4().hex[:8]}")
        with self.app.app_context():
            user = create_user(username, kwargs.pop("password", PASSWORD),
                               email=kwargs.pop("email", f"{username}@example.com"), **kwargs)
            return {"username": username, "sub": user.id, "password": PASSWORD}

    @property
    def op(self):
        return self.app.extensions["op"]

    def cookie_name(self, base: str) -> str:
        """What this provider calls one of its cookies ("op_session"): `__Host-` prefixed under https."""
        return secure_name(base, self.app.config["SESSION_COOKIE_SECURE"])

    def discovery(self) -> dict:
        return requests.get(f"{self.url}/.well-known/openid-configuration", timeout=10).json()


def write_clients(path: Path, key: bytes, client_keys: dict) -> dict[str, str]:
    made = {name: secrets.token_urlsafe(32)
            for name in ("web", "web-post", "backend", "resource-server", "api-backend", "admin-console")}
    clients = [
        {"client_id": "web", "client_name": "Web app", "client_secret_hash": hash_client_secret(made["web"], key),
         "redirect_uris": [REDIRECT], "post_logout_redirect_uris": ["http://127.0.0.1:9/bye"],
         "grant_types": ["authorization_code", "refresh_token"], "first_party": True,
         "scopes": ["openid", "profile", "email", "phone", "offline_access"]},
        {"client_id": "web-post", "client_name": "Post app", "token_endpoint_auth_method": "client_secret_post",
         "client_secret_hash": hash_client_secret(made["web-post"], key), "redirect_uris": [REDIRECT],
         "grant_types": ["authorization_code", "refresh_token"], "scopes": ["openid", "profile", "email"],
         "first_party": False, "id_token_signed_response_alg": "ES256"},
        {"client_id": "mobile", "client_name": "Mobile app", "token_endpoint_auth_method": "none",
         "redirect_uris": [REDIRECT, "com.example.app:/cb"], "grant_types": ["authorization_code", "refresh_token"],
         "scopes": ["openid", "profile", "offline_access"], "first_party": True},
        {"client_id": "jwt-client", "client_name": "Key-authenticated app",
         "token_endpoint_auth_method": "private_key_jwt",
         "jwks": {"keys": [client_keys["jwt-client"].as_dict(private=False)]},
         "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "client_credentials"],
         "scopes": ["openid", "orders:read"], "first_party": True},
        {"client_id": "strict-app", "client_name": "Strict app", "client_secret_hash": hash_client_secret(made["web"], key),
         "redirect_uris": [REDIRECT], "grant_types": ["authorization_code"], "first_party": True,
         "scopes": ["openid"], "mfa_policy": "always"},
        {"client_id": "api-backend", "client_name": "Direct API backend",
         "client_secret_hash": hash_client_secret(made["api-backend"], key),
         "redirect_uris": ["https://domain.com/verify", REDIRECT],
         "grant_types": ["client_credentials", "authorization_code"], "first_party": True,
         "scopes": ["openid", "auth.email", "auth.sms", "auth.password"]},
        {"client_id": "admin-console", "client_name": "Admin console",
         "client_secret_hash": hash_client_secret(made["admin-console"], key), "redirect_uris": [REDIRECT],
         "grant_types": ["client_credentials", "authorization_code"], "first_party": True,
         "scopes": ["openid", "admin:users", "admin:audit"]},
        {"client_id": "backend", "client_secret_hash": hash_client_secret(made["backend"], key),
         "grant_types": ["client_credentials"], "scopes": ["orders:read", "orders:write"]},
        {"client_id": "resource-server", "client_name": "Resource server",
         "client_secret_hash": hash_client_secret(made["resource-server"], key),
         "grant_types": ["client_credentials"], "scopes": [], "can_introspect": True},
    ]
    path.write_text(json.dumps({"clients": clients}))  # JSON is YAML
    return made


def add_clients(provider: Provider, *clients: dict) -> None:
    """What an operator does: add (or replace) clients in the clients file; returns once the
    provider has loaded them. A `client_secret` is stored hashed and kept in provider.secrets."""
    key = MasterSecret.load(provider.base_dir / "keys").derive("client-secret")
    path = provider.base_dir / "clients.yaml"
    data = json.loads(path.read_text())
    expected = {}
    for client in map(dict, clients):
        secret = client.pop("client_secret", None)
        if secret:
            provider.secrets[client["client_id"]] = secret
            client["client_secret_hash"] = hash_client_secret(secret, key)
        data["clients"] = [c for c in data["clients"] if c["client_id"] != client["client_id"]] + [client]
        expected[client["client_id"]] = ClientConfig.model_validate(client)
    path.write_text(json.dumps(data))
    deadline = time.monotonic() + 10
    while any(getattr(provider.op.clients.get(cid), "config", None) != config for cid, config in expected.items()):
        assert time.monotonic() < deadline, f"clients not loaded: {provider.op.clients.last_error}"
        time.sleep(0.1)


def register_clients(provider: Provider, clients: list[dict]) -> None:
    """add_clients, with a fresh secret for each confidential client (kept in provider.secrets)."""
    add_clients(provider, *[
        {**client, "client_secret": secrets.token_urlsafe(32)}
        if client.get("token_endpoint_auth_method", "client_secret_basic").startswith("client_secret") else client
        for client in clients])


BACKENDS = {
    "sqlite-sql": ("sqlite", "sql"),
    "postgres-redis": ("postgres", "redis"),
}


def start_provider(tmp_path: Path, backend: str, extra_settings=None):
    """A live provider on loopback; `extra_settings` is a dict, or a function of the port."""
    database, store = BACKENDS[backend]
    cleanups = []
    overrides = {"dev_mode": True, "keys_dir": str(tmp_path / "keys"), "clients_file": str(tmp_path / "clients.yaml"),
                 "resources": {"https://api.example.com": {"access_token_lifetime": 120},
                               "https://billing.example.com": {}},
                 # one sending thread: messages reach the test servers in the order they were asked for
                 "delivery": {"workers": 1}}
    if database == "postgres":
        require_service("PostgreSQL", lambda: __import__("psycopg").connect(POSTGRES_ADMIN_URL, connect_timeout=3).close())
        url, drop = _postgres_database()
        overrides["database_url"] = url
        cleanups.append(drop)
    else:
        overrides["database_url"] = f"sqlite:///{tmp_path / 'oidc.db'}"
    if store == "redis":
        import redis

        require_service("Redis", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping())
        prefix = f"test:{uuid.uuid4().hex[:8]}:"
        overrides["store"] = {"backend": "redis", "redis_url": REDIS_URL, "prefix": prefix}

        def flush():
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)

        cleanups.append(flush)
    KeyFolder(tmp_path / "keys").generate()
    key = MasterSecret.load(tmp_path / "keys").derive("client-secret")
    client_keys = {"jwt-client": RSAKey.generate_key(2048, parameters={"kid": "jwt-client-1"})}
    made = write_clients(tmp_path / "clients.yaml", key, client_keys)
    port = _free_port()
    overrides["issuer"] = f"http://127.0.0.1:{port}"
    if callable(extra_settings):  # settings that depend on the port, e.g. WebAuthn origins
        extra_settings = extra_settings(port)
    overrides.update(extra_settings or {})
    app = create_app(None, overrides, base_dir=tmp_path)
    upgrade_database(app)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    provider = Provider(f"http://127.0.0.1:{port}", app, tmp_path, made, client_keys, backend)

    def stop():
        server.shutdown()
        thread.join(5)
        stop_all(app)  # its queues' threads, before its store goes
        with app.app_context():
            from oidc_provider.extensions import db

            db.engine.dispose()
        for cleanup in cleanups:
            cleanup()

    return provider, stop


@pytest.fixture(scope="session", params=list(BACKENDS), ids=list(BACKENDS))
def provider(request, tmp_path_factory):
    backend = request.param
    running, stop = start_provider(tmp_path_factory.mktemp(backend), backend)
    yield running
    stop()


@pytest.fixture(scope="session")
def sqlite_provider(tmp_path_factory):
    """One backend for behaviour that does not depend on storage."""
    running, stop = start_provider(tmp_path_factory.mktemp("sqlite-only"), "sqlite-sql")
    yield running
    stop()


@pytest.fixture
def user(provider):
    return provider.add_user(name="Ada Lovelace", phone="+15550123", phone_verified=True,
                             email_verified=True)


def interaction_uid(page: requests.Response) -> str:
    """The id of the interaction whose form a page shows."""
    return re.search(r'action="/interaction/([^/"]+)/', page.text).group(1)


class UserAgent:
    """A browser stand-in: follows the provider's redirects, fills its forms, stops at the client."""

    def __init__(self, provider: Provider):
        self.provider = provider
        self.http = requests.Session()
        self.last_page: requests.Response | None = None

    def go(self, url: str, method: str = "GET", data: dict | None = None) -> requests.Response:
        """Request and follow redirects while they stay on the provider."""
        response = self.http.request(method, url, data=data, allow_redirects=False, timeout=15)
        hops = 0
        while response.status_code in (301, 302, 303, 307) and hops < 10:
            target = urljoin(url, response.headers["Location"])
            if not target.startswith(self.provider.url):
                return response  # leaving the provider: the client's redirect_uri
            url, hops = target, hops + 1
            response = self.http.get(target, allow_redirects=False, timeout=15)
        self.last_page = response
        return response

    def cookie(self, base: str) -> str | None:
        """This browser's value of one of the provider's cookies ("op_session"), or None."""
        return self.http.cookies.get(self.provider.cookie_name(base), domain=urlsplit(self.provider.url).hostname)

    def authorize(self, **params) -> requests.Response:
        query = {"response_type": "code", "scope": "openid", "redirect_uri": REDIRECT, **params}
        query = {key: value for key, value in query.items() if value is not None}
        request = requests.Request("GET", f"{self.provider.url}/oidc/auth", params=query).prepare()
        return self.go(request.url)

    def interaction_url(self, page: requests.Response) -> str:
        """The address of the interaction a page belongs to (a login's first page answers the
        authorization request itself, so its own URL is that request's)."""
        return f"{self.provider.url}/interaction/{interaction_uid(page)}"

    def form_action(self, page: requests.Response) -> str:
        return urljoin(page.url, re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))

    @staticmethod
    def csrf(page: requests.Response) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)

    def submit(self, page: requests.Response, fields: dict) -> requests.Response:
        """Post the page's form as a browser would: its hidden inputs plus the given fields."""
        hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
        data = {name: html.unescape(value) for name, value in hidden}
        return self.go(self.form_action(page), "POST", {**data, **fields})

    def login(self, page: requests.Response, username: str, password: str = PASSWORD) -> requests.Response:
        assert 'name="password"' in page.text, page.text[:500]
        return self.submit(page, {"login": username, "password": password, "action": "login"})

    def sign_in(self, username: str, password: str = PASSWORD, **params) -> dict:
        """The whole browser part of a code flow; returns the parameters sent to the client."""
        page = self.authorize(**params)
        if page.status_code == 200 and 'name="password"' in page.text:
            page = self.login(page, username, password)
        if page.status_code == 200 and 'value="approve"' in page.text:
            page = self.submit(page, {"action": "approve"})
        return callback_params(page)


OIDC_PROVIDER_SCRIPT = Path(sys.executable).with_name("oidc-provider")


def published_long_enough(keys_dir: Path) -> None:
    """As if the next keys had been in JWKS for longer than relying parties may cache it, so
    `keys rotate` promotes them."""
    path = keys_dir / "keyring.json"
    ring = json.loads(path.read_text())
    for entry in ring["keys"]:
        entry["created_at"] -= JWKS_CACHE_SECONDS + 2
    path.write_text(json.dumps(ring))


def run_cli(home: Path, *args: str, input: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    """The real `oidc-provider` command on a base directory, stdin closed unless `input` is given.
    `ok`: it must succeed; otherwise it must fail with a message, never a traceback."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("ISSUER", "DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
    env.update(OIDC_PROVIDER_HOME=str(home), OIDC_PROVIDER_CONFIG=str(home / "config" / "provider.yaml"))
    result = subprocess.run(
        [str(OIDC_PROVIDER_SCRIPT), *args], cwd=home, env=env, text=True, capture_output=True, timeout=120,
        **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}),
    )
    if ok:
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    else:
        assert result.returncode != 0, f"{args} should have failed:\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
    return result


def cli_home(provider: Provider) -> Path:
    """Make `run_cli(provider.base_dir, ...)` act on this running provider: writes its
    database, store, keys and clients settings to the base directory's provider.yaml."""
    import yaml

    settings = provider.op.settings
    config = {"issuer": settings.issuer_url, "database_url": settings.database_url, "keys_dir": settings.keys_dir,
              "clients_file": settings.clients_file, "dev_mode": settings.dev_mode,
              "store": settings.store.model_dump(mode="json"), "lockout": settings.lockout.model_dump(mode="json"),
              "email": settings.email.model_dump(mode="json")}
    (provider.base_dir / "config").mkdir(exist_ok=True)
    (provider.base_dir / "config" / "provider.yaml").write_text(yaml.safe_dump(config))
    return provider.base_dir


def post(agent: UserAgent, page: requests.Response, action: str, fields: dict | None = None) -> requests.Response:
    """Post one of the interaction's forms (start, verify, resend, restart...) from `page`."""
    return agent.go(f"{agent.interaction_url(page)}/{action}", "POST",
                    {"csrf_token": agent.csrf(page), **(fields or {})})


def wrong_passwords_at_once(provider: Provider, username: str, count: int, timeout: float = 60) -> None:
    """`count` wrong passwords for one account, posted from one login page at the same instant
    (a barrier releases them together): what the lockout must count atomically."""
    agent = UserAgent(provider)
    page = agent.authorize(client_id="web")
    url, token = agent.form_action(page), agent.csrf(page)
    barrier = threading.Barrier(count)

    def guess(i):
        barrier.wait()
        agent.http.post(url, data={"csrf_token": token, "login": username, "password": f"guess {i}",
                                   "action": "login"}, allow_redirects=False, timeout=timeout)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 30)


SHOWN_RECOVERY_CODE = re.compile(r"<li>(\d+)\. <code>([0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4})</code></li>")


def recovery_codes_shown(page: requests.Response) -> list[str]:
    """The codes on the page that made a new set, in the order of their numbers (number 1 first)."""
    found = SHOWN_RECOVERY_CODE.findall(page.text)
    assert [int(number) for number, _ in found] == list(range(1, len(found) + 1)), found
    return [code for _, code in found]


def asked_recovery_number(page: requests.Response) -> int:
    """The number of the recovery code a sign-in step asks for ("Enter recovery code number 3")."""
    asked = re.search(r"code (?:number |#)(\d+)", page.text)
    assert asked, "the page does not ask for a specific recovery code"
    return int(asked.group(1))


def asked_recovery_code(page: requests.Response, codes: list[str]) -> str:
    """The code of a set (as shown, number 1 first) that this sign-in step asks for."""
    return codes[asked_recovery_number(page) - 1]


def factor_passed(answer) -> bool:
    """The answer to a factor's form signs the browser in: it sets the IdP session cookie, on its
    way to the client's code or the login's next step."""
    return isinstance(answer, requests.Response) and any(name.endswith("op_session") for name in answer.cookies.keys())


def one_passed(answers: list) -> None:
    """Of one factor's answers posted at once, exactly one signed in and the others were refused."""
    assert [factor_passed(answer) for answer in answers].count(True) == 1
    assert sorted(answer.status_code for answer in answers if not factor_passed(answer)) == [401] * (len(answers) - 1)


def callback_params(response: requests.Response) -> dict:
    assert response.status_code in (302, 303), f"expected a redirect to the client, got {response.status_code}: {response.text[:300]}"
    location = response.headers["Location"]
    assert location.startswith(REDIRECT) or "://" in location
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def agent(provider):
    return UserAgent(provider)


def token_request(provider: Provider, data: dict, client: str | None = "web", auth: str = "basic") -> requests.Response:
    kwargs = {}
    if client and auth == "basic":
        kwargs["auth"] = (client, provider.secrets[client])
    elif client and auth == "post":
        data = {**data, "client_id": client, "client_secret": provider.secrets[client]}
    elif client and auth == "none":
        data = {**data, "client_id": client}
    return requests.post(f"{provider.url}/oidc/token", data=data, timeout=15, **kwargs)


@pytest.fixture(scope="session")
def plain_smtp():
    """A real SMTP server on loopback that keeps every message (aiosmtpd)."""
    from tests.servers import start_smtp

    server, controller = start_smtp()
    yield server
    controller.stop()


@pytest.fixture(scope="session")
def gateway_server():
    """A real HTTP server standing in for the SMS/voice gateways; records what it gets."""
    from tests.servers import Gateway, serving

    with serving(Gateway()) as server:
        yield server


@pytest.fixture
def gateway(gateway_server):
    gateway_server.reset()
    yield gateway_server
    gateway_server.reset()


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright (never a downloaded browser), headless."""
    require_service("chromium", lambda: Path(CHROMIUM).exists() or (_ for _ in ()).throw(FileNotFoundError(CHROMIUM)))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
