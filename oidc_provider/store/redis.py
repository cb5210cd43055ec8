from __future__ import annotations

import redis


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


class RedisStore:
    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)

    def get(self, key):
        return self.client.get(key)

    def set(self, key, value, ttl):
        self.client.set(key, value, px=_ms(ttl))

    def add(self, key, value, ttl):
        return bool(self.client.set(key, value, px=_ms(ttl), nx=True))

    def take(self, key):
        return self.client.getdel(key)

    def incr(self, key, ttl):
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.pexpire(key, _ms(ttl), nx=True)  # the window starts at the first failure
        count, _ = pipe.execute()
        return int(count)

    def delete(self, key):
        self.client.delete(key)

    def ping(self):
        return bool(self.client.ping())
