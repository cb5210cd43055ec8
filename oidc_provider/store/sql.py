"""The SQL store: one table of values and one of background jobs, atomic statements (INSERT ..
ON CONFLICT, DELETE .. RETURNING) that SQLite (3.35+) and PostgreSQL both run as written."""

from __future__ import annotations

import random
import time

from sqlalchemy import text

_SET = text(
    "INSERT INTO ephemeral (key, value, expires_at) VALUES (:key, :value, :exp) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
_ADD = text(
    "INSERT INTO ephemeral (key, value, expires_at) VALUES (:key, :value, :exp) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at "
    "WHERE ephemeral.expires_at <= :now RETURNING key"
)
_TAKE = text("DELETE FROM ephemeral WHERE key = :key AND expires_at > :now RETURNING value")
_INCR = text(
    "INSERT INTO ephemeral (key, value, expires_at) VALUES (:key, '1', :exp) "
    "ON CONFLICT (key) DO UPDATE SET "
    "value = CASE WHEN ephemeral.expires_at <= :now THEN '1' "
    "ELSE CAST(CAST(ephemeral.value AS INTEGER) + 1 AS TEXT) END, "
    "expires_at = CASE WHEN ephemeral.expires_at <= :now OR :extend = 1 THEN :exp ELSE ephemeral.expires_at END "
    "RETURNING value"
)
_GET = text("SELECT value FROM ephemeral WHERE key = :key AND expires_at > :now")
_DELETE = text("DELETE FROM ephemeral WHERE key = :key")
_PURGE = text("DELETE FROM ephemeral WHERE expires_at <= :now")

_PUT_JOB = text(
    "INSERT INTO ephemeral_jobs (id, queue, due_at, payload) VALUES (:id, :queue, :due, :payload) "
    "ON CONFLICT (id) DO UPDATE SET due_at = excluded.due_at, payload = excluded.payload"
)
_NEXT_JOB = text("SELECT id, payload FROM ephemeral_jobs WHERE queue = :queue AND due_at <= :now "
                 "ORDER BY due_at LIMIT 1")
# Still due: of workers that read the same row, only the first moves it (PostgreSQL rechecks the
# condition on the row another transaction just updated).
_LEASE_JOB = text("UPDATE ephemeral_jobs SET due_at = :until WHERE id = :id AND due_at <= :now")
_FINISH_JOB = text("DELETE FROM ephemeral_jobs WHERE id = :id")
_HAS_JOB = text("SELECT 1 FROM ephemeral_jobs WHERE id = :id")
_COUNT_JOBS = text("SELECT COUNT(*) FROM ephemeral_jobs WHERE queue = :queue")


class SqlStore:
    PURGE_PROBABILITY = 0.01  # expired rows are swept now and then by writers

    def __init__(self, engine):
        self.engine = engine

    def _run(self, statement, **params):
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(statement, {"now": now, **params})
            row = result.first() if result.returns_rows else None
            if random.random() < self.PURGE_PROBABILITY:
                conn.execute(_PURGE, {"now": now})
        return row

    def get(self, key):
        row = self._run(_GET, key=key)
        return row[0] if row else None

    def set(self, key, value, ttl):
        self._run(_SET, key=key, value=value, exp=time.time() + ttl)

    def add(self, key, value, ttl):
        return self._run(_ADD, key=key, value=value, exp=time.time() + ttl) is not None

    def take(self, key):
        row = self._run(_TAKE, key=key)
        return row[0] if row else None

    def incr(self, key, ttl, extend=False):
        return int(self._run(_INCR, key=key, exp=time.time() + ttl, extend=int(extend))[0])

    def delete(self, key):
        self._run(_DELETE, key=key)

    def put_job(self, queue, job_id, payload, due):
        self._run(_PUT_JOB, id=job_id, queue=queue, due=due, payload=payload)

    def claim_job(self, queue, now, lease_until):
        for _ in range(5):  # another worker took the row just read: the next one due may be free
            with self.engine.begin() as conn:
                row = conn.execute(_NEXT_JOB, {"queue": queue, "now": now}).first()
                if row is None:
                    return None
                if conn.execute(_LEASE_JOB, {"id": row[0], "now": now, "until": lease_until}).rowcount:
                    return row[0], row[1]
        return None

    def finish_job(self, queue, job_id):
        self._run(_FINISH_JOB, id=job_id)

    def has_job(self, queue, job_id):
        return self._run(_HAS_JOB, id=job_id) is not None

    def count_jobs(self, queue):
        return int(self._run(_COUNT_JOBS, queue=queue)[0])

    def batch(self, commands):
        return [getattr(self, name)(*args) for name, args in commands]

    def ping(self):
        self._run(text("SELECT 1"))
        return True
