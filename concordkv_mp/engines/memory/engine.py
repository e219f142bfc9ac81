"""`MemoryEngine`: one in-memory index (B+tree, red-black tree, hash table or sorted
array) behind the engine interface, made durable by the shared `Journal`.

Owns its index, its journal and the directory they live in (a `LOCK` file keeps other
openers out). The index is a plain single-threaded structure; this class supplies
everything else, once for all four kinds:
- every read and write holds `_mutex` (a B+tree split or a hash-table resize is not
  safe to read halfway), and a batch is applied whole under it, so readers see all of a
  batch or none of it — except `get` on an index that declares `lock_free_get` (the
  B+tree's point-index dict): one key's lookup is atomic anyway, and like the LSM
  engine's lock-free gets, two gets may then straddle a batch being applied;
- writes go to the WAL before the index. With fsync="always" they queue in the shared
  `WriteQueue`, and the leader fsyncs with the mutex released and applies the group only
  then — a reader never sees a write that a crash could still lose. Otherwise an
  uncontended write appends and applies in one hold of the mutex; "everysec" syncs from
  a thread;
- scans are snapshot-consistent through `ScanViews` (pre-images, no copy);
- a snapshot thread writes a snapshot when the WAL since the last one outgrows both
  `snapshot_wal_size` and the data, so recovery time and disk use stay bounded; the WAL
  rotation that fixes the snapshot's point runs as a queued flush request, so no write
  can fall between the rotation and the snapshot's view;
- a failed WAL write, fsync or snapshot makes the engine read-only (fail-stop), like
  the LSM engine: nothing unacknowledged is counted and reopening recovers.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from concordkv_mp.engines.memory.journal import Journal
from concordkv_mp.engines.memory.scan_views import ScanViews, read_chunks
from concordkv_mp.engines.write_queue import QueuedWrites, Writer, WriteQueue
from concordkv_mp.errors import ClosedError, ReadOnlyError

# sys.getsizeof(b"") : a bytes object of n bytes takes exactly this plus n (CPython).
_BYTES_OBJECT_OVERHEAD = sys.getsizeof(b"")


class MemoryEngine(QueuedWrites):
    def __init__(self, directory: str, options, fs, index):
        fs.make_dirs(directory)
        self._lock_file = fs.lock(os.path.join(directory, "LOCK"))
        try:
            started = time.perf_counter()
            self._journal, recovered = Journal.open(fs, directory, options)
            self._index = index
            self.name = index.name
            self._options = options
            self._always_sync = options.fsync == "always"
            self._mutex = threading.Lock()
            self._queue = WriteQueue(self._mutex)
            self._views = ScanViews()
            index.load_sorted(recovered.keys, recovered.values)
            self._key_bytes = sum(map(len, recovered.keys))
            self._value_bytes = sum(map(len, recovered.values))
            self._last_seq = recovered.last_sequence
            replayed = 0
            for first_seq, pairs in recovered.batches:
                self._apply(pairs)
                self._last_seq = first_seq + len(pairs) - 1
                replayed += 1
            self._bg_error: BaseException | None = None
            self._closed = False
            self._snapshot_lock = threading.Lock()  # one snapshot at a time
            self._snapshot_wanted = threading.Event()
            self._stop = threading.Event()
            self._counters = {"snapshots": 0, "snapshot_pairs": 0, "snapshot_seconds": 0.0, "writes": 0, "write_groups": 0}
            self.recovery = {
                "snapshot": recovered.snapshot_number,
                "snapshot_pairs": len(recovered.keys),
                "replayed_records": replayed,
                "torn_tail": recovered.torn_tail,
                "stopped_at": str(recovered.stopped_at) if recovered.stopped_at else None,
                "seconds": round(time.perf_counter() - started, 3),
            }
            if recovered.stopped_at is not None:
                # Recovery stopped at damage: fix this state now, or the segments after
                # the damage would be replayed at the next open.
                self._take_snapshot()
        except BaseException:
            self._lock_file.release()
            raise
        if getattr(index, "lock_free_get", False):
            self.get = index.get  # close() removes it, and get() checks again
        self._threads = [threading.Thread(target=self._snapshot_loop, name=f"ckv-{self.name}-snapshot", daemon=True)]
        if options.fsync == "everysec":
            self._threads.append(threading.Thread(target=self._sync_loop, name=f"ckv-{self.name}-wal-sync", daemon=True))
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        with self._mutex:
            if self._closed:
                raise ClosedError("the database is closed")
            return self._index.get(key)

    def scan(self, start: bytes | None, end: bytes | None, reverse: bool):
        """Iterator of (key, value) in [start, end) at the state of this call."""
        with self._mutex:
            self._check_open()
            view = self._views.open(start, end)
        return self._pairs(read_chunks(view, self._index, self._mutex, reverse, self._check_open))

    @staticmethod
    def _pairs(chunks):
        for chunk in chunks:
            yield from chunk

    def count(self) -> int:
        with self._mutex:
            self._check_open()
            return len(self._index)

    # ----------------------------------------------------------------- writes

    def write(self, pairs) -> None:
        """Apply [(key, value | None)] atomically; None deletes. Keys may repeat (last wins)."""
        with self._mutex:
            if not self._queue and not self._always_sync and self._bg_error is None and not self._closed:
                self._log_and_apply(pairs)
                return
        self._commit(Writer(pairs))

    def _commit(self, writer: Writer):
        with self._mutex:
            self._check_writable()
            return self._queue.commit(writer, self._lead_group)

    def _lead_group(self, leader: Writer) -> None:
        """Run by the writer at the head of the queue, holding the mutex."""
        self._check_writable()
        if leader.flush:
            # The snapshot's point: everything before the new segment, nothing after.
            try:
                number = self._journal.rotate()
            except BaseException as exc:
                self._fail(exc)
                raise
            leader.result = (number, self._last_seq, self._views.open(None, None))
        pairs = self._queue.gather(self._index.get)
        if not pairs:
            return
        if not self._always_sync:
            self._log_and_apply(pairs)
            return
        first_seq = self._last_seq + 1
        # Let the next writers queue up during the fsync: they share the next one.
        self._mutex.release()
        try:
            self._journal.append(first_seq, pairs)
            self._journal.sync()
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            self._mutex.acquire()
        self._apply_logged(first_seq, pairs)

    def _log_and_apply(self, pairs) -> None:
        first_seq = self._last_seq + 1
        try:
            self._journal.append(first_seq, pairs)
        except BaseException as exc:
            self._fail(exc)
            raise
        self._apply_logged(first_seq, pairs)

    def _apply_logged(self, first_seq: int, pairs) -> None:
        if self._views:
            self._views.save_pre_images(pairs, self._index.get)
        self._apply(pairs)
        self._last_seq = first_seq + len(pairs) - 1
        counters = self._counters
        counters["writes"] += len(pairs)
        counters["write_groups"] += 1
        wal_bytes = self._journal.wal_bytes
        if (
            wal_bytes >= self._options.snapshot_wal_size
            and wal_bytes >= self._key_bytes + self._value_bytes
            and not self._snapshot_wanted.is_set()
        ):
            self._snapshot_wanted.set()

    def _apply(self, pairs) -> None:
        index = self._index
        key_bytes = value_bytes = 0
        for key, value in pairs:
            if value is None:
                old = index.remove(key)
                if old is not None:
                    key_bytes -= len(key)
                    value_bytes -= len(old)
            else:
                old = index.put(key, value)
                if old is None:
                    key_bytes += len(key)
                    value_bytes += len(value)
                else:
                    value_bytes += len(value) - len(old)
        self._key_bytes += key_bytes
        self._value_bytes += value_bytes

    def _fail(self, exc: BaseException) -> None:
        """Fail-stop: the first I/O failure makes the engine read-only (see the docstring)."""
        if self._bg_error is None:
            self._bg_error = exc

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the database is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._bg_error is not None:
            raise ReadOnlyError(f"the database is read-only after an I/O failure: {self._bg_error}")

    # -------------------------------------------------------------- snapshots

    def flush(self) -> None:
        """Write a snapshot of the current state and wait until it is durable."""
        self._take_snapshot()

    def compact(self) -> None:
        """A snapshot, which also deletes the WAL segments it replaces."""
        self._take_snapshot()

    def _take_snapshot(self) -> None:
        with self._snapshot_lock:
            self._snapshot_wanted.clear()
            started = time.perf_counter()
            with self._mutex:
                self._check_writable()
                number, last_seq, view = self._queue.commit(Writer([], flush=True), self._lead_group)
            chunks = read_chunks(view, self._index, self._mutex, False, self._check_open)
            meta = {"engine": self.name, "last_sequence": last_seq}
            try:
                count = self._journal.write_snapshot(number, meta, chunks, self._stop.is_set)
            except BaseException as exc:
                with self._mutex:
                    self._fail(exc)
                raise
            if count >= 0:
                counters = self._counters
                counters["snapshots"] += 1
                counters["snapshot_pairs"] = count
                counters["snapshot_seconds"] = round(time.perf_counter() - started, 3)

    def _snapshot_loop(self) -> None:
        # close() sets _stop before _snapshot_wanted, and a snapshot clears the latter when
        # it starts: testing _stop after every snapshot is what makes close() never wait on
        # a thread that went back to sleep.
        while not self._stop.is_set():
            self._snapshot_wanted.wait()
            if self._stop.is_set():
                return
            try:
                self._take_snapshot()
            except BaseException:  # fail-stop: _take_snapshot made the engine read-only
                return

    def _sync_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._journal.sync()
            except BaseException as exc:
                with self._mutex:
                    self._fail(exc)
                return

    # ---------------------------------------------------------------- close

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
        # An unfinished snapshot stops at its next chunk and is discarded; the WAL still
        # holds everything it would have covered.
        self._stop.set()
        self._snapshot_wanted.set()
        for thread in self._threads:
            thread.join()
        with self._snapshot_lock, self._mutex:
            if self._closed:
                return
            self._closed = True
            self.__dict__.pop("get", None)
            try:
                self._journal.close(sync=self._bg_error is None)
            finally:
                self._lock_file.release()

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict:
        with self._mutex:
            index = self._index
            count = len(index)
            container_bytes = index.container_bytes()
            counters = dict(self._counters)
            return {
                "engine": self.name,
                "fsync": self._options.fsync,
                "count": count,
                "key_bytes": self._key_bytes,
                "value_bytes": self._value_bytes,
                # Measured: the structure's own objects by sys.getsizeof, plus the key and
                # value bytes objects, whose size CPython defines exactly.
                "memory_bytes": container_bytes + 2 * count * _BYTES_OBJECT_OVERHEAD + self._key_bytes + self._value_bytes,
                "structure_bytes": container_bytes,
                "structure": index.structure_stats(),
                "sequence": self._last_seq,
                "writes": counters["writes"],
                "write_groups": counters["write_groups"],
                "wal_bytes_since_snapshot": self._journal.wal_bytes,
                "snapshots": counters["snapshots"],
                "last_snapshot_pairs": counters["snapshot_pairs"],
                "last_snapshot_seconds": counters["snapshot_seconds"],
                "live_snapshots": len(self._views),
                "read_only": self._bg_error is not None,
                "background_error": str(self._bg_error) if self._bg_error is not None else None,
                "recovery": dict(self.recovery),
            }
