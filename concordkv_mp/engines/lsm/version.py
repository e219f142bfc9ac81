"""Versions: immutable snapshots of which SSTables are live, per level, and reads over them.

A `Version` never changes once built; the engine installs a new one after each flush
or compaction. Readers (point gets, scan iterators) hold the Version they started
with, and `VersionSet.live_file_numbers()` — the union over every Version still
referenced — is what keeps a file from being deleted while something may read it.

`TableCache` owns the open SSTableReaders (one mmap each), shared by all Versions.
This module reads files only through SSTableReader; it never writes.
"""

from __future__ import annotations

import bisect
import os
import threading
import weakref

from concordkv_mp.engines.lsm.file_meta import FileMeta, sstable_name
from concordkv_mp.engines.lsm.iterators import level_source
from concordkv_mp.engines.lsm.sstable_reader import SSTableReader

NUM_LEVELS = 7


class TableCache:
    """Open readers by file number; opening is lazy, closing happens on eviction."""

    def __init__(self, fs, directory: str, block_cache):
        self._fs = fs
        self._directory = directory
        self._block_cache = block_cache
        self._readers: dict[int, SSTableReader] = {}
        self._lock = threading.Lock()

    def reader(self, number: int) -> SSTableReader:
        reader = self._readers.get(number)
        if reader is None:
            with self._lock:
                reader = self._readers.get(number)
                if reader is None:
                    path = os.path.join(self._directory, sstable_name(number))
                    reader = SSTableReader.open(self._fs, path, number, self._block_cache)
                    self._readers[number] = reader
        return reader

    def evict(self, number: int) -> None:
        """Forget a deleted file; readers still iterating keep their own reference.

        Its cached blocks go now (safe while iterators run): under LFU a once-hot
        block of a dead file would otherwise never be evicted.
        """
        with self._lock:
            reader = self._readers.pop(number, None)
        if reader is not None:
            reader.drop_cached_blocks()

    def close(self) -> None:
        with self._lock:
            readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            reader.close()


class Version:
    """The live files per level. L0 is ordered newest first; L1+ by smallest key."""

    __slots__ = ("levels", "_tables", "_level_largest", "__weakref__")

    def __init__(self, levels: list[list[FileMeta]], tables: TableCache):
        self.levels = [tuple(level) for level in levels]
        self._tables = tables
        # For a binary search of the one file per sorted level that may hold a key.
        self._level_largest = [[f.largest for f in level] for level in self.levels]

    def file_numbers(self) -> set[int]:
        return {f.number for level in self.levels for f in level}

    def get(self, key: bytes, snapshot: int | None = None):
        """Newest version of `key` at `snapshot` in the SSTables: (seq, value) or None."""
        tables = self._tables
        for meta in self.levels[0]:
            if meta.smallest <= key <= meta.largest:
                found = tables.reader(meta.number).get(key, snapshot)
                if found is not None:
                    return found
        for level in range(1, NUM_LEVELS):
            files = self.levels[level]
            if not files:
                continue
            index = bisect.bisect_left(self._level_largest[level], key)
            if index < len(files) and files[index].smallest <= key:
                found = tables.reader(files[index].number).get(key, snapshot)
                if found is not None:
                    return found
        return None

    def sources(self, start: bytes | None, reverse: bool) -> list:
        """One sorted source per L0 file (newest first) and one per non-empty level."""
        tables = self._tables
        result = [tables.reader(meta.number).iter_from(start, reverse) for meta in self.levels[0]]
        for level in range(1, NUM_LEVELS):
            if self.levels[level]:
                readers = [tables.reader(meta.number) for meta in self.levels[level]]
                result.append(level_source(readers, start, reverse))
        return result

    def level_bytes(self, level: int) -> int:
        return sum(f.size for f in self.levels[level])


class VersionSet:
    """Tracks every Version still referenced so obsolete files are deleted safely."""

    def __init__(self):
        self._live = weakref.WeakSet()

    def track(self, version: Version) -> Version:
        self._live.add(version)
        return version

    def live_file_numbers(self) -> set[int]:
        numbers: set[int] = set()
        for version in list(self._live):
            numbers |= version.file_numbers()
        return numbers
