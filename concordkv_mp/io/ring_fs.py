"""`RingFileSystem`: the FileSystem seam of a partition in server mode, whose WAL files
are written by the I/O optimizer process from a shared-memory ring (wal_ring.py).

`create_log` differs from `FileSystem`'s: the file is created (empty) here, so that
the engine's directory fsync right after covers it, and its bytes travel through the
ring; the I/O optimizer pwrites them at their offsets and fdatasyncs them. So do the
durability tickets, which are ring positions durable once the optimizer says so, and
`wait_drained`, which a restarted partition calls before recovery. Everything
else — reads, truncation, removal, SSTables, manifests — goes straight to the file
system as before. That is only correct because the engines read a log back (recovery)
after the partition called `wait_drained()`, and truncate or remove one only once it
is closed and synced or drained: a restarted partition must drain the ring before it
recovers. A log file's bytes therefore reach the disk later than `append()` returns, in
another process; `sync()` returns once they are durable there.

Owns the adaptation of a `RingWriter` to the log-file interface; knows nothing of the
ring's bytes or of WAL records.
"""

from __future__ import annotations

from typing import Callable

from concordkv_mp.io.fs import FileSystem
from concordkv_mp.io.wal_ring import RingWriter, WalRing


class RingLogFile:
    """A log file appended through the ring: the interface of `MappedLogFile`."""

    def __init__(self, writer: RingWriter, file_id: int, path: str):
        self.path = path
        self.size = 0
        self._writer = writer
        self._file_id = file_id
        self._closed = False

    def append(self, data) -> None:
        self._writer.append(self._file_id, self.size, data)
        self.size += len(data)

    def sync(self) -> None:
        """Wait until everything appended to the ring so far (this file's bytes and any
        other's) is durable; StorageIOError with the optimizer's errno if it failed."""
        self._writer.wait_durable(self._writer.position)

    def close(self) -> None:
        # Not a sync (the engine syncs first when it needs to): the optimizer keeps the
        # descriptor until its next fdatasync of this ring covers what was written.
        if not self._closed:
            self._closed = True
            self._writer.close_file(self._file_id)

    @property
    def closed(self) -> bool:
        return self._closed


class RingFileSystem(FileSystem):
    """`FileSystem` whose logs go through `ring`; `wake()` kicks the I/O optimizer (it
    must not block — see RingWriter). Constructing it makes this process the ring's
    producer."""

    def __init__(self, ring: WalRing, wake: Callable[[], None]):
        self._writer = RingWriter(ring, wake)

    def create_log(self, path: str, capacity: int) -> RingLogFile:
        """Create (or truncate) `path` and return a log whose appends go through the
        ring. `capacity` is ignored: pwrite needs no preallocation, and a full disk is an
        error of the optimizer's pwrite (reported by `sync()`), not a SIGBUS."""
        self.create(path).close()
        return RingLogFile(self._writer, self._writer.open_file(path), path)

    def durability_ticket(self) -> int:
        """The ring's write_pos: every byte before it is durable once the optimizer's
        durable_pos reaches it."""
        return self._writer.position

    def request_durability(self, ticket: int) -> None:
        """Ask the optimizer for durability up to `ticket` and kick it, without waiting
        (a partition's loop goes on serving and holds the replies meanwhile)."""
        self._writer.request_durable(ticket)

    def durable_through(self) -> int:
        return self._writer.durable_pos()

    def wait_drained(self, timeout: float) -> None:
        """Block until the optimizer has consumed every record in the ring; call before
        reading any log file back. StorageIOError(ETIMEDOUT) after `timeout` seconds."""
        self._writer.wait_drained(timeout)
