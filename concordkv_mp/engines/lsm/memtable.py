"""The MemTable: the LSM engine's in-memory sorted buffer of recent writes.

Owned by one engine instance; the engine holds its write mutex while calling `apply`,
and readers call `get`/`chunk` concurrently (both are safe under the GIL because a
reader never walks the underlying SortedDict while a writer can reshape it: `chunk`
copies a bounded run of entries under the same mutex). Once frozen, a MemTable is
immutable and may be iterated freely. It knows nothing of files or the WAL.

An entry is stored as `key -> (seq, value)`; value None is a tombstone. Older versions
are kept only while a live snapshot may still need them, as a chain
`(seq, value, older_entry)`: with no snapshot open an overwrite replaces in place, so
the common case pays for one version per key.
"""

from __future__ import annotations

from sortedcontainers import SortedDict

# Per-entry bookkeeping beyond key and value bytes, used for the size estimate that
# triggers a freeze: SortedDict slot + tuple + seq int (measured with tracemalloc).
ENTRY_OVERHEAD = 96


class MemTable:
    __slots__ = ("_entries", "approximate_bytes", "frozen", "wal_number", "max_seq")

    def __init__(self, wal_number: int):
        self._entries = SortedDict()
        self.approximate_bytes = 0
        self.frozen = False
        self.wal_number = wal_number  # the WAL holding this table's data
        self.max_seq = 0

    def __len__(self) -> int:
        return len(self._entries)

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

    def chunk(self, start: bytes | None, inclusive: bool, reverse: bool, size: int) -> list:
        """Up to `size` (key, entry) pairs from `start` on, in key order (or reverse).

        Callers that iterate a live MemTable take the engine mutex around this call and
        resume from the last key they saw, so concurrent writers are never observed
        mid-update.
        """
        table = self._entries
        keys = table.keys()
        if reverse:
            if start is None:
                hi = len(keys)
            else:
                hi = table.bisect_right(start) if inclusive else table.bisect_left(start)
            lo = max(0, hi - size)
            selected = keys[lo:hi]
            selected.reverse()
        else:
            if start is None:
                lo = 0
            else:
                lo = table.bisect_left(start) if inclusive else table.bisect_right(start)
            selected = keys[lo : lo + size]
        return [(key, table[key]) for key in selected]

    def entries(self):
        """All versions in table order (key asc, seq desc); for flushing a frozen table."""
        for key, entry in self._entries.items():
            while True:
                yield key, entry[0], entry[1]
                if len(entry) == 2:
                    break
                entry = entry[2]
