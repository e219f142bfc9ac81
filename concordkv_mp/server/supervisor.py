"""The supervisor of `concordkv serve`. It lays out the server, forks every child, restarts
the ones that die, and shuts them all down in order.

Children (forked with `multiprocess`; the supervisor itself never creates a ZeroMQ
context or a thread, so forking stays safe): the I/O optimizer, `compaction_workers`
pool workers, one process per partition, and the front. A child that dies is restarted
at once, or with backoff (doubling to 5 s) if it keeps dying before it is ready. Before a partition
is restarted the whole compaction pool is killed and restarted: a worker still running
a job for the dead partition could otherwise write a file under a number the
partition's next incarnation hands out again.

Shutdown (SIGTERM, SIGINT, or `concordkv stop`) runs front → partitions (their replies
sent, MemTables flushed) → I/O optimizer (rings drained, files synced) → pool, with a
deadline of 10 s in all, then removes the run directory (rings, sockets, process table);
daemon.py then removes the pid file.

The run directory lives on tmpfs (/dev/shm), named after the data directory: rings
left by a server that was killed outright are found and drained by the next start.
This module owns process lifecycle and layout; it must not handle requests or data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace

import multiprocess

from concordkv_mp.errors import ConfigError
from concordkv_mp.io.fs import DEFAULT_FS, write_file_atomically
from concordkv_mp.io.wal_ring import WalRing
from concordkv_mp.ipc.protocol import SLOT_COUNT, Limits
from concordkv_mp.server import compaction_pool, io_optimizer
from concordkv_mp.server.front import FrontSpec, front_main
from concordkv_mp.server.lifecycle import announce_ready, become_child, exit_child, run_child
from concordkv_mp.server.partition import PartitionSpec, partition_main
from concordkv_mp.server.process_table import ProcessEntry, write_table

LAYOUT_FORMAT = 1  # of <data_dir>/SERVER
RING_CAPACITY = 16 << 20
SHUTDOWN_SECONDS = 10.0
# A child that dies before it said it is ready is in a crash loop: its restart waits
# twice as long each time, up to _BACKOFF_MAX. One that was serving is restarted at once:
# a single crash must not cost clients more than the recovery itself.
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 5.0
_fork = multiprocess.get_context("fork")


def run_directory(data_dir: str) -> str:
    digest = hashlib.sha1(os.path.realpath(data_dir).encode()).hexdigest()[:16]
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return os.path.join(base, f"concordkv-{digest}")


def partition_endpoint(endpoint: str, index: int) -> str:
    """A partition's public (stream) endpoint: the port after the front's (tcp), or a
    suffix (ipc)."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        return f"tcp://{host}:{int(port) + 1 + index}"
    return f"{endpoint}.p{index}"


@dataclass
class _Child:
    role: str
    index: int | None
    target: object
    spec: object
    process: object = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = _BACKOFF_FIRST
    restart_at: float | None = None
    ready_fd: int | None = None  # read end of this incarnation's readiness pipe


class Supervisor:
    def __init__(self, config):
        self.config = config
        self.data_dir = os.path.abspath(config.data_dir)
        self.run_dir = run_directory(self.data_dir)
        self.table_path = os.path.join(self.run_dir, "processes.json")
        self.children: list[_Child] = []
        self._stopping = False

    # ------------------------------------------------------------------ layout

    def _check_layout(self) -> None:
        path = os.path.join(self.data_dir, "SERVER")
        partitions = self.config.partitions
        if os.path.exists(path):
            with open(path) as file:
                layout = json.load(file)
            if layout.get("format") != LAYOUT_FORMAT:
                raise ConfigError("data_dir", f"{path} has layout format {layout.get('format')}, not {LAYOUT_FORMAT}")
            if layout["partitions"] != partitions:
                raise ConfigError(
                    "partitions",
                    f"{self.data_dir} holds {layout['partitions']} partitions, the config asks for {partitions}; "
                    "changing the partition count of existing data (resharding) is not supported",
                )
        else:
            layout = {"format": LAYOUT_FORMAT, "partitions": partitions, "slot_count": SLOT_COUNT}
            write_file_atomically(DEFAULT_FS, path, json.dumps(layout).encode())
            DEFAULT_FS.sync_dir(self.data_dir)

    def _prepare_run_directory(self) -> list[str]:
        """Rings (created, or kept from a server that died with bytes in them) and a
        clean place for sockets."""
        os.makedirs(self.run_dir, exist_ok=True)
        for name in os.listdir(self.run_dir):
            if not name.startswith("ring-"):
                os.remove(os.path.join(self.run_dir, name))
        paths = []
        for index in range(self.config.partitions):
            path = os.path.join(self.run_dir, f"ring-{index}")
            if os.path.exists(path):
                WalRing.attach(path).close()  # validates it; the optimizer drains it
            else:
                WalRing.create(path, RING_CAPACITY).close()
            paths.append(path)
        return paths

    # ------------------------------------------------------------------ children

    def _plan(self, ring_paths: list[str]) -> None:
        config, run = self.config, self.run_dir
        me = os.getpid()
        limits = Limits(config.max_key_size, config.max_value_size, config.max_batch_keys, config.scan_page_size)
        wake, notify = f"ipc://{run}/io-wake.sock", f"ipc://{run}/io-notify.sock"
        compactors = tuple(compaction_pool.worker_endpoint(run, j) for j in range(config.compaction_workers))
        internal = tuple(f"ipc://{run}/partition-{i}.sock" for i in range(config.partitions))
        public = tuple(partition_endpoint(config.endpoint, i) for i in range(config.partitions))
        # Clients on this host may use a Unix socket instead of TCP (faster round trips);
        # the server id in HELLO tells them it is this server's and not a namesake's.
        local = tuple(
            f"ipc://{run}/partition-{i}.stream" if config.endpoint.startswith("tcp://") else None
            for i in range(config.partitions)
        )
        server_id = uuid.uuid4().hex
        # The engine never syncs by itself in a server: the I/O optimizer applies the policy.
        engine_options = replace(config.storage_options(), fsync="none")
        self.children.append(_Child("io_optimizer", None, _io_main, (ring_paths, config.fsync, wake, notify, me)))
        for j, endpoint in enumerate(compactors):
            self.children.append(_Child("compactor", j, _compactor_main, (endpoint, me)))
        for i in range(config.partitions):
            spec = PartitionSpec(
                index=i, partitions=config.partitions, directory=os.path.join(self.data_dir, f"partition-{i}"),
                options=engine_options, fsync=config.fsync, limits=limits,
                max_message_size=config.max_message_size, client_hwm=config.client_hwm,
                public_endpoint=public[i], local_endpoint=local[i], internal_endpoint=internal[i],
                server_id=server_id, ring_path=ring_paths[i],
                io_wake_endpoint=wake, io_notify_endpoint=notify, compactor_endpoints=compactors,
                process_table=self.table_path,
            )
            self.children.append(_Child("partition", i, partition_main, (spec, me)))
        front = FrontSpec(
            endpoint=config.endpoint, partitions=config.partitions, partition_internal_endpoints=internal,
            partition_public_endpoints=public, partition_local_endpoints=local, server_id=server_id,
            ring_paths=tuple(ring_paths), process_table=self.table_path,
            limits=limits, max_message_size=config.max_message_size, client_hwm=config.client_hwm,
            fsync=config.fsync, data_dir=self.data_dir,
        )
        self.children.append(_Child("front", None, front_main, (front, me)))

    def _start(self, child: _Child) -> None:
        if child.ready_fd is not None:  # the pool, killed without being asked if it was ready
            os.close(child.ready_fd)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        child.process = _fork.Process(
            target=run_child, args=(write_end, child.target, child.spec), name=f"ckv-{child.role}", daemon=False
        )
        child.process.start()
        os.close(write_end)
        child.ready_fd = read_end
        child.started = time.time()
        child.restart_at = None

    def _was_ready(self, child: _Child) -> bool:
        """Whether the incarnation that just died had said it was ready (its pipe holds
        the byte, or is at EOF: every write end is closed once the child is gone)."""
        fd, child.ready_fd = child.ready_fd, None
        try:
            return os.read(fd, 1) == b"r"
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    def _write_table(self) -> None:
        entries = [ProcessEntry("supervisor", None, os.getpid(), self._started, 0)]
        for child in self.children:
            alive = child.process is not None and child.process.exitcode is None
            entries.append(ProcessEntry(child.role, child.index, child.process.pid if alive else None,
                                        child.started, child.restarts))
        write_table(self.table_path, entries)

    def _watch_once(self) -> None:
        now = time.monotonic()
        changed = False
        for child in self.children:
            process = child.process
            if process is not None and process.exitcode is None:
                continue
            if child.restart_at is None:  # just died
                changed = True
                crash_loop = not self._was_ready(child)
                child.backoff = min(child.backoff * 2, _BACKOFF_MAX) if crash_loop else _BACKOFF_FIRST
                child.restart_at = now + (child.backoff if crash_loop else 0.0)
                print(f"concordkv: {child.role}{'' if child.index is None else ' ' + str(child.index)} "
                      f"(pid {process.pid}) exited with {process.exitcode}; restarting", file=sys.stderr, flush=True)
                if child.role == "partition":
                    self._restart_pool()
            if now >= child.restart_at:
                child.restarts += 1
                self._start(child)
                changed = True
        if changed:
            self._write_table()

    def _restart_pool(self) -> None:
        pool = [c for c in self.children if c.role == "compactor" and c.process is not None]
        for child in pool:
            if child.process.exitcode is None:
                os.kill(child.process.pid, signal.SIGKILL)
        for child in pool:
            child.process.join()
            child.restarts += 1
            self._start(child)

    # ------------------------------------------------------------------ run

    def run(self, on_ready=None) -> int:
        self._started = time.time()
        self._check_layout()
        ring_paths = self._prepare_run_directory()
        self._plan(ring_paths)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            self._write_table()
            if on_ready is not None:
                on_ready()
            while not self._stopping:
                self._watch_once()
                time.sleep(0.05)
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _on_signal(self, signum, frame) -> None:
        self._stopping = True

    def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        for roles, share in ((("front",), 0.15), (("partition",), 0.6), (("io_optimizer",), 0.5), (("compactor",), 1.0)):
            group = [c.process for c in self.children if c.role in roles and c.process is not None and c.process.exitcode is None]
            for process in group:
                _signal(process.pid, signal.SIGTERM)
            wait_until = time.monotonic() + share * max(0.0, deadline - time.monotonic())
            for process in group:
                process.join(max(0.0, wait_until - time.monotonic()))
                if process.exitcode is None:
                    _signal(process.pid, signal.SIGKILL)
                    process.join()
        for child in self.children:
            if child.ready_fd is not None:
                os.close(child.ready_fd)
                child.ready_fd = None
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _io_main(ring_paths, fsync, wake, notify, supervisor_pid) -> None:
    stop = become_child(supervisor_pid)
    announce_ready()  # its start is attaching rings and binding two sockets
    io_optimizer.run(ring_paths, fsync, wake, notify, stop)
    exit_child(0)


def _compactor_main(endpoint, supervisor_pid) -> None:
    stop = become_child(supervisor_pid)
    announce_ready()
    compaction_pool.run_worker(endpoint, stop)
    exit_child(0)
