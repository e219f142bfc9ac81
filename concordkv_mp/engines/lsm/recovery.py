"""Opening an LSM database directory: read the manifest, replay WALs, tidy up.

Recovery order (each step durable before the next, so a crash anywhere in it is
recoverable by running it again):
1. read MANIFEST (or create a fresh one for a new directory);
2. replay every WAL numbered >= the manifest's `log_number`, oldest first, into
   MemTables, writing a full MemTable out as an L0 table as it fills;
3. write the last MemTable out too, and a new MANIFEST whose `log_number` is a fresh
   WAL's number — only then are the replayed WALs obsolete;
4. delete obsolete WALs, SSTables no manifest lists (outputs of a compaction that
   crashed) and a stale MANIFEST.tmp.
Because replayed logs are always retired, a WAL is never appended to after a torn
record. This module runs before the engine's threads start; it owns nothing after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from concordkv_mp.engines.lsm.compaction import write_flush
from concordkv_mp.engines.lsm.file_meta import FileMeta, sstable_name, wal_name
from concordkv_mp.engines.lsm.manifest import ManifestState, read_manifest, write_manifest
from concordkv_mp.engines.lsm.memtable import MemTable
from concordkv_mp.engines.wal import read_wal
from concordkv_mp.errors import CorruptionError

NUM_LEVELS = 7


@dataclass
class RecoveredState:
    manifest: ManifestState
    replayed_records: int
    torn_tail: bool
    stopped_at: CorruptionError | None  # point-in-time recovery stopped here


def numbered_files(fs, directory: str, suffix: str) -> list[int]:
    numbers = []
    for name in fs.listdir(directory):
        stem, dot, ext = name.partition(".")
        if dot and "." + ext == suffix and stem.isdigit():
            numbers.append(int(stem))
    return sorted(numbers)


def recover(fs, directory: str, options) -> RecoveredState:
    state = read_manifest(fs, directory)
    if state is None:
        state = ManifestState(next_file_number=2, last_sequence=0, log_number=1, levels=[[] for _ in range(NUM_LEVELS)])
        write_manifest(fs, directory, state)
    if state.engine != "lsm":
        raise CorruptionError(os.path.join(directory, "MANIFEST"), f"manifest is for engine {state.engine!r}, not 'lsm'")

    # Never reuse a number already on disk, even an orphan's: a file created under a
    # number the manifest did not know yet (a compaction output in flight at a crash)
    # is deleted below, and a number must not name two different files in one life.
    on_disk = numbered_files(fs, directory, ".sst") + numbered_files(fs, directory, ".wal")
    state.next_file_number = max([state.next_file_number] + [n + 1 for n in on_disk])
    wal_numbers = [n for n in numbered_files(fs, directory, ".wal") if n >= state.log_number]
    new_tables: list[FileMeta] = []
    replayed = 0
    torn_tail = False
    stopped_at = None
    memtable = MemTable(0)

    def write_out(table: MemTable) -> None:
        number = state.next_file_number
        state.next_file_number += 1
        meta = write_flush(fs, directory, table.columns(), number, options)
        if meta is not None:
            new_tables.append(meta)

    for position, number in enumerate(wal_numbers):
        path = os.path.join(directory, wal_name(number))
        result = read_wal(fs, path, mode=options.wal_recovery)
        for first_seq, entries in result.batches:
            memtable.apply(first_seq, entries, None)
            state.last_sequence = max(state.last_sequence, first_seq + len(entries) - 1)
            replayed += 1
            if memtable.approximate_bytes >= options.memtable_size:
                write_out(memtable)
                memtable = MemTable(0)
        if result.corruption is not None:
            stopped_at = result.corruption
            break
        if result.torn_tail:
            torn_tail = True
            if position != len(wal_numbers) - 1:
                # Every WAL but the newest was synced when it was retired, so a torn
                # record there is damage, not an interrupted append.
                corruption = CorruptionError(path, "torn record in a WAL that a newer WAL follows")
                if options.wal_recovery == "strict":
                    raise corruption
                stopped_at = corruption
                break
    if len(memtable):
        write_out(memtable)

    # Newest first, ahead of the L0 files already there (which are all older).
    state.levels[0] = list(reversed(new_tables)) + list(state.levels[0])
    state.log_number = state.next_file_number
    state.next_file_number += 1
    write_manifest(fs, directory, state)

    live = {f.number for level in state.levels for f in level}
    for number in numbered_files(fs, directory, ".wal"):
        if number < state.log_number:
            fs.remove(os.path.join(directory, wal_name(number)))
    for number in numbered_files(fs, directory, ".sst"):
        if number not in live:
            fs.remove(os.path.join(directory, sstable_name(number)))
    fs.remove(os.path.join(directory, "MANIFEST.tmp"))
    return RecoveredState(state, replayed, torn_tail, stopped_at)
