"""Storage options: their names, defaults, and validation.

These names are the public contract shared by `concordkv_mp.open(path, **options)`,
the JSON config file, `CKV_*` environment variables and command-line flags (SPEC.md).
This module validates values and nothing else; it must not touch files or engines.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from concordkv_mp.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB

FSYNC_POLICIES = ("always", "everysec", "none")
CACHE_POLICIES = ("lru", "lfu", "fifo", "random")
COMPRESSIONS = ("lz4", "none")
WAL_RECOVERY_MODES = ("strict", "point_in_time")
ENGINES = ("lsm", "btree", "rbtree", "hash", "array")


@dataclass(frozen=True)
class StorageOptions:
    """Options of one embedded database; see docs/configuration in the README."""

    engine: str = "lsm"
    fsync: str = "everysec"
    memtable_size: int = 4 * MiB
    max_immutable_memtables: int = 2
    cache_policy: str = "lru"
    cache_size: int = 64 * MiB
    max_key_size: int = 16 * KiB
    max_value_size: int = 16 * MiB
    block_size: int = 4 * KiB
    compression: str = "lz4"
    bloom_bits_per_key: int = 10
    target_file_size: int = 2 * MiB
    level_base_size: int = 10 * MiB
    level_size_ratio: int = 10
    l0_compaction_trigger: int = 4
    l0_stop_writes_trigger: int = 12
    wal_recovery: str = "strict"
    # Embedded LSM engine: 0 runs flushes and compactions in its two background threads;
    # >= 1 gives each thread a worker process (concordkv_mp.open() injects them), so the
    # work does not share the caller's GIL. A server's pool has this many workers.
    compaction_workers: int = 1
    # In-memory engines (btree, rbtree, hash, array):
    btree_order: int = 100
    # A snapshot is written once the WAL since the last one exceeds both this and the
    # size of the data, so that recovery time and disk use stay proportional to the data.
    snapshot_wal_size: int = 64 * MiB

    def __post_init__(self):
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("fsync", self.fsync, FSYNC_POLICIES)
        _check_choice("cache_policy", self.cache_policy, CACHE_POLICIES)
        _check_choice("compression", self.compression, COMPRESSIONS)
        _check_choice("wal_recovery", self.wal_recovery, WAL_RECOVERY_MODES)
        _check_int("memtable_size", self.memtable_size, 4 * KiB, 1024 * MiB)
        _check_int("max_immutable_memtables", self.max_immutable_memtables, 1, 64)
        _check_int("cache_size", self.cache_size, 0, 1 << 40)
        _check_int("max_key_size", self.max_key_size, 1, 1 * MiB)
        _check_int("max_value_size", self.max_value_size, 0, 512 * MiB)
        _check_int("block_size", self.block_size, 256, 1 * MiB)
        _check_int("bloom_bits_per_key", self.bloom_bits_per_key, 0, 64)
        _check_int("target_file_size", self.target_file_size, 4 * KiB, 1024 * MiB)
        _check_int("level_base_size", self.level_base_size, 4 * KiB, 1 << 40)
        _check_int("level_size_ratio", self.level_size_ratio, 2, 100)
        _check_int("l0_compaction_trigger", self.l0_compaction_trigger, 1, 1000)
        _check_int("l0_stop_writes_trigger", self.l0_stop_writes_trigger, 1, 1000)
        _check_int("compaction_workers", self.compaction_workers, 0, 64)
        _check_int("btree_order", self.btree_order, 3, 1000)
        _check_int("snapshot_wal_size", self.snapshot_wal_size, 4 * KiB, 1 << 40)
        if self.l0_stop_writes_trigger < self.l0_compaction_trigger:
            raise ConfigError(
                "l0_stop_writes_trigger",
                f"{self.l0_stop_writes_trigger} is below l0_compaction_trigger "
                f"({self.l0_compaction_trigger}); writes would stall before compaction starts",
            )

    @classmethod
    def from_kwargs(cls, **kwargs) -> "StorageOptions":
        known = {f.name for f in fields(cls)}
        for name in kwargs:
            if name not in known:
                raise ConfigError(name, f"unknown option; known options are: {', '.join(sorted(known))}")
        return cls(**kwargs)


def _check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(field, f"{value!r} is not one of {', '.join(choices)}")


def _check_int(field: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ConfigError(field, f"{value} is outside {low}..{high}")
