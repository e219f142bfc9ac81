"""`SSTableReader`: point lookups and ordered scans over one immutable table file.

The file is mapped read-only through the `FileSystem` seam and never written. At open
everything except the data blocks is verified (footer, bloom, index, properties) and
kept: the index as zero-copy numpy views of the map plus a Python list of block last
keys, the bloom bits as a view. Data blocks are CRC-checked each time they are read
from the map, decoded into `[keys, seqs, values]` lists, and shared through the
database's `BlockCache`; cached blocks are never mutated, so threads may share them.

It knows nothing of levels, snapshots beyond a seq bound, or other tables: merging
tables and hiding shadowed versions is the engine's iterator stack.

A point `get` with its block cached is a bisect on the index keys, a bloom probe (~0.65
us of the total for a present key: seven probes in Python), one cache lookup and a
bisect in the block: 1.4-2 us on CPython 3.11; a key the bloom rejects costs ~0.6 us.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np

from concordkv_mp.engines.lsm.block import (
    DECODED_ENTRY_OVERHEAD,
    TRAILER_SIZE,
    decode_entries,
    read_block,
    verify_raw_block,
)
from concordkv_mp.engines.lsm.bloom import BloomFilter
from concordkv_mp.engines.lsm.file_meta import FileMeta
from concordkv_mp.engines.lsm.sstable_format import FOOTER_SIZE, decode_footer, decode_index, decode_properties
from concordkv_mp.errors import ClosedError, CorruptionError


class SSTableReader:
    """Open with `SSTableReader.open`; `close` when the table is no longer needed."""

    def __init__(self, path: str, number: int, mapped, cache):
        self.path = path
        self.number = number
        self._map = mapped
        self._cache = cache if cache is not None and cache.capacity_bytes > 0 else None
        # One cache serves every table of a database: the file number keeps block keys apart.
        self._cache_base = number << 32
        self._bloom = None
        self._offsets = self._sizes = None
        try:
            self._load_metadata()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, fs, path: str, number: int, cache) -> "SSTableReader":
        return cls(path, number, fs.map(path), cache)

    def _load_metadata(self) -> None:
        path, mapped = self.path, self._map
        footer = decode_footer(mapped, path)
        # The file is written front to back with nothing in between, so every region
        # must start exactly where the previous one ends; any mismatch is damage.
        if (
            footer.index_offset != footer.bloom_offset + footer.bloom_size + TRAILER_SIZE
            or footer.properties_offset != footer.index_offset + footer.index_size + TRAILER_SIZE
            or footer.properties_offset + footer.properties_size + TRAILER_SIZE != len(mapped) - FOOTER_SIZE
        ):
            raise CorruptionError(path, "SSTable footer handles do not tile the file")
        verify_raw_block(mapped, footer.index_offset, footer.index_size, path, "index block")
        verify_raw_block(mapped, footer.bloom_offset, footer.bloom_size, path, "bloom block")
        properties = decode_properties(
            read_block(mapped, footer.properties_offset, footer.properties_size, path, "properties block"), path
        )
        count = footer.data_blocks
        offsets, sizes, last_keys = decode_index(mapped, footer.index_offset, footer.index_size, count, path)
        self._offsets, self._sizes = offsets, sizes
        if count:
            ends = offsets + sizes + TRAILER_SIZE
            if int(offsets[0]) != 0 or int(ends[-1]) != footer.bloom_offset or (offsets[1:] != ends[:-1]).any():
                raise CorruptionError(path, "index block handles do not tile the data region")
        elif footer.bloom_offset != 0:
            raise CorruptionError(path, "a table without data blocks has bytes before its bloom block")
        if (properties["entries"] == 0) != (count == 0) or (count and properties["largest"] != last_keys[-1]):
            raise CorruptionError(path, "properties disagree with the index")
        if footer.bloom_size:
            with memoryview(mapped) as whole:
                bits = whole[footer.bloom_offset : footer.bloom_offset + footer.bloom_size]
            try:
                self._bloom = BloomFilter(bits)
            except ValueError as exc:
                bits.release()
                raise CorruptionError(path, f"bad bloom block: {exc}") from exc
        self._index_keys = last_keys
        self._nblocks = count
        self.properties = properties
        self.meta = FileMeta(
            number=self.number,
            size=len(mapped),
            smallest=properties["smallest"],
            largest=properties["largest"],
            entries=properties["entries"],
            min_seq=properties["min_seq"],
            max_seq=properties["max_seq"],
        )

    def may_contain(self, key: bytes) -> bool:
        """False only if the key is certainly absent (bloom filter; True without one)."""
        bloom = self._bloom
        return bloom is None or bloom.may_contain(key)

    def may_contain_many(self, keys):
        """Vectorised `may_contain` for a batch: a numpy bool array aligned with `keys`."""
        if self._bloom is None:
            return np.ones(len(keys), dtype=bool)
        return self._bloom.may_contain_many(keys)

    def get(self, key: bytes, snapshot: int | None = None):
        """(seq, value) of the newest version of `key` with seq <= snapshot, or None.

        value None is a tombstone. Checks the bloom filter itself, so callers need not
        call `may_contain` first.
        """
        i = bisect_left(self._index_keys, key)
        if i == self._nblocks:
            return None
        bloom = self._bloom
        if bloom is not None and not bloom.may_contain(key):
            return None
        while True:
            keys, seqs, values = self._block(i, True)
            j = bisect_left(keys, key)
            if keys[j] != key:
                return None
            if snapshot is None:
                return seqs[j], values[j]
            n = len(keys)
            while j < n and keys[j] == key:
                if seqs[j] <= snapshot:
                    return seqs[j], values[j]
                j += 1
            if j < n:
                return None
            # Older versions of the key continue at the head of the next block.
            i += 1
            if i == self._nblocks:
                return None

    def iter_from(self, start: bytes | None = None, reverse: bool = False, *, fill_cache: bool = True):
        """Yield (key, seq, value) from `start` (inclusive) to the end, or to the beginning.

        Forward: keys >= start ascending. Reverse: keys <= start descending, but the
        versions of one key still newest first. `fill_cache=False` keeps a one-off
        scan (compaction input) from evicting the hot blocks of point reads.
        """
        if reverse:
            return self._iter_reverse(start, fill_cache)
        return self._iter_forward(start, fill_cache)

    def _iter_forward(self, start, fill):
        count = self._nblocks
        first = 0 if start is None else bisect_left(self._index_keys, start)
        if first >= count:
            return
        keys, seqs, values = self._block(first, fill)
        j = 0 if start is None else bisect_left(keys, start)
        yield from zip(keys[j:], seqs[j:], values[j:]) if j else zip(keys, seqs, values)
        for i in range(first + 1, count):
            yield from zip(*self._block(i, fill))

    def _iter_reverse(self, start, fill):
        count = self._nblocks
        if not count:
            return
        index_keys = self._index_keys
        i = count - 1 if start is None else min(bisect_right(index_keys, start), count - 1)
        end_bound = start
        # Versions of one key may span blocks, newest in the earlier block; `pending`
        # holds the older versions (in output order) until the block before is read.
        pending = None
        while i >= 0:
            keys, seqs, values = self._block(i, fill)
            j = len(keys) if end_bound is None else bisect_right(keys, end_bound)
            end_bound = None
            spills = i > 0 and index_keys[i - 1] == keys[0]
            if pending is not None:
                lo = bisect_left(keys, keys[j - 1])
                pending = list(zip(keys[lo:j], seqs[lo:j], values[lo:j])) + pending
                j = lo
                if j == 0 and spills:
                    i -= 1
                    continue
                yield from pending
                pending = None
            cut = min(j, bisect_right(keys, keys[0])) if spills else 0
            if j > cut:
                yield from _reversed_keys(keys, seqs, values, cut, j)
            if cut:
                pending = list(zip(keys[:cut], seqs[:cut], values[:cut]))
            i -= 1

    def _block(self, i: int, fill: bool) -> list:
        cache = self._cache
        if cache is None:
            return self._read_block(i)[0]
        cache_key = self._cache_base | i
        block = cache.get(cache_key)
        if block is None:
            block, charge = self._read_block(i)
            if fill:
                cache.put(cache_key, block, charge)
        return block

    def _read_block(self, i: int):
        mapped = self._map
        if mapped is None:
            raise ClosedError(f"{self.path}: SSTable reader is closed")
        payload = read_block(mapped, int(self._offsets[i]), int(self._sizes[i]), self.path, f"data block {i}")
        block = decode_entries(payload, self.path)
        if block[0][-1] != self._index_keys[i]:
            raise CorruptionError(self.path, f"data block {i} does not end with its index key")
        return block, len(payload) + DECODED_ENTRY_OVERHEAD * len(block[0])

    def drop_cached_blocks(self) -> None:
        """Remove this table's blocks from the shared cache (the table became obsolete).

        Without it they would only age out, and under LFU a once-hot block never does.
        """
        if self._cache is not None and self._offsets is not None:
            self._cache.erase(range(self._cache_base, self._cache_base + len(self._offsets)))

    def close(self) -> None:
        """Release the map and drop this table's blocks from the cache. Idempotent.

        Iterators still running on this reader raise `ClosedError` at their next block.
        """
        mapped = self._map
        if mapped is None:
            return
        self._map = None
        self.drop_cached_blocks()
        if self._bloom is not None:
            self._bloom.release()
            self._bloom = None
        # The numpy views export the map's buffer; they must go before the map closes.
        self._offsets = self._sizes = None
        close = getattr(mapped, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"SSTableReader({self.path!r}, number={self.number})"


def _reversed_keys(keys, seqs, values, lo: int, hi: int):
    """Entries lo..hi-1 of a block, keys descending, each key's versions newest first."""
    run_keys = keys[lo:hi]
    if len(set(run_keys)) == len(run_keys):
        return zip(reversed(run_keys), reversed(seqs[lo:hi]), reversed(values[lo:hi]))
    return _reversed_runs(keys, seqs, values, lo, hi)


def _reversed_runs(keys, seqs, values, lo: int, hi: int):
    while hi > lo:
        start = bisect_left(keys, keys[hi - 1], lo, hi)
        if start == hi - 1:
            yield keys[start], seqs[start], values[start]
        else:
            yield from zip(keys[start:hi], seqs[start:hi], values[start:hi])
        hi = start
