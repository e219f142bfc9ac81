"""HashTable specifics: keys whose hashes collide in the low bits (long probe runs that
wrap around the end of the table), deletion by backward shift slot by slot, growth and
shrink over several resizes, the sorted-cache invalidation rules, presizing by
load_sorted, the stats, and validate() catching deliberately broken tables. What every
index must do (random operations against a dict model with validate() after each one,
scans, load_sorted, clear, ...) is in test_index_contract.py, whose keys include the same
colliding ones."""

from __future__ import annotations

import random
import re
from itertools import pairwise

import pytest

from concordkv_mp.engines.memory.hash_table import EMPTY, MIN_CAPACITY, HashTable
from tests.memory.index_model import (
    COLLIDING,
    apply_op,
    assert_detected,
    assert_same,
    colliding_keys,
)


def keys_with_homes(homes: list[int], mask: int) -> list[bytes]:
    """One distinct key per wanted home slot (hash & mask), in the order given."""
    rng = random.Random(1)
    found: list[bytes] = []
    for home in homes:
        while True:
            key = rng.randbytes(6)
            if hash(key) & mask == home and key not in found:
                found.append(key)
                break
    return found


def raw_insert(table: HashTable, key: bytes, value: bytes) -> None:
    """Store an entry where probing puts it, bypassing count and resize bookkeeping."""
    h = hash(key)
    i = h & table._mask
    while table._hashes[i] != EMPTY:
        i = (i + 1) & table._mask
    table._hashes[i] = h
    table._keys[i] = key
    table._values[i] = value


def slot_of(table: HashTable, key: bytes) -> int:
    return table._keys.index(key)


@pytest.mark.parametrize("seed", [1, 2])
def test_grow_and_shrink_over_many_resizes_with_collisions(seed):
    """Put-heavy then remove-heavy phases, twice: the capacity climbs and falls over
    several resizes, with validate() after every operation and collisions throughout."""
    rng = random.Random(seed)
    pool = colliding_keys(300, seed) + [rng.randbytes(4) for _ in range(200)]
    table, model = HashTable(), {}
    capacities = [table.structure_stats()["capacity"]]
    for put_share in (0.85, 0.1, 0.85, 0.1):
        for _ in range(1500):
            key = rng.choice(pool)
            if rng.random() < put_share:
                apply_op(table, model, ("put", key, rng.randbytes(2)))
            else:
                apply_op(table, model, ("remove", key))
            assert table.get(key) == model.get(key)
            capacity = table._mask + 1
            if capacity != capacities[-1]:
                capacities.append(capacity)
        assert_same(table, model)
    grows = sum(b > a for a, b in pairwise(capacities))
    shrinks = sum(b < a for a, b in pairwise(capacities))
    assert grows >= 6 and shrinks >= 2, capacities
    assert table.structure_stats()["resizes"] == grows + shrinks


def test_drain_shrinks_back_to_minimum_and_refills():
    table, model = HashTable(), {}
    keys = colliding_keys(200, 5)
    for key in keys:
        table.put(key, key)
        model[key] = key
    assert table.structure_stats()["capacity"] >= 256
    for key in keys:
        apply_op(table, model, ("remove", key))
    assert table.structure_stats()["capacity"] == MIN_CAPACITY
    assert table.remove(keys[0]) is None
    for key in keys[:50]:
        table.put(key, b"again")
    assert_same(table, dict.fromkeys(keys[:50], b"again"))


def test_colliding_keys_really_collide():
    table = HashTable()
    for key in COLLIDING:
        table.put(key, b"v")
    stats = table.structure_stats()
    assert stats["capacity"] <= 256
    assert stats["max_probe"] >= len(COLLIDING) // 2  # one cluster of ~80 keys


# --- deletion by backward shift, slot by slot --------------------------------------------


def put_at_homes(table: HashTable, homes: list[int]) -> list[bytes]:
    """Put one new key per wanted home slot of a MIN_CAPACITY table (each key its own
    value), in the order given; return the keys."""
    keys = keys_with_homes(homes, MIN_CAPACITY - 1)
    for key in keys:
        table.put(key, key)
    return keys


def slots(table: HashTable, keys) -> list[int]:
    return [slot_of(table, key) for key in keys]


@pytest.mark.parametrize(
    ("homes", "placed", "victim", "after"),
    [
        # b (home 6), c (home 7), d (home 0) each move back one slot, across the wrap.
        ([6, 6, 7, 0], [6, 7, 0, 1], 0, [6, 7, 0]),
        # c (home 2) moves into b's slot 2; d (home 3) moves to 3; a stays at home.
        ([1, 1, 2, 3], [1, 2, 3, 4], 1, [1, 2, 3]),
    ],
    ids=["wrapped-cluster", "entries-at-home-stay"],
)
def test_backward_shift_moves_the_run_after_a_removed_key(homes, placed, victim, after):
    table = HashTable()
    keys = put_at_homes(table, homes)
    assert slots(table, keys) == placed
    removed = keys.pop(victim)
    assert table.remove(removed) == removed
    assert slots(table, keys) == after
    assert table._hashes[placed[-1]] == EMPTY
    assert_same(table, {key: key for key in keys})


def test_backward_shift_moves_nothing_into_a_hole_before_the_homes():
    table = HashTable()
    a, b, c, d = put_at_homes(table, [1, 1, 2, 3])
    table.remove(b)  # shifts c and d back to their homes 2 and 3
    e, f = put_at_homes(table, [5, 5])
    assert slots(table, (a, c, d, e, f)) == [1, 2, 3, 5, 6]
    assert table.remove(a) == a
    # The hole at 1 is before c's home 2 and d's home 3: nothing may move into it.
    assert slots(table, (c, d, e, f)) == [2, 3, 5, 6]
    assert table._hashes[1] == EMPTY
    assert_same(table, {c: c, d: d, e: e, f: f})


# --- scans and the sorted cache ----------------------------------------------------------


def test_sorted_cache_invalidation():
    table = HashTable()
    table.put(b"b", b"1")
    table.put(b"d", b"2")
    assert table.range_list(None, None, False, 10) == [(b"b", b"1"), (b"d", b"2")]
    assert table.structure_stats()["sorted_cache"]
    # A value replacement keeps the cache, and the scan shows the new value.
    table.put(b"d", b"3")
    assert table.structure_stats()["sorted_cache"]
    assert table.range_list(None, None, True, 10) == [(b"d", b"3"), (b"b", b"1")]
    # A new key drops it; the next scan sees the key.
    table.put(b"c", b"4")
    assert not table.structure_stats()["sorted_cache"]
    table.validate()
    assert table.range_list(None, None, False, 10) == [(b"b", b"1"), (b"c", b"4"), (b"d", b"3")]
    # So does a removal.
    table.remove(b"b")
    assert not table.structure_stats()["sorted_cache"]
    assert table.range_list(None, None, False, 10) == [(b"c", b"4"), (b"d", b"3")]
    # Removing an absent key changes nothing, the cache included.
    assert table.remove(b"zz") is None
    assert table.structure_stats()["sorted_cache"]
    table.clear()
    assert table.range_list(None, None, False, 10) == []


# --- load_sorted, stats, memory -------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 5, 6, 1000])
def test_load_sorted_presizes_and_keeps_the_sorted_cache(count):
    rng = random.Random(count)
    keys = sorted({rng.randbytes(rng.randint(1, 6)) for _ in range(count)})
    table = HashTable()
    table.load_sorted(keys, keys)
    table.validate()
    stats = table.structure_stats()
    assert stats["resizes"] == 0
    assert stats["sorted_cache"]
    assert stats["load_factor"] <= 2 / 3


def test_structure_stats_and_container_bytes():
    table = HashTable()
    stats = table.structure_stats()
    assert stats == {
        "capacity": MIN_CAPACITY, "load_factor": 0.0, "resizes": 0,
        "max_probe": 0, "mean_probe": 0.0, "sorted_cache": False,
    }
    for i in range(5000):
        table.put(b"key%d" % i, b"v")
    stats = table.structure_stats()
    assert stats["capacity"] == 8192
    assert stats["load_factor"] == 5000 / 8192
    assert stats["resizes"] == 10
    assert 1 <= stats["mean_probe"] <= stats["max_probe"] < 100
    # 24 bytes per slot, plus the sorted cache (8 per key) once a scan built it.
    assert 24 * 8192 <= table.container_bytes() < 24 * 8192 + 1000
    before = table.container_bytes()
    table.range_list(None, None, False, 1)
    assert table.container_bytes() - before >= 8 * 5000


# --- validate() catches broken tables ----------------------------------------------------


def filled_table() -> HashTable:
    table = HashTable()
    for key in COLLIDING[:40]:
        table.put(key, b"v")
    assert table._mask + 1 == 64
    table.range_list(None, None, False, 1)  # build the sorted cache
    return table


def break_stored_hash(table):
    i = slot_of(table, COLLIDING[0])
    table._hashes[i] ^= 1 << 20


def break_reachability(table):
    # Empty the cluster's first slot (home 62 of 64) without shifting: the keys after it
    # whose home is 62 become unreachable.
    i = 254 & table._mask
    key = table._keys[i]
    table._hashes[i] = EMPTY
    table._keys[i] = table._values[i] = None
    table._count -= 1
    table._sorted.remove(key)


def break_duplicate(table):
    # A second copy placed where probing would put a new key: reachable, but twice.
    raw_insert(table, COLLIDING[3], b"dup")
    table._count += 1


def break_count(table):
    table._count += 1


def break_stale_cache(table):
    table._sorted.append(b"\xff")


def break_empty_slot_with_value(table):
    table._values[table._hashes.index(EMPTY)] = b"ghost"


def break_value_type(table):
    table._values[slot_of(table, COLLIDING[1])] = "text"


def break_lengths(table):
    table._keys.append(None)


def refill_at(capacity: int, count: int):
    """A corruption: rebuild the slots at `capacity` holding `count` keys, a load the
    resize rules never leave."""

    def corrupt(table):
        table._reset_slots(capacity)
        table._sorted = None
        for key in COLLIDING[:count]:
            raw_insert(table, key, b"v")
        table._count = count

    return corrupt


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (break_stored_hash, "stored hash"),
        (break_reachability, "unreachable"),
        (break_duplicate, "stored twice"),
        (break_count, "len()"),
        (break_stale_cache, "sorted key cache"),
        (break_empty_slot_with_value, "empty slot"),
        (break_value_type, "str value"),
        (break_lengths, "lengths"),
        (refill_at(64, 43), "above 2/3"),
        (refill_at(256, 31), "below 1/8"),
    ],
)
def test_validate_detects_corruption(corrupt, message):
    assert_detected(filled_table(), corrupt, re.escape(message))
