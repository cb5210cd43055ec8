"""The provider as an operator runs it, for the tests (and the benchmark): a base directory
with config/provider.yaml (PostgreSQL + Redis), keys/ and clients, migrated; and real
`oidc-provider serve` processes (Granian, several workers) on loopback ports, stopped by
the caller. Several instances started on one home share its database, Redis prefix, keys
and master secret, as instances behind a load balancer do."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml
from joserfc.jwk import RSAKey

from oidc_provider import create_app
from oidc_provider.cli import upgrade_database
from oidc_provider.oauth.keys import KeyFolder, MasterSecret
from tests.conftest import (OIDC_PROVIDER_SCRIPT, POSTGRES_ADMIN_URL, REDIS_URL, Provider, _free_port,
                            _postgres_database, require_service, write_clients)

METRICS_TOKEN = "metrics-" + uuid.uuid4().hex  # what the scraper of the test instances sends
# Variables of the test run that must not leak into a served instance's configuration.
CLEARED = ("ISSUER", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PROMETHEUS_MULTIPROC_DIR", "METRICS_TOKEN",
           "LOG_FORMAT", "OIDC_PROVIDER_HOME", "OIDC_PROVIDER_CONFIG")


@dataclass
class Home:
    """A prepared base directory and an in-process app on the same configuration, used
    only to provision (users) and to look inside (never served)."""

    path: Path
    config: Path
    settings: dict
    secrets: dict[str, str]
    client_keys: dict
    app: object
    cleanups: list = field(default_factory=list)

    def provider(self, url: str) -> Provider:
        """conftest's Provider for an instance of this home at `url` (UserAgent, token_request...)."""
        return Provider(url, self.app, self.path, self.secrets, self.client_keys, "postgres-redis")

    def close(self) -> None:
        with self.app.app_context():
            from oidc_provider.extensions import db

            db.engine.dispose()
        for cleanup in reversed(self.cleanups):
            cleanup()


def production_home(path: Path, issuer: str, extra_settings: dict | None = None) -> Home:
    """config/provider.yaml on a fresh PostgreSQL database and Redis prefix, keys, clients, schema."""
    import psycopg
    import redis

    require_service("PostgreSQL", lambda: psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close())
    require_service("Redis", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping())
    cleanups = []
    database_url, drop = _postgres_database()
    cleanups.append(drop)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    def flush():
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)

    cleanups.append(flush)
    settings = {
        "issuer": issuer, "database_url": database_url, "dev_mode": False,
        "store": {"backend": "redis", "redis_url": REDIS_URL, "prefix": prefix},
        "keys_dir": "keys", "clients_file": "config/clients.yaml", "policy_file": "config/policy.yaml",
        **(extra_settings or {}),
    }
    (path / "config").mkdir(parents=True, exist_ok=True)
    config = path / "config" / "provider.yaml"
    config.write_text(yaml.safe_dump(settings))
    KeyFolder(path / "keys").generate()
    key = MasterSecret.load(path / "keys").derive("client-secret")
    client_keys = {"jwt-client": RSAKey.generate_key(2048, parameters={"kid": "jwt-client-1"})}
    made = write_clients(path / "config" / "clients.yaml", key, client_keys)
    app = create_app(config, base_dir=path)
    upgrade_database(app)
    return Home(path, config, settings, made, client_keys, app, cleanups)


def served_env(home: Home, **extra: str) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in CLEARED}
    env.update(OIDC_PROVIDER_HOME=str(home.path), OIDC_PROVIDER_CONFIG=str(home.config),
               METRICS_TOKEN=METRICS_TOKEN, **extra)
    return env


@dataclass
class Served:
    """A running `oidc-provider serve` process: its URL and the log it writes (stderr)."""

    url: str
    process: subprocess.Popen
    log: Path

    def log_lines(self) -> list[dict]:
        """Every line of the log, parsed: each must be one JSON object."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def metrics(self) -> str:
        response = requests.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                                timeout=10)
        assert response.status_code == 200, response.text
        return response.text

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # Granian stops its workers and exits
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def serve(home: Home, port: int | None = None, workers: int = 2, until_healthy: bool = True,
          options: tuple[str, ...] = (), **env: str) -> Served:
    """`oidc-provider serve [options]` on the home's configuration; returns once /healthz answers
    (or, not until_healthy, once its port takes connections: no request has reached the app)."""
    port = port or _free_port()
    log = home.path / f"serve-{port}.log"
    process = subprocess.Popen(
        [str(OIDC_PROVIDER_SCRIPT), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         *options],
        cwd=home.path, env=served_env(home, **env), stdin=subprocess.DEVNULL, stdout=log.open("ab"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    served = Served(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"oidc-provider serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if not until_healthy:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return served
            if requests.get(f"{served.url}/healthz", timeout=2).status_code == 200:
                return served
        except (requests.ConnectionError, ConnectionRefusedError):
            pass
        time.sleep(0.2)
    served.stop()
    raise RuntimeError(f"oidc-provider serve did not answer in time:\n{log.read_text()[-3000:]}")


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`, in Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))
