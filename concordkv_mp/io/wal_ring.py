"""`WalRing`: the shared-memory byte ring through which a partition hands its WAL bytes
to the I/O optimizer; `RingWriter`, the partition's (producer's) side of it, and
`RingReader`, the optimizer's (consumer's) side.

Single producer (one partition process), single consumer (the I/O optimizer). The ring
is a regular file — under /dev/shm in the server — mapped MAP_SHARED by both, not
`multiprocessing.shared_memory`, whose resource tracker unlinks a segment when the
child that created it exits. Everything the consumer needs to continue after a SIGKILL
is in the file: the positions, and a table of the paths of the files still referenced
by unconsumed records (the OPEN record itself may already be consumed when a restarted
consumer meets a DATA record). Positions are byte counters that only grow; the ring
offset of position p is p % capacity. They are the WAL's durable sequence numbers:
`durable_pos` says "every record before this byte is fsynced".

Ordering: the producer writes a record's bytes, then stores `write_pos`; the consumer
pwrites what it read, then stores `read_pos`. Each field is an aligned 8-byte store
through a memoryview cast to "Q" (a single mov), which x86-64 makes atomic and keeps in
program order for other cores (TSO). A weakly ordered CPU (ARM) would need fences that
Python cannot express: this module assumes x86-64.

Each header field has one writer: the producer's line (write_pos, sync_request_pos,
next_file_id, producer_start_pos, the file table) or the consumer's (read_pos and
everything after it). Only `RingWriter` stores the producer's words and only
`RingReader` the consumer's; `WalRing` reads them all. `RingWriter`'s record-emitting
methods (open_file, append, close_file) must be serialized by the caller, like any
single-producer ring; the waits (`wait_durable`, `wait_drained`) and `request_durable`
may run on any thread. `RingReader` is used by one thread.

This module owns the ring's bytes (layout below, documented in docs/formats.md) and
both sides' protocols over them. It does no file I/O on WAL files: the I/O optimizer
(server/io_optimizer.py) does, through a reader per ring, and `ring_fs.py` adapts a
writer to the FileSystem seam.

Layout (all integers little-endian u64 unless said otherwise):

    header, 4096 bytes, u64 words (index: meaning):
      0 magic b"CKVRING\\0"        1 format version (1)
      2 capacity (data area bytes, a power of two)
      3 data offset (from the start of the file)
      4 file-table slots          5 slot size (bytes)
      producer, 64-byte line 8..15:
      8 write_pos                 9 sync_request_pos
      10 next_file_id (the last id handed out)
      11 producer_start_pos (write_pos when the current producer attached)
      consumer, 64-byte lines 16..31:
      16 read_pos (everything before it is pwritten)
      17 durable_pos (everything before it is fdatasynced)
      18 error_errno (0 = none)
      19 error_pos (the failure concerns bytes before it: the end of the record
         whose write failed, or read_pos when an fdatasync failed)
      20 error_file_id            21 bytes_written   22 fsyncs
      23 write_batches (rounds that wrote something)  24 records (consumed, not PAD)
    file table, SLOTS x SLOT_SIZE bytes from offset 4096, one slot per file:
      u64 file_id (0 = never used), u64 close_pos (0 = open; else the position just
      after its CLOSE record: free once read_pos reaches it), u64 path length,
      path bytes (os.fsencode)
    data area, `capacity` bytes from the data offset: records, each 8-byte aligned:
      u16 kind, u16 zero, u32 payload length, u64 file_id, u64 file offset, payload
      kinds: 1 OPEN (payload: path), 2 DATA (payload: bytes to write at the file
      offset), 3 CLOSE, 4 PAD (skip to the end of the data area). Fewer than 24 bytes
      before the end of the data area are skipped without a PAD record.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading
import time
from typing import Callable, Iterator

from concordkv_mp.errors import CorruptionError, InvalidArgumentError, StorageIOError, UnsupportedFormatError
from concordkv_mp.io.oserrors import as_storage_error

# On-disk (in shared memory, read by another process): do not change.
MAGIC = b"CKVRING\0"
FORMAT_VERSION = 1
HEADER_SIZE = 4096
SLOTS = 16
SLOT_SIZE = 1024
_SLOT_WORDS = SLOT_SIZE // 8
_SLOT_FIELDS = 3  # file_id, close_pos, path length
MAX_PATH_BYTES = SLOT_SIZE - 8 * _SLOT_FIELDS
DATA_OFFSET = HEADER_SIZE + SLOTS * SLOT_SIZE

# Header word indexes: private, so that the stores stay in RingWriter and RingReader.
_VERSION, _CAPACITY, _DATA_OFFSET, _SLOTS, _SLOT_SIZE = range(1, 6)  # 0: the magic
_WRITE_POS, _SYNC_REQUEST_POS, _NEXT_FILE_ID, _PRODUCER_START_POS = 8, 9, 10, 11
_READ_POS, _DURABLE_POS, _ERROR_ERRNO, _ERROR_POS, _ERROR_FILE_ID = 16, 17, 18, 19, 20
_BYTES_WRITTEN, _FSYNCS, _WRITE_BATCHES, _RECORDS = 21, 22, 23, 24

OPEN, DATA, CLOSE, PAD = 1, 2, 3, 4
RECORD_HEADER = struct.Struct("<HHIQQ")  # kind, zero, payload length, file_id, file offset
RECORD_HEADER_SIZE = RECORD_HEADER.size
_HEADER_PLUS_7 = RECORD_HEADER_SIZE + 7  # for rounding a record's size up to 8

# An OPEN record with the longest path must fit in a quarter of the ring (below).
MIN_CAPACITY = 1 << 13
MAX_CAPACITY = 1 << 40

# Waiting producers kick the consumer again this often (a kick may be lost while the
# consumer restarts), and spin with sched_yield this long before sleeping: a sleep
# costs ~70 µs on Linux (timer slack), as much as an fdatasync on a fast disk.
# Measured append+sync under fsync="always" (fdatasync alone: ~120 µs): p50 ~330 µs
# with a 0.2 ms spin, ~200 µs with 1 ms; 4 producers on 2 cores also did better with
# 1 ms than with no spin (sched_yield lets the optimizer run).
_REKICK_INTERVAL = 0.01
_SPIN_SECONDS = 0.001
_MAX_SLEEP = 0.001


def _record_size(payload_length: int) -> int:
    """Bytes a record with this payload takes in the ring (inlined on the hot paths)."""
    return (_HEADER_PLUS_7 + payload_length) & -8


def _header_word(index: int) -> property:
    """A read-only property for header word `index` of an object's `_fields` (as fast
    as a hand-written one)."""
    return property(lambda owner: owner._fields[index])


class WalRing:
    """The mapping of one ring file: header words, file table, data area.

    Its properties and methods read the header words and the file table; after
    `create`, the stores into them belong to `RingWriter` (the producer's words, the
    file table) and `RingReader` (the consumer's words) alone."""

    def __init__(self, path: str, fd: int, mapping: mmap.mmap):
        self.path = path
        self._fd = fd
        self._map = mapping
        self._fields = memoryview(mapping)[:HEADER_SIZE].cast("Q")
        self.capacity = self._fields[_CAPACITY]
        self._table = memoryview(mapping)[HEADER_SIZE:DATA_OFFSET]
        self._table_words = self._table.cast("Q")
        self.data = memoryview(mapping)[DATA_OFFSET : DATA_OFFSET + self.capacity]

    @classmethod
    def create(cls, path: str, capacity: int) -> "WalRing":
        """Create a new ring file (it must not exist) with a data area of `capacity` bytes."""
        if capacity < MIN_CAPACITY or capacity > MAX_CAPACITY or capacity & (capacity - 1):
            raise InvalidArgumentError(
                f"ring capacity must be a power of two in [{MIN_CAPACITY}, {MAX_CAPACITY}], not {capacity}"
            )
        with as_storage_error("create", path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with as_storage_error("allocate", path):
                # Allocated now, not on first touch: a full tmpfs must be an error
                # here, not a SIGBUS on a producer's store.
                os.posix_fallocate(fd, 0, DATA_OFFSET + capacity)
                mapping = mmap.mmap(fd, DATA_OFFSET + capacity, flags=mmap.MAP_SHARED)
            words = memoryview(mapping)[:HEADER_SIZE].cast("Q")
            words[_VERSION] = FORMAT_VERSION
            words[_CAPACITY] = capacity
            words[_DATA_OFFSET] = DATA_OFFSET
            words[_SLOTS] = SLOTS
            words[_SLOT_SIZE] = SLOT_SIZE
            words.release()
            # The magic last: a ring whose creation was interrupted does not attach.
            mapping[0:8] = MAGIC
        except BaseException:
            os.close(fd)
            os.remove(path)
            raise
        return cls(path, fd, mapping)

    @classmethod
    def attach(cls, path: str) -> "WalRing":
        """Map an existing ring; raises UnsupportedFormatError or CorruptionError if it
        is not a ring this release can use."""
        with as_storage_error("open", path):
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            with as_storage_error("map", path):
                size = os.fstat(fd).st_size
                if size < HEADER_SIZE:
                    raise CorruptionError(path, f"ring file of {size} bytes is shorter than its header")
                head = os.pread(fd, 8 * 6, 0)
            if head[:8] != MAGIC:
                raise UnsupportedFormatError(path, f"not a WAL ring (starts with {head[:8]!r})")
            version, capacity, data_offset, slots, slot_size = struct.unpack_from("<5Q", head, 8)
            if version != FORMAT_VERSION:
                raise UnsupportedFormatError(path, f"WAL ring format version {version} is not supported")
            if (data_offset, slots, slot_size) != (DATA_OFFSET, SLOTS, SLOT_SIZE) or (
                capacity < MIN_CAPACITY or capacity & (capacity - 1) or size != DATA_OFFSET + capacity
            ):
                raise CorruptionError(
                    path, f"bad ring geometry: capacity {capacity}, data offset {data_offset}, file size {size}"
                )
            with as_storage_error("map", path):
                mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mapping)

    def close(self) -> None:
        """Unmap. Views into the ring (record payloads) must be released first."""
        if self._fd < 0:
            return
        for view in (self._fields, self._table_words, self._table, self.data):
            view.release()
        self._map.close()
        os.close(self._fd)
        self._fd = -1

    # Positions and counters, for STATUS and tests (any process may read them; the
    # front reads the counters by name).
    write_pos = _header_word(_WRITE_POS)
    read_pos = _header_word(_READ_POS)
    durable_pos = _header_word(_DURABLE_POS)
    error_errno = _header_word(_ERROR_ERRNO)
    bytes_written = _header_word(_BYTES_WRITTEN)
    fsyncs = _header_word(_FSYNCS)
    write_batches = _header_word(_WRITE_BATCHES)
    records_consumed = _header_word(_RECORDS)

    # ------------------------------------------------------------ file table

    def slot_file_id(self, slot: int) -> int:
        return self._table_words[slot * _SLOT_WORDS]

    def slot_close_pos(self, slot: int) -> int:
        return self._table_words[slot * _SLOT_WORDS + 1]


class RingWriter:
    """The producer's side of one ring: emits OPEN/DATA/CLOSE records, never overwrites
    unconsumed bytes, and waits for the consumer's positions.

    `wake()` kicks the consumer; it must not block (a PUSH socket sending with NOBLOCK).
    The writer calls it under a lock of its own, so a socket used by no one else needs
    none: engines sync from background threads too (the memory engines' snapshot
    thread leads a WAL rotation).
    Attaching makes this writer the ring's producer: it records its start position (the
    consumer then forgets an error of the previous incarnation, whose bytes are dead) and
    closes the files the previous one left open, so their slots free up.
    """

    def __init__(self, ring: WalRing, wake: Callable[[], None]):
        self._ring = ring
        wake_lock = threading.Lock()

        def locked_wake() -> None:
            with wake_lock:
                wake()

        self._wake = locked_wake
        self._fields = ring._fields
        self._data = ring.data
        self._capacity = ring.capacity
        self._mask = ring.capacity - 1
        # Splitting DATA at a quarter of the ring keeps any record placeable in an
        # empty ring even after a PAD.
        self._max_payload = ring.capacity // 4 - RECORD_HEADER_SIZE
        self._pack_header = RECORD_HEADER.pack_into
        self._pos = self._fields[_WRITE_POS]
        self.start_pos = self._pos
        self._fields[_PRODUCER_START_POS] = self._pos
        # Appends ending at or before `_limit` take the fast path: `_emit` sets it to
        # the lower of `_read_limit` (set by _refresh from read_pos, below) and the end
        # of the current lap of the ring (a record never wraps).
        self._read_limit = 0
        self._limit = 0
        self._kicked_at = -1
        self._request_lock = threading.Lock()
        self._slots: dict[int, int] = {}  # file_id -> slot, for the files this writer opened
        self._paths: dict[int, str] = {}
        for slot in range(SLOTS):
            file_id = ring.slot_file_id(slot)
            close_pos = ring.slot_close_pos(slot)
            # close_pos beyond write_pos: the old producer died between setting it and
            # publishing its CLOSE; the record is gone.
            if file_id and (close_pos == 0 or close_pos > self.start_pos):
                self._slots[file_id] = slot
                self.close_file(file_id)

    @property
    def position(self) -> int:
        """write_pos: the position just after the last record emitted."""
        return self._pos

    # ------------------------------------------------------------ records

    def open_file(self, path: str) -> int:
        """Emit OPEN for `path` (which the caller created) and return its new file id."""
        encoded = os.fsencode(path)
        if len(encoded) > MAX_PATH_BYTES:
            raise StorageIOError(errno.ENAMETOOLONG, f"{path}: longer than the ring's {MAX_PATH_BYTES}-byte path slots")
        slot = self._free_slot()
        file_id = self._fields[_NEXT_FILE_ID] + 1
        # Published before use: a restarted producer never hands out an id that
        # unconsumed records still carry.
        self._fields[_NEXT_FILE_ID] = file_id
        self._fill_slot(slot, file_id, encoded)
        self._slots[file_id] = slot
        self._paths[file_id] = path
        self._emit(OPEN, file_id, 0, encoded)
        return file_id

    def append(self, file_id: int, offset: int, data) -> None:
        """Emit DATA: `data` goes to byte `offset` of the file. The write path's hot
        spot: one comparison, one header pack, one slice copy, one store of write_pos.
        DATA that must wait for space is split into quarter-ring records, so that each
        piece fits in an empty ring."""
        n = len(data)
        pos = self._pos
        end = pos + ((_HEADER_PLUS_7 + n) & -8)
        if end <= self._limit:
            rel = pos & self._mask
            data_area = self._data
            self._pack_header(data_area, rel, DATA, 0, n, file_id, offset)
            data_area[rel + RECORD_HEADER_SIZE : rel + RECORD_HEADER_SIZE + n] = data
            self._pos = end
            self._fields[_WRITE_POS] = end
            return
        view = memoryview(data)
        for chunk_start in range(0, max(n, 1), self._max_payload):
            self._emit(DATA, file_id, offset + chunk_start, view[chunk_start : chunk_start + self._max_payload])

    def close_file(self, file_id: int) -> None:
        """Emit CLOSE; the slot frees once the consumer has read past it."""
        self._emit(CLOSE, file_id, 0, b"")
        # After publishing the CLOSE: until then the slot must read as open.
        self._ring._table_words[self._slots.pop(file_id) * _SLOT_WORDS + 1] = self._pos
        self._paths.pop(file_id, None)

    def _emit(self, kind: int, file_id: int, offset: int, payload) -> None:
        length = len(payload)
        size = _record_size(length)
        pos = self._pos
        rel = pos & self._mask
        tail = self._capacity - rel
        pad = tail if tail < size else 0
        self._wait_for_space(pos + pad + size)
        if pad:
            if pad >= RECORD_HEADER_SIZE:
                self._pack_header(self._data, rel, PAD, 0, pad - RECORD_HEADER_SIZE, 0, 0)
            pos += pad
            rel = 0
        self._pack_header(self._data, rel, kind, 0, length, file_id, offset)
        self._data[rel + RECORD_HEADER_SIZE : rel + RECORD_HEADER_SIZE + length] = payload
        pos += size
        self._pos = pos
        self._fields[_WRITE_POS] = pos  # the PAD, if any, is published with it
        # The fast path's limit moves only here: the pos (and with it the end of the lap)
        # has moved, and _read_limit may have grown while waiting for space.
        self._limit = min(self._read_limit, (pos & ~self._mask) + self._capacity)

    def _refresh(self, end: int) -> int:
        """Re-read read_pos and set `_read_limit` (`_emit` then derives the fast-path
        limit from it); returns the hard limit.

        Below half full appends run without reading shared memory; past half full the
        consumer is kicked once per progress it makes (under fsync="everysec"/"none"
        nothing else would wake it before its idle timeout), and appends fill the rest."""
        read = self._fields[_READ_POS]
        half = read + self._capacity // 2
        if end <= half:
            self._read_limit = half
        else:
            self._read_limit = read + self._capacity
            if read != self._kicked_at:
                self._kicked_at = read
                self._wake()
        return read + self._capacity

    def _wait_for_space(self, end: int) -> None:
        if end <= self._read_limit or end <= self._refresh(end):
            return
        self._wait(lambda: end <= self._refresh(end), None, "free space in the ring")

    def _fill_slot(self, slot: int, file_id: int, encoded_path: bytes) -> None:
        """The file id last, so that a reader never sees the id with another file's path."""
        table, words = self._ring._table, self._ring._table_words
        base = slot * _SLOT_WORDS
        start = slot * SLOT_SIZE + 8 * _SLOT_FIELDS
        table[start : start + len(encoded_path)] = encoded_path
        words[base + 2] = len(encoded_path)
        words[base + 1] = 0
        words[base] = file_id

    def _free_slot(self) -> int:
        if len(self._slots) == SLOTS:  # all held by our own open files: waiting cannot help
            raise StorageIOError(errno.EMFILE, f"{self._ring.path}: {SLOTS} ring files are open already")
        slot = self._find_free_slot()
        if slot is None:
            self._wait(lambda: self._find_free_slot() is not None, None, "a free file slot")
            slot = self._find_free_slot()  # read_pos only grows: still free
        return slot

    def _find_free_slot(self) -> int | None:
        read = self._fields[_READ_POS]
        for slot in range(SLOTS):
            close_pos = self._ring.slot_close_pos(slot)
            if self._ring.slot_file_id(slot) == 0 or 0 < close_pos <= read:
                return slot
        return None

    # ------------------------------------------------------------ positions

    def request_durable(self, pos: int) -> None:
        """Ask the consumer to make everything before `pos` durable, whatever its fsync
        policy, and kick it; does not wait."""
        with self._request_lock:  # max() then store: two threads must not lower it
            if pos > self._fields[_SYNC_REQUEST_POS]:
                self._fields[_SYNC_REQUEST_POS] = pos
        self._wake()

    def wait_durable(self, pos: int) -> None:
        """Block until durable_pos >= pos; StorageIOError if the consumer failed first."""
        if self._fields[_DURABLE_POS] >= pos:
            return
        self.request_durable(pos)
        self._wait(lambda: self._fields[_DURABLE_POS] >= pos, None, "durability")

    def wait_drained(self, timeout: float) -> None:
        """Block until the consumer has read (and pwritten, or dropped after a failure)
        every record emitted so far; StorageIOError(ETIMEDOUT) after `timeout` seconds.

        Ignores write failures: after one, the bytes will never reach their file, and a
        recovering reader wants to know that nothing more is on its way."""
        target = self._pos
        self._wake()
        self._wait(lambda: self._fields[_READ_POS] >= target, time.monotonic() + timeout, "the ring to drain", False)

    def durable_pos(self) -> int:
        """The consumer's durable_pos (every byte before it is fdatasynced), or
        StorageIOError if it failed to write or sync this writer's bytes. Read once per
        turn of a partition's loop: the error word is tested inline."""
        fields = self._fields
        if fields[_ERROR_ERRNO]:
            self.raise_if_failed()
        return fields[_DURABLE_POS]

    def raise_if_failed(self) -> None:
        """StorageIOError if the consumer failed to write or sync this writer's bytes."""
        fields = self._fields
        code = fields[_ERROR_ERRNO]
        # error_pos is read after the errno (the consumer stores it before): an error
        # whose failed round ended at or before our start belongs to a dead producer.
        if code and fields[_ERROR_POS] > self.start_pos:
            file_id = fields[_ERROR_FILE_ID]
            where = self._paths.get(file_id, f"file {file_id}")
            raise StorageIOError(code, f"the I/O optimizer failed to write or fdatasync {where}: {os.strerror(code)}")

    def _wait(self, done: Callable[[], bool], deadline: float | None, what: str, check_errors: bool = True) -> None:
        start = last_kick = time.monotonic()
        sleep = 0.00005
        while not done():
            if check_errors:
                self.raise_if_failed()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise StorageIOError(errno.ETIMEDOUT, f"{self._ring.path}: timed out waiting for {what}")
            if now - last_kick >= _REKICK_INTERVAL:
                last_kick = now
                self._wake()
            if now - start < _SPIN_SECONDS:
                os.sched_yield()
            else:
                time.sleep(sleep)
                sleep = min(2 * sleep, _MAX_SLEEP)


class RingReader:
    """The consumer's side of one ring: reads what the producer published, iterates the
    records, publishes how far they are written (read_pos) and durable (durable_pos),
    records and forgets a failure, and keeps the counters.

    Constructing one makes this process the ring's only consumer: it blocks on an flock
    (released when the ring is closed or the process dies), since two consumers would
    race on read_pos. The consumer being the only writer of its words, `error_errno` is
    a plain attribute kept equal to the header word: the drain loop tests it per record
    without reading shared memory.
    """

    def __init__(self, ring: WalRing):
        fcntl.flock(ring._fd, fcntl.LOCK_EX)
        self._ring = ring
        self._fields = ring._fields
        # Read under the lock: a previous consumer's failure still stands.
        self.error_errno = self._fields[_ERROR_ERRNO]

    # What the producer published.
    write_pos = _header_word(_WRITE_POS)
    sync_request_pos = _header_word(_SYNC_REQUEST_POS)
    producer_start_pos = _header_word(_PRODUCER_START_POS)
    # What this consumer published.
    read_pos = _header_word(_READ_POS)
    durable_pos = _header_word(_DURABLE_POS)

    def published(self) -> tuple[int, int, int]:
        """(read_pos, durable_pos, error_errno), as a producer sees them."""
        f = self._fields
        return f[_READ_POS], f[_DURABLE_POS], f[_ERROR_ERRNO]

    # ------------------------------------------------------------ records

    def records(self, end: int) -> Iterator[tuple[int, int, int, int, int, memoryview]]:
        """The records from read_pos up to position `end`, PAD and skipped tails left
        out, as (position, end position, kind, file_id, file offset, payload view into
        the ring) — plain tuples: the consumer handles a million a second.

        Raises CorruptionError on bytes that are not a record (a bug: the ring is memory
        written by one producer, so there are no torn records to tolerate)."""
        ring = self._ring
        capacity, data, unpack = ring.capacity, ring.data, RECORD_HEADER.unpack_from
        mask = capacity - 1
        pos = self._fields[_READ_POS]
        while pos < end:
            rel = pos & mask
            if capacity - rel < RECORD_HEADER_SIZE:
                pos += capacity - rel
                continue
            kind, zero, length, file_id, offset = unpack(data, rel)
            size = (_HEADER_PLUS_7 + length) & -8  # _record_size(length)
            if not OPEN <= kind <= PAD or zero or rel + size > capacity or pos + size > end:
                raise CorruptionError(ring.path, f"bad ring record at position {pos} (kind {kind}, length {length})")
            if kind != PAD:
                body = rel + RECORD_HEADER_SIZE
                yield pos, pos + size, kind, file_id, offset, data[body : body + length]
            pos += size

    def file_path(self, file_id: int) -> str | None:
        """The path of `file_id` from the file table, None if no slot holds it: how a
        restarted consumer finds a file whose OPEN record its predecessor consumed."""
        table, words = self._ring._table, self._ring._table_words
        for slot in range(SLOTS):
            if words[slot * _SLOT_WORDS] == file_id:
                start = slot * SLOT_SIZE + 8 * _SLOT_FIELDS
                return os.fsdecode(bytes(table[start : start + words[slot * _SLOT_WORDS + 2]]))
        return None

    # ------------------------------------------------------------ positions

    def publish_read(self, pos: int) -> None:
        """Everything before `pos` is written to its file (or dropped after a failure):
        the producer may reuse the space, and the file-table slots CLOSEd before it."""
        self._fields[_READ_POS] = pos

    def publish_durable(self) -> None:
        """Everything read so far is durable: call once the syncs covering it returned."""
        self._fields[_DURABLE_POS] = self._fields[_READ_POS]

    # ------------------------------------------------------------ failures

    def record_failure(self, code: int | None, file_id: int, error_pos: int) -> None:
        """Writing or syncing `file_id` failed with errno `code` (EIO if none); the
        failure concerns the bytes before `error_pos`."""
        f = self._fields
        # The errno last: the producer reads it first, then error_pos (raise_if_failed).
        f[_ERROR_POS] = error_pos
        f[_ERROR_FILE_ID] = file_id
        f[_ERROR_ERRNO] = self.error_errno = code or errno.EIO

    def forget_dead_producer_error(self, pos: int, start_pos: int) -> int:
        """Returns the error that still stands at `pos` (0: none).

        An error whose failed bytes all precede the current producer's start
        (`start_pos`) belongs to a dead producer; it is forgotten once consumption
        reaches the new one's records (the dead one's later DATA stays dropped until
        then)."""
        if self.error_errno and self._fields[_ERROR_POS] <= start_pos <= pos:
            self._fields[_ERROR_ERRNO] = self.error_errno = 0
        return self.error_errno

    # ------------------------------------------------------------ counters

    def count_drained(self, records: int, bytes_written: int) -> None:
        """Count one drain: its records and, if it wrote any, its bytes and a write batch."""
        f = self._fields
        f[_RECORDS] += records
        if bytes_written:
            f[_BYTES_WRITTEN] += bytes_written
            f[_WRITE_BATCHES] += 1

    def count_fsync(self) -> None:
        self._fields[_FSYNCS] += 1
