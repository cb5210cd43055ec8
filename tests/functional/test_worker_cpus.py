"""`oidc-provider serve` confines each worker to its share of the CPUs (serve.pin_worker): a
worker's Python runs under one GIL, so its threads stay on its own cores. A worker that dies is
replaced on the same CPUs; `--no-pin-workers` leaves every worker on every CPU."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from tests.conftest import _free_port
from tests.multiworker import wait_for, worker_pids
from tests.production import production_home, serve

AVAILABLE = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
pytestmark = pytest.mark.skipif(len(AVAILABLE) < 2, reason="pinning two workers needs two CPUs (Linux)")


def cpus_of(pid: int) -> set[frozenset[int]]:
    """The CPU sets of every thread of a process (one set when they all agree)."""
    return {frozenset(os.sched_getaffinity(int(thread))) for thread in os.listdir(f"/proc/{pid}/task")}


@pytest.fixture
def home(tmp_path):
    home = production_home(tmp_path, f"http://127.0.0.1:{_free_port()}")
    yield home
    home.close()


def test_each_worker_runs_on_cpus_of_its_own_and_a_replacement_takes_them_over(home):
    served = serve(home, workers=2)
    try:
        workers = worker_pids(served)
        shares = {pid: cpus_of(pid) for pid in workers}
        assert all(len(share) == 1 for share in shares.values()), shares  # every thread of a worker alike
        first, second = (next(iter(share)) for share in shares.values())
        assert first and second and not first & second and first | second <= AVAILABLE
        logged = {tuple(line["cpus"]) for line in served.log_lines() if "cpus" in line}
        assert logged == {tuple(sorted(first)), tuple(sorted(second))}

        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        replacement = wait_for(lambda: [pid for pid in worker_pids(served) if pid not in workers], "a new worker")
        assert cpus_of(replacement[0]) == shares[victim]  # the dead worker's CPUs, not the living one's
        for _ in range(8):  # both workers answer
            assert requests.get(f"{served.url}/healthz", timeout=10).status_code == 200
    finally:
        served.stop()


def test_without_pinning_every_worker_runs_on_every_cpu(home):
    served = serve(home, workers=2, options=("--no-pin-workers",))
    try:
        assert [cpus_of(pid) for pid in worker_pids(served)] == [{AVAILABLE}, {AVAILABLE}]
        assert not [line for line in served.log_lines() if "cpus" in line]
    finally:
        served.stop()
