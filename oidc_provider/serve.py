"""`oidc-provider serve`: the provider in production shape (SPEC section 6).

Granian's WSGI interface, chosen by measurement (README, Production): several worker
processes, each building its own app after the fork, so each has its own database
engine and pool, Redis connections, key ring, clients registry and master secret; the
parent only checks the configuration and never opens a connection a worker could
inherit. Prometheus counters go to files in PROMETHEUS_MULTIPROC_DIR (a fresh folder
each start), which /metrics adds up across the workers. OIDC_PROVIDER_HASH_SLOTS tells the
workers how many argon2id hashes each computes at once (authn/factors/password.py), and
OIDC_PROVIDER_PIN_WORKERS, when set, how many workers share the CPUs (pin_worker).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_THREADS = 4  # per worker: requests waiting on the database, Redis or an upstream do not hold the others
PORTABLE_PLATFORMS = ("manylinux", "musllinux", "macosx", "win")  # wheel platform tags of prebuilt binaries
PIN_WORKERS = "OIDC_PROVIDER_PIN_WORKERS"  # the worker count, when serve pins its workers to CPUs

log = logging.getLogger(__name__)
_slot_lock = None  # this worker's claim on its share of the CPUs (pin_worker), held for its life


def app_factory():
    """Granian's target, called in each worker: settings from provider.yaml and the environment.
    The worker's background threads start now, so jobs queued before a restart are sent
    without waiting for a request to reach it."""
    from . import create_app

    workers = os.environ.get(PIN_WORKERS)
    pinned = pin_worker(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]), int(workers)) if workers else None
    app = create_app()
    if pinned:
        log.info("worker %d runs on CPUs %s", os.getpid(), sorted(pinned), extra={"cpus": sorted(pinned)})
    app.wsgi_app.start_serving()
    return app


def cpus_of_slot(slot: int, workers: int, cpus: list[int]) -> set[int]:
    """Worker `slot`'s share of `cpus`: every `workers`-th CPU from its own place, or one CPU in
    turn when the workers outnumber the CPUs."""
    return set(cpus[slot::workers]) or {cpus[slot % len(cpus)]}


def pin_worker(folder: Path, workers: int) -> set[int] | None:
    """Confine this worker process, every thread of it, to its share of the CPUs, and return it.

    A worker runs its Python under one GIL: its request threads gain nothing from several cores
    and lose to the GIL and the interpreter's objects passing between the cores' caches (a
    refresh cost 1-7% less CPU pinned, README: Production). The worker claims the first
    slot whose lock file in `folder` no living worker holds; the kernel releases the lock when
    its worker exits, so a respawned worker takes its predecessor's CPUs. Threads started later
    (Granian's, the hashing threads) inherit the affinity."""
    global _slot_lock
    if not hasattr(os, "sched_setaffinity"):
        return None
    for slot in range(workers):
        lock = open(folder / f"worker-slot-{slot}.lock", "w")  # noqa: SIM115 - held for the worker's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _slot_lock = lock
        cpus = cpus_of_slot(slot, workers, sorted(os.sched_getaffinity(0)))
        try:
            for thread in os.listdir("/proc/self/task"):
                os.sched_setaffinity(int(thread), cpus)
        except OSError as exc:  # no /proc, or a CPU set the host refuses: the worker runs unpinned
            log.warning("worker %d runs unpinned: %s", os.getpid(), exc)
            return None
        return cpus
    return None


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
          hash_slots: int | None = None, pin_workers: bool = True) -> None:
    """Check the configuration, then run Granian until SIGINT/SIGTERM."""
    folder, temporary = metrics_folder()  # first: before anything imports prometheus_client
    workers = workers or os.cpu_count() or 1
    os.environ["OIDC_PROVIDER_HASH_SLOTS"] = str(hash_slots or default_hash_slots(workers))  # before the fork
    if pin_workers:
        os.environ[PIN_WORKERS] = str(workers)
    else:
        os.environ.pop(PIN_WORKERS, None)
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
