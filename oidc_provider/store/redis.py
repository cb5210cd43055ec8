"""The Redis store: one key per value, every operation on a single key, but the background
queue's, on two keys of one Cluster slot.

Single-key commands (and Lua scripts on keys of one hash slot) work the same on one server,
behind Sentinel and on a Cluster, so operators scale the ephemeral state with the Redis they
run. Counters are one Lua script (INCR, then PEXPIRE): one command instead of a MULTI/EXEC of
three, and still atomic; `batch` pipelines commands in one round trip.
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.sentinel import Sentinel

# KEYS[1]: the counter; ARGV[1]: ttl in ms; ARGV[2]: "1" to restart the expiry at every increment
_INCR = """
local count = redis.call('INCR', KEYS[1])
if ARGV[2] == '1' then redis.call('PEXPIRE', KEYS[1], ARGV[1])
else redis.call('PEXPIRE', KEYS[1], ARGV[1], 'NX') end
return count
"""

# A queue is two keys with one hash tag (one Cluster slot): KEYS[1] a sorted set of job ids by
# when each is due, KEYS[2] a hash of their payloads.
_PUT_JOB = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
"""
# ARGV[1]: now; ARGV[2]: the lease's end, when the job is due again unless finished meanwhile
_CLAIM_JOB = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return false end
local payload = redis.call('HGET', KEYS[2], due[1])
if not payload then redis.call('ZREM', KEYS[1], due[1]) return false end
redis.call('ZADD', KEYS[1], ARGV[2], due[1])
return {due[1], payload}
"""
_FINISH_JOB = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
"""


def _job_keys(queue: str) -> tuple[str, str]:
    return f"{queue}:due", f"{queue}:jobs"


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

    def put_job(self, queue, job_id, payload, due):
        self.client.eval(_PUT_JOB, 2, *_job_keys(queue), job_id, payload, repr(due))

    def claim_job(self, queue, now, lease_until):
        claimed = self.client.eval(_CLAIM_JOB, 2, *_job_keys(queue), repr(now), repr(lease_until))
        return tuple(claimed) if claimed else None

    def finish_job(self, queue, job_id):
        self.client.eval(_FINISH_JOB, 2, *_job_keys(queue), job_id)

    def has_job(self, queue, job_id):
        return bool(self.client.hexists(_job_keys(queue)[1], job_id))

    def count_jobs(self, queue):
        return int(self.client.zcard(_job_keys(queue)[0]))

    def batch(self, commands):
        """One pipeline (not a transaction): each command is queued by its own method. A Cluster's
        pipelines take no scripts, so there the commands run one by one."""
        if isinstance(self.client, RedisCluster):
            return [getattr(self, name)(*args) for name, args in commands]
        pipe = self.client.pipeline(transaction=False)
        for name, args in commands:
            getattr(self, name)(*args, client=pipe)
        replies = pipe.execute()
        convert = {"add": bool, "incr": int, "set": lambda _: None, "delete": lambda _: None}
        return [convert.get(name, lambda reply: reply)(reply) for (name, _), reply in zip(commands, replies)]

    def ping(self):
        return bool(self.client.ping())
