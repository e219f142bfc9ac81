"""MemTable against a model: chunked ordered reads over its two key runs, and versions
kept exactly while a snapshot needs them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from concordkv_mp.engines.lsm import memtable as memtable_module
from concordkv_mp.engines.lsm.memtable import MemTable

keys = st.binary(min_size=1, max_size=3)
values = st.one_of(st.none(), st.binary(max_size=4))


def read_all(table: MemTable, reverse: bool, size: int, start=None) -> list:
    """Walk the table chunk by chunk, resuming after the last key, as scans do."""
    out = []
    position, inclusive = start, True
    while True:
        chunk = table.chunk(position, inclusive, reverse, size)
        out += [(key, entry[1]) for key, entry in chunk]
        if len(chunk) < size:
            return out
        position, inclusive = chunk[-1][0], False


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(st.lists(st.tuples(keys, values), min_size=1, max_size=8), max_size=30),
    size=st.integers(1, 7),
    reverse=st.booleans(),
    start=st.one_of(st.none(), keys),
    fold_at=st.sampled_from([2, 5, 4096]),
)
def test_chunks_cover_the_table_in_order(batches, size, reverse, start, fold_at):
    saved = memtable_module.PENDING_FOLD
    memtable_module.PENDING_FOLD = fold_at
    try:
        check_chunks_against_model(batches, size, reverse, start)
    finally:
        memtable_module.PENDING_FOLD = saved


def check_chunks_against_model(batches, size, reverse, start):
    table = MemTable(1)
    model = {}
    seq = 1
    for batch in batches:
        table.apply(seq, batch, None)
        seq += len(batch)
        model.update(batch)
        # Interleave reads with writes, so runs are read before and after folding.
        expected = sorted(model.items(), reverse=reverse)
        if start is not None:
            expected = [(k, v) for k, v in expected if (k <= start if reverse else k >= start)]
        assert read_all(table, reverse, size, start) == expected
    table.freeze()
    keys, _seqs, values = table.columns()
    flushed = list(zip(keys, values))
    assert flushed == sorted(model.items())


def test_versions_are_kept_only_for_live_snapshots():
    table = MemTable(1)
    table.apply(1, [(b"a", b"v1")], None)
    table.apply(2, [(b"a", b"v2")], None)  # no snapshot: replaced in place
    assert table.get(b"a", snapshot=1) is None
    table.apply(3, [(b"a", b"v3")], keep_versions_from=2)  # a snapshot at seq 2 sees v2
    table.apply(4, [(b"a", None)], keep_versions_from=2)
    assert table.get(b"a")[:2] == (4, None)
    assert table.get(b"a", snapshot=2)[:2] == (2, b"v2")
    # Flushed with both versions: the snapshot still needs v2 once it is in a table.
    _keys, seqs, values = table.columns()
    assert list(zip(seqs, values)) == [(4, None), (2, b"v2")]


def test_size_estimate_grows_with_new_keys_and_values():
    table = MemTable(1)
    table.apply(1, [(b"key", b"x" * 100)], None)
    first = table.approximate_bytes
    assert first >= 103
    table.apply(2, [(b"key", b"x" * 10)], None)
    assert table.approximate_bytes == first - 90
