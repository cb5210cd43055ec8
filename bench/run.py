"""`make bench` and `make bench-compare`: the provider in its production shape on loopback,
and optionally node-oidc-provider beside it, under the same workloads.

Every cell runs one workload at one concurrency for a bounded time and reports operations
per second, p50/p99 latency (client side), server CPU seconds per operation (read from
/proc for the server's processes) and the servers' peak resident memory. The primary figure
is operations per server CPU-second. An error in a cell fails that cell, and so does a connection
that got no answer within the cell (a server starving some connections would hide them from p99).

    python -m bench.run [--compare] [--duration 10] [--concurrency 8,32] [--workers 2] [--threads 4]
                        [--repeat 3]
                        [--only client_credentials,refresh] [--json bench/results/latest.json]
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from oidc_provider.serve import DEFAULT_THREADS

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIRECT = "http://127.0.0.1:9/callback"
RESOURCE = "https://api.example.com"
PASSWORD = "bench password, long enough"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ARGON2 = {"time_cost": 2, "memory_cost": 19456, "parallelism": 1}  # OWASP, as the provider uses


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


# -- a small keep-alive HTTP client ----------------------------------------------------------------

class Http:
    """One keep-alive HTTP/1.1 connection with a cookie jar; redirects are followed by the caller.

    The load generator shares the servers' two cores, so what it spends per request is taken from
    them: on a refresh, http.client (its headers parsed by the email package) cost 0.24-0.29 ms of
    client CPU, pycurl 0.18-0.21, this 0.12-0.13, and both servers answered 8-10% more at
    concurrency 32 with it. It reads what the two servers send: a status line, headers, and a
    Content-Length or chunked body."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}
        self._connect()

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""  # received and not yet read

    def _read_until(self, marker: bytes) -> bytes:
        while (end := self.pending.find(marker)) < 0:
            self._receive()
        found, self.pending = self.pending[:end], self.pending[end + len(marker):]
        return found

    def _read_exactly(self, size: int) -> bytes:
        while len(self.pending) < size:
            self._receive()
        found, self.pending = self.pending[:size], self.pending[size:]
        return found

    def _receive(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self.pending += chunk

    def request(self, method: str, target: str, form: dict | None = None, headers: dict | None = None):
        if target.startswith("http"):
            parts = urlsplit(target)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            lines.append("Content-Type: application/x-www-form-urlencoded")
        if method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        message = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        for attempt in (1, 2):
            try:
                self.sock.sendall(message)
                head = self._read_until(b"\r\n\r\n")
                break
            except (ConnectionResetError, BrokenPipeError):
                self.sock.close()  # the server closed an idle keep-alive connection: reconnect once
                self._connect()
                if attempt == 2:
                    raise
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        received = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            received[name] = value
            if name == "set-cookie":
                key, _, val = value.split(";", 1)[0].partition("=")
                if "max-age=0" in value.lower() or "expires=thu, 01 jan 1970" in value.lower():
                    self.cookies.pop(key.strip(), None)
                else:
                    self.cookies[key.strip()] = val.strip()
        status = int(status_line.split(" ", 2)[1])
        if "content-length" in received:
            data = self._read_exactly(int(received["content-length"]))
        elif received.get("transfer-encoding", "").lower() == "chunked":
            data = self._read_chunked()
        elif status in (204, 304):
            data = b""
        else:
            raise CellError(f"{method} {target}: {status} with neither Content-Length nor chunked encoding")
        if received.get("connection", "").lower() == "close":
            self.sock.close()
            self._connect()
        return status, received, data

    def _read_chunked(self) -> bytes:
        chunks = []
        while size := int(self._read_until(b"\r\n").split(b";", 1)[0], 16):
            chunks.append(self._read_exactly(size))
            self._read_exactly(2)
        while self._read_until(b"\r\n"):  # trailers, then the empty line
            pass
        return b"".join(chunks)

    def close(self):
        self.sock.close()


class CellError(Exception):
    """A wrong answer during a workload: the cell fails."""


def expect(condition: bool, what: str):
    if not condition:
        raise CellError(what)


# -- the two servers -------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen
    paths: dict
    clients: dict  # role -> (client_id, secret)
    users: list[str]
    redis_prefix: str
    session_pattern: str
    cleanup: list = field(default_factory=list)
    mailbox: object = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server process and all its descendants (WSGI/cluster workers)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLK_TCK

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def stop(self):
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        for step in reversed(self.cleanup):
            step()


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server at {url} exited: see {log}\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", urlsplit(url).port, timeout=2)
            conn.request("GET", "/.well-known/openid-configuration")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server at {url} did not come up within {timeout} s: see {log}")


def redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL)


def write_clients(path: Path, key: bytes) -> dict[str, str]:
    """Our provider's benchmark clients in a clients.yaml; returns their fresh secrets by role."""
    from oidc_provider.settings.clients import hash_client_secret

    made = {name: secrets.token_urlsafe(32) for name in ("cc", "web", "rs")}
    clients = [
        {"client_id": "bench-cc", "client_secret_hash": hash_client_secret(made["cc"], key),
         "grant_types": ["client_credentials"], "scopes": ["orders:read"]},
        {"client_id": "bench-web", "client_secret_hash": hash_client_secret(made["web"], key),
         "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"],
         "scopes": ["openid", "offline_access", "orders:read"], "first_party": True},
        {"client_id": "bench-rs", "client_secret_hash": hash_client_secret(made["rs"], key),
         "grant_types": ["client_credentials"], "scopes": [], "can_introspect": True},
    ]
    path.write_text(json.dumps({"clients": clients}))
    return made


def start_ours(workers: int, threads: int, users: int, work: Path, code: Path | None = None,
               serve_options: tuple[str, ...] = ()) -> Target:
    """Our provider: PostgreSQL + Redis + the production WSGI server (`oidc-provider serve`), from
    this checkout or from the `code` of another one (bench/ab.py)."""
    import psycopg

    from oidc_provider.oauth.keys import KeyFolder, MasterSecret
    from bench.mailbox import start_mailbox

    home = work / "ours"
    (home / "config").mkdir(parents=True)
    KeyFolder(home / "keys").generate()
    key = MasterSecret.load(home / "keys").derive("client-secret")
    database = f"oidc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')

    def drop_database():
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    mailbox, stop_mailbox = start_mailbox()
    port, prefix = free_port(), f"bench:{uuid.uuid4().hex[:6]}:"
    made = write_clients(home / "config" / "clients.yaml", key)
    settings = {
        "issuer": f"http://127.0.0.1:{port}", "dev_mode": False,
        "database_url": f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{database}",
        "store": {"backend": "redis", "redis_url": REDIS_URL, "prefix": prefix},
        "resources": {RESOURCE: {"access_token_lifetime": 600}},
        "email": {"host": "127.0.0.1", "port": mailbox.port, "security": "none"},
        "otp": {"resend_cooldown": 0, "per_user_limit": 1_000_000, "per_destination_limit": 1_000_000,
                "per_ip_limit": 1_000_000},
    }
    (home / "config" / "provider.yaml").write_text(json.dumps(settings))
    env = {**os.environ, "OIDC_PROVIDER_HOME": str(home), "OIDC_PROVIDER_CONFIG": str(home / "config" / "provider.yaml")}
    if code is not None:  # its oidc_provider package first on the path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
    cli = str(Path(sys.executable).with_name("oidc-provider"))
    subprocess.run([cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    names = [f"bench-{i}" for i in range(users)]
    for number, name in enumerate(names):  # MFA over email needs a verified phone too (Transmit)
        subprocess.run([cli, "users", "add", name, "--email", f"{name}@example.com", "--email-verified",
                        "--phone", f"+1555{number:07d}", "--phone-verified", "--password-stdin"], env=env, input=PASSWORD, text=True, check=True, capture_output=True)
    log = home / "serve.log"
    process = subprocess.Popen([cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--threads", str(threads),
                                *serve_options],
                               env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    target = Target("ours", port, process, OUR_PATHS,
                    {"cc": ("bench-cc", made["cc"]), "web": ("bench-web", made["web"]), "rs": ("bench-rs", made["rs"])},
                    names, prefix, f"{prefix}sess:*", [drop_database, stop_mailbox], mailbox)
    try:
        wait_until_up(target.url, process, log)
    except SystemExit:
        target.stop()
        raise
    return target


OUR_PATHS = {"discovery": "/.well-known/openid-configuration", "jwks": "/oidc/jwks", "token": "/oidc/token",
             "auth": "/oidc/auth", "userinfo": "/oidc/userinfo", "introspect": "/oidc/introspect"}
PEER_PATHS = {"discovery": "/.well-known/openid-configuration", "jwks": "/jwks", "token": "/token",
              "auth": "/auth", "userinfo": "/me", "introspect": "/token/introspection"}


def start_peer(workers: int, users: int, work: Path) -> Target:
    """node-oidc-provider with Redis, RS256 JWT access tokens, argon2id at login, W cluster workers."""
    import argon2
    from joserfc.jwk import RSAKey

    peer_dir = ROOT / "bench" / "peer"
    if not (peer_dir / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=peer_dir, check=True)
    port, prefix = free_port(), f"bench-peer:{uuid.uuid4().hex[:6]}:"
    made = {name: secrets.token_urlsafe(32) for name in ("cc", "web", "rs")}
    password_hash = argon2.PasswordHasher(**ARGON2).hash(PASSWORD)
    names = [f"bench-{i}" for i in range(users)]
    config = {
        "jwk": RSAKey.generate_key(2048, parameters={"kid": "peer-rs256", "use": "sig", "alg": "RS256"}).as_dict(private=True),
        "cookie_key": secrets.token_urlsafe(32),
        "clients": [
            {"client_id": "bench-cc", "client_secret": made["cc"], "grant_types": ["client_credentials"],
             "response_types": [], "redirect_uris": [], "scope": "orders:read"},
            {"client_id": "bench-web", "client_secret": made["web"], "grant_types": ["authorization_code", "refresh_token"],
             "response_types": ["code"], "redirect_uris": [REDIRECT], "scope": "openid offline_access orders:read"},
            {"client_id": "bench-rs", "client_secret": made["rs"], "grant_types": [], "response_types": [],
             "redirect_uris": []},
        ],
        "users": {name: {"sub": f"sub-{name}", "hash": password_hash} for name in names},
    }
    (work / "peer.json").write_text(json.dumps(config))
    log = work / "peer.log"
    env = {**os.environ, "CONFIG": str(work / "peer.json"), "ISSUER": f"http://127.0.0.1:{port}", "PORT": str(port),
           "WORKERS": str(workers), "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix}
    process = subprocess.Popen(["node", "server.mjs"], cwd=peer_dir, env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    target = Target("peer", port, process, PEER_PATHS,
                    {"cc": ("bench-cc", made["cc"]), "web": ("bench-web", made["web"]), "rs": ("bench-rs", made["rs"])},
                    names, prefix, f"{prefix}Session:*")
    wait_until_up(target.url, process, log)

    def flush():
        client = redis_client()
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)

    target.cleanup.append(flush)
    return target


# -- workloads: one operation each; `state` is per thread --------------------------------------

def basic(client: tuple[str, str]) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()}


def follow(http_: Http, target: Target, status: int, headers: dict, body: bytes, limit: int = 8):
    """Follow redirects on the provider; stop at the client's redirect_uri."""
    for _ in range(limit):
        if status not in (301, 302, 303, 307):
            return status, headers, body
        location = headers["location"]
        if location.startswith(REDIRECT):
            return status, headers, body
        status, headers, body = http_.request("GET", location)
    raise CellError("too many redirects")


def login_flow(target: Target, state: dict, *, resource: str | None = RESOURCE, second_factor: bool = False,
               scope: str = "openid offline_access") -> dict:
    """A fresh browser: authorization request with PKCE, the password form, (an email code,) the code exchange."""
    http_ = Http(target.port)
    try:
        verifier, challenge = pkce()
        query = {"response_type": "code", "client_id": "bench-web", "redirect_uri": REDIRECT, "scope": scope,
                 "code_challenge": challenge, "code_challenge_method": "S256", "state": secrets.token_urlsafe(8)}
        if resource:
            query["resource"] = resource
        if second_factor:
            query["acr_values"] = "mfa"
        status, headers, body = follow(http_, target, *http_.request("GET", f"{target.paths['auth']}?{urlencode(query)}"))
        expect(status == 200 and b'name="password"' in body, f"no login form ({status})")
        status, headers, body = follow(http_, target, *submit(http_, body, {"login": state["user"], "password": PASSWORD,
                                                                             "action": "login"}))
        if second_factor:
            expect(status == 200 and b'value="email-otp"' in body, f"no second-factor choice ({status})")
            start = re.search(rb'action="(/interaction/[^/"]+)/', body).group(1).decode()
            csrf = re.search(rb'name="csrf_token" value="([^"]+)"', body).group(1).decode()
            sent = target.mailbox.count(f"{state['user']}@example.com")
            status, headers, body = follow(http_, target, *http_.request(
                "POST", f"{start}/start", {"csrf_token": csrf, "factor": "email-otp"}))
            code = target.mailbox.code_after(f"{state['user']}@example.com", sent)
            status, headers, body = follow(http_, target, *submit(http_, body, {"code": code}))
        expect(status in (302, 303) and headers["location"].startswith(REDIRECT), f"no code ({status}: {body[:200]!r})")
        code = parse_qs(urlsplit(headers["location"]).query)["code"][0]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
        if resource:
            form["resource"] = resource
        status, _, body = http_.request("POST", target.paths["token"], form, basic(target.clients["web"]))
        expect(status == 200, f"token exchange {status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        http_.close()


def submit(http_: Http, page: bytes, fields: dict):
    text = page.decode()
    action = unescape(re.search(r'<form method="post" action="([^"]+)"', text).group(1))
    hidden = {name: unescape(value) for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', text)}
    return http_.request("POST", action, {**hidden, **fields})


def op_get(path_key):
    def run(target, http_, state):
        status, _, body = http_.request("GET", target.paths[path_key])
        expect(status == 200 and body, f"{path_key}: {status}")
    return run


def op_client_credentials(target, http_, state):
    form = {"grant_type": "client_credentials", "scope": "orders:read", "resource": RESOURCE}
    status, _, body = http_.request("POST", target.paths["token"], form, basic(target.clients["cc"]))
    expect(status == 200 and b"access_token" in body, f"client_credentials: {status} {body[:200]!r}")


def setup_refresh(target, state):
    state["refresh_token"] = login_flow(target, state)["refresh_token"]


def op_refresh(target, http_, state):
    form = {"grant_type": "refresh_token", "refresh_token": state["refresh_token"]}
    status, _, body = http_.request("POST", target.paths["token"], form, basic(target.clients["web"]))
    expect(status == 200, f"refresh: {status} {body[:200]!r}")
    state["refresh_token"] = json.loads(body)["refresh_token"]
    expect(state["refresh_token"], "no rotated refresh token")


def op_code_flow(target, http_, state):
    expect("id_token" in login_flow(target, state), "no ID token")


def op_code_flow_email_otp(target, http_, state):
    tokens = login_flow(target, state, second_factor=True)
    claims = json.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[1] + "=="))
    expect(claims.get("acr") == "mfa", f"acr {claims.get('acr')}")


def setup_userinfo(target, state):
    """An access token for userinfo (no resource: ours is a JWT for the issuer, the peer's is opaque)."""
    state["access_token"] = login_flow(target, state, resource=None, scope="openid")["access_token"]


def op_userinfo(target, http_, state):
    status, _, body = http_.request("GET", target.paths["userinfo"], headers={"Authorization": f"Bearer {state['access_token']}"})
    expect(status == 200 and b'"sub"' in body, f"userinfo: {status} {body[:200]!r}")


def op_introspect(target, http_, state):
    status, _, body = http_.request("POST", target.paths["introspect"], {"token": state["access_token"]},
                                    basic(target.clients["rs"]))
    expect(status == 200 and b'"active":true' in body.replace(b" ", b""), f"introspection: {status} {body[:200]!r}")


WORKLOADS = {  # name: (operation, per-thread setup, ours only)
    "discovery": (op_get("discovery"), None, False),
    "jwks": (op_get("jwks"), None, False),
    "client_credentials": (op_client_credentials, None, False),
    "refresh_token": (op_refresh, setup_refresh, False),
    "code_flow_password": (op_code_flow, None, False),
    "code_flow_password_email_otp": (op_code_flow_email_otp, None, True),
    "userinfo": (op_userinfo, setup_userinfo, False),
    "introspection": (op_introspect, setup_userinfo, False),
}


# -- running a cell -----------------------------------------------------------------------------

def run_cell(target: Target, workload: str, concurrency: int, duration: float) -> dict:
    operation, setup, _ = WORKLOADS[workload]
    states = [{"user": target.users[i % len(target.users)]} for i in range(concurrency)]
    errors: list[str] = []
    if setup:
        def prepare(state):
            try:
                setup(target, state)
            except Exception as exc:  # noqa: BLE001 - reported as the cell's failure
                errors.append(f"setup: {exc}")
        threads = [threading.Thread(target=prepare, args=(s,)) for s in states]
        [t.start() for t in threads]
        [t.join() for t in threads]
    if errors:
        return {"error": errors[0]}
    latencies: list[list[float]] = [[] for _ in states]
    answered_in_time = [0] * concurrency  # per connection: operations finished before the cell ended
    start_barrier = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker(index):
        http_ = Http(target.port)
        start_barrier.wait()
        try:
            while time.perf_counter() < stop_at[0] and not errors:
                begin = time.perf_counter()
                operation(target, http_, states[index])
                finished = time.perf_counter()
                latencies[index].append(finished - begin)
                answered_in_time[index] += finished <= stop_at[0]
        except Exception as exc:  # noqa: BLE001 - any failure fails the cell
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            http_.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    [t.start() for t in threads]
    peak = [target.rss_bytes()]
    sampling = [True]

    def sample():
        while sampling[0]:
            peak[0] = max(peak[0], target.rss_bytes())
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before, began = target.cpu_seconds(), time.perf_counter()
    stop_at[0] = began + duration
    start_barrier.wait()
    [t.join(duration + 60) for t in threads]
    elapsed = time.perf_counter() - began
    cpu = target.cpu_seconds() - cpu_before
    sampling[0] = False
    sampler.join()
    if errors:
        return {"error": errors[0]}
    starved = answered_in_time.count(0)
    if starved:  # a server that serves some connections and leaves the rest waiting hides them from p99
        return {"error": f"{starved} of {concurrency} connections got no answer within the cell"}
    samples = sorted(x for per in latencies for x in per)
    if not samples:
        return {"error": "no operation completed"}
    ops = len(samples)
    return {
        "ops": ops, "ops_per_s": ops / elapsed, "p50_ms": 1000 * samples[len(samples) // 2],
        "p99_ms": 1000 * samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "cpu_s_per_op": cpu / ops, "ops_per_cpu_s": ops / cpu if cpu else float("inf"),
        "peak_rss_mb": peak[0] / 2**20,
    }


def redis_bytes_per_session(target: Target) -> float | None:
    """Average MEMORY USAGE of the IdP session keys the workloads left in Redis."""
    client = redis_client()
    keys = list(client.scan_iter(target.session_pattern, count=1000))[:200]
    if not keys:
        return None
    return sum(client.memory_usage(key, samples=0) or 0 for key in keys) / len(keys)


HASH_LOOP = """
import sys, time
import _argon2_cffi_bindings, argon2
assert _argon2_cffi_bindings.__file__.startswith(sys.argv[1]), _argon2_cffi_bindings.__file__
hasher = argon2.PasswordHasher(time_cost=%(time_cost)d, memory_cost=%(memory_cost)d, parallelism=%(parallelism)d)
hasher.hash("warm up")
before = time.process_time()
for _ in range(20):
    hasher.hash(sys.argv[2])
print((time.process_time() - before) / 20)
""" % ARGON2


def portable_hash_cpu_seconds() -> float:
    """CPU seconds of one argon2id hash with the provider's parameters by argon2-cffi's portable
    wheel (SSE2; the reference the issue's figure comes from), installed apart in
    bench/.portable-argon2 and timed in a process of its own."""
    from importlib.metadata import version

    portable = ROOT / "bench" / ".portable-argon2"
    if not portable.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary", ":all:",
                        "--target", str(portable), f"argon2-cffi=={version('argon2-cffi')}",
                        f"argon2-cffi-bindings=={version('argon2-cffi-bindings')}"], check=True)
    loop = subprocess.run([sys.executable, "-c", HASH_LOOP, str(portable), PASSWORD], check=True, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(portable)})
    return float(loop.stdout)


def argon2_cpu_seconds() -> dict[str, float]:
    """One hash by the portable wheel and by the build the provider runs (`make install`
    compiles it for this CPU; oidc_provider/authn/factors/password.py)."""
    return {"argon2-cffi's portable wheel": portable_hash_cpu_seconds(),
            "the provider's build": provider_hash_cpu_seconds()}


def provider_hash_cpu_seconds() -> float:
    """CPU seconds of one hash as the provider computes it (its build, on its hashing threads)."""
    from oidc_provider.authn.factors.password import hash_password

    hash_password("warm up")
    before = time.process_time()
    for _ in range(10):
        hash_password(PASSWORD)
    return (time.process_time() - before) / 10


PEER_HASH = """
import argon2 from "argon2";
const options = {type: argon2.argon2id, memoryCost: %(memory_cost)d, timeCost: %(time_cost)d, parallelism: %(parallelism)d};
await argon2.hash("warm up", options);
const before = process.cpuUsage();
for (let i = 0; i < 20; i++) await argon2.hash(process.argv[1], options);
const used = process.cpuUsage(before);
console.log((used.user + used.system) / 20 / 1e6);
""" % ARGON2


def peer_argon2_cpu_seconds() -> float:
    """CPU seconds of one argon2id hash by the peer's own library (node's `argon2`), same parameters."""
    done = subprocess.run(["node", "--input-type=module", "-e", PEER_HASH, PASSWORD], cwd=ROOT / "bench" / "peer",
                          capture_output=True, text=True, check=True)
    return float(done.stdout)


def median_run(runs: list[dict]) -> dict:
    """The run with the median ops per CPU-second; any error fails the cell."""
    failed = next((run for run in runs if "error" in run), None)
    if failed:
        return failed
    return sorted(runs, key=lambda run: run["ops_per_cpu_s"])[len(runs) // 2]


def between_hash_timings(name: str, measure: Callable[[], dict]) -> dict:
    """A login run with the reference hash timed just before and just after it (its mean
    counts), so the ratio compares CPU spent in the same minute: the machine's speed drifts
    by tens of percent between minutes, and one timing at the start of the benchmark made the
    ratio move as much as the logins did. Ours: the portable wheel; the peer: node's argon2."""
    reference = portable_hash_cpu_seconds if name == "ours" else peer_argon2_cpu_seconds
    before = reference()
    run = measure()
    run["hash_cpu_ms"] = 1000 * (before + reference()) / 2
    if "error" not in run:
        run["per_hash"] = 1000 * run["cpu_s_per_op"] / run["hash_cpu_ms"]
    return run


def password_logins(results: dict, name: str) -> list[dict]:
    """This server's code-flow-with-password cells that succeeded, one per concurrency."""
    return [{"concurrency": c["concurrency"], **c[name]} for c in results["cells"]
            if c["workload"] == "code_flow_password" and name in c and "error" not in c[name]]


# -- report ---------------------------------------------------------------------------------------

def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"


def table(results: dict, compare: bool) -> str:
    header = ["workload", "conc", "ops/s", "p50 ms", "p99 ms", "CPU ms/op", "ops/CPU-s", "peak MB"]
    if compare:
        header += ["peer ops/CPU-s", "peer ops/s", "peer p50", "peer p99", "ratio (CPU)"]
    rows = [header]
    for cell in results["cells"]:
        ours = cell["ours"]
        row = [cell["workload"], str(cell["concurrency"])]
        row += ([f"{ours['ops_per_s']:.0f}", f"{ours['p50_ms']:.1f}", f"{ours['p99_ms']:.1f}",
                 f"{1000 * ours['cpu_s_per_op']:.2f}", f"{ours['ops_per_cpu_s']:.0f}", f"{ours['peak_rss_mb']:.0f}"]
                if "error" not in ours else [f"ERROR: {ours['error'][:60]}"] + [""] * 5)
        if compare:
            peer = cell.get("peer")
            if peer is None:
                row += ["n/a"] * 5
            elif "error" in peer:
                row += [f"ERROR: {peer['error'][:50]}"] + [""] * 4
            else:
                ratio = (ours["ops_per_cpu_s"] / peer["ops_per_cpu_s"]) if "error" not in ours else float("nan")
                row += [f"{peer['ops_per_cpu_s']:.0f}", f"{peer['ops_per_s']:.0f}", f"{peer['p50_ms']:.1f}",
                        f"{peer['p99_ms']:.1f}", f"{ratio:.2f}x"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", action="store_true", help="also run node-oidc-provider and show ratios")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="our threads per worker")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell and server; the median counts")
    parser.add_argument("--only", default="", help="comma-separated workloads")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    chosen = [w for w in WORKLOADS if not args.only or w in args.only.split(",")]
    users = max(levels)
    work = Path(tempfile.mkdtemp(prefix="oidc-bench-"))
    targets = {"ours": start_ours(args.workers, args.threads, users, work)}
    failed = False
    try:
        if args.compare:
            targets["peer"] = start_peer(args.workers, users, work)
        results = {"machine": machine(), "workers": args.workers, "threads": args.threads, "duration_s": args.duration,
                   "repeat": args.repeat,
                   "argon2id_cpu_ms": {name: 1000 * value for name, value in argon2_cpu_seconds().items()},
                   "cells": []}
        if args.compare:
            results["peer_argon2id_cpu_ms"] = 1000 * peer_argon2_cpu_seconds()
        for workload in chosen:
            for level in levels:
                cell = {"workload": workload, "concurrency": level}
                runs: dict[str, list[dict]] = {}
                for _ in range(args.repeat):  # the servers take turns, so a slow spell of the machine hits both
                    for name, target in targets.items():
                        if name == "peer" and WORKLOADS[workload][2]:
                            continue
                        measure = functools.partial(run_cell, target, workload, level, args.duration)
                        runs.setdefault(name, []).append(
                            between_hash_timings(name, measure) if workload == "code_flow_password" else measure())
                        print(f"{workload:>30} c={level:<3} {name:>4}: {json.dumps(runs[name][-1])}", file=sys.stderr)
                for name, measured in runs.items():
                    cell[name] = median_run(measured)
                    ratios = [run["per_hash"] for run in measured if "per_hash" in run]
                    if ratios and "error" not in cell[name]:  # each run's ratio; the median (upper middle) counts
                        cell[name]["per_hash_runs"] = ratios
                        cell[name]["per_hash_median"] = sorted(ratios)[len(ratios) // 2]
                    failed |= "error" in cell[name]
                results["cells"].append(cell)
        for name, target in targets.items():
            results[f"{name}_redis_bytes_per_session"] = redis_bytes_per_session(target)
    finally:
        for target in targets.values():
            target.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine: {results['machine']}; {args.workers} workers each ({args.threads} threads per worker on ours); {args.duration:.0f} s per cell"
          + (f", median of {args.repeat} runs" if args.repeat > 1 else ""))
    print(table(results, args.compare))
    hashes = ", ".join(f"{ms:.1f} ms by {name}" for name, ms in results["argon2id_cpu_ms"].items())
    if "peer_argon2id_cpu_ms" in results:
        hashes += f", {results['peer_argon2id_cpu_ms']:.1f} ms by node argon2"
    print(f"\npassword login, the whole code flow per login, to one argon2id hash timed around each run "
          f"(at the start: {hashes}); target <= 1.25 x the portable wheel's:")
    for name, library in (("ours", "argon2-cffi's portable wheel"), ("peer", "its own library, node argon2")):
        for login in password_logins(results, name):
            runs = ", ".join(f"{ratio:.2f}" for ratio in login["per_hash_runs"])
            print(f"  {name} c={login['concurrency']}: {1000 * login['cpu_s_per_op']:.1f} CPU ms per login; "
                  f"{login['per_hash_median']:.2f} x one hash by {library} (the runs: {runs})")
    for name in targets:
        size = results.get(f"{name}_redis_bytes_per_session")
        if size:
            print(f"{name}: {size:.0f} bytes of Redis memory per IdP session")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {os.path.relpath(args.json)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
