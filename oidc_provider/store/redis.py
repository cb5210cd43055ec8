"""The Redis store: one key per value, every operation on a single key.

Single-key commands (and a MULTI on one key) work the same on one server, behind
Sentinel and on a Cluster, so operators scale the ephemeral state with the Redis they run.
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.sentinel import Sentinel


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


def redis_client(store) -> redis.Redis | RedisCluster:
    """The redis-py client the `store:` settings ask for: plain, Cluster or Sentinel."""
    timeouts = {"socket_timeout": store.timeout, "socket_connect_timeout": store.timeout}
    if store.cluster:
        return RedisCluster.from_url(store.redis_url, decode_responses=True, **timeouts)
    if store.sentinel:
        # Only the credentials, db and TLS of redis_url apply: the sentinels name the master.
        options = parse_url(store.redis_url) if store.redis_url else {}
        for key in ("host", "port", "path", "connection_class"):
            options.pop(key, None)
        if (store.redis_url or "").startswith("rediss://"):
            options["ssl"] = True
        sentinels = Sentinel(store.sentinel.addresses(), sentinel_kwargs={"password": store.sentinel.password,
                                                                           **timeouts}, **timeouts)
        return sentinels.master_for(store.sentinel.service_name, decode_responses=True, **options)
    return redis.Redis.from_url(store.redis_url, decode_responses=True, health_check_interval=30, **timeouts)


class RedisStore:
    def __init__(self, client):
        self.client = client

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
