"""A real multi-node Ray cluster on one machine, inside a private network namespace (tests, benchmark).

``ray start`` brings up a head and worker nodes, all bound to 127.0.0.1. Ray announces a node's
external address to its peers, so the cluster must live where the only network is loopback:
``run_in_private_network`` re-runs a command under ``unshare`` (root) as PID 1 of fresh network and
PID namespaces, so when it exits the kernel ends every process it started: Ray's daemons never
outlive it, and nothing outside is ever signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRIVATE_ENV = "CURATION_PRIVATE_NETWORK"
# What every node of a LocalRayCluster runs with, whatever the caller's environment. gRPC's fork handlers
# off: the head's Ray Client proxy forks each connection's server process from its gRPC threads, and with
# them on that child crashed (SIGSEGV) or hung before its exec at 5 of 20 fresh clusters' first connection
# (at none of 20 with them off); the client then waited about 40 s before it could try again.
NODE_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "GRPC_ENABLE_FORK_SUPPORT": "0"}


def live_members(group: int) -> set[tuple[int, int]]:
    """The processes of a process group still running, as (pid, start time): pids wrap (pid_max), so a pid
    alone may later name another process. A killed member whose parent died first stays a zombie until it is
    reaped: it holds nothing."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.add((int(stat.parent.name), int(fields[19])))
    return members


def private_network_available() -> tuple[bool, str]:
    """Can this process make a private network namespace (root, ``unshare`` and ``ip``)?"""
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux"
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        return False, f"missing {', '.join(missing)} (util-linux, iproute2)"
    return True, ""


def in_private_network() -> bool:
    return os.environ.get(PRIVATE_ENV) == "1"


def run_in_private_network(argv: list[str], timeout: float, env: dict | None = None,
                           **kwargs) -> subprocess.CompletedProcess:
    """``argv`` run as PID 1 of new network + PID namespaces (killed with its parent)."""
    return subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", *argv],
                          env={**(env or os.environ), PRIVATE_ENV: "1"}, timeout=timeout, **kwargs)


def enter_private_network() -> list[str]:
    """Inside the namespace: bring up ``lo``, check it is the only interface, make SIGTERM end
    PID 1 (which otherwise ignores it). Returns the interfaces seen."""
    if not in_private_network():
        raise RuntimeError("not inside a private network namespace (run through run_in_private_network)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    links = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True).stdout
    interfaces = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if line.strip())
    if interfaces != ["lo"]:
        raise RuntimeError(f"the private namespace has interfaces {interfaces}, expected only lo")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Nothing but loopback can reach this cluster, so it runs without Ray's token auth. Said
    # explicitly: left unset, Ray turns it on whenever ~/.ray/auth_token exists, and nodes and
    # drivers that disagree cannot talk (production clusters: RAY_AUTH_MODE=token, README).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    return interfaces


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


class LocalRayCluster:
    """A head node and ``len(worker_cpus)`` worker nodes (``ray start --block``; the CPUs are logical
    slots), each given ``env``. ``worker_gpus`` gives workers GPU slots (no device needed: Ray then
    schedules as on GPU nodes); ``head_memory_mb`` sets the head's ``memory`` resource (0: no task
    that reserves memory, such as a shard's coordinator, runs there). Only inside a private network
    namespace."""

    def __init__(self, head_cpus: float = 1, worker_cpus: tuple[float, ...] = (1,), object_store_mb: int = 256,
                 env: dict | None = None, log_dir: str | None = None, worker_gpus: tuple[float, ...] = (),
                 head_memory_mb: int | None = None):
        if not in_private_network():
            raise RuntimeError("a test cluster may only run inside a private network namespace")
        self.head_cpus, self.worker_cpus = head_cpus, tuple(worker_cpus)
        self.worker_gpus = tuple(worker_gpus) + (0,) * (len(self.worker_cpus) - len(worker_gpus))
        self.head_memory = [] if head_memory_mb is None else [f"--memory={head_memory_mb * 1024 * 1024}"]
        self.object_store = str(object_store_mb * 1024 * 1024)
        self.env = {**(env or os.environ), **NODE_ENV}
        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: unix socket paths are limited
        self.log_dir = Path(log_dir or self.temp_dir)
        self.port = free_port()
        self.client_port = free_port()
        self.processes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        """The GCS address, for ``ray.init`` on a node of the cluster."""
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        """The Ray Client address (as KubeRay's head service exposes it)."""
        return f"ray://127.0.0.1:{self.client_port}"

    def _ray(self, *args: str, name: str) -> subprocess.Popen:
        ray = str(Path(sys.executable).with_name("ray"))
        log = open(self.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen([ray, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                                    f"--object-store-memory={self.object_store}", *args],
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start(self, timeout: float = 90) -> "LocalRayCluster":
        head = self._ray("--head", f"--port={self.port}", f"--ray-client-server-port={self.client_port}",
                         f"--num-cpus={self.head_cpus}", "--num-gpus=0", "--include-dashboard=false",
                         f"--temp-dir={self.temp_dir}", *self.head_memory, name="head")
        wait_for_port(self.port, timeout, head)
        # one node at a time: raylets starting together on a busy 2-core machine can miss
        # their registration deadline; a node that does is started once more. The worker nodes share
        # the head's session folder on this one host, so the head's log monitor alone sends the workers'
        # output to drivers (one more per node sent every line once more, and cost CPU)
        for i, (cpus, gpus) in enumerate(zip(self.worker_cpus, self.worker_gpus)):
            for attempt in (1, 2):
                node = self._ray(f"--address={self.address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                                 "--include-log-monitor=false", name=f"worker-{i}")
                try:
                    self.wait_for_nodes(2 + i, timeout, watch=[head, node])
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
                    self._kill(node)  # its raylet may have exited while its other processes live on
                    self.processes.remove(node)
        wait_for_port(self.client_port, timeout, head)
        return self

    def wait_for_nodes(self, count: int, timeout: float, watch: list[subprocess.Popen] | None = None) -> None:
        import ray

        deadline = time.monotonic() + timeout
        while True:  # the GCS port opens before the head's raylet registers: on a busy machine,
            try:     # ray.init finds no node to attach to for a while
                ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
                break
            except ConnectionError:
                ray.shutdown()
                if time.monotonic() > deadline:
                    raise
                self._check_alive(watch)
                time.sleep(1)
        try:
            while len([n for n in ray.nodes() if n["Alive"]]) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{count} Ray nodes did not come up in {timeout:.0f}s")
                self._check_alive(watch)
                time.sleep(0.2)
        finally:
            ray.shutdown()

    def _check_alive(self, watch: list[subprocess.Popen] | None) -> None:
        for process in watch or self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"a ray node exited with {process.returncode}; see {self.log_dir}")

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        """Kill a node's whole process group: ``ray start --block`` may exit while the raylet, the workers
        and the helper processes it started (in its session) live on."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
        # the signal is sent, not yet acted on: on a busy machine a member runs on for a moment after
        # its leader is reaped, so the node is stopped only when none of its group is left
        deadline = time.monotonic() + 30
        while live_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the nodes' process groups (inside the namespace these are only ours)."""
        for process in reversed(self.processes):
            self._kill(process)
        self.processes.clear()
        # the session files (sockets, spilled objects, worker logs) go; the nodes' own logs and the
        # Ray Client servers' logs (why a connection failed) stay where the caller asked (log_dir)
        if self.log_dir != Path(self.temp_dir):
            for log in Path(self.temp_dir).glob("session_*/logs/ray_client_server*"):
                shutil.copy(log, self.log_dir / log.name)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
