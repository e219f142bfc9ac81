"""`LSMEngine`: the LSM tree of one database directory, used in-process.

Owns the MemTables, the WAL, the current Version and the manifest of its directory;
nothing else may write there while it is open (a `LOCK` file enforces that).

Concurrency model (LevelDB's):
- writers queue under `_mutex` (engines/write_queue.py); the writer at the head leads: it makes room
  (freezing the MemTable, rotating the WAL, or stalling), gathers the queued writes
  into one WAL record, writes (and with fsync="always" syncs) it with the mutex
  released — so the next writers queue up meanwhile and share the next sync: group
  commit — then applies the group to the MemTable and wakes the followers;
- point reads take no lock: they read `_mem`, then `_imms`, then `_version`, and the
  writers publish in the opposite order (see `_freeze_memtable`, `_install`) so a
  read never misses data that moved between them;
- scans take a snapshot (the last sequence number) and pin the MemTables and Version;
  the live MemTable is read in chunks under the mutex;
- a flush thread and a compaction thread hand the pure steps of `compaction.py` to
  their executors (executor.py: in the thread itself unless the caller injects
  another, such as a worker process) and install the results under the mutex;
- any failed WAL write/fsync, flush or compaction makes the engine read-only
  (fail-stop): nothing is acknowledged that did not reach the disk, and reopening
  recovers a consistent state.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from contextlib import nullcontext

from concordkv_mp.engines.lsm.block_cache import BlockCache
from concordkv_mp.engines.lsm.compaction import (
    NUM_LEVELS,
    compaction_scores,
    output_numbers_needed,
    pick_compaction,
    pick_level_compaction,
)
from concordkv_mp.engines.lsm.executor import ExecutorFactory, InProcessExecutor
from concordkv_mp.engines.lsm.file_meta import sstable_name, wal_name
from concordkv_mp.engines.lsm.iterators import memtable_source, merge_sources, visible_items
from concordkv_mp.engines.lsm.manifest import ManifestState, write_manifest
from concordkv_mp.engines.lsm.memtable import MemTable
from concordkv_mp.engines.lsm.recovery import recover
from concordkv_mp.engines.lsm.version import TableCache, Version, VersionSet
from concordkv_mp.engines.wal import WalWriter
from concordkv_mp.engines.write_queue import QueuedWrites, Writer, WriteQueue
from concordkv_mp.errors import ClosedError, ReadOnlyError
from concordkv_mp.io.fs import DEFAULT_FS

_NO_LOCK = nullcontext()


class _ManualCompaction:
    __slots__ = ("level", "target", "done")

    def __init__(self, target: int):
        self.level = 0
        self.target = target
        self.done = False


class LSMEngine(QueuedWrites):
    name = "lsm"

    def __init__(self, directory: str, options, fs=DEFAULT_FS, executor_factory: ExecutorFactory | None = None):
        """`executor_factory(fs)` makes the executor of the flush thread and, called
        again, that of the compaction thread (executor.py); by default both steps run
        in those threads. `options.compaction_workers` is the caller's to act on."""
        # Before anything is created on disk: a factory may refuse `fs`.
        if executor_factory is None:
            executor_factory = InProcessExecutor
        flusher, compactor = executor_factory(fs), executor_factory(fs)
        fs.make_dirs(directory)
        self._lock_file = fs.lock(os.path.join(directory, "LOCK"))
        try:
            recovered = recover(fs, directory, options)
            self._fs = fs
            self._dir = directory
            self._options = options
            self._always_sync = options.fsync == "always"
            state = recovered.manifest
            self.recovery = {
                "replayed_records": recovered.replayed_records,
                "torn_tail": recovered.torn_tail,
                "stopped_at": str(recovered.stopped_at) if recovered.stopped_at else None,
            }
            self._mutex = threading.Lock()
            self._work_cv = threading.Condition(self._mutex)
            self._wal_sync_lock = threading.Lock()
            self._queue = WriteQueue(self._mutex)
            self._block_cache = BlockCache(options.cache_size, options.cache_policy)
            self._tables = TableCache(fs, directory, self._block_cache)
            self._versions = VersionSet()
            self._version = self._versions.track(Version(state.levels, self._tables))
            self._last_seq = state.last_sequence
            self._next_file_number = state.next_file_number
            self._log_number = state.log_number
            self._wal = WalWriter.create(fs, os.path.join(directory, wal_name(state.log_number)), options.memtable_size)
            fs.sync_dir(directory)
            self._wal_synced_size = self._wal.size
            self._mem = MemTable(state.log_number)
            self._imms: list[MemTable] = []  # newest first
            self._snapshots: dict[int, int] = {}  # handle id -> sequence number
            self._snapshot_ids = itertools.count()
            self._compact_pointers: dict[int, bytes] = {}
            self._obsolete: set[int] = set()
            self._manual: _ManualCompaction | None = None
            self._flusher = flusher
            self._compactor = compactor
            self._bg_error: BaseException | None = None
            self._closing = False
            self._closed = False
            self._counters = dict.fromkeys(
                ("flushes", "compactions", "trivial_moves", "write_stalls", "flush_bytes", "compaction_bytes",
                 "wal_bytes_retired", "logical_bytes", "write_groups", "writes"),
                0,
            )
        except BaseException:
            self._lock_file.release()
            raise
        # Two threads so that a long compaction never holds up the flush of a frozen
        # MemTable (which would stall writers); installs are serialised by the mutex.
        self._bg_threads = [
            threading.Thread(target=self._background_loop, args=(job_picker,), name=name, daemon=True)
            for job_picker, name in ((self._next_flush, "ckv-lsm-flush"), (self._next_compaction, "ckv-lsm-compaction"))
        ]
        for thread in self._bg_threads:
            thread.start()
        self._stop_sync = threading.Event()
        self._sync_thread = None
        if options.fsync == "everysec":
            self._sync_thread = threading.Thread(target=self._sync_loop, name="ckv-lsm-wal-sync", daemon=True)
            self._sync_thread.start()

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        if self._closed:
            raise ClosedError("the database is closed")
        return self._get_latest(key)

    def scan(self, start: bytes | None, end: bytes | None, reverse: bool):
        """Iterator of (key, value) in [start, end) at the state of this call."""
        handle = _SnapshotHandle()
        with self._mutex:
            self._check_open()
            snapshot = self._last_seq
            handle_id = next(self._snapshot_ids)
            self._snapshots[handle_id] = snapshot
            mem, imms, version = self._mem, self._imms, self._version
        # Released when the iterator is exhausted, closed or garbage-collected, even
        # if it is never started.
        weakref.finalize(handle, self._snapshots.pop, handle_id, None)
        return self._iterate(handle, snapshot, mem, imms, version, start, end, reverse)

    def _iterate(self, handle, snapshot, mem, imms, version, start, end, reverse):
        # `handle` is unused but must stay referenced by this generator's frame: its
        # lifetime is the snapshot's.
        seek = end if reverse else start
        # A MemTable empty now can only receive writes newer than the snapshot: skip it,
        # which often leaves a single source and no merge at all.
        sources = [memtable_source(mem, self._mutex, seek, reverse, snapshot)] if len(mem) else []
        sources += [memtable_source(imm, _NO_LOCK, seek, reverse, snapshot) for imm in imms]
        sources += version.sources(seek, reverse)
        for item in visible_items(merge_sources(sources, reverse), snapshot, start, end, reverse):
            if self._closed:
                raise ClosedError("the database was closed during the scan")
            yield item

    def count(self) -> int:
        """Live keys, counted by a snapshot scan: O(n), documented in the README."""
        return sum(1 for _ in self.scan(None, None, False))

    # ----------------------------------------------------------------- writes

    def write(self, pairs) -> None:
        """Apply [(key, value | None)] atomically; None deletes. Keys may repeat (last wins)."""
        with self._mutex:
            if (
                not self._queue
                and not self._always_sync
                and self._mem.approximate_bytes < self._options.memtable_size
                and self._bg_error is None
                and not self._closing
                and not self._closed
            ):
                # Nobody else is writing and there is room: no group to form, and the
                # copy into the mapped WAL is done holding the mutex. (An L0 stall is
                # applied when the MemTable fills: that is when L0 would grow.)
                self._write_group_to_wal_and_memtable(pairs)
                return
        self._commit(Writer(pairs))

    def _commit(self, writer: Writer):
        with self._mutex:
            self._check_open()
            self._raise_bg_error()
            return self._queue.commit(writer, self._lead_group)

    def _lead_group(self, leader: Writer) -> None:
        """Run by the writer at the head of the queue, holding the mutex."""
        # The cheap test first; _make_room_for_write decides, and may wait.
        if (
            leader.flush
            or self._mem.approximate_bytes >= self._options.memtable_size
            or len(self._version.levels[0]) >= self._options.l0_stop_writes_trigger
        ):
            self._make_room_for_write(leader.flush)
        pairs = self._queue.gather(self._get_latest)
        if pairs:
            self._write_group_to_wal_and_memtable(pairs)

    def _write_group_to_wal_and_memtable(self, pairs) -> None:
        first_seq = self._last_seq + 1
        wal = self._wal
        try:
            if self._always_sync:
                # Let the next writers queue up during the fsync: they share the next one.
                self._mutex.release()
                try:
                    payload_size = wal.add_batch(first_seq, pairs)
                    wal.sync()
                finally:
                    self._mutex.acquire()
            else:
                payload_size = wal.add_batch(first_seq, pairs)
        except BaseException as exc:
            self._set_bg_error(exc)
            raise
        snapshots = self._snapshots
        self._mem.apply(first_seq, pairs, max(snapshots.values()) if snapshots else None)
        self._last_seq = first_seq + len(pairs) - 1
        counters = self._counters
        counters["write_groups"] += 1
        counters["writes"] += len(pairs)
        counters["logical_bytes"] += payload_size

    def _get_latest(self, key: bytes):
        """Lock-free point read of the newest version (see the module docstring)."""
        entry = self._mem.get(key)
        if entry is not None:
            return entry[1]
        for imm in self._imms:
            entry = imm.get(key)
            if entry is not None:
                return entry[1]
        found = self._version.get(key)
        return found[1] if found is not None else None

    def _make_room_for_write(self, force_freeze: bool) -> None:
        options = self._options
        while True:
            self._raise_bg_error()
            if self._closing:
                raise ClosedError("the database is closing")
            if len(self._version.levels[0]) >= options.l0_stop_writes_trigger:
                self._counters["write_stalls"] += 1
                self._work_cv.wait()
            elif force_freeze and len(self._mem) == 0:
                return
            elif not force_freeze and self._mem.approximate_bytes < options.memtable_size:
                return
            elif len(self._imms) >= options.max_immutable_memtables:
                self._counters["write_stalls"] += 1
                self._work_cv.wait()
            else:
                self._freeze_memtable()
                return

    def _freeze_memtable(self) -> None:
        """Switch to a fresh MemTable and WAL; the old pair waits for the flush."""
        number = self._allocate_file_number()
        try:
            new_wal = WalWriter.create(self._fs, os.path.join(self._dir, wal_name(number)), self._options.memtable_size)
            self._fs.sync_dir(self._dir)
            with self._wal_sync_lock:
                old_wal = self._wal
                # Recovery treats a torn record in any WAL but the newest as damage,
                # so a WAL is complete on disk before a newer one receives writes.
                old_wal.sync()
                old_wal.close()
                self._counters["wal_bytes_retired"] += old_wal.size
                self._wal = new_wal
                self._wal_synced_size = new_wal.size
        except BaseException as exc:
            self._set_bg_error(exc)
            raise
        frozen = self._mem
        frozen.freeze()
        # Publish in this order: lock-free readers look at _mem before _imms.
        self._imms = [frozen] + self._imms
        self._mem = MemTable(number)
        self._work_cv.notify_all()

    def _allocate_file_number(self) -> int:
        number = self._next_file_number
        self._next_file_number += 1
        return number

    def _set_bg_error(self, exc: BaseException) -> None:
        if self._bg_error is None:
            self._bg_error = exc
        self._work_cv.notify_all()

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise ClosedError("the database is closed")

    # ---------------------------------------------------- flush and compaction

    def flush(self) -> None:
        """Write every MemTable out to L0 SSTables and wait until that is durable."""
        self._commit(Writer([], flush=True))
        with self._mutex:
            while self._imms and self._bg_error is None:
                self._work_cv.wait()
            self._raise_bg_error()

    def compact(self) -> None:
        """Flush, then compact every level into the deepest one that holds data."""
        self.flush()
        with self._mutex:
            levels = self._version.levels
            deepest = max((level for level in range(NUM_LEVELS) if levels[level]), default=0)
            manual = _ManualCompaction(target=max(1, deepest))
            self._manual = manual
            self._work_cv.notify_all()
            while not manual.done and self._bg_error is None and not self._closing:
                self._work_cv.wait()
            self._raise_bg_error()

    def _raise_bg_error(self) -> None:
        if self._bg_error is not None:
            raise ReadOnlyError(f"the database is read-only after an I/O failure: {self._bg_error}")

    def _background_loop(self, next_job) -> None:
        with self._mutex:
            while True:
                job = next_job() if self._bg_error is None and not self._closing else None
                if job is None:
                    if self._closing:
                        return
                    self._work_cv.wait()
                    continue
                try:
                    job()
                    self._delete_obsolete_files()
                except BaseException as exc:  # fail-stop: see the module docstring
                    self._set_bg_error(exc)
                self._work_cv.notify_all()

    def _next_flush(self):
        return self._flush_oldest_memtable if self._imms else None

    def _next_compaction(self):
        if self._manual is not None:
            return self._manual_compaction_step
        task = pick_compaction(self._version.levels, self._options, self._smallest_snapshot(), self._compact_pointers)
        if task is None:
            return None
        return lambda: self._run_compaction_task(task)

    def _smallest_snapshot(self) -> int:
        return min(self._snapshots.values(), default=self._last_seq)

    def _flush_oldest_memtable(self) -> None:
        imm = self._imms[-1]
        number = self._allocate_file_number()
        self._mutex.release()
        try:
            meta = self._flusher.flush(self._dir, number, imm, self._options)
        finally:
            self._mutex.acquire()
        levels = [list(level) for level in self._version.levels]
        if meta is not None:
            levels[0].insert(0, meta)
            self._counters["flush_bytes"] += meta.size
        remaining = self._imms[:-1]
        log_number = remaining[-1].wal_number if remaining else self._mem.wal_number
        self._install(levels, log_number)
        # After the Version: lock-free readers look at _imms before _version.
        self._imms = remaining
        self._counters["flushes"] += 1
        self._fs.remove(os.path.join(self._dir, wal_name(imm.wal_number)))

    def _manual_compaction_step(self) -> None:
        manual = self._manual
        levels = self._version.levels
        while manual.level < manual.target and not levels[manual.level]:
            manual.level += 1
        if manual.level >= manual.target:
            manual.done = True
            self._manual = None
            return
        task = pick_level_compaction(levels, manual.level, self._smallest_snapshot())
        self._run_compaction_task(task)
        manual.level += 1

    def _run_compaction_task(self, task) -> None:
        if task.trivial_move:
            self._counters["trivial_moves"] += 1
            outputs = task.inputs
        else:
            task.output_numbers = [self._allocate_file_number() for _ in range(output_numbers_needed(task, self._options))]
            self._mutex.release()
            try:
                outputs = self._compactor.compact(self._dir, task, self._options)
            finally:
                self._mutex.acquire()
            self._counters["compactions"] += 1
            self._counters["compaction_bytes"] += sum(f.size for f in outputs)
            self._obsolete.update(f.number for f in task.all_inputs())
        # The Version as it is now: the flush thread may have added L0 files meanwhile.
        levels = [list(level) for level in self._version.levels]
        removed = {f.number for f in task.all_inputs()}
        levels[task.level] = [f for f in levels[task.level] if f.number not in removed]
        below = [f for f in levels[task.output_level] if f.number not in removed] + list(outputs)
        levels[task.output_level] = sorted(below, key=lambda f: f.smallest)
        self._install(levels, self._log_number)
        if task.level > 0:
            self._compact_pointers[task.level] = max(f.largest for f in task.inputs)

    def _install(self, levels, log_number: int) -> None:
        """Make `levels` the current Version: manifest first, then memory."""
        state = ManifestState(
            next_file_number=self._next_file_number,
            last_sequence=self._last_seq,
            log_number=log_number,
            levels=levels,
        )
        write_manifest(self._fs, self._dir, state)
        self._log_number = log_number
        self._version = self._versions.track(Version(levels, self._tables))

    def _delete_obsolete_files(self) -> None:
        """Remove replaced SSTables that no Version still referenced can read."""
        if not self._obsolete:
            return
        deletable = self._obsolete - self._versions.live_file_numbers()
        for number in deletable:
            self._tables.evict(number)
            self._fs.remove(os.path.join(self._dir, sstable_name(number)))
        self._obsolete -= deletable

    # ------------------------------------------------------------- everysec

    def _sync_loop(self) -> None:
        while not self._stop_sync.wait(1.0):
            try:
                self._sync_wal()
            except BaseException as exc:
                with self._mutex:
                    self._set_bg_error(exc)
                return

    def _sync_wal(self) -> None:
        # Under the lock `_wal` is never a closed file: rotation swaps it under the
        # same lock, and close() stops this thread before closing the WAL.
        with self._wal_sync_lock:
            wal = self._wal
            size = wal.size
            if size == self._wal_synced_size:
                return
            wal.sync()
            self._wal_synced_size = size

    # ---------------------------------------------------------------- close

    def close(self) -> None:
        with self._mutex:
            if self._closed or self._closing:
                return
            self._closing = True
            self._work_cv.notify_all()
        for thread in self._bg_threads:
            thread.join()
        for executor in (self._flusher, self._compactor):
            executor.stop()
        self._stop_sync.set()
        if self._sync_thread is not None:
            self._sync_thread.join()
        try:
            with self._wal_sync_lock:
                try:
                    if self._bg_error is None:
                        self._wal.sync()
                finally:
                    self._wal.close()
            with self._mutex:
                self._delete_obsolete_files()
        finally:
            self._closed = True
            self._tables.close()
            self._lock_file.release()

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict:
        """Counters and shape; count and key/value bytes come from a snapshot scan, O(n)."""
        count = key_bytes = value_bytes = 0
        for key, value in self.scan(None, None, False):
            count += 1
            key_bytes += len(key)
            value_bytes += len(value)
        with self._mutex:
            levels = self._version.levels
            memtables = [self._mem] + self._imms
            counters = dict(self._counters)
            wal_bytes = counters["wal_bytes_retired"] + self._wal.size
            written = wal_bytes + counters["flush_bytes"] + counters["compaction_bytes"]
            memtable_memory = sum(m.memory_bytes() for m in memtables)
            block_cache = self._block_cache.stats()
            return {
                "engine": self.name,
                "fsync": self._options.fsync,
                "count": count,
                "key_bytes": key_bytes,
                "value_bytes": value_bytes,
                # Measured: the MemTables' objects by sys.getsizeof and the cached blocks.
                # SSTable indexes and filters are read through mmap: page cache, not heap.
                "memory_bytes": memtable_memory + block_cache["size_bytes"],
                "sequence": self._last_seq,
                "memtable_bytes": sum(m.approximate_bytes for m in memtables),
                "memtable_entries": sum(len(m) for m in memtables),
                "immutable_memtables": len(self._imms),
                "files_per_level": [len(level) for level in levels],
                "bytes_per_level": [sum(f.size for f in level) for level in levels],
                "compaction_scores": [round(s, 3) for s in compaction_scores(levels, self._options)],
                "flushes": counters["flushes"],
                "compactions": counters["compactions"],
                "trivial_moves": counters["trivial_moves"],
                "write_stalls": counters["write_stalls"],
                "writes": counters["writes"],
                "write_groups": counters["write_groups"],
                "bytes_written": {
                    "wal": wal_bytes,
                    "flush": counters["flush_bytes"],
                    "compaction": counters["compaction_bytes"],
                },
                # Logical bytes: the WAL payloads (keys + values + ~8 bytes of framing per
                # entry), counted once; amplification is everything written over that.
                "logical_bytes_written": counters["logical_bytes"],
                "write_amplification": round(written / counters["logical_bytes"], 3) if counters["logical_bytes"] else 0.0,
                "live_snapshots": len(self._snapshots),
                "obsolete_files_pending": len(self._obsolete),
                "block_cache": block_cache,
                "read_only": self._bg_error is not None,
                "background_error": str(self._bg_error) if self._bg_error is not None else None,
                "recovery": dict(self.recovery),
                "workers": {
                    role: worker
                    for role, executor in (("flush", self._flusher), ("compaction", self._compactor))
                    if (worker := executor.worker_stats()) is not None
                },
            }


class _SnapshotHandle:
    """Lives exactly as long as a scan iterator; its finalizer releases the snapshot."""

    __slots__ = ("__weakref__",)
