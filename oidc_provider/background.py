"""Work done after the answer: jobs kept in the ephemeral store, run by background threads.

Back-channel logout tokens (oauth/backchannel.py) and messages to people (delivery/) go
through it, so no request waits on a relying party, an SMTP server or a gateway. A job is
kept in the store (Redis, or the SQL store's table), sealed with the secret box since a
message holds a one-time code, and any worker sharing the store may run it: one that claims
it holds it for LEASE seconds, so a job whose process dies (killed, restarted, out of memory)
is run by another after that. Delivery is therefore at least once: a process killed between
a send and its record sends that message again.

The threads start with the first job, or when a process starts serving (`start_all`, a serving
hook: as each `serve` worker starts, at the first request under another server), so only a
process that has work or serves requests runs them; a CLI command drains what it queued
before it exits. One thread per queue looks for work queued elsewhere every POLL
seconds; the others wake when there is more.
"""

from __future__ import annotations

import heapq
import json
import logging
import secrets
import threading
import time
import weakref
from typing import Callable

log = logging.getLogger(__name__)

LEASE = 120.0  # seconds a claimed job is its worker's: far longer than one try (transport timeouts are seconds)
POLL = 1.0  # seconds between looks for jobs queued by other processes or left by one that died
MAX_AGE = 3600.0  # a job older than this is dropped: its code has expired, its logout is long overdue

_queues: weakref.WeakSet = weakref.WeakSet()  # this process's queues, for drain_all and stop_all


class BackgroundQueue:
    """Jobs in the store, ordered by when each is due, so a retry waits its backoff without
    holding a thread.

    `run(job)` is called by one of `workers` daemon threads inside an app context; it returns
    the seconds before the job is run again (a retry), or None when the job is done. `encode`
    turns a job into JSON-able data and `decode` back."""

    def __init__(self, app, name: str, workers: int, run: Callable[[object], float | None],
                 encode: Callable[[object], object], decode: Callable[[object], object]):
        self.app, self.name, self.workers = app, name, workers
        self.run, self.encode, self.decode = run, encode, decode
        self._mine: dict[str, float] = {}  # jobs this process queued and has not seen finished: drain waits for them
        self._wake_at: list[float] = []  # when jobs this process queued are due: a thread looks then
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._stop_event = threading.Event()
        _queues.add(self)

    def _op(self):
        return self.app.extensions["op"]

    def submit(self, job, delay: float = 0) -> None:
        """Keep the job in the store, due in `delay` seconds; raises if the store is unreachable."""
        job_id, now = secrets.token_hex(16), time.time()
        self._put(job_id, job, now, now + delay)
        with self._cond:
            self._mine[job_id] = now
            if len(self._mine) > 10_000:  # finished by other processes long ago
                self._mine = {key: at for key, at in self._mine.items() if at > now - MAX_AGE}
            heapq.heappush(self._wake_at, time.monotonic() + delay)
            self._cond.notify()
        self.start()

    def start(self) -> None:
        """Start the threads (once): at the first job, or by the serving app at its first request."""
        with self._cond:
            if self._threads or self._stopped:
                return
            for number in range(self.workers):
                thread = threading.Thread(target=self._work, args=(number == 0,), name=f"{self.name}-{number}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    def drain(self, timeout: float) -> bool:
        """Wait until every job this process queued is done, here or elsewhere (a CLI command before it exits)."""
        end = time.monotonic() + timeout
        while True:
            with self._cond:
                waiting = list(self._mine)
            try:
                left = [job_id for job_id in waiting if self._op().store.has_job(self.name, job_id)]
            except Exception:  # noqa: BLE001 - the store is unreachable: the jobs are not known to be done
                left = waiting
            with self._cond:
                for job_id in set(waiting) - set(left):
                    self._mine.pop(job_id, None)
            if not left:
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)

    def stop(self) -> None:
        """Let the threads end; what is still queued stays in the store for another process."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._stop_event.set()

    def wait_stopped(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True once the queue is stopped (a companion thread's loop)."""
        return self._stop_event.wait(timeout)

    # -- the store ---------------------------------------------------------------------------

    def _put(self, job_id: str, job, queued_at: float, due: float) -> None:
        sealed = self._op().secret_box.encrypt(json.dumps(self.encode(job)).encode(), self._context(job_id))
        self._op().store.put_job(self.name, job_id, {"queued_at": queued_at, "job": sealed}, due)

    def _context(self, job_id: str) -> str:
        return f"job:{self.name}:{job_id}"  # a sealed job opens only as itself

    def _claim(self):
        """(id, when it was queued, job) of the job due first, or None."""
        store = self._op().store
        now = time.time()
        claimed = store.claim_job(self.name, now, now + LEASE)
        if claimed is None:
            return None
        job_id, record = claimed
        try:
            if record["queued_at"] < now - MAX_AGE:
                raise ValueError(f"queued {now - record['queued_at']:.0f} s ago, more than {MAX_AGE:.0f}")
            job = self.decode(json.loads(self._op().secret_box.decrypt(record["job"], self._context(job_id))))
        except Exception as exc:  # noqa: BLE001 - too old, or no configured key opens it: never runnable
            log.error("%s: job %s dropped: %s", self.name, job_id, exc)
            store.finish_job(self.name, job_id)
            return None
        return job_id, record["queued_at"], job

    # -- the threads ----------------------------------------------------------------------------

    def _work(self, polls: bool) -> None:
        unreachable = False
        while not self._stopped:
            try:
                with self.app.app_context():
                    claimed = self._claim()
                if unreachable:
                    log.info("%s: the store is reachable again", self.name)
                unreachable = False
            except Exception as exc:  # noqa: BLE001 - the store is down: look again later
                if not unreachable:
                    log.warning("%s: cannot take a job from the store: %s", self.name, exc)
                claimed, unreachable = None, True
            if claimed is None:
                self._idle(polls)
                continue
            with self._cond:
                self._cond.notify()  # there may be more: another idle thread looks too
            self._run(*claimed)

    def _idle(self, polls: bool) -> None:
        """Wait for a job of ours to be due, for a new one, or (the polling thread) POLL seconds."""
        with self._cond:
            now = time.monotonic()
            while self._wake_at and self._wake_at[0] <= now:
                heapq.heappop(self._wake_at)
            timeout = min(self._wake_at[0] - now, POLL) if self._wake_at else POLL
            if not self._stopped:
                self._cond.wait(timeout if polls or self._wake_at else None)

    def _run(self, job_id: str, queued_at: float, job) -> None:
        with self.app.app_context():
            try:
                retry_in = self.run(job)
            except Exception:  # noqa: BLE001 - a worker must survive anything one job does
                log.exception("%s: a background job failed unexpectedly", self.name)
                retry_in = None
            try:
                if retry_in is None:
                    self._op().store.finish_job(self.name, job_id)
                else:
                    self._put(job_id, job, queued_at, time.time() + retry_in)
            except Exception as exc:  # noqa: BLE001 - the lease runs out and the job is run again
                log.warning("%s: job %s not recorded as %s: %s", self.name, job_id,
                            "done" if retry_in is None else "tried again", exc)
                return
        with self._cond:
            if retry_in is None:
                self._mine.pop(job_id, None)
            else:
                heapq.heappush(self._wake_at, time.monotonic() + retry_in)
                self._cond.notify()


def drain_all(timeout: float, name: str | None = None) -> bool:
    """Wait until the jobs queued by this process's running queues (or those called `name`) are
    done; a stopped queue's are left to other processes."""
    end = time.monotonic() + timeout
    return all([queue.drain(max(end - time.monotonic(), 0)) for queue in list(_queues)
                if not queue._stopped and (name is None or queue.name == name)])


def _queues_of(app) -> list[BackgroundQueue]:
    return [queue for queue in list(_queues) if queue.app is app]


def jobs_in_store(app) -> dict[str, int]:
    """Jobs waiting or being run in each of the app's queues, counted in the store (all processes)."""
    store = app.extensions["op"].store
    return {queue.name: store.count_jobs(queue.name) for queue in _queues_of(app)}


def start_all(app) -> None:
    """Start the threads of the app's queues: a serving process also runs the jobs others left."""
    for queue in _queues_of(app):
        queue.start()


def stop_all(app) -> None:
    """Stop the threads of the app's queues (an app put out of service, e.g. a test's provider)."""
    for queue in _queues_of(app):
        queue.stop()
