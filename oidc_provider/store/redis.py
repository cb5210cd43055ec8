"""The Redis store. Counters are one Lua script (INCR, then PEXPIRE): one command instead of a
MULTI/EXEC transaction of three, and still atomic; `batch` pipelines commands in one round trip."""

from __future__ import annotations

import redis

# KEYS[1]: the counter; ARGV[1]: ttl in ms; ARGV[2]: "1" to restart the expiry at every increment
_INCR = """
local count = redis.call('INCR', KEYS[1])
if ARGV[2] == '1' then redis.call('PEXPIRE', KEYS[1], ARGV[1])
else redis.call('PEXPIRE', KEYS[1], ARGV[1], 'NX') end
return count
"""


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


class RedisStore:
    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)

    def get(self, key, client=None):
        return (client or self.client).get(key)

    def set(self, key, value, ttl, client=None):
        (client or self.client).set(key, value, px=_ms(ttl))

    def add(self, key, value, ttl, client=None):
        result = (client or self.client).set(key, value, px=_ms(ttl), nx=True)
        return result if client else bool(result)

    def take(self, key):
        return self.client.getdel(key)

    def incr(self, key, ttl, extend=False, client=None):
        # EVAL rather than EVALSHA: redis-py checks a pipeline's scripts with a round trip of its own
        result = (client or self.client).eval(_INCR, 1, key, _ms(ttl), "1" if extend else "0")
        return result if client else int(result)

    def delete(self, key, client=None):
        (client or self.client).delete(key)

    def batch(self, commands):
        """One pipeline (not a transaction): each command is queued by its own method."""
        pipe = self.client.pipeline(transaction=False)
        for name, args in commands:
            getattr(self, name)(*args, client=pipe)
        replies = pipe.execute()
        convert = {"add": bool, "incr": int, "set": lambda _: None, "delete": lambda _: None}
        return [convert.get(name, lambda reply: reply)(reply) for (name, _), reply in zip(commands, replies)]

    def ping(self):
        return bool(self.client.ping())
