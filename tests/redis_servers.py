"""Real Redis topologies on loopback for the store tests: a three-node Cluster, and a
master with a replica behind one Sentinel. Each is made of `redis-server` processes in a
temporary directory and stopped by the caller; nothing is shared with the Redis at 6379."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus port (+10000) is free too (so at most 55535)."""
    found: list[int] = []
    while len(found) < count:
        port = random.randint(20000, 45000)
        if port not in found and _bindable(port) and _bindable(port + 10000):
            found.append(port)
    return found


def _cli(port: int, *args: str) -> str:
    return subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=20, check=True).stdout


def _wait(predicate, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (subprocess.SubprocessError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Topology:
    """redis-server processes started together and stopped together."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []

    def server(self, port: int, *args: str, sentinel: bool = False) -> None:
        name = f"{'sentinel' if sentinel else 'redis'}-{port}"
        conf = self.workdir / f"{name}.conf"
        lines = [f"port {port}", "bind 127.0.0.1", f"dir {self.workdir}", 'save ""', "appendonly no",
                 f"logfile {self.workdir / name}.log", *args]
        conf.write_text("\n".join(lines) + "\n")
        command = [REDIS_SERVER, str(conf)] + (["--sentinel"] if sentinel else [])
        self.processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: _cli(port, "ping").strip() == "PONG", f"{name} to answer")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def start_cluster(workdir: Path) -> tuple[Topology, str]:
    """Three masters sharing the 16384 slots; returns the topology and a node's URL."""
    topology = Topology(workdir)
    ports = _free_ports(3)
    try:
        for port in ports:
            topology.server(port, "cluster-enabled yes", f"cluster-config-file nodes-{port}.conf",
                            "cluster-node-timeout 2000")
        subprocess.run([REDIS_CLI, "--cluster", "create", *[f"127.0.0.1:{port}" for port in ports],
                        "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True,
                       timeout=60, check=True)
        _wait(lambda: all("cluster_state:ok" in _cli(port, "cluster", "info") for port in ports),
              "the cluster to agree")
    except BaseException:
        topology.stop()
        raise
    return topology, f"redis://127.0.0.1:{ports[0]}/0"


def start_sentinel(workdir: Path, service: str = "op-master") -> tuple[Topology, int, list[int]]:
    """A master, its replica and one sentinel watching them; returns the topology, the
    sentinel's port and the two data ports (master first)."""
    topology = Topology(workdir)
    master, replica, sentinel = _free_ports(3)
    try:
        topology.server(master)
        topology.server(replica, f"replicaof 127.0.0.1 {master}")
        _wait(lambda: "master_link_status:up" in _cli(replica, "info", "replication"), "the replica to sync")
        topology.server(sentinel, f"sentinel monitor {service} 127.0.0.1 {master} 1",
                        f"sentinel down-after-milliseconds {service} 1000",
                        f"sentinel failover-timeout {service} 5000", sentinel=True)
        _wait(lambda: "slaves=1" in _cli(sentinel, "info", "sentinel"), "the sentinel to see the replica")
    except BaseException:
        topology.stop()
        raise
    return topology, sentinel, [master, replica]


def sentinel_master_port(sentinel: int, service: str = "op-master") -> int:
    return int(_cli(sentinel, "sentinel", "get-master-addr-by-name", service).split()[1])
