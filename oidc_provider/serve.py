"""`oidc-provider serve`: the provider in production shape (SPEC section 6).

Granian's WSGI interface, chosen by measurement (README, Production): several worker
processes, each building its own app after the fork, so each has its own database
engine and pool, Redis connections, key ring, clients registry and master secret; the
parent only checks the configuration and never opens a connection a worker could
inherit. Prometheus counters go to files in PROMETHEUS_MULTIPROC_DIR (a fresh folder
each start), which /metrics adds up across the workers. OIDC_PROVIDER_HASH_SLOTS tells the
workers how many argon2id hashes each computes at once (authn/factors/password.py).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_THREADS = 4  # per worker: requests waiting on the database, Redis or an upstream do not hold the others
PORTABLE_PLATFORMS = ("manylinux", "musllinux", "macosx", "win")  # wheel platform tags of prebuilt binaries

log = logging.getLogger(__name__)


def app_factory():
    """Granian's target, called in each worker: settings from provider.yaml and the environment.
    The worker's background threads start now, so jobs queued before a restart are sent
    without waiting for a request to reach it."""
    from . import create_app

    app = create_app()
    app.wsgi_app.start_serving()
    return app


def check_configuration():
    """What a worker will load, loaded once in the parent so a mistake stops the start with a
    message (ConfigError, KeysNotReady) instead of workers failing one after another."""
    from . import BASE_DIR, resolve_path
    from .oauth.keys import KeyRing, MasterSecret
    from .settings import load_settings
    from .settings.clients import parse_clients

    config = os.environ.get("OIDC_PROVIDER_CONFIG") or BASE_DIR / "config" / "provider.yaml"
    settings = load_settings(config if Path(config).exists() else None)
    keys_dir = resolve_path(BASE_DIR, settings.keys_dir)
    KeyRing(keys_dir)
    secret = MasterSecret.load(keys_dir)
    parse_clients(resolve_path(BASE_DIR, settings.clients_file), secret.derive("client-secret"))
    return settings


def metrics_folder() -> tuple[Path, bool]:
    """PROMETHEUS_MULTIPROC_DIR emptied (counters of an earlier run must not add up), or a new
    temporary folder; set in the environment before any worker imports prometheus_client."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="oidc-provider-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path, True


def granian_server(host: str, port: int, workers: int, threads: int, log_format: str):
    from granian import Granian
    from granian.constants import Interfaces

    from .observability import granian_log_config

    return Granian(
        f"{__name__}:app_factory", factory=True, interface=Interfaces.WSGI, address=host, port=port,
        workers=workers, blocking_threads=threads, websockets=False, respawn_failed_workers=True,
        log_dictconfig=granian_log_config(log_format), log_access=False,  # logging.requests instead
    )


def argon2_build(wheel: str | None) -> str:
    """Which build of argon2's C library hashes the passwords, from its installed WHEEL file:
    "compiled" for this machine (`make install`), "portable" (PyPI's SSE2 wheel: about 1.6x
    the CPU per hash), or "unknown" (installed some other way)."""
    platforms = [line.split(":", 1)[1].strip().rsplit("-", 1)[-1]
                 for line in (wheel or "").splitlines() if line.startswith("Tag:")]
    if not platforms:
        return "unknown"
    return "portable" if any(p.startswith(PORTABLE_PLATFORMS) for p in platforms) else "compiled"


def report_argon2_build() -> None:
    """One start-up line, a warning for the portable wheel: a login's CPU is mostly its hash."""
    try:
        build = argon2_build(importlib.metadata.distribution("argon2-cffi-bindings").read_text("WHEEL"))
    except importlib.metadata.PackageNotFoundError:
        build = "unknown"
    if build == "portable":
        log.warning("password hashing: argon2-cffi's portable wheel; `make install` compiles it for this CPU "
                    "(about 1.6x less CPU per hash)", extra={"password_hashing": build})
    else:
        log.info("password hashing: argon2 %s", "compiled for this CPU" if build == "compiled" else "of unknown build",
                 extra={"password_hashing": build})


def default_hash_slots(workers: int) -> int:
    """The CPUs shared among the workers: one hash per CPU across the server."""
    return max(1, -(-(os.cpu_count() or 1) // workers))


def serve(host: str, port: int, workers: int | None, threads: int = DEFAULT_THREADS,
          hash_slots: int | None = None) -> None:
    """Check the configuration, then run Granian until SIGINT/SIGTERM."""
    folder, temporary = metrics_folder()  # first: before anything imports prometheus_client
    workers = workers or os.cpu_count() or 1
    os.environ["OIDC_PROVIDER_HASH_SLOTS"] = str(hash_slots or default_hash_slots(workers))  # before the fork
    try:
        settings = check_configuration()
        from .observability import configure_logging  # after metrics_folder(): it imports prometheus_client

        configure_logging(settings.logging)
        report_argon2_build()
        server = granian_server(host, port, workers, threads, settings.logging.format)
        server.serve()
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
