"""`BlockCache`: decoded SSTable blocks kept in memory, bounded by a byte budget.

One cache per open database, shared by all its table readers; keys are opaque to it
(readers use file number << 32 | block index). It knows nothing of blocks or files:
it stores objects with a caller-supplied charge and evicts by the chosen policy.

Thread safety: one lock around every operation. Two threads contend at most; an
uncontended lock costs ~0.1 us, and unlike relying on GIL-atomic dict operations it
stays correct on free-threaded builds.

Accepted limit: LFU never ages counts, so blocks that were hot long ago keep their
place; readers erase their blocks when a table is closed, which covers the main
source of stale hot blocks in an LSM (tables made obsolete by compaction).
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict

from concordkv_mp.errors import ConfigError

POLICIES = ("lru", "lfu", "fifo", "random")


class _LRU:
    """OrderedDict in recency order; a hit moves the entry to the young end."""

    def __init__(self):
        self._entries: OrderedDict = OrderedDict()

    def __len__(self):
        return len(self._entries)

    def lookup(self, key):
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def insert(self, key, value, charge: int) -> None:
        self._entries[key] = (value, charge)

    def remove(self, key) -> int:
        entry = self._entries.pop(key, None)
        return 0 if entry is None else entry[1]

    def evict(self) -> int:
        return self._entries.popitem(last=False)[1][1]

    def charges(self) -> list[int]:
        return [charge for _, charge in self._entries.values()]


class _FIFO(_LRU):
    """Insertion order only: a hit does not reorder. (A plain dict would do, except that
    popping its first key repeatedly degrades to a linear scan over deleted slots.)"""

    def lookup(self, key):
        entry = self._entries.get(key)
        return None if entry is None else entry[0]


class _LFU:
    """Least frequently used, ties broken by least recently used; O(1) per operation.

    Entries live in one OrderedDict per hit count; a newcomer starts at count 1, and
    room is made before it is inserted, so it is never its own victim.
    """

    def __init__(self):
        self._entries: dict = {}  # key -> [value, charge, count]
        self._by_count: dict[int, OrderedDict] = {}
        self._min_count = 0

    def __len__(self):
        return len(self._entries)

    def lookup(self, key):
        entry = self._entries.get(key)
        if entry is None:
            return None
        count = entry[2]
        bucket = self._by_count[count]
        del bucket[key]
        if not bucket:
            del self._by_count[count]
            if self._min_count == count:
                self._min_count = count + 1
        entry[2] = count + 1
        higher = self._by_count.get(count + 1)
        if higher is None:
            higher = self._by_count[count + 1] = OrderedDict()
        higher[key] = None
        return entry[0]

    def insert(self, key, value, charge: int) -> None:
        self._entries[key] = [value, charge, 1]
        self._by_count.setdefault(1, OrderedDict())[key] = None
        self._min_count = 1

    def remove(self, key) -> int:
        entry = self._entries.pop(key, None)
        if entry is None:
            return 0
        count = entry[2]
        bucket = self._by_count[count]
        del bucket[key]
        if not bucket:
            del self._by_count[count]
        return entry[1]

    def evict(self) -> int:
        bucket = self._by_count.get(self._min_count)
        if bucket is None:
            # Only after removals emptied the lowest bucket; counts are few and small.
            self._min_count = min(self._by_count)
            bucket = self._by_count[self._min_count]
        key, _ = bucket.popitem(last=False)
        if not bucket:
            del self._by_count[self._min_count]
        return self._entries.pop(key)[1]

    def charges(self) -> list[int]:
        bucketed = {key: count for count, bucket in self._by_count.items() for key in bucket}
        assert all(bucket for bucket in self._by_count.values()), "empty LFU bucket kept"
        assert bucketed == {key: entry[2] for key, entry in self._entries.items()}, "LFU buckets disagree"
        return [entry[1] for entry in self._entries.values()]


class _Random:
    """Uniform random victim: keys in a list (swap-remove) plus a key -> slot map."""

    def __init__(self):
        self._entries: dict = {}  # key -> [value, charge, slot]
        self._keys: list = []
        self._random = random.Random()

    def __len__(self):
        return len(self._entries)

    def lookup(self, key):
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def insert(self, key, value, charge: int) -> None:
        self._entries[key] = [value, charge, len(self._keys)]
        self._keys.append(key)

    def remove(self, key) -> int:
        entry = self._entries.pop(key, None)
        if entry is None:
            return 0
        last = self._keys.pop()
        slot = entry[2]
        if slot < len(self._keys):
            self._keys[slot] = last
            self._entries[last][2] = slot
        return entry[1]

    def evict(self) -> int:
        return self.remove(self._keys[self._random.randrange(len(self._keys))])

    def charges(self) -> list[int]:
        assert len(self._keys) == len(self._entries), "random-policy key list out of sync"
        assert all(self._entries[key][2] == slot for slot, key in enumerate(self._keys)), "bad slots"
        return [entry[1] for entry in self._entries.values()]


_POLICY_CLASSES = {"lru": _LRU, "lfu": _LFU, "fifo": _FIFO, "random": _Random}


class BlockCache:
    """A byte-bounded cache; `capacity_bytes` 0 disables it (every get misses, put is a no-op)."""

    def __init__(self, capacity_bytes: int, policy: str = "lru"):
        if policy not in _POLICY_CLASSES:
            raise ConfigError("cache_policy", f"{policy!r} is not one of {', '.join(POLICIES)}")
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes < 0:
            raise ConfigError("cache_size", f"expected a non-negative integer, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self.policy = policy
        self._policy = _POLICY_CLASSES[policy]()
        self._lock = threading.Lock()
        self._size = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, key):
        with self._lock:
            value = self._policy.lookup(key)
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
            return value

    def put(self, key, value, charge: int) -> None:
        """Insert or replace; an object larger than the whole cache is not kept."""
        with self._lock:
            self._size -= self._policy.remove(key)
            if not self.capacity_bytes or charge > self.capacity_bytes:
                return
            policy = self._policy
            while self._size + charge > self.capacity_bytes:
                self._size -= policy.evict()
                self._evictions += 1
            policy.insert(key, value, charge)
            self._size += charge

    def erase(self, keys) -> None:
        """Drop `keys` (those present), e.g. every block of a table being closed."""
        with self._lock:
            for key in keys:
                self._size -= self._policy.remove(key)

    def for_testing_check(self) -> None:
        """Assert the invariants: charges add up to size_bytes, which is within capacity."""
        with self._lock:
            charges = self._policy.charges()
            assert sum(charges) == self._size, f"size {self._size} != sum of charges {sum(charges)}"
            assert self._size <= self.capacity_bytes, f"size {self._size} over capacity {self.capacity_bytes}"
            assert len(charges) == len(self._policy)

    def stats(self) -> dict:
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "evictions": self._evictions,
                "size_bytes": self._size,
                "capacity_bytes": self.capacity_bytes,
                "entries": len(self._policy),
                "policy": self.policy,
            }
