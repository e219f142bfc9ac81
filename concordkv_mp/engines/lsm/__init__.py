"""The LSM-tree engine: MemTables and a WAL in front of leveled SSTables.

Modules, bottom-up: `file_meta` (records), `bloom`, `block`, `block_cache`,
`sstable_format`, `sstable_builder`, `sstable_reader` (tables), `wal`, `manifest`
(logs), `memtable`, `iterators`, `version`, `compaction` (pure steps), `recovery`,
`engine` (the owner of it all).
"""

from concordkv_mp.engines.lsm.engine import LSMEngine

__all__ = ["LSMEngine"]
