"""`SSTableBuilder.add_run`, the bulk path of flushes, against `add`: byte-identical files
for any split of the entries into runs, and the same refusals of out-of-order input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concordkv_mp.engines.lsm.sstable_builder import SSTableBuilder
from concordkv_mp.io.fs import DEFAULT_FS

entry_lists = st.lists(
    st.tuples(st.binary(min_size=1, max_size=6), st.one_of(st.none(), st.binary(max_size=300))),
    max_size=200,
)


def table_order(pairs):
    """Distinct (key, seq) with several versions per key, sorted key asc, seq desc."""
    entries = [(key, seq, value) for seq, (key, value) in enumerate(pairs, start=1)]
    return sorted(entries, key=lambda e: (e[0], -e[1]))


def build(path, entries, runs, block_size, compression):
    builder = SSTableBuilder(DEFAULT_FS, path, 1, block_size=block_size, compression=compression)
    if runs is None:
        for entry in entries:
            builder.add(*entry)
    else:
        cuts = [0] + sorted(set(runs)) + [len(entries)]
        for lo, hi in zip(cuts, cuts[1:]):
            chunk = entries[lo:hi]
            builder.add_run([e[0] for e in chunk], [e[1] for e in chunk], [e[2] for e in chunk])
    meta = builder.finish()
    with open(path, "rb") as f:
        return f.read(), meta


@settings(max_examples=150, deadline=None)
@given(
    pairs=entry_lists,
    cut_fractions=st.lists(st.floats(0, 1), max_size=4),
    block_size=st.sampled_from([64, 256, 4096]),
    compression=st.sampled_from(["none", "lz4"]),
)
def test_add_run_writes_the_same_bytes_as_add(tmp_path_factory, pairs, cut_fractions, block_size, compression):
    entries = table_order(pairs)
    directory = tmp_path_factory.mktemp("bulk")
    runs = [int(f * len(entries)) for f in cut_fractions]
    one_by_one = build(str(directory / "a.sst"), entries, None, block_size, compression)
    in_runs = build(str(directory / "b.sst"), entries, runs, block_size, compression)
    assert in_runs == one_by_one


@pytest.mark.parametrize(
    "keys, seqs",
    [
        ([b"b", b"a"], [1, 2]),  # keys descending
        ([b"a", b"a"], [1, 2]),  # versions of a key not newest first
        ([b"a", b"a"], [3, 3]),  # a repeated (key, seq)
    ],
)
def test_add_run_refuses_out_of_order_runs(tmp_path, keys, seqs):
    builder = SSTableBuilder(DEFAULT_FS, str(tmp_path / "t.sst"), 1)
    with pytest.raises(ValueError):
        builder.add_run(keys, seqs, [b"v"] * len(keys))
    builder.abandon()


def test_add_run_must_follow_what_was_added(tmp_path):
    builder = SSTableBuilder(DEFAULT_FS, str(tmp_path / "t.sst"), 1)
    builder.add(b"m", 5, b"v")
    with pytest.raises(ValueError):
        builder.add_run([b"a"], [9], [b"v"])
    with pytest.raises(ValueError):
        builder.add_run([b"m"], [6], [b"v"])  # same key, newer seq after an older one
    builder.add_run([b"m", b"z"], [4, 1], [None, b"v"])
    meta = builder.finish()
    assert (meta.smallest, meta.largest, meta.entries, meta.min_seq, meta.max_seq) == (b"m", b"z", 3, 1, 5)
