"""The executor that runs an LSM engine's background steps in a private worker process.

Implements `BackgroundExecutor` (engines/lsm/executor.py) for one engine's background
thread (calls are serialised by that thread); `concordkv_mp.open()` injects it.
`WorkerJobs` (shared with the server's pool handle) encodes the jobs and turns worker
replies back into `FileMeta`s or the errors the worker met; `CompactionWorkerClient`
runs them on a private worker process, started at its first job: one that died
mid-task is restarted and the task tried once more, since a task only reads its inputs
and (re)writes files under numbers reserved for it. The engine must not import this.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import msgpack

from concordkv_mp.engines.lsm.file_meta import FileMeta
from concordkv_mp.errors import CorruptionError, StorageIOError

# Version of the request/reply maps exchanged with concordkv_mp.workers.compactor.
PROTOCOL_VERSION = 1
# msgpack's Unpacker limit for both ends. 0 means 4 GiB, msgpack's maximum: the pipe
# carries only its owner's messages, and a limit here would also cap one value (bin),
# which max_value_size allows up to 512 MiB.
MAX_MESSAGE_BYTES = 0


class WorkerJobs:
    """The jobs an engine hands a worker, over a subclass's `_run(request) -> reply`
    and its `pid` and `restarts`: the request encoding and the mapping of error replies
    to exceptions, shared by the embedded engine's private worker and the server's pool
    (compaction_pool.py)."""

    tasks = 0

    def compact(self, directory: str, task, options) -> list[FileMeta]:
        return self._call({"op": "compact", "directory": directory, "task": task.to_record()}, options)

    def flush(self, directory: str, number: int, memtable, options) -> FileMeta | None:
        """Write the frozen `memtable` as table `number`: it is shipped as its (key,
        entry) items, unsorted, since sorting is work the worker takes off the engine."""
        fields = {"op": "flush", "directory": directory, "number": number, "items": memtable.items()}
        outputs = self._call(fields, options)
        return outputs[0] if outputs else None

    def worker_stats(self) -> dict:
        return {"pid": self.pid, "tasks": self.tasks, "restarts": self.restarts}

    def _call(self, fields: dict, options) -> list[FileMeta]:
        reply = self._run(msgpack.packb({"version": PROTOCOL_VERSION, "options": dataclasses.asdict(options), **fields}))
        self.tasks += 1
        if "error" in reply:
            if reply.get("code") in ("CORRUPTION", "UNSUPPORTED_FORMAT"):
                raise CorruptionError(reply.get("path", fields["directory"]), reply["error"])
            raise StorageIOError(reply.get("errno") or 0, f"compaction worker: {reply['error']}")
        return [FileMeta.from_record(record) for record in reply["outputs"]]


class CompactionWorkerClient(WorkerJobs):
    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._unpacker = None  # made fresh with each process
        self.starts = 0

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "concordkv_mp.workers.compactor", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._unpacker = msgpack.Unpacker(max_buffer_size=MAX_MESSAGE_BYTES)
        self.starts += 1

    def _exchange(self, request: bytes) -> dict:
        if self._process is None or self._process.poll() is not None:
            self._start()
        process = self._process
        try:
            process.stdin.write(request)
            process.stdin.flush()
            while True:
                for reply in self._unpacker:
                    return reply
                data = process.stdout.read1(1 << 16)
                if not data:
                    raise EOFError("compaction worker closed its output")
                self._unpacker.feed(data)
        except (OSError, EOFError):
            self.stop()
            raise

    def _run(self, request: bytes) -> dict:
        try:
            return self._exchange(request)
        except (OSError, EOFError):
            try:
                return self._exchange(request)
            except (OSError, EOFError) as exc:
                raise StorageIOError(0, f"compaction worker failed twice: {exc}") from exc

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

