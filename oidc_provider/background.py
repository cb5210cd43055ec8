"""Work done after the answer: an in-process queue served by background threads.

Back-channel logout tokens (oauth/backchannel.py) and messages to people (delivery/) go
through it, so no request waits on a relying party, an SMTP server or a gateway. The threads
start with the first job, so only a process that has work runs them: each Granian worker
after the fork, the development server, a test server, a CLI command (which drains its
queues before it exits). The queue is in memory: a process that dies loses what it had not
done yet.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import weakref
from typing import Callable

log = logging.getLogger(__name__)

_queues: weakref.WeakSet = weakref.WeakSet()  # this process's queues, for drain_all


class BackgroundQueue:
    """Jobs ordered by when each is due, so a retry waits its backoff without holding a thread.

    `run(job)` is called by one of `workers` daemon threads inside an app context; it returns
    the seconds before the job is run again (a retry), or None when the job is done."""

    def __init__(self, app, name: str, workers: int, run: Callable[[object], float | None]):
        self.app, self.name, self.workers, self.run = app, name, workers, run
        self._due: list = []
        self._order = itertools.count()  # ties on the due time keep their order; jobs are never compared
        self._pending = 0  # queued or running
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._stop_event = threading.Event()
        _queues.add(self)

    def submit(self, job, delay: float = 0) -> None:
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), job))
            self._pending += 1
            if not self._threads:
                for number in range(self.workers):
                    thread = threading.Thread(target=self._work, name=f"{self.name}-{number}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
            self._cond.notify()

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or running (a CLI command before it exits)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._pending and time.monotonic() < end:
                self._cond.wait(min(0.1, max(end - time.monotonic(), 0)))
            return self._pending == 0

    def stop(self) -> None:
        """Let the threads end; what is still queued is dropped."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._stop_event.set()

    def wait_stopped(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True once the queue is stopped (a companion thread's loop)."""
        return self._stop_event.wait(timeout)

    def _next(self):
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    return heapq.heappop(self._due)[2]
                self._cond.wait(self._due[0][0] - now if self._due else None)
            return None

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                with self.app.app_context():
                    retry_in = self.run(job)
            except Exception:  # noqa: BLE001 - a worker must survive anything one job does
                log.exception("%s: a background job failed unexpectedly", self.name)
                retry_in = None
            if retry_in is not None:  # queued again before it stops counting: drain() never misses it
                self.submit(job, retry_in)
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()


def drain_all(timeout: float, name: str | None = None) -> bool:
    """Wait until every queue of this process (or every one called `name`) is idle."""
    end = time.monotonic() + timeout
    return all([queue.drain(max(end - time.monotonic(), 0)) for queue in list(_queues)
                if name is None or queue.name == name])
