"""`HashTable`: the "hash" in-memory index, an open-addressing hash table.

Owns three parallel sequences of one power-of-two capacity — the stored hashes (an
`array("q")`), the keys and the values (Python lists) — plus two lists of the keys
that give scans their order. It is a pure, single-threaded map: the engine wrapping
it does all locking, durability and argument checking, so this module touches no
files, threads or locks and imports nothing from concordkv_mp but `InvariantError`.

Layout and algorithms:

* Slot i is empty iff `hashes[i] == EMPTY` (-1, which `hash()` never returns: CPython
  reserves it as the error return and maps a computed -1 to -2); keys[i] and values[i]
  are None then. A key lives at or after its home slot `hash(key) & mask`, with no
  empty slot in between (linear probing), so a lookup stops at the first empty slot.
* A probe compares the stored hash before the key: a different key in the slot almost
  always differs in its full 64-bit hash, so the key's bytes are touched only on a hit.
  The hashes are an array, not a list of int objects: a list would cost a pointer
  chase (a cache miss) per probe and ~36 bytes per key for the int objects. Measured
  at 1M random 16-byte keys (Python 3.11, AMD EPYC), the array took a hit from 0.84 to
  0.60 µs, a miss from 0.43 to 0.29 µs, and the table from 86 to 50 bytes per key.
  `hash()` of bytes is cached in the bytes object, so hashing a stored key is free.
* Deletion shifts later entries of the cluster back into the hole (no tombstones), so
  lookups never pay for deleted entries and the probing invariant stays exact.
* The table doubles when the load passes 2/3 (the bound CPython's dict uses): linear
  probing then costs ~2 probes for a hit and ~5 for a miss in expectation, and a grown
  table starts at load ~1/3. It shrinks, to load <= 1/2, when the load drops below 1/8,
  never under MIN_CAPACITY slots, so memory follows the data. The two thresholds are
  far apart, so alternating puts and removes cannot make it resize back and forth:
  each resize (O(capacity)) is paid for by Θ(capacity) earlier puts or removes.
* Scans: the slots are in no order, so the keys are also kept in two lists. `_sorted`
  holds keys in strictly ascending order as of its last fold, and may still hold keys
  removed since (stale entries: a removal does not look for its key there). `_added`
  holds the keys put as new since, appended in put order; its first `_added_sorted`
  entries are in order. A key removed and put again is then listed twice (in both
  lists, or twice in `_added`). A value replacement touches neither list.
  `range_list` bisects both lists, merges the two runs inside [start, end) in the
  requested direction and looks each key up in the table, which skips stale entries
  and repeats: O(log n + limit + skipped entries), whatever was written between two
  calls. Measured at 1M random 16-byte keys, a chunked full scan (256 per chunk)
  takes ~0.6 s, also with a new key put before every chunk (it took ~2,200 s when any
  new key dropped the whole order and the next chunk sorted all keys again).
* Before reading, `range_list` orders the keys put since the last scan: up to
  INSORT_MAX by binary insertion into `_added` (a bisection and a pointer move each),
  more by sorting `_added` (timsort takes the ordered part as one run: a comparison a
  key). Once `_added` passes max(FOLD_SLACK, n/16) keys it folds them into `_sorted`
  instead: a merge by bisection, O(k log n + n) for k keys (~0.13 s for 70,000 into
  1M), or, when k > len(_sorted)/2, a sort of the stored keys (O(n log n), ~0.6 s at
  1M: the first scan of a table filled by puts). So scans pay a fold at most once
  per n/16 new keys, and never a sort per chunk. Puts pay nothing: a new key is one
  list append. After `load_sorted` the given keys are `_sorted`: the first scan sorts
  nothing.
* Stale entries keep removed key objects alive, so a removal that takes the entries
  beyond one per stored key past n/4 + FOLD_SLACK folds the lists and drops them (a
  merge as above, then one pass keeping the keys found in a set of the stored keys:
  ~0.3 s at 1M keys). That cost is shared by the n/4 removals before it, but is not
  small: removing 1M keys in random order costs 2.6 µs each instead of 1.2, and a
  removal plus a put of a new key at 1M keys 3.9 µs instead of 2.0 (no scans in
  between, so `_added` also grew to n/4 keys by each fold).

Memory: 24 bytes per slot (8 per hash, key pointer and value pointer) at a load between
1/8 and 2/3 (~50 bytes per key after growing to 1M keys), plus ~8 per key in the two
key lists, plus at most n/4 + FOLD_SLACK stale entries and the removed keys they hold.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right, insort
from itertools import pairwise
from sys import getsizeof

from concordkv_mp.engines.memory.invariant import InvariantError

MIN_CAPACITY = 8
EMPTY = -1  # the stored hash of an empty slot; hash() never returns it
_EMPTY_SLOT = array("q", (EMPTY,))
# How far `_added` (share n/16) and the stale entries (share n/4) may pass their share
# of the n stored keys before a fold: small tables then fold rarely, a few ms each.
FOLD_SLACK = 4096
# Up to this many unordered keys at the end of `_added` are inserted one by one (each a
# bisection and a pointer move); more are sorted with the rest, one comparison per key.
INSORT_MAX = 16


def _capacity_for(count: int) -> int:
    """Smallest power-of-two capacity >= MIN_CAPACITY holding `count` keys at load <= 1/2."""
    capacity = MIN_CAPACITY
    while capacity < 2 * count:
        capacity *= 2
    return capacity


class HashTable:
    """Open addressing with linear probing; see the module docstring."""

    name = "hash"
    __slots__ = (
        "_added", "_added_sorted", "_count", "_folds", "_hashes", "_keys", "_mask",
        "_resizes", "_sorted", "_values",
    )

    def __init__(self):
        self._resizes = 0
        self._folds = 0
        self._reset(MIN_CAPACITY)

    def _reset(self, capacity: int) -> None:
        self._reset_slots(capacity)
        self._count = 0
        self._sorted: list = []  # keys in strictly ascending order, some maybe stale
        self._added: list = []  # keys put as new since, ordered up to _added_sorted
        self._added_sorted = 0

    def __len__(self) -> int:
        return self._count

    def get(self, key: bytes) -> bytes | None:
        h = hash(key)
        hashes = self._hashes
        mask = self._mask
        i = h & mask
        stored = hashes[i]
        while stored != EMPTY:
            if stored == h and self._keys[i] == key:
                return self._values[i]
            i = (i + 1) & mask
            stored = hashes[i]
        return None

    def put(self, key: bytes, value: bytes) -> bytes | None:
        h = hash(key)
        hashes = self._hashes
        keys = self._keys
        mask = self._mask
        i = h & mask
        stored = hashes[i]
        while stored != EMPTY:
            if stored == h and keys[i] == key:
                values = self._values
                old = values[i]
                values[i] = value
                return old
            i = (i + 1) & mask
            stored = hashes[i]
        hashes[i] = h
        keys[i] = key
        self._values[i] = value
        count = self._count = self._count + 1
        self._added.append(key)
        if 3 * count > 2 * (mask + 1):
            self._resize(2 * (mask + 1))
        return None

    def remove(self, key: bytes) -> bytes | None:
        h = hash(key)
        hashes = self._hashes
        keys = self._keys
        mask = self._mask
        i = h & mask
        stored = hashes[i]
        while True:
            if stored == EMPTY:
                return None
            if stored == h and keys[i] == key:
                break
            i = (i + 1) & mask
            stored = hashes[i]
        values = self._values
        old = values[i]
        # Backward shift: walk the rest of the cluster and pull back into the hole at i
        # every entry whose home is not in the cyclic range (i, j] — with the hole left
        # empty, a lookup from that home would stop at i before reaching j.
        j = i
        while True:
            j = (j + 1) & mask
            stored = hashes[j]
            if stored == EMPTY:
                break
            if (j - stored) & mask >= (j - i) & mask:
                hashes[i] = stored
                keys[i] = keys[j]
                values[i] = values[j]
                i = j
        hashes[i] = EMPTY
        keys[i] = values[i] = None
        count = self._count = self._count - 1
        # The key stays in the key lists as a stale entry: one more entry than keys.
        if len(self._sorted) + len(self._added) - count > (count >> 2) + FOLD_SLACK:
            self._fold(True)
        if 8 * count < mask + 1 and mask + 1 > MIN_CAPACITY:
            self._resize(_capacity_for(count))
        return old

    def _resize(self, capacity: int) -> None:
        """Rehash every entry into `capacity` slots, O(old + new capacity); the stored
        hashes spare calling hash() and comparing keys (all keys are distinct)."""
        old = zip(self._hashes, self._keys, self._values)
        self._reset_slots(capacity)
        hashes, keys, values, mask = self._hashes, self._keys, self._values, self._mask
        for h, key, value in old:
            if h != EMPTY:
                i = h & mask
                while hashes[i] != EMPTY:
                    i = (i + 1) & mask
                hashes[i] = h
                keys[i] = key
                values[i] = value
        self._resizes += 1

    def _reset_slots(self, capacity: int) -> None:
        self._hashes = _EMPTY_SLOT * capacity
        self._keys = [None] * capacity
        self._values = [None] * capacity
        self._mask = capacity - 1

    def _fold(self, drop_stale: bool) -> None:
        """Move the keys of `_added` into `_sorted`, dropping repeats, and the stale keys
        too if `drop_stale`; `_added` is left empty."""
        added = self._added
        old = self._sorted
        if 2 * len(added) > len(old):
            # A bisection per added key would cost more than sorting all stored keys.
            # Stored keys are non-empty bytes (truthy); filter(None) drops the empty slots.
            self._sorted = sorted(filter(None, self._keys))
        else:
            merged: list = []
            size = len(old)
            i = 0
            for key in sorted(set(added)):
                j = bisect_left(old, key, i)
                merged += old[i:j]
                if j == size or old[j] != key:  # else it was removed and put again
                    merged.append(key)
                i = j
            merged += old[i:]
            if drop_stale:
                # Two passes with set lookups: half the time of sorting the stored keys.
                stored = set(filter(None, self._keys))
                merged = list(filter(stored.__contains__, merged))
            self._sorted = merged
        self._added = []
        self._added_sorted = 0
        self._folds += 1

    def _order_added(self) -> None:
        """Sort the keys put since the last scan into the ordered part of `_added`."""
        added = self._added
        done = self._added_sorted
        if len(added) - done <= INSORT_MAX:
            tail = added[done:]
            del added[done:]
            for key in tail:
                insort(added, key)
        else:
            added.sort()
        self._added_sorted = len(added)

    def range_list(
        self, start: bytes | None, end: bytes | None, reverse: bool, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` pairs with start <= key < end in key order (descending if
        `reverse`): O(log n + limit + stale keys and repeats skipped), after ordering
        the keys put since the last scan or folding them (module docstring)."""
        if len(self._added) > max(FOLD_SLACK, self._count >> 4):
            self._fold(False)
        elif self._added_sorted < len(self._added):
            self._order_added()
        skeys, added = self._sorted, self._added
        lo1 = 0 if start is None else bisect_left(skeys, start)
        hi1 = len(skeys) if end is None else bisect_left(skeys, end, lo1)
        lo2 = 0 if start is None else bisect_left(added, start)
        hi2 = len(added) if end is None else bisect_left(added, end, lo2)
        get = self.get
        out: list = []
        # Each round takes the next `need` entries of the two runs together: `need`
        # from `_sorted` and the added keys that sort inside that window.
        while (need := limit - len(out)) > 0 and (lo1 < hi1 or lo2 < hi2):
            if reverse:
                j1 = max(lo1, hi1 - need)
                batch = skeys[j1:hi1]
                j2 = hi2
                if lo2 < hi2:
                    j2 = lo2 if j1 == lo1 else bisect_left(added, skeys[j1], lo2, hi2)
                    j2 = max(j2, hi2 - need)
                extra = added[j2:hi2]
            else:
                j1 = min(hi1, lo1 + need)
                batch = skeys[lo1:j1]
                j2 = lo2
                if lo2 < hi2:
                    j2 = hi2 if j1 == hi1 else bisect_right(added, skeys[j1 - 1], lo2, hi2)
                    j2 = min(j2, lo2 + need)
                extra = added[lo2:j2]
            if not extra:
                if reverse:
                    batch.reverse()
                    hi1 = j1
                else:
                    lo1 = j1
                out += [(key, value) for key in batch if (value := get(key)) is not None]
                continue
            batch += extra
            batch.sort(reverse=reverse)  # two ordered runs: one merge
            del batch[need:]
            last = batch[-1]
            # Past `last` in both lists, repeats of it cut off by `need` included.
            if reverse:
                hi1 = bisect_left(skeys, last, lo1, hi1)
                hi2 = bisect_left(added, last, lo2, hi2)
            else:
                lo1 = bisect_right(skeys, last, lo1, hi1)
                lo2 = bisect_right(added, last, lo2, hi2)
            previous = None
            for key in batch:
                if key != previous:
                    previous = key
                    value = get(key)
                    if value is not None:
                        out.append((key, value))
        return out

    def load_sorted(self, keys: list[bytes], values: list[bytes]) -> None:
        """Fill the empty table from strictly ascending `keys`: one presized allocation
        (no resizes), one probe sequence per key, and a copy of `keys` kept as
        `_sorted`. O(n)."""
        self._reset(_capacity_for(len(keys)))
        hashes, slots, slot_values, mask = self._hashes, self._keys, self._values, self._mask
        for key, value in zip(keys, values):
            h = hash(key)
            i = h & mask
            while hashes[i] != EMPTY:
                i = (i + 1) & mask
            hashes[i] = h
            slots[i] = key
            slot_values[i] = value
        self._count = len(keys)
        self._sorted = list(keys)

    def clear(self) -> None:
        self._reset(MIN_CAPACITY)

    def structure_stats(self) -> dict:
        """capacity, load_factor, resizes (grows + shrinks since creation), max_probe and
        mean_probe (slots a successful lookup inspects: the most, and the mean over the
        keys); sorted_keys and added_keys (the lengths of the two key lists),
        stale_keys (their entries beyond one per stored key: removed keys, and keys
        removed and put again listed twice) and folds (rebuilds of `_sorted` since
        creation). O(capacity)."""
        mask = self._mask
        longest = total = 0
        for i, h in enumerate(self._hashes):
            if h != EMPTY:
                probes = ((i - h) & mask) + 1
                total += probes
                longest = max(longest, probes)
        return {
            "capacity": mask + 1,
            "load_factor": self._count / (mask + 1),
            "resizes": self._resizes,
            "max_probe": longest,
            "mean_probe": total / self._count if self._count else 0.0,
            "sorted_keys": len(self._sorted),
            "added_keys": len(self._added),
            "stale_keys": len(self._sorted) + len(self._added) - self._count,
            "folds": self._folds,
        }

    def container_bytes(self) -> int:
        """The hash array, the two slot lists and the two key lists, by sys.getsizeof.
        O(1): none of them holds objects of its own (the hashes are unboxed; the stale
        keys the key lists keep alive are not counted)."""
        return (
            getsizeof(self._hashes) + getsizeof(self._keys) + getsizeof(self._values)
            + getsizeof(self._sorted) + getsizeof(self._added)
        )

    def validate(self) -> None:
        hashes, keys, values, mask = self._hashes, self._keys, self._values, self._mask
        capacity = mask + 1
        if capacity < MIN_CAPACITY or capacity & mask:
            raise InvariantError(f"capacity {capacity} is not a power of two >= {MIN_CAPACITY}")
        if not len(hashes) == len(keys) == len(values) == capacity:
            raise InvariantError(
                f"slot sequences have lengths {len(hashes)}, {len(keys)}, {len(values)}; "
                f"capacity is {capacity}"
            )
        seen = set()
        for i in range(capacity):
            h, key, value = hashes[i], keys[i], values[i]
            if h == EMPTY:
                if key is not None or value is not None:
                    raise InvariantError(f"empty slot {i} holds a key or value")
                continue
            if type(key) is not bytes or type(value) is not bytes:
                raise InvariantError(
                    f"slot {i} holds a {type(key).__name__} key and a {type(value).__name__} value"
                )
            if h != hash(key):
                raise InvariantError(f"slot {i}: stored hash {h} != hash({key!r}) {hash(key)}")
            home = h & mask
            j = home
            while j != i:
                if hashes[j] == EMPTY:
                    raise InvariantError(
                        f"key {key!r} at slot {i} is unreachable from its home slot {home}: "
                        f"slot {j} is empty"
                    )
                j = (j + 1) & mask
            if key in seen:
                raise InvariantError(f"key {key!r} is stored twice (again at slot {i})")
            seen.add(key)
        count = self._count
        if len(seen) != count:
            raise InvariantError(f"len() is {count} but {len(seen)} slots are occupied")
        if 3 * count > 2 * capacity:
            raise InvariantError(f"load {count}/{capacity} is above 2/3")
        if 8 * count < capacity and capacity > MIN_CAPACITY:
            raise InvariantError(f"load {count}/{capacity} is below 1/8")
        self._validate_order(seen)

    def _validate_order(self, stored: set) -> None:
        """The key lists: `_sorted` strictly ascending, `_added` ascending up to
        `_added_sorted`, every stored key in one of them (anything else in them is a
        stale entry or a repeat), and no more of those than a removal allows."""
        skeys, added, done = self._sorted, self._added, self._added_sorted
        for label, entries in (("_sorted", skeys), ("_added", added)):
            if type(entries) is not list:
                raise InvariantError(f"{label} is a {type(entries).__name__}, not a list")
            for key in entries:
                if type(key) is not bytes:
                    raise InvariantError(f"{label} holds a {type(key).__name__}")
        for i, (a, b) in enumerate(pairwise(skeys)):
            if a >= b:
                raise InvariantError(f"_sorted[{i}] {a!r} >= _sorted[{i + 1}] {b!r}")
        if not 0 <= done <= len(added):
            raise InvariantError(f"_added_sorted {done} is outside 0..{len(added)}")
        for i, (a, b) in enumerate(pairwise(added[:done])):
            if a > b:
                raise InvariantError(f"_added[{i}] {a!r} > _added[{i + 1}] {b!r} (ordered part)")
        missing = stored.difference(skeys).difference(added)
        if missing:
            raise InvariantError(
                f"stored key {min(missing)!r} is in neither _sorted nor _added "
                f"({len(missing)} such keys)"
            )
        stale = len(skeys) + len(added) - self._count
        if stale > (self._count >> 2) + FOLD_SLACK:
            raise InvariantError(
                f"{stale} stale entries in the key lists: a removal should have folded them "
                f"past {(self._count >> 2) + FOLD_SLACK}"
            )
