"""Leveled compaction as pure functions: pick a task, run it, describe the result.

`pick_compaction(levels, options, ...)` looks at a Version's files and returns a
`CompactionTask` (or None); `run_compaction(fs, directory, task, options)` reads the
input files and writes the outputs — it touches nothing but those files and returns
their `FileMeta`s; the owning engine alone installs them in its manifest. A task is a
plain record (`to_record`/`from_record`, msgpack-able), so the server's compaction
worker processes can run the same step unchanged. `write_flush` is the same step for
a frozen MemTable going to L0.

Policy (LevelDB's, simplified): L0 is compacted into L1 when it holds
`l0_compaction_trigger` files; level i >= 1 when its bytes exceed
`level_base_size * level_size_ratio ** (i - 1)`. A level-i task takes one file
(round-robin through the key space) plus every overlapping file of level i+1; a file
with no overlap below it is moved down without rewriting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from concordkv_mp.engines.lsm.file_meta import FileMeta, sstable_name
from concordkv_mp.engines.lsm.iterators import merge_sources
from concordkv_mp.engines.lsm.sstable_builder import SSTableBuilder
from concordkv_mp.engines.lsm.sstable_reader import SSTableReader

NUM_LEVELS = 7
SIZE_CHECK_INTERVAL = 32


@dataclass
class CompactionTask:
    level: int  # input level; outputs go to level + 1
    inputs: list[FileMeta]  # files of `level`
    overlapping: list[FileMeta]  # files of `level + 1` that the inputs overlap
    smallest_snapshot: int  # versions shadowed at or below this seq may be dropped
    bottommost: bool  # no deeper level overlaps the key range: tombstones may go
    output_numbers: list[int] = field(default_factory=list)  # file numbers reserved for outputs

    @property
    def output_level(self) -> int:
        return self.level + 1

    @property
    def trivial_move(self) -> bool:
        return len(self.inputs) == 1 and not self.overlapping and self.level > 0

    def all_inputs(self) -> list[FileMeta]:
        return self.inputs + self.overlapping

    def input_bytes(self) -> int:
        return sum(f.size for f in self.all_inputs())

    def to_record(self) -> dict:
        return {
            "level": self.level,
            "inputs": [f.to_record() for f in self.inputs],
            "overlapping": [f.to_record() for f in self.overlapping],
            "smallest_snapshot": self.smallest_snapshot,
            "bottommost": self.bottommost,
            "output_numbers": list(self.output_numbers),
        }

    @classmethod
    def from_record(cls, record: dict) -> "CompactionTask":
        return cls(
            level=record["level"],
            inputs=[FileMeta.from_record(r) for r in record["inputs"]],
            overlapping=[FileMeta.from_record(r) for r in record["overlapping"]],
            smallest_snapshot=record["smallest_snapshot"],
            bottommost=record["bottommost"],
            output_numbers=list(record["output_numbers"]),
        )


def level_max_bytes(level: int, options) -> int:
    return options.level_base_size * options.level_size_ratio ** (level - 1)


def compaction_scores(levels, options) -> list[float]:
    """Score per level (L0..L5); >= 1 means the level needs compacting."""
    scores = [len(levels[0]) / options.l0_compaction_trigger]
    for level in range(1, NUM_LEVELS - 1):
        scores.append(sum(f.size for f in levels[level]) / level_max_bytes(level, options))
    return scores


def _key_range(files):
    return min(f.smallest for f in files), max(f.largest for f in files)


def _overlapping(files, smallest: bytes, largest: bytes) -> list[FileMeta]:
    return [f for f in files if f.overlaps(smallest, largest)]


def _make_task(levels, level: int, inputs: list[FileMeta], smallest_snapshot: int) -> CompactionTask:
    if level == 0:
        # L0 files overlap each other: take every L0 file the range reaches, repeatedly.
        smallest, largest = _key_range(inputs)
        while True:
            grown = _overlapping(levels[0], smallest, largest)
            if len(grown) == len(inputs):
                break
            inputs = grown
            smallest, largest = _key_range(inputs)
    smallest, largest = _key_range(inputs)
    overlapping = _overlapping(levels[level + 1], smallest, largest)
    if overlapping:
        smallest, largest = _key_range(inputs + overlapping)
    deeper = any(_overlapping(levels[deeper], smallest, largest) for deeper in range(level + 2, NUM_LEVELS))
    return CompactionTask(level, list(inputs), overlapping, smallest_snapshot, bottommost=not deeper)


def pick_compaction(levels, options, smallest_snapshot: int, compact_pointers: dict) -> CompactionTask | None:
    """The most urgent compaction, or None when every level is within its budget.

    `compact_pointers[level]` is the largest key of the last file compacted from that
    level; the next pick starts after it so a level is worked through in turn.
    """
    scores = compaction_scores(levels, options)
    level = max(range(len(scores)), key=scores.__getitem__)
    if scores[level] < 1:
        return None
    if level == 0:
        return _make_task(levels, 0, list(levels[0]), smallest_snapshot)
    files = levels[level]
    pointer = compact_pointers.get(level)
    chosen = next((f for f in files if pointer is None or f.largest > pointer), files[0])
    return _make_task(levels, level, [chosen], smallest_snapshot)


def pick_level_compaction(levels, level: int, smallest_snapshot: int) -> CompactionTask | None:
    """All of `level` into level + 1 (used by a manual full compaction)."""
    if not levels[level]:
        return None
    return _make_task(levels, level, list(levels[level]), smallest_snapshot)


def output_numbers_needed(task: CompactionTask, options) -> int:
    """An upper bound on the output files, so numbers can be reserved up front.

    Counted in entries, not bytes: a file is cut on the builder's uncompressed size
    estimate, which compressed input bytes do not bound (found with highly compressible
    values), but every output except the last holds at least SIZE_CHECK_INTERVAL
    entries. Unused numbers are simply never seen on disk.
    """
    entries = sum(f.entries for f in task.all_inputs())
    return entries // SIZE_CHECK_INTERVAL + 2


def compacted_entries(entries, smallest_snapshot: int, drop_tombstones: bool):
    """Drop versions that no snapshot can see (LevelDB's rule).

    A version is dropped when a newer version of the same key is itself at or below
    the smallest live snapshot; a tombstone at or below it is dropped when no deeper
    level can hold an older version of its key.
    """
    previous_key = None
    newer_seq = None
    for key, seq, value in entries:
        if key != previous_key:
            previous_key = key
            newer_seq = None
        if newer_seq is not None and newer_seq <= smallest_snapshot:
            continue
        newer_seq = seq
        if value is None and drop_tombstones and seq <= smallest_snapshot:
            continue
        yield key, seq, value


def _new_builder(fs, directory: str, number: int, options) -> SSTableBuilder:
    return SSTableBuilder(
        fs,
        os.path.join(directory, sstable_name(number)),
        number,
        block_size=options.block_size,
        compression=options.compression,
        bloom_bits_per_key=options.bloom_bits_per_key,
    )


def _write_tables(fs, directory: str, entries, numbers: list[int], options) -> list[FileMeta]:
    """Write sorted entries into tables cut at `target_file_size`.

    Versions of one key never straddle two files: sorted levels rely on file ranges
    not overlapping.
    """
    outputs: list[FileMeta] = []
    builders: list[SSTableBuilder] = []
    builder = None
    last_key = None
    full = False
    added = 0  # entries in the current output
    try:
        for key, seq, value in entries:
            if full and key != last_key:
                outputs.append(builder.finish())
                builder = None
                full = False
                added = 0
            if builder is None:
                if len(outputs) >= len(numbers):
                    raise RuntimeError("compaction ran out of reserved file numbers")
                number = numbers[len(outputs)]
                builder = _new_builder(fs, directory, number, options)
                builders.append(builder)
            builder.add(key, seq, value)
            last_key = key
            added += 1
            # The size estimate is not free; a file overshooting its target by a few
            # dozen entries does not matter.
            if added % SIZE_CHECK_INTERVAL == 0 and builder.estimated_size >= options.target_file_size:
                full = True
        if builder is not None:
            outputs.append(builder.finish())
    except BaseException:
        for partial in builders:
            partial.abandon()
        raise
    return outputs


def write_flush(fs, directory: str, columns: tuple[list, list, list], number: int, options) -> FileMeta | None:
    """Write a frozen MemTable — its (keys, seqs, values) columns in table order, all
    versions — as one L0 table; None if it is empty."""
    keys, seqs, values = columns
    if not keys:
        return None
    builder = _new_builder(fs, directory, number, options)
    try:
        builder.add_run(keys, seqs, values)
        return builder.finish()
    except BaseException:
        builder.abandon()
        raise


def run_compaction(fs, directory: str, task: CompactionTask, options) -> list[FileMeta]:
    """Merge the task's inputs into new files at the output level; return their metadata.

    The inputs are left in place: the owner deletes them once the new Version that
    replaces them is durable in the manifest and no reader needs them.
    """
    readers = [
        SSTableReader.open(fs, os.path.join(directory, sstable_name(f.number)), f.number, None)
        for f in task.all_inputs()
    ]
    try:
        merged = merge_sources([r.iter_from(None, False) for r in readers], reverse=False)
        kept = compacted_entries(merged, task.smallest_snapshot, task.bottommost)
        return _write_tables(fs, directory, kept, task.output_numbers, options)
    finally:
        for reader in readers:
            reader.close()
