"""Option sets with the smallest sizes, so that each engine's background work (LSM flushes
and compactions, snapshots of the in-memory engines, B+tree splits and merges) happens
after a few KiB of writes."""

from __future__ import annotations

# The smallest sizes the options allow, so that a few hundred writes already fill the
# MemTable, flush several L0 files, and push compactions into L1, L2 and below.
TINY_LSM_OPTIONS = {
    "engine": "lsm",
    "memtable_size": 4096,
    "l0_compaction_trigger": 2,
    "level_base_size": 8192,
    "level_size_ratio": 2,
    "target_file_size": 4096,
    "block_size": 256,
}

# The in-memory engines snapshot every 4 KiB of WAL, and the B+tree splits and merges at
# every few keys.
TINY_MEMORY_OPTIONS = {"memtable_size": 4096, "snapshot_wal_size": 4096, "btree_order": 3}


def tiny_options(engine: str, fsync: str = "none") -> dict:
    """Options of `engine` with the smallest sizes, and the given fsync policy."""
    base = TINY_LSM_OPTIONS if engine == "lsm" else TINY_MEMORY_OPTIONS
    return dict(base, engine=engine, fsync=fsync)
