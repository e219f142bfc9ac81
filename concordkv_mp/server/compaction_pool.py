"""The server's shared compaction pool: the worker loop and the partitions' handle on it.

Each pool worker is a process with a ROUTER socket on `ipc://<run>/compactor-<j>.sock`
that runs `compactor.handle` (the pure flush and compaction steps, unchanged) on each
request and replies; it never touches a manifest. A partition's LSM engine reaches the
pool through `PoolWorkerClient`, the executor (engines/lsm/executor.py) that the
partition injects, so the engine does not know where its steps run.

A job is lost if its worker dies (SIGKILL, OOM): the client notices because the
process table shows another pid for that worker, and sends the job again — to the next
worker — since a job only reads its inputs and writes files under numbers reserved for
it. A worker finishing a job for a partition that died meanwhile could overwrite a file
the partition's next incarnation creates, so the supervisor kills the whole pool before
it restarts a partition (see supervisor.py).
"""

from __future__ import annotations

import itertools
import os

import msgpack
import zmq

from concordkv_mp.errors import StorageIOError
from concordkv_mp.workers import compactor
from concordkv_mp.workers.compaction_client import WorkerJobs
from concordkv_mp.server.process_table import pid_of

# How often a waiting client checks that its worker still lives.
_LIVENESS_POLL_MS = 200
# A job lost this many times in a row (its workers kept dying) fails for real, which
# makes the engine read-only rather than retrying forever.
_MAX_ATTEMPTS = 30


def worker_endpoint(run_dir: str, index: int) -> str:
    return f"ipc://{run_dir}/compactor-{index}.sock"


def run_worker(endpoint: str, stop) -> None:
    """Serve jobs until `stop()` is true (checked between jobs and every 200 ms)."""
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(endpoint)
    try:
        while not stop():
            if not socket.poll(200):
                continue
            peer, frame = socket.recv_multipart(copy=False)
            try:
                request = msgpack.unpackb(frame.buffer, raw=False)
                reply = compactor.handle(request)
            except Exception as exc:  # a malformed request is answered, not fatal
                reply = {"error": f"{type(exc).__name__}: {exc}", "code": "PROTOCOL"}
            reply["pid"] = os.getpid()
            socket.send_multipart([peer, msgpack.packb(reply)])
    finally:
        socket.close(0)
        context.term()


class PoolWorkerClient(WorkerJobs):
    """One engine thread's handle on the pool (not thread-safe: one thread uses it)."""

    _next_start = itertools.count()

    def __init__(self, endpoints: list[str], table_path: str):
        self._endpoints = endpoints
        self._table_path = table_path
        self._worker = next(self._next_start) % len(endpoints)
        self._context = None
        self._socket = None
        self._socket_index = None  # the worker `_socket` is connected to
        self.restarts = 0  # jobs sent again because their worker died
        self.pid = None  # of the worker that ran the last job

    def _run(self, request: bytes) -> dict:
        for _attempt in range(_MAX_ATTEMPTS):
            reply = self._exchange(request)
            if reply is not None:
                self.pid = reply.get("pid")
                return reply
            self.restarts += 1
            self._worker = (self._worker + 1) % len(self._endpoints)
        raise StorageIOError(0, f"compaction job lost {_MAX_ATTEMPTS} times: its workers kept dying")

    def _exchange(self, request: bytes) -> dict | None:
        """The worker's reply, or None if the worker died with the job."""
        index = self._worker
        pid = pid_of(self._table_path, "compactor", index)
        socket = self._connect(index)
        socket.send(request)
        while not socket.poll(_LIVENESS_POLL_MS):
            now = pid_of(self._table_path, "compactor", index)
            if pid is None:
                pid = now  # the worker was down: the job waits in the socket for it
            elif now != pid:
                # A fresh socket next time: a late reply must not answer the next job.
                self._disconnect()
                return None
        return msgpack.unpackb(socket.recv(), raw=False)

    def _connect(self, index: int):
        if self._socket is not None and self._socket_index != index:
            self._disconnect()
        if self._socket is None:
            if self._context is None:
                self._context = zmq.Context()
            self._socket = self._context.socket(zmq.DEALER)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(self._endpoints[index])
            self._socket_index = index
        return self._socket

    def _disconnect(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None

    def stop(self) -> None:
        self._disconnect()
        if self._context is not None:
            self._context.term()
            self._context = None
