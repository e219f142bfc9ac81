"""The MemTable: the LSM engine's in-memory sorted buffer of recent writes.

Owned by one engine instance; the engine holds its write mutex while calling `apply`
and `chunk` on the live table, while `get` runs lock-free (a dict lookup is atomic
under the GIL). Once frozen, a MemTable is immutable and may be read freely. It knows
nothing of files or the WAL.

Layout: a dict `key -> entry` for point reads plus the keys in two runs, one sorted
and one of keys inserted since, sorted only when a scan needs it. An insert costs a
dict store and a list append — a balanced tree or SortedDict in Python costs several
times that on the write path, which is what an LSM MemTable exists to make cheap.

An entry is stored as `key -> (seq, value)`; value None is a tombstone. Older versions
are kept only while a live snapshot may still need them, as a chain
`(seq, value, older_entry)`: with no snapshot open an overwrite replaces in place, so
the common case pays for one version per key.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from heapq import merge
from operator import itemgetter
from sys import getsizeof

# Per-entry memory beyond the key's and value's bytes, so that `memtable_size` bounds
# real memory: two bytes-object headers (2 x 33), the dict slot (~50 at its load
# factor), the (seq, value) tuple (56), the seq int (32) and a key-list slot (8).
# Measured with tracemalloc: 330 bytes per entry for a 16-byte key and 100-byte value.
ENTRY_OVERHEAD = 214
# New keys wait in an unsorted run; a scan folds the run into the sorted keys once it
# holds this many, so folding (O(n)) is paid once per this many inserts at most.
PENDING_FOLD = 4096


class MemTable:
    __slots__ = (
        "_entries", "_sorted", "_pending", "_pending_sorted", "_runs_lock",
        "approximate_bytes", "frozen", "wal_number", "max_seq",
    )

    def __init__(self, wal_number: int):
        self._entries: dict = {}
        self._sorted: list = []  # keys in order
        self._pending: list = []  # keys inserted since the last fold, in arrival order
        self._pending_sorted = True
        # Sorting the runs mutates them: concurrent scans of a frozen table (which no
        # engine lock covers) take turns.
        self._runs_lock = threading.Lock()
        self.approximate_bytes = 0
        self.frozen = False
        self.wal_number = wal_number  # the WAL holding this table's data
        self.max_seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def memory_bytes(self) -> int:
        """Measured with sys.getsizeof: the dict, the key runs and every entry's objects
        (key, version tuples, sequence ints, values). O(entries)."""
        size = getsizeof(self._entries) + getsizeof(self._sorted) + getsizeof(self._pending)
        for key, entry in list(self._entries.items()):
            size += getsizeof(key)
            while entry is not None:
                size += getsizeof(entry) + getsizeof(entry[0]) + (getsizeof(entry[1]) if entry[1] is not None else 0)
                entry = entry[2] if len(entry) == 3 else None
        return size

    def apply(self, first_seq: int, entries, keep_versions_from: int | None) -> None:
        """Insert a batch; entry i gets seq first_seq + i.

        `keep_versions_from`: the newest live snapshot, or None. A replaced version
        with seq <= it is kept in the chain because that snapshot can still see it.
        """
        table = self._entries
        seq = first_seq
        added = 0
        for key, value in entries:
            old = table.get(key)
            if old is None:
                table[key] = (seq, value)
                self._pending.append(key)
                self._pending_sorted = False
                added += len(key) + ENTRY_OVERHEAD + (len(value) if value is not None else 0)
            else:
                if keep_versions_from is not None and old[0] <= keep_versions_from:
                    table[key] = (seq, value, old)
                    added += ENTRY_OVERHEAD
                else:
                    table[key] = (seq, value) if len(old) == 2 else (seq, value, old[2])
                old_value = old[1]
                added += (len(value) if value is not None else 0) - (len(old_value) if old_value is not None else 0)
            seq += 1
        self.approximate_bytes += added
        self.max_seq = seq - 1

    def get(self, key: bytes, snapshot: int | None = None):
        """Newest version of `key` visible at `snapshot`: (seq, value) or None if absent."""
        entry = self._entries.get(key)
        if entry is None or snapshot is None:
            return entry
        while entry[0] > snapshot:
            if len(entry) == 2:
                return None
            entry = entry[2]
        return entry

    def freeze(self) -> None:
        """Make the table immutable. Its keys are sorted only when needed: by a scan,
        by `columns()` for a flush in the engine's thread, or by a flush worker process
        (`concordkv_mp.open()`'s default) on its own copy."""
        self.frozen = True

    def items(self) -> list:
        """(key, entry) pairs in no order; for shipping a frozen table to a flush."""
        return list(self._entries.items())

    def _fold(self) -> None:
        if self._pending:
            # Timsort merges the sorted run with the (sorted) tail in linear time.
            self._pending.sort()
            self._sorted.extend(self._pending)
            self._sorted.sort()
            self._pending = []
        self._pending_sorted = True

    def _runs(self) -> tuple[list, list]:
        with self._runs_lock:
            if len(self._pending) >= PENDING_FOLD or (self.frozen and self._pending):
                self._fold()
            elif not self._pending_sorted:
                self._pending.sort()
                self._pending_sorted = True
            return self._sorted, self._pending

    def chunk(self, start: bytes | None, inclusive: bool, reverse: bool, size: int) -> list:
        """Up to `size` (key, entry) pairs from `start` on, in key order (or reverse).

        Callers that iterate a live MemTable take the engine mutex around this call and
        resume from the last key they saw, so concurrent writers are never observed
        mid-update.
        """
        selected = []
        for run in self._runs():
            if reverse:
                if start is None:
                    hi = len(run)
                else:
                    hi = bisect_right(run, start) if inclusive else bisect_left(run, start)
                selected.append(run[max(0, hi - size) : hi][::-1])
            else:
                if start is None:
                    lo = 0
                else:
                    lo = bisect_left(run, start) if inclusive else bisect_right(run, start)
                selected.append(run[lo : lo + size])
        keys = list(merge(*selected, reverse=reverse))[:size] if selected[1] else selected[0]
        table = self._entries
        return [(key, table[key]) for key in keys]

    def columns(self) -> tuple[list, list, list]:
        """(keys, seqs, values) of all versions in table order; for flushing a frozen table."""
        with self._runs_lock:
            self._fold()
        table = self._entries
        return table_columns([(key, table[key]) for key in self._sorted])


def table_columns(pairs: list) -> tuple[list, list, list]:
    """(keys, seqs, values) in table order (key asc, seq desc) from (key, entry) pairs
    in key order, each entry's older versions expanded after it."""
    entries = [entry for _, entry in pairs]
    if not entries or max(map(len, entries)) == 2:  # no version chains: three C-level passes
        return [key for key, _ in pairs], [entry[0] for entry in entries], [entry[1] for entry in entries]
    keys, seqs, values = [], [], []
    for key, entry in pairs:
        while True:
            keys.append(key)
            seqs.append(entry[0])
            values.append(entry[1])
            if len(entry) == 2:
                break
            entry = entry[2]
    return keys, seqs, values


def sorted_columns(items: list) -> tuple[list, list, list]:
    """Table-order columns of (key, entry) pairs given in any order (a shipped MemTable)."""
    return table_columns(sorted(items, key=itemgetter(0)))
