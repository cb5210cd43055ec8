"""The SQL store: one table, atomic statements (INSERT .. ON CONFLICT, DELETE .. RETURNING)
that SQLite (3.35+) and PostgreSQL both run as written."""

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

    def batch(self, commands):
        return [getattr(self, name)(*args) for name, args in commands]

    def ping(self):
        self._run(text("SELECT 1"))
        return True
