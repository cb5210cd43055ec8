"""Ephemeral state behind one small interface: IdP sessions, codes, consent, rate limits, and
the background queue's jobs.

Two backends with the same atomic guarantees: SQL (the embedded default, the same
database as the durable data) and Redis. `take` and `incr` are single atomic
operations in both, which is what makes single-use codes and attempt counters hold
under concurrent requests and across workers.
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class Store(Protocol):
    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str, ttl: float) -> None: ...
    def add(self, key: str, value: str, ttl: float) -> bool:
        """Set only if absent (or expired); True when this call set it."""
    def take(self, key: str) -> str | None:
        """Get and delete in one step: of concurrent callers, exactly one gets the value."""
    def incr(self, key: str, ttl: float, extend: bool = False) -> int:
        """Add one and return the new count; the expiry starts with the first increment
        (`extend`: with every increment, so the counter lives as long as its latest use)."""
    def delete(self, key: str) -> None: ...
    def batch(self, commands: list[tuple[str, tuple]]) -> list:
        """Run several of the commands above, e.g. [("set", (key, value, ttl)), ("incr", (key,
        ttl))], and return their results in order: one round trip on Redis. Each command keeps
        its own guarantee; the batch as a whole is not atomic."""
    def put_job(self, queue: str, job_id: str, payload: str, due: float) -> None:
        """Keep a background job and when it is due (a new job, or one tried again later)."""
    def claim_job(self, queue: str, now: float, lease_until: float) -> tuple[str, str] | None:
        """The job due first (due <= now) as (id, payload), due again only at lease_until: of
        concurrent callers, exactly one gets it, and it comes back if its worker dies."""
    def finish_job(self, queue: str, job_id: str) -> None: ...
    def has_job(self, queue: str, job_id: str) -> bool: ...
    def count_jobs(self, queue: str) -> int:
        """Jobs waiting or being run (a metric)."""
    def ping(self) -> bool: ...


class JsonStore:
    """JSON values over a Store, with the deployment's key prefix."""

    def __init__(self, backend: Store, prefix: str):
        self.backend = backend
        self.prefix = prefix

    def get(self, key: str) -> Any:
        raw = self.backend.get(self.prefix + key)
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: Any, ttl: float) -> None:
        self.backend.set(self.prefix + key, json.dumps(value, separators=(",", ":")), ttl)

    def add(self, key: str, value: Any, ttl: float) -> bool:
        return self.backend.add(self.prefix + key, json.dumps(value, separators=(",", ":")), ttl)

    def take(self, key: str) -> Any:
        raw = self.backend.take(self.prefix + key)
        return None if raw is None else json.loads(raw)

    def incr(self, key: str, ttl: float, extend: bool = False) -> int:
        return self.backend.incr(self.prefix + key, ttl, extend)

    def delete(self, key: str) -> None:
        self.backend.delete(self.prefix + key)

    def batch(self) -> Batch:
        return Batch(self)

    # Background jobs (background.py). A queue's keys share a Redis Cluster hash tag: {queue name}.
    def _queue(self, name: str) -> str:
        return f"{self.prefix}queue:{{{name}}}"

    def put_job(self, queue: str, job_id: str, payload: Any, due: float) -> None:
        self.backend.put_job(self._queue(queue), job_id, json.dumps(payload, separators=(",", ":")), due)

    def claim_job(self, queue: str, now: float, lease_until: float) -> tuple[str, Any] | None:
        claimed = self.backend.claim_job(self._queue(queue), now, lease_until)
        return None if claimed is None else (claimed[0], json.loads(claimed[1]))

    def finish_job(self, queue: str, job_id: str) -> None:
        self.backend.finish_job(self._queue(queue), job_id)

    def has_job(self, queue: str, job_id: str) -> bool:
        return self.backend.has_job(self._queue(queue), job_id)

    def count_jobs(self, queue: str) -> int:
        return self.backend.count_jobs(self._queue(queue))

    def ping(self) -> bool:
        return self.backend.ping()


class Batch:
    """Commands queued with the store's methods and sent together by `run()`, which returns
    their results in order: one round trip for what would otherwise take one each."""

    def __init__(self, store: JsonStore):
        self._store = store
        self._commands: list[tuple[str, tuple]] = []

    def _queue(self, name: str, key: str, *args) -> Batch:
        self._commands.append((name, (self._store.prefix + key, *args)))
        return self

    def get(self, key: str) -> Batch:
        return self._queue("get", key)

    def set(self, key: str, value: Any, ttl: float) -> Batch:
        return self._queue("set", key, json.dumps(value, separators=(",", ":")), ttl)

    def add(self, key: str, value: Any, ttl: float) -> Batch:
        return self._queue("add", key, json.dumps(value, separators=(",", ":")), ttl)

    def incr(self, key: str, ttl: float, extend: bool = False) -> Batch:
        return self._queue("incr", key, ttl, extend)

    def delete(self, key: str) -> Batch:
        return self._queue("delete", key)

    def run(self) -> list:
        if not self._commands:
            return []
        results = self._store.backend.batch(self._commands)
        return [json.loads(result) if name == "get" and result is not None else result
                for (name, _), result in zip(self._commands, results)]


def create_store(settings, engine) -> JsonStore:
    if settings.store.backend == "redis":
        from .redis import RedisStore, redis_client

        backend = RedisStore(redis_client(settings.store))
    else:
        from .sql import SqlStore

        backend = SqlStore(engine)
    return JsonStore(backend, settings.store.prefix)
