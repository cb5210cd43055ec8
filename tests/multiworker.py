"""Helpers for the tests that attack a real multi-worker `oidc-provider serve` (tests/production.py):
extra clients written before the start, racers released together by a barrier, a browser's
cookies copied to parallel connections, a client talking from another loopback address, the
worker processes of a running server, and a private Redis that a test may kill."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from oidc_provider.oauth.keys import MasterSecret
from oidc_provider.settings.clients import hash_client_secret
from tests.conftest import UserAgent

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
AUTH0 = "http://auth0.com/oauth/grant-type/"

# Clients beside those of tests/conftest.write_clients: a TV (device grant) and an Auth0-style
# native app (password and MFA grants, client_secret_post).
EXTRA_CLIENTS = [
    {"client_id": "tv-app", "client_name": "Living-room TV", "token_endpoint_auth_method": "none",
     "grant_types": [DEVICE_GRANT, "refresh_token"], "scopes": ["openid", "profile"]},
    {"client_id": "ropc", "client_name": "Native app", "token_endpoint_auth_method": "client_secret_post",
     "grant_types": ["password", AUTH0 + "mfa-otp", AUTH0 + "mfa-oob", AUTH0 + "mfa-recovery-code"],
     "scopes": ["openid", "profile", "email", "enroll", "read:authenticators"], "mfa_policy": "always"},
]


def add_served_clients(home, clients=EXTRA_CLIENTS) -> None:
    """Append clients to the home's clients file (before `serve`); secrets go to home.secrets."""
    path = home.path / "config" / "clients.yaml"
    key = MasterSecret.load(home.path / "keys").derive("client-secret")
    data = json.loads(path.read_text())  # write_clients writes JSON, which is YAML
    for client in clients:
        client = dict(client)
        if client.get("token_endpoint_auth_method") != "none":
            home.secrets[client["client_id"]] = secrets.token_urlsafe(32)
            client["client_secret_hash"] = hash_client_secret(home.secrets[client["client_id"]], key)
        data["clients"].append(client)
    path.write_text(json.dumps(data))


def race(count: int, action, timeout: float = 90) -> list:
    """Run action(0..count-1) in `count` threads released at once by a barrier. A network error
    is returned as the exception, so the caller sees every outcome."""
    barrier = threading.Barrier(count)

    def run(index):
        barrier.wait(timeout)
        try:
            return action(index)
        except requests.RequestException as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count), timeout=timeout))


def same_browser(agent: UserAgent) -> requests.Session:
    """A new connection pool carrying the browser's cookies: one browser, several tabs at once."""
    session = requests.Session()
    session.cookies.update(agent.http.cookies)
    adapter = agent.http.get_adapter("http://")
    if isinstance(adapter, _FromAddress):  # the same source address as the browser
        session.mount("http://", _FromAddress(adapter.address))
    return session


class _FromAddress(HTTPAdapter):
    def __init__(self, address: str, **kwargs):
        self.address = address
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def from_address(agent: UserAgent, address: str) -> UserAgent:
    """The same user agent, connecting from another loopback address (per-IP limits are its own)."""
    adapter = _FromAddress(address)
    agent.http.mount("http://", adapter)
    return agent


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def worker_pids(served) -> list[int]:
    """The serving worker processes of an `oidc-provider serve`: Granian's children that run the app."""
    workers = []
    for pid in children(served.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in command:  # multiprocessing's helper, not a worker
            workers.append(pid)
    return workers


def wait_for(predicate, what: str, timeout: float = 30, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, with no persistence: killing it
    and starting it again is a Redis restart that lost everything, as after a crash."""

    def __init__(self, workdir: Path):
        from tests.conftest import _free_port

        self.workdir, self.port = workdir, _free_port()
        self.process = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        from tests.redis_servers import REDIS_SERVER, _cli, _wait

        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: _cli(self.port, "ping").strip() == "PONG", "the private redis-server to answer")

    def kill(self) -> None:
        if self.running:
            self.process.kill()
            self.process.wait(10)
