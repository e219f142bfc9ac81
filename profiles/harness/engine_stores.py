"""The engine matrix's stores: ConcordKV-MP's engines through the engine interface, the
in-memory engine around the two baseline indexes (a dict and a SortedDict), and the raw
SortedDict; with the peers of harness.stores, the table of every row the matrix can run.
It must not time anything. open_engine is called here alone, in EngineStore.open.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from itertools import islice

from sortedcontainers import SortedDict

from concordkv_mp.engines import open_engine
from concordkv_mp.engines.memory.engine import MemoryEngine
from concordkv_mp.engines.memory.invariant import InvariantError
from concordkv_mp.io.fs import DEFAULT_FS
from concordkv_mp.options import StorageOptions
from concordkv_mp.workers.compaction_client import CompactionWorkerClient
from harness.stores import Dict, LevelDB, MiB, Store


# --- baseline indexes: the fastest Python maps behind MemoryEngine -----------------------


class _MapIndex:
    """What the two baselines share: a map in `_data` whose get and put are the map's."""

    __slots__ = ("_data",)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key):
        return self._data.get(key)

    def put(self, key, value):
        data = self._data
        old = data.get(key)
        data[key] = value
        if old is None:
            self._key_set_changed()
        return old

    def remove(self, key):
        old = self._data.pop(key, None)
        if old is not None:
            self._key_set_changed()
        return old

    def _key_set_changed(self):
        """Drop whatever depends on the set of keys; nothing, unless overridden."""


class DictIndex(_MapIndex):
    """A dict under the index contract; ranges bisect a sorted key list, cached until the
    key set changes. A benchmark baseline: `validate` checks only that cache."""

    name = "dict"
    __slots__ = ("_sorted",)

    def __init__(self):
        self._data = {}
        self._sorted = None

    def _key_set_changed(self):
        self._sorted = None

    def range_list(self, start, end, reverse, limit):
        keys = self._sorted
        if keys is None:
            keys = self._sorted = sorted(self._data)
        lo = 0 if start is None else bisect_left(keys, start)
        hi = len(keys) if end is None else bisect_left(keys, end)
        chosen = keys[max(lo, hi - limit):hi][::-1] if reverse else keys[lo:min(hi, lo + limit)]
        data = self._data
        return [(k, data[k]) for k in chosen]

    def load_sorted(self, keys, values):
        self._data = dict(zip(keys, values))
        self._sorted = None

    def clear(self):
        self._data = {}
        self._sorted = None

    def structure_stats(self):
        return {"sorted_key_cache": self._sorted is not None}

    def container_bytes(self):
        return sys.getsizeof(self._data) + (sys.getsizeof(self._sorted) if self._sorted is not None else 0)

    def validate(self):
        if self._sorted is not None and self._sorted != sorted(self._data):
            raise InvariantError("the sorted key cache is stale")


class SortedDictIndex(_MapIndex):
    """sortedcontainers' SortedDict under the index contract; ranges by irange."""

    name = "sorteddict"
    __slots__ = ()

    def __init__(self):
        self._data = SortedDict()

    def range_list(self, start, end, reverse, limit):
        data = self._data
        keys = data.irange(start, end, inclusive=(True, False), reverse=reverse)
        return [(k, data[k]) for k in islice(keys, limit)]

    def load_sorted(self, keys, values):
        self._data = SortedDict(zip(keys, values))

    def clear(self):
        self._data.clear()

    def structure_stats(self):
        return {"sublists": len(self._data._list._lists)}

    def container_bytes(self):
        # The dict, plus the SortedList of keys: its list of sublists, the sublists, and
        # its per-sublist maxima (the positional index is built only by index lookups).
        keys = self._data._list
        return (sys.getsizeof(self._data) + sys.getsizeof(keys._lists) + sys.getsizeof(keys._maxes)
                + sum(map(sys.getsizeof, keys._lists)))

    def validate(self):
        try:
            self._data._check()  # sortedcontainers' own consistency check
        except AssertionError as exc:
            raise InvariantError(f"SortedDict: {exc}") from None


# --- the stores --------------------------------------------------------------------------


class EngineStore(Store):
    """An engine through the engine interface: `Database` minus its argument checks."""

    module = "concordkv_mp"
    durability = 'fsync="none": each write goes to the WAL file, no fsync'

    def __init__(self, settings: dict, name: str, make_index=None):
        super().__init__(settings)
        self.name = name
        self.make_index = make_index  # None: the engine called `name`, from open_engine

    def open(self, path):
        self.path = path
        s = self.settings
        # memtable_size and cache_size concern only lsm (the in-memory engines size their
        # WAL buffer by memtable_size: the default either way); snapshot_wal_size only the others.
        options = StorageOptions(fsync="none", memtable_size=s["memtable_mb"] * MiB, cache_size=s["cache_mb"] * MiB,
                                 snapshot_wal_size=s["snapshot_wal_size"])
        if self.make_index is None:
            # As concordkv_mp.open() does with compaction_workers=1 (the default): the LSM
            # engine's flushes and compactions run in worker processes.
            self.engine = open_engine(self.name, str(path), options, DEFAULT_FS, lambda fs: CompactionWorkerClient())
        else:
            self.engine = MemoryEngine(str(path), options, DEFAULT_FS, self.make_index())
        write = self.engine.write

        def put(key, value):
            write([(key, value)])

        self.put = put
        self.get = self.engine.get

    def close(self):
        self.engine.close()

    def settle(self):
        self.engine.compact()

    def scan_range(self, start, n):
        return islice(self.engine.scan(start, None, False), n)

    def stats(self):
        return self.engine.stats()

    def version(self):
        inside = f"MemoryEngine around {self.make_index.__name__}" if self.make_index else "engine"
        return f"concordkv-mp {self.lib.__version__} {inside}"


class SortedDictStore(Store):
    name = "SortedDict"
    module = "sortedcontainers"
    durability = "none (in memory)"

    def open(self, path):
        self.path = path
        self.data = self.lib.SortedDict()
        self.put = self.data.__setitem__
        self.get = self.data.get

    def close(self):
        """Nothing to release."""

    def scan_range(self, start, n):
        data = self.data
        return ((k, data[k]) for k in islice(data.irange(start), n))

    def version(self):
        return f"sortedcontainers {self.lib.__version__}"


ENGINES = ("lsm", "btree", "rbtree", "hash", "array")
# key -> (row name, factory(settings) -> Store). A run makes a fresh store, so that the
# data of one is freed before the next fills.
STORES = {
    **{e: (e, lambda s, e=e: EngineStore(s, e)) for e in ENGINES},
    "dict-path": ("dict (same path)", lambda s: EngineStore(s, "dict (same path)", DictIndex)),
    "sorteddict-path": ("SortedDict (same path)", lambda s: EngineStore(s, "SortedDict (same path)", SortedDictIndex)),
    "dict": ("dict", Dict),
    "sorteddict": ("SortedDict", SortedDictStore),
    "leveldb": ("LevelDB", LevelDB),
}
