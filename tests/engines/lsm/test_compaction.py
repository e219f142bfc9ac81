"""The pure compaction steps: the version-dropping rule, picking, and running a task.

`run_compaction` is checked the way a worker process will use it: from a task record
that went through msgpack, on files it only reads, returning metadata of new files.
"""

from __future__ import annotations

import os

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from concordkv_mp.engines.lsm.compaction import (
    CompactionTask,
    compacted_entries,
    pick_compaction,
    run_compaction,
    write_flush,
)
from concordkv_mp.engines.lsm.file_meta import FileMeta, sstable_name
from concordkv_mp.engines.lsm.sstable_reader import SSTableReader
from concordkv_mp.io.fs import DEFAULT_FS
from concordkv_mp.options import StorageOptions


def visible(entries, snapshot):
    """Model: the newest version of each key at `snapshot`, tombstones removed."""
    result = {}
    for key, seq, value in sorted(entries, key=lambda e: (e[0], -e[1])):
        if seq <= snapshot and key not in result:
            result[key] = value
    return {k: v for k, v in result.items() if v is not None}


@settings(max_examples=300, deadline=None)
@given(
    writes=st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), st.one_of(st.none(), st.binary(max_size=3))), max_size=40),
    snapshots=st.lists(st.integers(0, 45), max_size=4),
    bottommost=st.booleans(),
)
def test_dropping_versions_never_changes_what_a_live_snapshot_sees(writes, snapshots, bottommost):
    entries = [(key, seq, value) for seq, (key, value) in enumerate(writes, start=1)]
    latest = len(writes)
    smallest = min(snapshots + [latest])
    ordered = sorted(entries, key=lambda e: (e[0], -e[1]))
    kept = list(compacted_entries(iter(ordered), smallest, bottommost))
    for snapshot in snapshots + [latest]:
        assert visible(kept, snapshot) == visible(entries, snapshot)
    if not bottommost:
        # Above the bottom level the newest version of every key stays, tombstones too:
        # they hide older versions further down.
        newest = {}
        for key, seq, value in ordered:
            newest.setdefault(key, (seq, value))
        assert {key: (seq, value) for key, seq, value in kept if newest[key][0] == seq} == newest
    if not snapshots:
        assert len({key for key, _, _ in kept}) == len(kept), "one version per key without snapshots"


def meta(number, smallest, largest, size=100):
    return FileMeta(number, size, smallest, largest, 1, 1, 1)


def test_pick_prefers_the_level_furthest_over_budget():
    options = StorageOptions(l0_compaction_trigger=4, level_base_size=10_000, level_size_ratio=10)
    levels = [[meta(9, b"a", b"z")] * 2, [meta(1, b"a", b"m", 9000), meta(2, b"n", b"z", 9000)], [], [], [], [], []]
    task = pick_compaction(levels, options, 0, {})
    assert task.level == 1 and len(task.inputs) == 1  # L1 at 1.8x its budget beats L0 at 0.5
    assert pick_compaction(levels, options, 0, {1: b"m"}).inputs[0].number == 2  # round-robin
    levels[1] = levels[1][:1]
    assert pick_compaction(levels, options, 0, {}) is None
    levels[0] = [meta(10 + i, b"a", b"c") for i in range(4)]
    task = pick_compaction(levels, options, 0, {})
    assert task.level == 0 and len(task.inputs) == 4
    assert [f.number for f in task.overlapping] == [1]
    assert task.bottommost


def test_run_compaction_from_a_serialized_task_merges_and_splits(tmp_path):
    options = StorageOptions(target_file_size=8 * 1024, block_size=1024)
    directory = str(tmp_path)
    older = [(b"k%05d" % i, i + 1, b"old" * 10) for i in range(3000)]
    newer = [(b"k%05d" % i, 10_000 + i, None if i % 3 == 0 else b"new" * 10) for i in range(0, 3000, 2)]
    first = write_flush(DEFAULT_FS, directory, tuple(map(list, zip(*older))), 1, options)
    second = write_flush(DEFAULT_FS, directory, tuple(map(list, zip(*newer))), 2, options)
    task = CompactionTask(0, [second, first], [], smallest_snapshot=20_000, bottommost=True, output_numbers=list(range(3, 40)))
    record = msgpack.unpackb(msgpack.packb(task.to_record()))
    outputs = run_compaction(DEFAULT_FS, directory, CompactionTask.from_record(record), options)
    assert len(outputs) > 1
    assert all(a.largest < b.smallest for a, b in zip(outputs, outputs[1:]))
    merged = []
    for out in outputs:
        reader = SSTableReader.open(DEFAULT_FS, os.path.join(directory, sstable_name(out.number)), out.number, None)
        merged += list(reader.iter_from(None, False))
        reader.close()
    expected = visible(older + newer, 20_000)
    assert {key: value for key, _seq, value in merged} == expected
    assert len(merged) == len(expected)  # shadowed versions and bottom tombstones dropped
