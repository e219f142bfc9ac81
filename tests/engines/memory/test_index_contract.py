"""The in-memory index contract (concordkv_mp/engines/memory/__init__.py), one suite for every index:
BPlusTree at orders 3, 4, 5 and 100, RedBlackTree, HashTable and SortedArray, each
against a dict model with validate() after every operation. Random operations, range_list
bounds, directions and limits, the engine's chunked scan (also with changes between
chunks), load_sorted, clear(), point-operation results, structure_stats and
container_bytes. What only one structure has lives in its own test_<module>.py."""

from __future__ import annotations

import json
import math
import random
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concordkv_mp.engines.memory.btree import BPlusTree
from concordkv_mp.engines.memory.hash_table import HashTable
from concordkv_mp.engines.memory.rbtree import RedBlackTree
from concordkv_mp.engines.memory.sorted_array import SortedArray
from tests.engines.memory.index_model import (
    COLLIDING,
    PRELOAD,
    SHORT_KEYS,
    apply_op,
    assert_same,
    model_range,
    put_all,
    scan_in_chunks,
)

# The B+tree orders are separate parameters: 3 to 5 split, borrow and merge all the
# time, 100 is the product default.
INDEXES = [
    pytest.param(partial(BPlusTree, order), "btree", id=f"btree-{order}")
    for order in (3, 4, 5, 100)
] + [
    pytest.param(RedBlackTree, "rbtree", id="rbtree"),
    pytest.param(HashTable, "hash", id="hash"),
    pytest.param(SortedArray, "array", id="array"),
]
each_index = pytest.mark.parametrize(("new_index", "name"), INDEXES)

# Few distinct keys, so that random operations hit existing keys often; keys whose
# hashes collide; and variable-length keys that exercise bytes ordering
# (b"a" < b"a\x00" < b"b").
keys = st.one_of(
    st.sampled_from(SHORT_KEYS),
    st.integers(0, 80).map(lambda i: bytes([i])),
    st.binary(min_size=1, max_size=3),
    st.sampled_from(PRELOAD),
    st.sampled_from(COLLIDING),
)
values = st.binary(max_size=3)
# b"" is below every key: as a start it bounds nothing, as an end it excludes all.
bounds = st.one_of(st.none(), keys, st.binary(max_size=3))
# put twice over: the index grows while removes also find keys.
operations = st.one_of(
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("remove"), keys),
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("range"), bounds, bounds, st.booleans(), st.integers(1, 30)),
    st.tuples(st.just("chunks"), bounds, bounds, st.booleans(), st.integers(1, 9)),
)
PRELOADS = {"none": [], "spread": PRELOAD, "colliding": COLLIDING}


def random_content(count: int, seed: int) -> dict:
    rng = random.Random(seed)
    return {rng.randbytes(rng.randint(1, 3)): rng.randbytes(2) for _ in range(count)}


def filled(new_index, content: dict):
    index, model = new_index(), {}
    put_all(index, model, content.items())
    index.validate()
    return index, model


# ------------------------------------------------------------- random vs. the model


@each_index
@settings(max_examples=150, deadline=None)
@given(
    preload=st.sampled_from(sorted(PRELOADS)),
    ops=st.lists(operations, min_size=20, max_size=250),
)
def test_random_operations_match_a_dict(new_index, name, preload, ops):
    index, model = filled(new_index, dict.fromkeys(PRELOADS[preload], b"pre"))
    for op in ops:
        apply_op(index, model, op)
    assert_same(index, model)


@each_index
def test_long_seeded_run_grows_and_drains(new_index, name):
    """Thousands of mixed operations over a key space big enough to split order 100:
    an insert-heavy phase, a balanced one, a delete-heavy one that shrinks the index,
    a regrowth, then every key removed in random order."""
    rng = random.Random(name)
    universe = [rng.randbytes(rng.randint(1, 6)) for _ in range(1500)]
    index, model = new_index(), {}
    step = 0
    for put_share in (0.9, 0.5, 0.15, 0.85):
        for _ in range(1000):
            step += 1
            key = rng.choice(universe)
            roll = rng.random()
            if roll < put_share:
                op = ("put", key, step.to_bytes(2, "big"))
            elif roll < 0.9:
                # Removes mostly hit present keys, so a delete-heavy phase really drains.
                if model and rng.random() < 0.6:
                    key = rng.choice(list(model))
                op = ("remove", key)
            elif roll < 0.95:
                op = ("get", key)
            else:
                start, end = rng.choice(universe + [None]), rng.choice(universe + [None])
                kind = "range" if rng.random() < 0.8 else "chunks"
                op = (kind, start, end, rng.random() < 0.5, rng.randint(1, 300))
            apply_op(index, model, op)
        assert_same(index, model)
    doomed = list(model)
    rng.shuffle(doomed)
    for key in doomed:
        apply_op(index, model, ("remove", key))
    assert_same(index, {})
    assert index.remove(universe[0]) is None


@each_index
def test_point_operations_return_previous_values_and_edges(new_index, name):
    index = new_index()
    assert index.get(b"m") is None and index.remove(b"m") is None
    assert index.put(b"m", b"1") is None
    # Keys before the first, after the last, and equal to the only key.
    assert index.get(b"a") is None and index.get(b"z") is None
    assert index.get(b"m") == b"1"
    assert index.remove(b"z") is None and index.remove(b"a") is None
    assert index.put(b"a", b"0") is None
    assert index.put(b"z", b"2") is None
    assert index.put(b"z", b"3") == b"2"
    # An empty value is a value, not None.
    assert index.put(b"e", b"") is None
    assert index.get(b"e") == b""
    assert index.remove(b"e") == b""
    assert index.remove(b"e") is None
    assert index.put(b"e", b"") is None
    assert index.put(b"e", b"4") == b""
    assert_same(index, {b"a": b"0", b"e": b"4", b"m": b"1", b"z": b"3"})
    assert index.remove(b"a") == b"0"
    assert index.remove(b"a") is None  # absent now: no change
    assert index.remove(b"z") == b"3"
    assert index.remove(b"e") == b"4"
    assert_same(index, {b"m": b"1"})


@each_index
def test_name_is_the_class_attribute(new_index, name):
    assert new_index().name == name
    assert type(new_index()).name == name


# ------------------------------------------------------------------------ range scans


@each_index
def test_range_list_edge_cases(new_index, name):
    index = new_index()
    assert index.range_list(None, None, False, 5) == []
    assert index.range_list(None, None, True, 5) == []
    for i in range(0, 100, 2):
        index.put(bytes([i]), bytes([i]))
    assert index.range_list(bytes([10]), bytes([10]), False, 5) == []
    assert index.range_list(bytes([10]), bytes([10]), True, 5) == []
    assert index.range_list(bytes([20]), bytes([10]), False, 5) == []
    assert index.range_list(bytes([20]), bytes([10]), True, 5) == []
    assert index.range_list(bytes([11]), bytes([13]), False, 5) == [(bytes([12]), bytes([12]))]
    assert index.range_list(bytes([11]), bytes([13]), True, 5) == [(bytes([12]), bytes([12]))]
    assert index.range_list(None, None, True, 1) == [(bytes([98]), bytes([98]))]
    assert index.range_list(None, None, False, 1) == [(bytes([0]), bytes([0]))]
    assert index.range_list(b"\xff", None, False, 5) == []
    assert index.range_list(None, b"\x00", True, 5) == []
    assert index.range_list(None, b"", False, 5) == []
    assert len(index.range_list(b"", None, False, 100)) == 50
    assert [k for k, _ in index.range_list(bytes([5]), None, False, 3)] == [
        bytes([6]), bytes([8]), bytes([10])
    ]
    assert [k for k, _ in index.range_list(None, bytes([10]), True, 3)] == [
        bytes([8]), bytes([6]), bytes([4])
    ]


@each_index
def test_range_list_bounds_directions_and_limits_grid(new_index, name):
    """Every combination of bounds on, between and outside the stored keys."""
    index, model = filled(new_index, {b"k%03d" % i: b"v%d" % i for i in range(0, 200, 2)})
    grid = [None, b"", b"a", b"k", b"k000", b"k001", b"k050", b"k051", b"k198", b"k199", b"z"]
    for start in grid:
        for end in grid:
            for reverse in (False, True):
                for limit in (1, 3, 100, 1000):
                    got = index.range_list(start, end, reverse, limit)
                    assert got == model_range(model, start, end, reverse, limit)


@each_index
@settings(max_examples=80, deadline=None)
@given(
    content=st.one_of(
        st.dictionaries(keys, values, max_size=60),
        st.integers(0, 3).map(partial(random_content, 600)),
    ),
    queries=st.lists(
        st.tuples(bounds, bounds, st.booleans(), st.integers(1, 400)), min_size=1, max_size=10
    ),
    chunk=st.integers(1, 70),
)
def test_range_list_and_chunked_scans_match_the_model(new_index, name, content, queries, chunk):
    index, model = filled(new_index, content)
    for start, end, reverse, limit in queries:
        assert index.range_list(start, end, reverse, limit) == model_range(
            model, start, end, reverse, limit
        )
        assert scan_in_chunks(index, start, end, reverse, chunk) == model_range(
            model, start, end, reverse, len(model) + 1
        )


@each_index
@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_scan_survives_changes_behind_the_cursor(new_index, name, reverse):
    """Between chunks, delete what was just read and write the last key read back with
    a new value, on the side the cursor has passed: the scan still returns each
    original pair exactly once, and the index ends as the model of those changes."""
    index, model = filled(new_index, random_content(1500, 5))
    current = dict(model)

    def churn(chunk):
        for key, _ in chunk:
            assert index.remove(key) == current.pop(key)
        last = chunk[-1][0]
        assert index.put(last, b"new") is None
        current[last] = b"new"
        index.validate()

    result = scan_in_chunks(index, None, None, reverse, 37, churn)
    assert result == sorted(model.items(), reverse=reverse)
    assert_same(index, current)


# Colliding keys make one long probe cluster in a hash table; 400 random ones a deeper
# tree that rebalances under the changes.
CHANGE_POOLS = {"colliding": COLLIDING + SHORT_KEYS, "spread": list(random_content(400, 11))}


@each_index
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("size", [4, 16])
@pytest.mark.parametrize("pool", sorted(CHANGE_POOLS))
def test_chunked_scan_sees_changes_anywhere(new_index, name, reverse, size, pool):
    """Random puts and removes on both sides of the cursor between chunks: each chunk
    is exactly the next `size` pairs of the index as it is when the chunk is read."""
    rng = random.Random(size)
    pool = CHANGE_POOLS[pool]
    index, model = filled(new_index, dict.fromkeys(pool, b"0"))
    chunks = []

    def check(start, end, chunk):
        assert chunk == model_range(model, start, end, reverse, size)
        chunks.append(chunk)

    def change(chunk):
        for _ in range(rng.randint(1, 8)):
            key = rng.choice(pool) if rng.random() < 0.8 else rng.randbytes(3)
            if rng.random() < 0.5:
                apply_op(index, model, ("put", key, b"1"))
            else:
                apply_op(index, model, ("remove", key))

    scan_in_chunks(index, None, None, reverse, size, between=change, check=check)
    assert len(chunks) > 5


# ---------------------------------------------------------------------- bulk loading


LOAD_SIZES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 100, 1000]


@each_index
@pytest.mark.parametrize("size", LOAD_SIZES)
def test_load_sorted_then_compare_and_operate(new_index, name, size):
    # Keys three apart, so new keys fall between loaded ones as well as beside them.
    key_list = [i.to_bytes(3, "big") for i in range(0, 3 * size, 3)]
    value_list = [str(i).encode() for i in range(size)]
    model = dict(zip(key_list, value_list))
    index = new_index()
    index.load_sorted(key_list, value_list)
    assert_same(index, model)
    # The index owns its content: the caller's lists are not aliased.
    key_list.append(b"\xff" * 9)
    value_list.clear()
    assert_same(index, model)
    # What was built in bulk carries on correctly under ordinary updates.
    rng = random.Random(size)
    for step in range(300):
        key = rng.randrange(3 * size + 6).to_bytes(3, "big")
        roll = rng.random()
        if roll < 0.45:
            op = ("put", key, step.to_bytes(2, "big"))
        elif roll < 0.9:
            op = ("remove", key)
        else:
            op = ("range", key, None, roll < 0.95, rng.randint(1, 50))
        apply_op(index, model, op)
    assert_same(index, model)


# ------------------------------------------------------------------------------ clear


@each_index
def test_clear_empties_and_the_index_is_reusable(new_index, name):
    fresh_bytes = new_index().container_bytes()
    index, model = filled(new_index, random_content(500, 1))
    index.range_list(None, None, False, 10)  # builds whatever a scan caches
    index.clear()
    # Measured before anything else: a scan may build a (tiny) cache again.
    assert index.container_bytes() == fresh_bytes
    assert_same(index, {})
    assert index.get(next(iter(model))) is None
    assert index.range_list(None, None, True, 10) == []
    index.clear()  # clearing an empty index is fine
    assert_same(index, {})
    apply_op(index, {}, ("put", b"a", b"1"))
    index.clear()
    # Recovery loads into a cleared index.
    index.load_sorted([b"b", b"c"], [b"2", b"3"])
    assert_same(index, {b"b": b"2", b"c": b"3"})
    index.clear()
    put_all(index, model, model.items())
    assert_same(index, model)


# ------------------------------------------------------------- shape and memory figures


def assert_json_numbers(stats: dict) -> None:
    assert isinstance(stats, dict) and stats
    for key, value in stats.items():
        assert isinstance(key, str)
        assert isinstance(value, (int, float)), (key, value)
        assert math.isfinite(value), (key, value)
    assert json.loads(json.dumps(stats, allow_nan=False)) == stats


@each_index
def test_structure_stats_are_json_able_numbers(new_index, name):
    index = new_index()
    assert_json_numbers(index.structure_stats())
    for count in (1, 2, 1000):
        index, _ = filled(new_index, random_content(count, count))
        assert_json_numbers(index.structure_stats())
        index.range_list(None, None, False, 1)
        assert_json_numbers(index.structure_stats())
    # Asking for figures changes nothing.
    before = index.range_list(None, None, False, 2000)
    index.structure_stats()
    index.validate()
    assert index.range_list(None, None, False, 2000) == before


@each_index
def test_container_bytes_is_positive_and_grows_with_size(new_index, name):
    sizes = [0, 10, 100, 1000, 10_000]
    measured = []
    for count in sizes:
        index = new_index()
        key_list = [i.to_bytes(4, "big") for i in range(count)]
        index.load_sorted(key_list, key_list)
        measured.append(index.container_bytes())
        assert isinstance(measured[-1], int)
    assert measured[0] > 0
    assert measured == sorted(set(measured)), measured
    # Within ~2x of a dict's own ~100 bytes per key (the contract's memory budget).
    assert measured[-1] / sizes[-1] < 200
    # Puts one by one never shrink it (a hash table grows in steps), and each tenfold
    # more keys measure more.
    index = new_index()
    grown = {0: index.container_bytes()}
    for i in range(1, 5001):
        index.put(random.Random(i).randbytes(4), b"v")
        if i % 50 == 0 or i in (10, 100):
            grown[i] = index.container_bytes()
    steps = list(grown.values())
    assert steps == sorted(steps), grown
    assert grown[0] < grown[10] < grown[100] < grown[1000] < grown[5000], grown


@each_index
def test_container_bytes_does_not_count_keys_and_values(new_index, name):
    """The same operations with short and with long keys and values (in the same key
    order) measure the same: the engine counts the bytes objects itself."""
    short, long = new_index(), new_index()
    rng = random.Random(4)
    for i in rng.sample(range(3000), 3000):
        key = i.to_bytes(2, "big")
        short.put(key, b"")
        long.put(key + b"k" * 300, b"v" * 1000)
    for i in range(0, 3000, 3):
        short.remove(i.to_bytes(2, "big"))
        long.remove(i.to_bytes(2, "big") + b"k" * 300)
    assert short.container_bytes() == long.container_bytes()
