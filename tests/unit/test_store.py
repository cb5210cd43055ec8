"""The ephemeral store's contract, run against every backend.

SQL on a SQLite file and on a fresh PostgreSQL database (the `ephemeral` table made by
the app's own migration, the engine configured by the app), and Redis: one server, a
three-node Redis Cluster and a master behind Sentinel (local redis-server processes, as
redis-py reaches them when `store:` says `cluster: true` or `sentinel:`). The atomic
operations (`add`, `take`, `incr`, `claim_job`) are also hammered from many threads at once:
that is what single-use authorization codes, password-attempt counters and background jobs
run exactly once at a time rely on.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from oidc_provider import create_app
from oidc_provider.cli import upgrade_database
from oidc_provider.oauth.keys import KeyFolder
from oidc_provider.store.sql import SqlStore
from tests.conftest import POSTGRES_ADMIN_URL, REDIS_URL, _postgres_database, require_service

THREADS = 16
ROUNDS = 5  # races are probabilistic: several independent keys make a lost update likelier to show


def _sql_store(tmp_path, database_url):
    """A SqlStore on the engine the app builds (pragmas, pool), the table from the migration."""
    KeyFolder(tmp_path / "keys").generate(("RS256", "ES256"))
    (tmp_path / "clients.yaml").write_text("clients: []\n")
    app = create_app(None, {"database_url": database_url, "keys_dir": str(tmp_path / "keys"),
                            "clients_file": str(tmp_path / "clients.yaml")}, base_dir=tmp_path)
    upgrade_database(app)
    backend = app.extensions["op"].store.backend
    assert isinstance(backend, SqlStore)
    return backend


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """A local three-node Redis Cluster; its URL names one node."""
    from tests.redis_servers import REDIS_SERVER, start_cluster

    require_service("redis-server", lambda: REDIS_SERVER or (_ for _ in ()).throw(FileNotFoundError("redis-server")))
    topology, url = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield url
    topology.stop()


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory):
    """A local master and replica watched by one sentinel: (sentinel port, [master, replica])."""
    from tests.redis_servers import REDIS_SERVER, start_sentinel

    require_service("redis-server", lambda: REDIS_SERVER or (_ for _ in ()).throw(FileNotFoundError("redis-server")))
    topology, sentinel, ports = start_sentinel(tmp_path_factory.mktemp("sentinel"))
    yield sentinel, ports
    topology.stop()


def _redis_backend(request, topology: str):
    from oidc_provider.settings.provider import Store
    from oidc_provider.store.redis import RedisStore, redis_client

    if topology == "redis":
        import redis

        require_service("Redis", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping())
        return RedisStore(redis_client(Store(backend="redis", redis_url=REDIS_URL)))
    if topology == "redis-cluster":
        url = request.getfixturevalue("redis_cluster")
        return RedisStore(redis_client(Store(backend="redis", redis_url=url, cluster=True)))
    sentinel, _ = request.getfixturevalue("redis_sentinel")
    return RedisStore(redis_client(Store(backend="redis", sentinel={
        "hosts": [f"127.0.0.1:{sentinel}"], "service_name": "op-master"})))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("redis", marks=pytest.mark.redis), "redis-cluster", "redis-sentinel"])
def store(request, tmp_path):
    """(backend, prefix): every key a test uses starts with its own prefix."""
    prefix = f"test-store:{uuid.uuid4().hex[:10]}:"
    if request.param == "sqlite":
        backend = _sql_store(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
        assert backend.engine.dialect.name == "sqlite"
        yield backend, prefix
        backend.engine.dispose()
    elif request.param == "postgres":
        import psycopg

        require_service("PostgreSQL", lambda: psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close())
        url, drop = _postgres_database()
        try:
            backend = _sql_store(tmp_path, url)
            assert backend.engine.dialect.name == "postgresql"
            yield backend, prefix
            backend.engine.dispose()
        finally:
            drop()
    else:
        backend = _redis_backend(request, request.param)
        try:
            yield backend, prefix
        finally:
            for leftover in list(backend.client.scan_iter(f"{prefix}*")):
                backend.client.delete(leftover)  # one key per call: a cluster spreads them over nodes
            backend.client.close()


@pytest.fixture
def s(store):
    return store[0]


@pytest.fixture
def key(store):
    prefix = store[1]
    return lambda name: prefix + name


def run_together(count: int, func) -> list:
    """Call func(i) from `count` threads released at the same instant; return results in order."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def worker(index: int) -> None:
        try:
            barrier.wait(10)
            results[index] = func(index)
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    assert not errors, errors
    return results


# -- get, set, delete -------------------------------------------------------------------

def test_ping(s):
    assert s.ping() is True


def test_get_of_a_missing_key_is_none(s, key):
    assert s.get(key("never-set")) is None


def test_set_then_get_returns_the_value(s, key):
    s.set(key("a"), "alpha", 60)
    assert s.get(key("a")) == "alpha"
    assert s.get(key("b")) is None  # keys are independent


def test_set_overwrites(s, key):
    s.set(key("a"), "one", 60)
    s.set(key("a"), "two", 60)
    assert s.get(key("a")) == "two"


def test_values_round_trip_unchanged(s, key):
    value = '{"sub":"ü-ß","n":[1,2,3],"q":"it\'s \\"quoted\\""}' + "x" * 5000
    s.set(key("json"), value, 60)
    assert s.get(key("json")) == value


def test_delete_removes_and_missing_delete_is_harmless(s, key):
    s.set(key("a"), "alpha", 60)
    s.delete(key("a"))
    assert s.get(key("a")) is None
    s.delete(key("a"))  # already gone
    s.delete(key("never-set"))
    assert s.get(key("a")) is None


# -- expiry -----------------------------------------------------------------------------

def test_value_expires_after_its_ttl(s, key):
    s.set(key("short"), "v", 0.3)
    s.set(key("long"), "v", 60)
    assert s.get(key("short")) == "v"
    time.sleep(0.6)
    assert s.get(key("short")) is None
    assert s.get(key("long")) == "v"


def test_set_again_restarts_the_ttl(s, key):
    s.set(key("a"), "one", 0.3)
    s.set(key("a"), "two", 60)
    time.sleep(0.6)
    assert s.get(key("a")) == "two"


# -- add --------------------------------------------------------------------------------

def test_add_sets_only_when_absent(s, key):
    assert s.add(key("a"), "first", 60) is True
    assert s.add(key("a"), "second", 60) is False
    assert s.get(key("a")) == "first"


def test_add_after_expiry_sets_again(s, key):
    assert s.add(key("a"), "first", 0.3) is True
    time.sleep(0.6)
    assert s.add(key("a"), "second", 60) is True
    assert s.get(key("a")) == "second"
    time.sleep(0.4)  # the new value has the new ttl, not the old one
    assert s.get(key("a")) == "second"


def test_add_after_delete_sets_again(s, key):
    assert s.add(key("a"), "first", 60) is True
    s.delete(key("a"))
    assert s.add(key("a"), "second", 60) is True
    assert s.get(key("a")) == "second"


# -- take -------------------------------------------------------------------------------

def test_take_returns_the_value_once(s, key):
    s.set(key("code"), "payload", 60)
    assert s.take(key("code")) == "payload"
    assert s.take(key("code")) is None
    assert s.get(key("code")) is None


def test_take_of_missing_or_expired_is_none(s, key):
    assert s.take(key("never-set")) is None
    s.set(key("code"), "payload", 0.3)
    time.sleep(0.6)
    assert s.take(key("code")) is None
    assert s.add(key("code"), "fresh", 60) is True  # nothing is left behind


# -- incr -------------------------------------------------------------------------------

def test_incr_counts_from_one(s, key):
    assert [s.incr(key("n"), 60) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert s.incr(key("other"), 60) == 1


def test_incr_window_restarts_after_expiry(s, key):
    assert s.incr(key("n"), 0.4) == 1
    assert s.incr(key("n"), 0.4) == 2
    time.sleep(0.7)
    assert s.incr(key("n"), 0.4) == 1
    assert s.incr(key("n"), 0.4) == 2


def test_incr_window_starts_at_the_first_increment(s, key):
    """Later increments do not extend the window (else steady guessing never resets)."""
    assert s.incr(key("n"), 1.0) == 1
    time.sleep(0.6)
    assert s.incr(key("n"), 1.0) == 2  # inside the window
    time.sleep(0.6)  # 1.2 s after the first increment, 0.6 s after the second
    assert s.incr(key("n"), 1.0) == 1


def test_incr_extend_restarts_the_window_at_every_increment(s, key):
    """A counter that lives as long as its latest use (the session index's ring)."""
    assert s.incr(key("n"), 1.0, extend=True) == 1
    time.sleep(0.6)
    assert s.incr(key("n"), 1.0, extend=True) == 2
    time.sleep(0.6)  # 1.2 s after the first increment, 0.6 s after the second
    assert s.incr(key("n"), 1.0, extend=True) == 3


def test_delete_resets_a_counter(s, key):
    s.incr(key("n"), 60)
    s.incr(key("n"), 60)
    s.delete(key("n"))
    assert s.incr(key("n"), 60) == 1


# -- batch ------------------------------------------------------------------------------

def test_batch_runs_commands_in_order_with_their_results(s, key):
    s.set(key("old"), "gone soon", 60)
    assert s.add(key("taken"), "first", 60) is True
    results = s.batch([
        ("set", (key("a"), "alpha", 60)), ("get", (key("a"),)), ("get", (key("missing"),)),
        ("add", (key("taken"), "second", 60)), ("add", (key("free"), "mine", 60)),
        ("incr", (key("n"), 60)), ("incr", (key("n"), 60)), ("delete", (key("old"),)),
    ])
    assert results == [None, "alpha", None, False, True, 1, 2, None]
    assert (s.get(key("taken")), s.get(key("free")), s.get(key("old"))) == ("first", "mine", None)
    assert s.batch([]) == []


def test_batch_commands_keep_their_ttls(s, key):
    s.batch([("set", (key("short"), "v", 0.3)), ("incr", (key("n"), 0.3)), ("set", (key("long"), "v", 60))])
    time.sleep(0.6)
    assert (s.get(key("short")), s.get(key("long"))) == (None, "v")
    assert s.incr(key("n"), 60) == 1


# -- background jobs (background.py) -----------------------------------------------------

def test_a_job_is_claimed_once_due_and_not_before(s, key):
    queue, now = key("queue:{jobs}"), time.time()
    s.put_job(queue, "later", "L", now + 30)
    s.put_job(queue, "second", "B", now - 1)
    s.put_job(queue, "first", "A", now - 2)
    assert s.has_job(queue, "later") and not s.has_job(queue, "unknown")
    assert (s.count_jobs(queue), s.count_jobs(key("queue:{other}"))) == (3, 0)
    assert s.claim_job(queue, now, now + 60) == ("first", "A")  # the one due first
    assert s.claim_job(queue, now, now + 60) == ("second", "B")
    assert s.claim_job(queue, now, now + 60) is None  # "later" is not due yet
    assert s.claim_job(queue, now + 31, now + 91) == ("later", "L")
    assert s.claim_job(key("queue:{other}"), now + 31, now + 91) is None  # queues are apart


def test_a_claimed_job_comes_back_when_its_lease_ends_and_a_finished_one_never(s, key):
    queue, now = key("queue:{jobs}"), time.time()
    s.put_job(queue, "job", "try 1", now)
    assert s.claim_job(queue, now, now + 10) == ("job", "try 1")
    assert s.claim_job(queue, now + 5, now + 15) is None  # another worker holds it
    assert s.claim_job(queue, now + 11, now + 21) == ("job", "try 1")  # its worker died: run again
    s.put_job(queue, "job", "try 2", now + 30)  # tried again later, with what changed
    assert s.claim_job(queue, now + 29, now + 39) is None
    assert s.claim_job(queue, now + 31, now + 41) == ("job", "try 2")
    s.finish_job(queue, "job")
    assert not s.has_job(queue, "job") and s.claim_job(queue, now + 100, now + 110) is None
    assert s.count_jobs(queue) == 0
    s.finish_job(queue, "job")  # harmless twice


# -- concurrency ------------------------------------------------------------------------

def test_concurrent_take_gives_the_value_to_exactly_one(s, key):
    for round_ in range(ROUNDS):
        name = key(f"code-{round_}")
        s.set(name, f"payload-{round_}", 60)
        results = run_together(THREADS, lambda _i, name=name: s.take(name))
        winners = [value for value in results if value is not None]
        assert winners == [f"payload-{round_}"], results
        assert s.get(name) is None


def test_concurrent_incr_counts_every_call(s, key):
    for round_ in range(ROUNDS):
        name = key(f"counter-{round_}")
        results = run_together(THREADS, lambda _i, name=name: s.incr(name, 60))
        assert sorted(results) == list(range(1, THREADS + 1)), results  # distinct, none lost
        assert s.incr(name, 60) == THREADS + 1  # the stored count is exactly N


def test_concurrent_add_sets_exactly_once(s, key):
    for round_ in range(ROUNDS):
        name = key(f"once-{round_}")
        results = run_together(THREADS, lambda i, name=name: s.add(name, f"writer-{i}", 60))
        assert results.count(True) == 1, results
        assert s.get(name) == f"writer-{results.index(True)}"


def test_concurrent_claims_give_a_job_to_exactly_one_worker(s, key):
    queue, now = key("queue:{jobs}"), time.time()
    for round_ in range(ROUNDS):
        s.put_job(queue, f"job-{round_}", f"payload-{round_}", now)
        results = run_together(THREADS, lambda _i: s.claim_job(queue, time.time(), time.time() + 60))
        assert [claimed for claimed in results if claimed] == [(f"job-{round_}", f"payload-{round_}")], results


# -- which redis-py client the settings build -------------------------------------------

def test_plain_url_builds_a_redis_client():
    import redis
    from redis.cluster import RedisCluster

    from oidc_provider.settings.provider import Store
    from oidc_provider.store.redis import redis_client

    client = redis_client(Store(backend="redis", redis_url="redis://:pw@127.0.0.1:6399/3", timeout=2))
    assert type(client) is redis.Redis and not isinstance(client, RedisCluster)
    options = client.connection_pool.connection_kwargs
    assert (options["host"], options["port"], options["db"], options["password"]) == ("127.0.0.1", 6399, 3, "pw")
    assert options["socket_timeout"] == 2


def test_cluster_flag_builds_a_cluster_client(redis_cluster):
    from redis.cluster import RedisCluster

    from oidc_provider.settings.provider import Store
    from oidc_provider.store.redis import redis_client

    client = redis_client(Store(backend="redis", redis_url=redis_cluster, cluster=True))
    assert isinstance(client, RedisCluster)
    assert len(client.get_primaries()) == 3  # the other nodes were discovered from one URL
    client.close()


def test_sentinel_builds_a_master_client_with_the_url_credentials():
    from redis.sentinel import SentinelConnectionPool

    from oidc_provider.settings.provider import Store
    from oidc_provider.store.redis import redis_client

    store = Store(backend="redis", redis_url="redis://:master-pw@ignored:1/2",
                  sentinel={"hosts": ["127.0.0.1:26379", "[::1]:26380"], "service_name": "op-master",
                            "password": "sentinel-pw"})
    client = redis_client(store)  # connects lazily: no sentinel needs to run for this
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "op-master"
    assert pool.connection_kwargs["password"] == "master-pw" and pool.connection_kwargs["db"] == 2
    assert "host" not in pool.connection_kwargs  # the sentinels name the master
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sentinels] == [("127.0.0.1", 26379), ("::1", 26380)]
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "sentinel-pw"


def test_sentinel_failover_keeps_the_store_working(redis_sentinel):
    """The sentinel promotes the replica; the store follows it without a restart."""
    from oidc_provider.settings.provider import Store
    from oidc_provider.store.redis import RedisStore, redis_client
    from tests.redis_servers import _cli, sentinel_master_port

    sentinel, ports = redis_sentinel
    backend = RedisStore(redis_client(Store(backend="redis", sentinel={
        "hosts": [f"127.0.0.1:{sentinel}"], "service_name": "op-master"})))
    key = f"test-store:{uuid.uuid4().hex[:10]}:failover"
    backend.set(key, "before", 60)
    before = sentinel_master_port(sentinel)
    deadline = time.monotonic() + 40
    # right after start the sentinel may not rate the replica yet (NOGOODSLAVE): ask again
    while _cli(sentinel, "sentinel", "failover", "op-master").strip() != "OK" and time.monotonic() < deadline:
        time.sleep(0.5)
    while sentinel_master_port(sentinel) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sentinel_master_port(sentinel) != before
    # Writes that reach the old master while it is being demoted are lost (Redis replicates
    # asynchronously); once it is a replica, the client must find the new master by itself.
    while not _cli(before, "role").startswith("slave") and time.monotonic() < deadline:
        time.sleep(0.2)
    written = None
    while time.monotonic() < deadline and written is None:
        try:  # the first call after a failover may meet the old master read-only, then reconnects
            backend.set(key, "after", 60)
            written = backend.get(key)
        except Exception:  # noqa: BLE001 - redis-py's failover errors; retried until the deadline
            time.sleep(0.2)
    assert written == "after"
    assert _cli(sentinel_master_port(sentinel), "get", key).strip() == "after"  # on the new master
    backend.delete(key)
