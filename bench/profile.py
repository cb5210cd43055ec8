"""Where a request's CPU goes, in process: the provider's own cost per operation, without HTTP.

Each workload runs through Flask's test client against a real database (SQLite file, or
PostgreSQL with --postgres) and a real Redis store, and reports CPU ms per operation
(time.process_time, so waiting on Redis or the database does not count), plus the SQL
statements and Redis round trips each operation makes. `--profile WORKLOAD` prints a
pyinstrument tree of that workload and its CPU by component (pyinstrument is in the test extra).

    python -m bench.profile [--only client_credentials,refresh_token] [-n 300] [--rounds 3] [--postgres]
                            [--endpoints] [--profile code_flow_password] [--profile-depth 0.02]
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from bench.run import (PASSWORD, POSTGRES_ADMIN_URL, REDIRECT, REDIS_URL, RESOURCE, pkce,
                       provider_hash_cpu_seconds, write_clients)

USERS = 4


# -- round-trip counters --------------------------------------------------------------------------

class Counters:
    """SQL statements (a SQLAlchemy event, the fast path's own and a commit's pipelined writes) and Redis
    round trips (one per packed send)."""

    def __init__(self, engine):
        import redis.connection
        from sqlalchemy import event

        self.sql = Counter()
        self.redis = Counter()
        self.endpoint_cpu = Counter()
        self.endpoint_calls = Counter()
        counters = self

        @event.listens_for(engine, "before_cursor_execute")
        def _count(conn, cursor, statement, parameters, context, executemany):
            counters.count_sql(statement)

        send = redis.connection.AbstractConnection.send_packed_command

        def counted(conn, command, check_health=True):
            # one packed send is one round trip; a pipeline sends all its commands at once
            first = command[0] if isinstance(command, list) else command
            name = re.search(rb"\r\n\$\d+\r\n([A-Za-z]+)", bytes(first)) if first else None
            counters.redis[name.group(1).decode().upper() if name else "?"] += 1
            return send(conn, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = counted  # this process only

        from oidc_provider.oauth import fast_path

        execute = fast_path._Driver.execute

        def driver_counted(driver, statement, params):
            # on PostgreSQL the fast path runs its statements on the pool's psycopg connection, past the event
            counters.count_sql(driver.compiler.sql(statement, tuple(params)))
            return execute(driver, statement, params)

        fast_path._Driver.execute = driver_counted

        from oidc_provider import extensions

        pipelined = extensions.write_pipelined

        def pipeline_counted(connection, writes):
            # on PostgreSQL a commit's queued writes go in one pipeline on the psycopg connection, past the event
            for statement, rows in writes:
                counters.count_sql(extensions.driver_sql(statement, tuple(rows[0]), connection.dialect))
            return pipelined(connection, writes)

        extensions.write_pipelined = pipeline_counted

    def count_sql(self, sql: str) -> None:
        self.sql[sql.split(None, 1)[0].upper()] += 1  # by its first word: SELECT, INSERT, WITH...

    def watch(self, app):
        """CPU per endpoint: a WSGI middleware around the app (the test client's own work excluded)."""
        inner, adapter = app.wsgi_app, app.url_map.bind("localhost")

        def timed(environ, start_response):
            try:
                endpoint = adapter.match(environ["PATH_INFO"], environ["REQUEST_METHOD"])[0]
            except Exception:  # noqa: BLE001 - an unrouted path, e.g. a redirect target of ours
                endpoint = environ["PATH_INFO"]
            before = time.process_time()
            try:
                return list(inner(environ, start_response))
            finally:
                self.endpoint_cpu[f"{environ['REQUEST_METHOD']} {endpoint}"] += time.process_time() - before
                self.endpoint_calls[f"{environ['REQUEST_METHOD']} {endpoint}"] += 1

        app.wsgi_app = timed

    def reset(self):
        self.sql.clear()
        self.redis.clear()
        self.endpoint_cpu.clear()
        self.endpoint_calls.clear()

    def endpoints(self, ops: int) -> str:
        return "\n".join(f"    {name:<40} {1000 * cpu / ops:7.3f} ms/op ({self.endpoint_calls[name] / ops:.0f}x)"
                         for name, cpu in self.endpoint_cpu.most_common())

    def per_op(self, ops: int) -> str:
        def fmt(counter):
            total = sum(counter.values()) / ops
            detail = " ".join(f"{name}={count / ops:.1f}" for name, count in counter.most_common())
            return f"{total:.1f}" + (f" ({detail})" if detail else "")
        return f"SQL {fmt(self.sql)}; Redis {fmt(self.redis)}"


# -- the provider ----------------------------------------------------------------------------------

def build_app(work: Path, postgres: bool):
    from oidc_provider import create_app
    from oidc_provider.cli import create_user, upgrade_database
    from oidc_provider.oauth.keys import KeyFolder, MasterSecret

    KeyFolder(work / "keys").generate()
    key = MasterSecret.load(work / "keys").derive("client-secret")
    made = write_clients(work / "clients.yaml", key)
    cleanups = []
    if postgres:
        import psycopg

        database = f"oidc_profile_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        database_url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{database}"

        def drop():
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        cleanups.append(drop)
    else:
        database_url = f"sqlite:///{work / 'oidc.db'}"
    prefix = f"profile:{uuid.uuid4().hex[:6]}:"
    overrides = {
        "issuer": "http://localhost:5000", "dev_mode": False, "database_url": database_url,
        "keys_dir": str(work / "keys"), "clients_file": str(work / "clients.yaml"),
        "store": {"backend": "redis", "redis_url": REDIS_URL, "prefix": prefix},
        "resources": {RESOURCE: {"access_token_lifetime": 600}},
    }
    app = create_app(None, overrides, base_dir=work)
    for handler in logging.getLogger().handlers:  # log lines are still formatted and written, not shown
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the life of the process
    upgrade_database(app)

    def flush():
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for name in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(name)
    cleanups.append(flush)
    with app.app_context():
        for number in range(USERS):
            create_user(f"bench-{number}", PASSWORD, email=f"bench-{number}@example.com", email_verified=True)
    return app, made, cleanups


# -- workloads -------------------------------------------------------------------------------------

def basic(client_id: str, secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


class Workloads:
    def __init__(self, app, made):
        self.app = app
        self.made = made
        self.client = app.test_client()
        self.turn = 0

    def _ok(self, response, what: str):
        if response.status_code != 200:
            raise SystemExit(f"{what}: {response.status_code} {response.get_data()[:300]!r}")
        return response

    def discovery(self):
        self._ok(self.client.get("/.well-known/openid-configuration"), "discovery")

    def jwks(self):
        self._ok(self.client.get("/oidc/jwks"), "jwks")

    def client_credentials(self):
        self._ok(self.client.post("/oidc/token", data={"grant_type": "client_credentials", "scope": "orders:read",
                                                       "resource": RESOURCE},
                                  headers=basic("bench-cc", self.made["cc"])), "client_credentials")

    def login(self, resource: str | None = RESOURCE, scope: str = "openid offline_access") -> dict:
        """A fresh browser: authorization request with PKCE, the password form, the code exchange."""
        browser = self.app.test_client()
        self.turn += 1
        verifier, challenge = pkce()
        query = {"response_type": "code", "client_id": "bench-web", "redirect_uri": REDIRECT, "scope": scope,
                 "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"}
        if resource:
            query["resource"] = resource
        response = browser.get(f"/oidc/auth?{urlencode(query)}")
        while response.status_code in (302, 303):
            response = browser.get(response.headers["Location"])
        page = response.get_data(as_text=True)
        assert 'name="password"' in page, page[:300]
        action = unescape(re.search(r'<form method="post" action="([^"]+)"', page).group(1))
        hidden = {n: unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)}
        form = {**hidden, "login": f"bench-{self.turn % USERS}", "password": PASSWORD, "action": "login"}
        response = browser.post(action, data=form)
        while response.status_code in (302, 303) and not response.headers["Location"].startswith(REDIRECT):
            response = browser.get(response.headers["Location"])
        location = response.headers.get("Location", "")
        assert location.startswith(REDIRECT), (response.status_code, response.get_data()[:300])
        form = {"grant_type": "authorization_code", "code": parse_qs(urlsplit(location).query)["code"][0],
                "redirect_uri": REDIRECT, "code_verifier": verifier}
        if resource:
            form["resource"] = resource
        return self._ok(browser.post("/oidc/token", data=form, headers=basic("bench-web", self.made["web"])),
                        "code exchange").get_json()

    def code_flow_password(self):
        assert "id_token" in self.login()

    def refresh_token(self):
        if not getattr(self, "_refresh", None):
            self._refresh = self.login()["refresh_token"]
        response = self._ok(self.client.post("/oidc/token", data={"grant_type": "refresh_token",
                                                                  "refresh_token": self._refresh},
                                             headers=basic("bench-web", self.made["web"])), "refresh")
        self._refresh = response.get_json()["refresh_token"]

    def _access_token(self) -> str:
        if not getattr(self, "_access", None):
            self._access = self.login(resource=None, scope="openid")["access_token"]
        return self._access

    def userinfo(self):
        self._ok(self.client.get("/oidc/userinfo", headers={"Authorization": f"Bearer {self._access_token()}"}),
                 "userinfo")

    def introspection(self):
        response = self._ok(self.client.post("/oidc/introspect", data={"token": self._access_token()},
                                             headers=basic("bench-rs", self.made["rs"])), "introspection")
        assert response.get_json()["active"]


WORKLOADS = ["discovery", "jwks", "client_credentials", "refresh_token", "code_flow_password", "userinfo",
             "introspection"]
ITERATIONS = {"code_flow_password": 0.1}  # logins cost ~30 ms: a tenth as many


# -- where the time goes ---------------------------------------------------------------------------

COMPONENTS = [  # (end of a frame's file path, function or None, component); the first match wins
    ("argon2/low_level.py", None, "argon2id"),  # a request waits for its hash in _on_hash_slot:
    ("authn/factors/password.py", "_on_hash_slot", "argon2id"),  # the hashing thread's CPU counts there
    ("joserfc/_rfc7518/jws_algs.py", "sign", "RSA/EC signature"),
    ("/joserfc/", None, "joserfc (JWT, JWK)"), ("/authlib/", None, "Authlib (OAuth 2.0 grants)"),
    ("/sqlalchemy/", None, "SQLAlchemy"), ("/flask_sqlalchemy/", None, "SQLAlchemy"),
    ("/psycopg/", None, "psycopg (PostgreSQL driver)"), ("/redis/", None, "redis-py"),
    ("/jinja2/", None, "Jinja2 templates"), ("/markupsafe/", None, "Jinja2 templates"),
    ("/flask_wtf/", None, "Flask, Werkzeug, CSRF, cookies"), ("/flask/", None, "Flask, Werkzeug, CSRF, cookies"),
    ("/werkzeug/", None, "Flask, Werkzeug, CSRF, cookies"), ("/itsdangerous/", None, "Flask, Werkzeug, CSRF, cookies"),
    ("/oidc_provider/", None, "the provider's own code (and what it calls in the standard library)"),
]


def component(code) -> str | None:
    path = code.co_filename
    return next((name for marker, function, name in COMPONENTS
                 if marker in path and function in (None, code.co_name)), None)


class CpuSampler:
    """CPU time by component: SIGPROF fires as the process uses CPU (never while it waits for
    PostgreSQL or Redis); each sample weighs the CPU time since the previous one and goes to the
    innermost frame of a known library. The standard library counts for its caller; a long C
    call (argon2, an RSA signature) holds the signal back and then counts, whole, for the Python
    frame that made it."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.samples: Counter = Counter()  # component -> CPU seconds

    def _sample(self, _signal, frame):
        now = time.process_time()
        spent, self._last = now - self._last, now
        found, inside = None, False
        while frame is not None:
            code = frame.f_code
            if code.co_name == "timed":  # Counters.watch's middleware: the app, not the test client
                inside = True
            found = found or component(code)
            frame = frame.f_back
        self.samples[(found or "other") if inside else "(the test client)"] += spent

    def __enter__(self):
        import signal

        self._last = time.process_time()
        self._previous = signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        return self

    def __exit__(self, *exc):
        import signal

        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, self._previous)


def profile(operation, n: int, depth: float) -> None:
    """pyinstrument's tree of one workload (wall clock: where a request spends its time, waits on
    the database included), then its CPU by component (CpuSampler), in ms per operation."""
    from pyinstrument import Profiler

    with Profiler(interval=0.0001, use_timing_thread=True) as profiler:
        for _ in range(n):
            operation()
    print(profiler.output_text(unicode=True, color=False, time="percent_of_total",
                               processor_options={"filter_threshold": depth}))
    with CpuSampler() as sampler:
        before = time.process_time()
        for _ in range(n):
            operation()
        cpu_ms = 1000 * (time.process_time() - before) / n
    total = sum(sampler.samples.values()) or 1
    print(f"CPU per operation by component ({cpu_ms:.2f} ms in all):")
    for name, seconds in sampler.samples.most_common():
        print(f"    {name:<70} {cpu_ms * seconds / total:7.3f} ms  {100 * seconds / total:5.1f}%")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated workloads")
    parser.add_argument("-n", "--iterations", type=int, default=300, help="operations per workload")
    parser.add_argument("--rounds", type=int, default=3, help="measure this many times; the fastest counts")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of a SQLite file")
    parser.add_argument("--endpoints", action="store_true", help="CPU ms per operation by endpoint")
    parser.add_argument("--profile", default="", help="print a pyinstrument tree of this workload")
    parser.add_argument("--profile-depth", type=float, default=0.01, help="hide frames under this share")
    args = parser.parse_args(argv)
    chosen = [w for w in WORKLOADS if not args.only or w in args.only.split(",")]
    work = Path(tempfile.mkdtemp(prefix="oidc-profile-"))
    app, made, cleanups = build_app(work, args.postgres)
    try:
        with app.app_context():
            from oidc_provider.extensions import db

            counters = Counters(db.engine)
        counters.watch(app)
        workloads = Workloads(app, made)
        print(f"{'workload':<20} {'CPU ms/op':>9}  round trips per op")
        for name in chosen:
            operation = getattr(workloads, name)
            n = max(5, int(args.iterations * ITERATIONS.get(name, 1)))
            for _ in range(max(3, n // 10)):  # warm up: imports, caches, the first login's setup
                operation()
            best = None
            for _ in range(args.rounds):  # the least disturbed round counts (other processes share the CPU)
                counters.reset()
                before = time.process_time()
                for _ in range(n):
                    operation()
                cpu = time.process_time() - before
                if best is None or cpu < best[0]:
                    best = (cpu, counters.per_op(n), counters.endpoints(n))
            cpu, trips, endpoints = best
            print(f"{name:<20} {1000 * cpu / n:9.3f}  {trips}", flush=True)
            if args.endpoints:
                print(endpoints)
            if name == args.profile:
                profile(operation, n, args.profile_depth)
        if "code_flow_password" in chosen:
            print(f"\nargon2id hash (the provider's parameters): {1000 * provider_hash_cpu_seconds():.1f} CPU ms")
    finally:
        for cleanup in cleanups:
            cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
