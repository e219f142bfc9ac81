"""`MappedLogFile`: an append-only log written through a shared memory map.

Appending is a copy into the mapping — no system call — which is the cheapest way
from Python to get bytes into the page cache: they survive the death of the process
(MAP_SHARED pages belong to the file), exactly like a `write(2)`, and reach the disk
on `sync()` (fdatasync, which on Linux covers pages written through a mapping) or
when the kernel writes them back. Measured on the WAL path:
0.15 µs per append against 0.9 µs for `os.write`.

The file is preallocated with `posix_fallocate`, so a full disk shows up as ENOSPC when
the log is created or grown, never as a SIGBUS on a store into a page the file system
cannot back. The unused tail is zeros; readers of the log format must treat zeros as
its end (the WAL does). `close()` trims the file to what was appended.

Owned by whoever created it (the WAL writer); it knows nothing of what it stores.
"""

from __future__ import annotations

import mmap
import os

from concordkv_mp.io.oserrors import as_storage_error

MIN_CAPACITY = 1 << 20


class MappedLogFile:
    def __init__(self, path: str, capacity: int):
        self.path = path
        self.size = 0
        with as_storage_error("create", path):
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._map = None
        self._capacity = 0
        try:
            self._grow(max(capacity, MIN_CAPACITY))
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    def _grow(self, capacity: int) -> None:
        with as_storage_error(f"allocate {capacity} bytes for", self.path):
            os.posix_fallocate(self._fd, 0, capacity)
            # The new length must be durable before data in it can be called synced.
            os.fsync(self._fd)
            if self._map is None:
                self._map = mmap.mmap(self._fd, capacity, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            else:
                self._map.resize(capacity)
        self._capacity = capacity

    def append(self, data) -> None:
        end = self.size + len(data)
        if end > self._capacity:
            self._grow(max(end, 2 * self._capacity))
        self._map[self.size : end] = data
        self.size = end

    def sync(self) -> None:
        # fdatasync, not msync: CPython's mmap.flush() keeps the GIL during msync, which
        # stopped every other thread (and with it group commit) for the whole disk
        # flush; measured 1,934 syncs for 2,000 writes from 4 threads. On Linux the page
        # cache is one: fdatasync writes pages dirtied through the mapping too.
        # It only uses the descriptor, so it is safe while another thread moves the
        # mapping in _grow() (fsync="everysec" syncs from its own thread).
        with as_storage_error("fdatasync", self.path):
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            with as_storage_error("close", self.path):
                self._map.close()
                os.ftruncate(fd, self.size)
        finally:
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0
