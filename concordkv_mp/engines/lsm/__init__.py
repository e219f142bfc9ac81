"""The LSM-tree engine: MemTables and a WAL in front of leveled SSTables.

Modules, bottom-up: `file_meta` (records), `bloom`, `block`, `block_cache`,
`sstable_format`, `sstable_builder`, `sstable_reader` (tables), `manifest` (the log of
live files; the WAL format is the engines' shared engines/wal.py), `memtable`,
`iterators`, `version`, `compaction` (pure steps), `executor` (who runs them),
`recovery`, `engine` (the owner of it all).
"""

from concordkv_mp.engines.lsm.engine import LSMEngine

__all__ = ["LSMEngine"]
