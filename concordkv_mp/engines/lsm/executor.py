"""Who runs the LSM engine's background steps: the executor interface and its default.

The engine's flush thread and compaction thread each hand their steps (write a frozen
MemTable as an L0 table; run a compaction task) to an executor, made by a factory that
the engine's caller injects. This module owns that interface and the default executor,
which runs the pure steps of `compaction.py` in the calling thread through the
engine's file system. It must not know of processes or IPC: executors that run the
steps in worker processes live in the workers package and are passed in.
"""

from __future__ import annotations

from typing import Callable, Protocol

from concordkv_mp.engines.lsm.compaction import CompactionTask, run_compaction, write_flush
from concordkv_mp.engines.lsm.file_meta import FileMeta
from concordkv_mp.engines.lsm.memtable import MemTable
from concordkv_mp.io.fs import FileSystem


class BackgroundExecutor(Protocol):
    """Runs one engine thread's steps; only that thread calls it, with the engine's
    mutex released. It starts nothing before its first job: an engine that fails to
    open drops its executors without `stop()`."""

    def flush(self, directory: str, number: int, memtable: MemTable, options) -> FileMeta | None:
        """Write the frozen `memtable` as table `number` of `directory`; None if it is empty."""

    def compact(self, directory: str, task: CompactionTask, options) -> list[FileMeta]:
        """Write the outputs of `task` under its reserved numbers and return them."""

    def worker_stats(self) -> dict | None:
        """`{"pid", "tasks", "restarts"}` of the process that runs the steps, for the
        engine's stats; None if they run in the calling thread."""

    def stop(self) -> None:
        """Release what the executor started; the engine is closing."""


# Called with the engine's file system, before the engine takes its directory: a
# factory that cannot serve that file system raises ConfigError with nothing created.
ExecutorFactory = Callable[[FileSystem], BackgroundExecutor]


class InProcessExecutor:
    """The default: each step runs in the calling engine thread."""

    def __init__(self, fs: FileSystem):
        self._fs = fs

    def flush(self, directory: str, number: int, memtable: MemTable, options) -> FileMeta | None:
        return write_flush(self._fs, directory, memtable.columns(), number, options)

    def compact(self, directory: str, task: CompactionTask, options) -> list[FileMeta]:
        return run_compaction(self._fs, directory, task, options)

    def worker_stats(self) -> None:
        return None

    def stop(self) -> None:
        """Nothing to release: the steps ran in the engine's own threads."""
