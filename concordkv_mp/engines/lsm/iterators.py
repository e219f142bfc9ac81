"""Internal iterators of the LSM read path, composed in layers (LevelDB's merger/db_iter).

1. sources yield internal entries `(key, seq, value)` — value None is a tombstone —
   ordered key ascending (descending when reversed) and, within one key, newest first;
2. `merge_sources` interleaves sources without de-duplicating (equal keys: newest first);
3. `visible_items` applies the snapshot, keeps the newest version per key, drops
   tombstones and stops at the bound.

Nothing here takes locks or touches files except through the objects it is given.
"""

from __future__ import annotations

import heapq
from operator import itemgetter

MEMTABLE_CHUNK = 512


def _forward_order(entry):
    return (entry[0], -entry[1])


_reverse_order = itemgetter(0, 1)


def merge_sources(sources: list, reverse: bool):
    """One stream of internal entries from several sorted sources."""
    if not sources:
        return iter(())
    if len(sources) == 1:
        return sources[0]
    if reverse:
        return heapq.merge(*sources, key=_reverse_order, reverse=True)
    return heapq.merge(*sources, key=_forward_order)


def visible_items(entries, snapshot: int, start: bytes | None, end: bytes | None, reverse: bool):
    """User-visible (key, value) pairs at `snapshot` within [start, end).

    Sources are already positioned at the first candidate key; here we only stop at the
    far bound (`end` going forward, `start` going backward) and skip `end` itself when
    a reverse scan was positioned on it.
    """
    previous = None
    for key, seq, value in entries:
        if seq > snapshot or key == previous:
            continue
        previous = key
        if reverse:
            if end is not None and key >= end:
                continue
            if start is not None and key < start:
                return
        elif end is not None and key >= end:
            return
        if value is not None:
            yield key, value


def memtable_source(memtable, lock, start: bytes | None, reverse: bool, snapshot: int):
    """Entries of a MemTable visible at `snapshot`, read in chunks.

    The live MemTable keeps changing while a scan runs, so each chunk is copied under
    the engine's write lock and the next one resumes after the last key seen; the
    snapshot filter makes later writes invisible. A frozen table needs no lock but
    costs nothing extra to read the same way.
    """
    position, inclusive = start, True
    while True:
        with lock:
            chunk = memtable.chunk(position, inclusive, reverse, MEMTABLE_CHUNK)
        for key, entry in chunk:
            while entry[0] > snapshot:
                if len(entry) == 2:
                    entry = None
                    break
                entry = entry[2]
            if entry is not None:
                yield key, entry[0], entry[1]
        if len(chunk) < MEMTABLE_CHUNK:
            return
        position, inclusive = chunk[-1][0], False


def level_source(readers: list, start: bytes | None, reverse: bool):
    """Entries of one sorted level (L1+): its files in key order, none overlapping.

    `readers` are the level's SSTableReaders ordered by smallest key.
    """
    if reverse:
        ordered = [r for r in reversed(readers) if start is None or r.meta.smallest <= start]
    else:
        ordered = [r for r in readers if start is None or r.meta.largest >= start]
    first = True
    for reader in ordered:
        yield from reader.iter_from(start if first else None, reverse)
        first = False
