"""Storage engines behind one interface, and the factory that opens them by name.

An engine is single-process and knows nothing of IPC or of other processes: the LSM
engine's background steps run wherever the executor its caller injects runs them
(engines/lsm/executor.py). Each offers:
`get(key)`, `write(pairs)` (atomic; value None deletes), `delete_existing(keys) -> int`,
`update_existing(key, value) -> bool`, `increment(key, by) -> int` (counters.py),
`scan(start, end, reverse)` (snapshot iterator of
(key, value) in [start, end)), `count()`, `stats()`, `flush()`, `compact()`, `close()`,
and `retire_after(fn)` (run `fn` with writes held back, then refuse writes: the engine
switch). Keys and values reaching an engine are already checked bytes (see `database.py`).

`lsm` is the LSM tree of engines/lsm; the others are one in-memory index each behind the
shared `MemoryEngine` (engines/memory), which makes them durable with a WAL and snapshots.
"""

from __future__ import annotations

from concordkv_mp.engines.lsm.engine import LSMEngine
from concordkv_mp.engines.memory.btree import BPlusTree
from concordkv_mp.engines.memory.engine import MemoryEngine
from concordkv_mp.engines.memory.hash_table import HashTable
from concordkv_mp.engines.memory.rbtree import RedBlackTree
from concordkv_mp.engines.memory.sorted_array import SortedArray
from concordkv_mp.errors import ConfigError
from concordkv_mp.options import ENGINES

_INDEXES = {
    "btree": lambda options: BPlusTree(options.btree_order),
    "rbtree": lambda options: RedBlackTree(),
    "hash": lambda options: HashTable(),
    "array": lambda options: SortedArray(),
}


def open_engine(name: str, path: str, options, fs, executor_factory=None):
    """`executor_factory`: see LSMEngine; the in-memory engines have no background steps
    to hand over and ignore it."""
    if name == "lsm":
        return LSMEngine(path, options, fs, executor_factory)
    try:
        make_index = _INDEXES[name]
    except KeyError:
        raise ConfigError("engine", f"{name!r} is not one of {', '.join(ENGINES)}") from None
    return MemoryEngine(path, options, fs, make_index(options))
