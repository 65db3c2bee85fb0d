"""A Ray cluster on this machine, started the way users start one, for tests, benchmarks and trying ``--ray`` out.

``ray start --head`` starts the head node and ``ray start --address`` each worker node process.

Each node keeps up to :data:`WORKERS_PER_CPU` worker processes per CPU alive between tasks (Ray's
``num_workers_soft_limit``, set through the ``RAY_num_workers_soft_limit`` environment variable of ``ray start``;
one the caller set wins). Ray's default is one per CPU: with a model actor holding a node's worker slot, every read
and write task of ``deepmia batch predict`` then ran in a fresh Python process that imported Ray and the readers
again, about 3 s of CPU per task (20 % of one core in a 2-CPU run; docs/scale.md).

:meth:`LocalCluster.stop` ends only this cluster's processes, by their ids (``ray stop`` would end every Ray
process of the user on the machine, other clusters included).

Example:
    >>> from deepmia.distributed.cluster import LocalCluster                    # doctest: +SKIP
    >>> with LocalCluster(worker_nodes=1) as cluster:                           # doctest: +SKIP
    ...     batch_predict("hippocampus", "scans/", "out/", ray=cluster.address)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepmia.errors import InvalidArgumentError

__all__ = ["LocalCluster", "free_port", "WORKERS_PER_CPU"]

#: Worker processes a node keeps alive per CPU (Ray's ``num_workers_soft_limit``; its default is 1).
WORKERS_PER_CPU = 4


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, command line)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry.name)] = (ppid, cmd)
    return out


class LocalCluster:
    """A head node and ``worker_nodes`` worker node processes on this machine, each with ``cpus`` CPUs.

    Args:
        worker_nodes: Worker node processes besides the head.
        cpus: CPUs each node offers (``--num-cpus``).
        object_store_mb: Object store of each node, in MB.
    """

    def __init__(self, worker_nodes: int = 1, *, cpus: int = 1, object_store_mb: int = 200) -> None:
        self.worker_nodes, self.cpus, self.store = worker_nodes, cpus, object_store_mb * 1_000_000
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = Path(tempfile.mkdtemp(prefix="dmray", dir="/tmp"))  # short: Ray's socket paths are limited
        self.raylets: list[int] = []  # the head's first, then each worker node's
        self.ray = str(Path(sys.executable).parent / "ray")
        self.startup_s = 0.0
        #: Worker processes each node keeps alive (``RAY_num_workers_soft_limit``; the caller's value wins).
        self.worker_limit = int(os.environ.get("RAY_num_workers_soft_limit", WORKERS_PER_CPU * cpus))

    def _run(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["RAY_num_workers_soft_limit"] = str(self.worker_limit)
        done = subprocess.run([self.ray, "start", *args, f"--num-cpus={self.cpus}",
                               f"--object-store-memory={self.store}", "--disable-usage-stats"],
                              capture_output=True, text=True, timeout=180, env=env)
        if done.returncode != 0:
            raise InvalidArgumentError(f"ray start failed: {done.stderr.strip()[-800:]}", fix="see `ray start --help`")
        new = [pid for pid, (_, cmd) in _processes().items() if "/raylet/raylet " in cmd and self._mine(cmd)]
        self.raylets += sorted(set(new) - set(self.raylets))

    def _mine(self, cmd: str) -> bool:
        return str(self.temp_dir) in cmd or re.search(rf"--address=\S+:{self.port}\b", cmd) is not None

    def start(self) -> LocalCluster:
        """Start the head, then the worker nodes (``ray start``); returns self."""
        started = time.perf_counter()
        self._run("--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}",
                  f"--ray-client-server-port={free_port()}")
        for _ in range(self.worker_nodes):
            self._run(f"--address={self.address}")
        self.startup_s = time.perf_counter() - started
        return self

    def kill_worker_node(self, index: int = 0) -> int:
        """``kill -9`` the raylet of worker node ``index``; returns its pid."""
        pid = self.raylets[1 + index]
        os.kill(pid, signal.SIGKILL)
        return pid

    def pids(self) -> list[int]:
        """This cluster's processes: those naming its temp folder or port, and all their descendants."""
        table = _processes()
        mine = {pid for pid, (_, cmd) in table.items() if self._mine(cmd)} | set(self.raylets)
        grew = True
        while grew:
            children = {pid for pid, (ppid, _) in table.items() if ppid in mine} - mine
            mine |= children
            grew = bool(children)
        return sorted(mine - {os.getpid()})

    def stop(self) -> None:
        """End this cluster's processes (SIGTERM, then SIGKILL after 5 s) and remove its temp folder."""
        pids = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 5
            while sig == signal.SIGTERM and time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
