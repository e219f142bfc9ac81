"""HashTable specifics: keys whose hashes collide in the low bits (long probe runs that
wrap around the end of the table), deletion by backward shift slot by slot, growth and
shrink over several resizes, the two key lists that order scans (stale entries and
repeats, scans under changes between chunks, when they fold, and that a chunked scan
with a put before every chunk never sorts all keys again), presizing by load_sorted,
the stats, and validate() catching deliberately broken tables. What every
index must do (random operations against a dict model with validate() after each one,
scans, load_sorted, clear, ...) is in test_index_contract.py, whose keys include the same
colliding ones."""

from __future__ import annotations

import random
import re
from itertools import pairwise

import pytest

from concordkv_mp.engines.memory import hash_table
from concordkv_mp.engines.memory.hash_table import (
    EMPTY,
    FOLD_SLACK,
    MIN_CAPACITY,
    HashTable,
)
from tests.engines.memory.index_model import (
    COLLIDING,
    apply_op,
    assert_detected,
    assert_same,
    colliding_keys,
    model_range,
    scan_in_chunks,
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


# --- scans over the two key lists ------------------------------------------------------


def order_lists(table: HashTable) -> tuple[list, list]:
    return table._sorted, table._added


def test_key_lists_follow_puts_removes_and_replacements():
    table = HashTable()
    table.load_sorted([b"b", b"d", b"f"], [b"1", b"2", b"3"])
    assert order_lists(table) == ([b"b", b"d", b"f"], [])
    # A replacement changes no list; a new key is appended unordered.
    assert table.put(b"d", b"4") == b"2"
    table.put(b"e", b"5")
    table.put(b"a", b"6")
    assert order_lists(table) == ([b"b", b"d", b"f"], [b"e", b"a"])
    # A removal leaves its key behind as a stale entry; an absent key changes nothing.
    table.remove(b"f")
    assert table.remove(b"zz") is None
    assert order_lists(table) == ([b"b", b"d", b"f"], [b"e", b"a"])
    assert table.structure_stats()["stale_keys"] == 1
    table.validate()
    # A key removed and put again is listed twice (a removed new one, twice in _added).
    table.remove(b"b")
    table.put(b"b", b"7")
    table.remove(b"e")
    table.put(b"e", b"8")
    assert order_lists(table) == ([b"b", b"d", b"f"], [b"e", b"a", b"b", b"e"])
    assert table.structure_stats()["stale_keys"] == 3
    table.validate()
    model = {b"a": b"6", b"b": b"7", b"d": b"4", b"e": b"8"}
    assert_same(table, model)
    # The scan ordered _added in place and skipped the stale and repeated entries.
    assert order_lists(table) == ([b"b", b"d", b"f"], [b"a", b"b", b"e", b"e"])
    for size in (1, 2, 3):
        for reverse in (False, True):
            assert scan_in_chunks(table, None, None, reverse, size) == model_range(
                model, None, None, reverse, 10
            )
    assert table.structure_stats()["folds"] == 0
    table.clear()
    assert order_lists(table) == ([], [])
    assert table.range_list(None, None, False, 10) == []


def test_a_scan_orders_the_new_keys_by_insertion_or_by_sorting(monkeypatch):
    """A few keys put since the last scan are inserted into the ordered part of
    `_added`; more than INSORT_MAX are sorted with it. Both give the same order."""
    monkeypatch.setattr(hash_table, "INSORT_MAX", 3)
    rng = random.Random(3)
    table, model = HashTable(), {}
    for burst in (1, 3, 4, 2, 9, 0, 1):
        for _ in range(burst):
            apply_op(table, model, ("put", rng.randbytes(2), b"v"))
        apply_op(table, model, ("range", None, None, bool(burst % 2), 5))
        assert table._added_sorted == len(table._added)
        assert table._added == sorted(table._added)
    assert_same(table, model)


def changes_between_chunks(table, model, pool, rng, seen):
    """Random puts of new keys, removals, puts of removed keys again and replacements,
    each checked by apply_op (validate() included); notes when some key is in both
    lists, or twice in _added."""

    def change(chunk):
        for _ in range(rng.randint(1, 30)):
            roll = rng.random()
            present = list(model)
            if roll < 0.35 or not present:
                op = ("put", rng.choice(pool), b"new")
            elif roll < 0.7:
                op = ("remove", rng.choice(present))
            else:
                op = ("put", rng.choice(present), b"replaced")
            apply_op(table, model, op)
        listed = table._sorted + table._added
        seen["stale"] = max(seen["stale"], table.structure_stats()["stale_keys"])
        seen["repeats"] |= len(set(listed)) < len(listed)

    return change


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("slack", [4096, 8], ids=["no-folds", "folds"])
def test_chunked_scans_under_interleaved_changes_match_the_model(monkeypatch, reverse, slack):
    """Between chunks, new keys, removals and removed keys put again land on both sides
    of the cursor: each chunk is exactly the next pairs of the current content. With a
    slack of 8 keys the lists also fold often (merges, rebuilds, stale drops)."""
    monkeypatch.setattr(hash_table, "FOLD_SLACK", slack)
    rng = random.Random(slack + reverse)
    pool = [rng.randbytes(rng.randint(1, 3)) for _ in range(300)] + COLLIDING
    table, model = HashTable(), {}
    loaded = sorted(set(pool[::2]))
    table.load_sorted(loaded, loaded)
    model.update(zip(loaded, loaded))
    seen = {"stale": 0, "repeats": False}
    change = changes_between_chunks(table, model, pool, rng, seen)
    for size in (1, 3, 7, 16):

        def check(start, end, chunk, size=size):
            assert chunk == model_range(model, start, end, reverse, size)

        scan_in_chunks(table, None, None, reverse, size, between=change, check=check)
    assert_same(table, model)
    assert seen["stale"] > 20 and seen["repeats"]
    folds = table.structure_stats()["folds"]
    assert folds > 20 if slack == 8 else folds == 0


class CountingKey(bytes):
    """A bytes key that counts its `<` comparisons: those are what sorting and bisecting
    the key lists cost."""

    __slots__ = ()
    compared = 0

    def __lt__(self, other):
        CountingKey.compared += 1
        return bytes.__lt__(self, other)


@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_full_scan_with_a_new_key_before_every_chunk_never_sorts_all(reverse):
    """The engine's snapshot pattern: 200k keys read 256 at a time, a new key put
    before every chunk. The scan must cost O(log n + chunk) comparisons per chunk, not
    the O(n log n) of sorting all keys again (3.5M comparisons each time)."""
    n = 200_000
    rng = random.Random(reverse)
    keys = sorted({CountingKey(rng.randbytes(8)) for _ in range(n)})
    table = HashTable()
    table.load_sorted(keys, keys)
    new = [CountingKey(rng.randbytes(8)) for _ in range(n // 128)]
    put = []
    ahead = []  # the new keys the cursor had not passed: the scan must return them

    def put_one(chunk):
        key = new[len(put)]
        table.put(key, key)
        put.append(key)
        if (key > chunk[-1][0]) != reverse:
            ahead.append(key)

    CountingKey.compared = 0
    result = scan_in_chunks(table, None, None, reverse, 256, put_one)
    compared = CountingKey.compared
    assert [k for k, _ in result] == sorted(keys + ahead, reverse=reverse)
    assert len(put) > n // 256 and 0 < len(ahead) < len(put)
    stats = table.structure_stats()
    assert stats["folds"] == 0 and stats["added_keys"] == len(put)
    # ~200 per chunk: bisections, one insertion, a merge when new keys are in the chunk.
    assert compared < 2 * n, compared


def test_chunked_full_scan_of_a_table_filled_by_puts_sorts_once():
    n = 200_000
    rng = random.Random(9)
    table = HashTable()
    for key in {rng.randbytes(8) for _ in range(n)}:
        table.put(key, b"v")
    chunks = 0

    def put_one(_chunk):
        nonlocal chunks
        chunks += 1
        table.put(rng.randbytes(9), b"w")

    result = scan_in_chunks(table, None, None, False, 256, put_one)
    assert chunks > n // 256 and len(result) > n
    # The first chunk sorted the keys (none were in order); the new ones never fold.
    assert table.structure_stats()["folds"] == 1
    assert table.structure_stats()["added_keys"] == chunks


# --- when the key lists fold ------------------------------------------------------------


@pytest.mark.parametrize("count", [1000, 80_000], ids=["rebuild", "merge"])
def test_a_scan_folds_once_the_new_keys_pass_their_share(count):
    """_added folds when it passes max(FOLD_SLACK, n/16) keys: by a rebuild from the
    slots if it holds more than half as many keys as _sorted, by a merge otherwise."""
    loaded = [i.to_bytes(4, "big") for i in range(0, 4 * count, 4)]
    table, model = HashTable(), dict(zip(loaded, loaded))
    table.load_sorted(loaded, loaded)
    new = [(4 * i + 1).to_bytes(4, "big") for i in range(count + FOLD_SLACK)]
    random.Random(count).shuffle(new)
    fresh = iter(new)

    def put_new():
        key = next(fresh)
        table.put(key, b"n")
        model[key] = b"n"

    while len(table._added) + 1 <= max(FOLD_SLACK, (len(table) + 1) >> 4):
        put_new()
    # At the limit: the scan orders _added and folds nothing; replacing adds nothing.
    table.put(loaded[0], b"replaced")
    model[loaded[0]] = b"replaced"
    assert len(table._added) == max(FOLD_SLACK, len(table) >> 4)
    assert table.range_list(None, None, False, 1) == [(loaded[0], b"replaced")]
    assert table.structure_stats()["folds"] == 0
    put_new()
    removed = table._added[0]
    table.remove(removed)  # a stale entry: a merge keeps it, a rebuild drops it
    del model[removed]
    assert table.range_list(None, None, True, 1) == [max(model.items())]
    stats = table.structure_stats()
    assert stats["folds"] == 1 and stats["added_keys"] == 0
    assert stats["stale_keys"] == (0 if count == 1000 else 1)
    assert stats["sorted_keys"] == len(table) + stats["stale_keys"]
    assert_same(table, model)


def test_a_removal_drops_the_stale_keys_once_they_pass_their_share():
    """Removals fold the lists (dropping stale keys) once the entries beyond the stored
    keys pass n/4 + FOLD_SLACK, counting a key removed and put again as one."""
    count = 24_000
    keys = [i.to_bytes(3, "big") for i in range(count)]
    table = HashTable()
    table.load_sorted(keys, keys)
    table.remove(keys[0])
    table.put(keys[0], b"again")  # listed twice: one entry beyond the stored keys
    removed = 1
    for key in keys[1:]:
        if removed + 1 > ((count - removed) >> 2) + FOLD_SLACK:
            break
        table.remove(key)
        removed += 1
    stats = table.structure_stats()
    assert stats["folds"] == 0 and stats["stale_keys"] == removed
    table.validate()
    table.remove(keys[removed])
    stats = table.structure_stats()
    assert stats["folds"] == 1
    assert stats["stale_keys"] == stats["added_keys"] == 0
    assert table._sorted == sorted(keys[removed + 1 :] + keys[:1])
    table.validate()


# --- load_sorted, stats, memory -------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 5, 6, 1000])
def test_load_sorted_presizes_and_keeps_the_keys_in_order(count):
    rng = random.Random(count)
    keys = sorted({rng.randbytes(rng.randint(1, 6)) for _ in range(count)})
    table = HashTable()
    table.load_sorted(keys, keys)
    table.validate()
    stats = table.structure_stats()
    assert stats["resizes"] == 0
    assert stats["load_factor"] <= 2 / 3
    assert table._sorted == keys and table._sorted is not keys
    assert (stats["sorted_keys"], stats["added_keys"], stats["stale_keys"]) == (len(keys), 0, 0)
    # The first scan reads the given order as it is.
    assert [k for k, _ in table.range_list(None, None, False, count + 1)] == keys
    assert table.structure_stats()["folds"] == 0


def test_structure_stats_and_container_bytes():
    table = HashTable()
    stats = table.structure_stats()
    assert stats == {
        "capacity": MIN_CAPACITY, "load_factor": 0.0, "resizes": 0,
        "max_probe": 0, "mean_probe": 0.0,
        "sorted_keys": 0, "added_keys": 0, "stale_keys": 0, "folds": 0,
    }
    for i in range(5000):
        table.put(b"key%d" % i, b"v")
    stats = table.structure_stats()
    assert stats["capacity"] == 8192
    assert stats["load_factor"] == 5000 / 8192
    assert stats["resizes"] == 10
    assert 1 <= stats["mean_probe"] <= stats["max_probe"] < 100
    assert (stats["sorted_keys"], stats["added_keys"]) == (0, 5000)
    # 24 bytes per slot plus 8 per key in _added (with a list's spare room).
    assert 24 * 8192 + 8 * 5000 <= table.container_bytes() < 24 * 8192 + 9 * 5000 + 1000
    table.range_list(None, None, False, 1)  # folds: the keys move to _sorted
    stats = table.structure_stats()
    assert (stats["sorted_keys"], stats["added_keys"], stats["folds"]) == (5000, 0, 1)
    assert 24 * 8192 + 8 * 5000 <= table.container_bytes() < 24 * 8192 + 9 * 5000 + 1000


# --- validate() catches broken tables ----------------------------------------------------


def filled_table() -> HashTable:
    """COLLIDING[:40] in 64 slots: 30 loaded (in _sorted), 10 put (in _added), one of
    them removed and put again (a repeat), and a scan that ordered _added."""
    table = HashTable()
    table.load_sorted(COLLIDING[:30], [b"v"] * 30)
    for key in COLLIDING[30:40]:
        table.put(key, b"v")
    table.remove(COLLIDING[5])
    table.put(COLLIDING[5], b"v")
    assert table._mask + 1 == 64
    table.range_list(None, None, False, 1)
    assert len(table._sorted) == 30 and len(table._added) == table._added_sorted == 11
    return table


def break_stored_hash(table):
    i = slot_of(table, COLLIDING[0])
    table._hashes[i] ^= 1 << 20


def break_reachability(table):
    # Empty the cluster's first slot (home 62 of 64) without shifting: the keys after it
    # whose home is 62 become unreachable. (Its key stays listed, as a stale entry.)
    i = 254 & table._mask
    table._hashes[i] = EMPTY
    table._keys[i] = table._values[i] = None
    table._count -= 1


def break_duplicate(table):
    # A second copy placed where probing would put a new key: reachable, but twice.
    raw_insert(table, COLLIDING[3], b"dup")
    table._count += 1


def break_count(table):
    table._count += 1


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
        for key in COLLIDING[:count]:
            raw_insert(table, key, b"v")
        table._count = count

    return corrupt


def break_sorted_order(table):
    s = table._sorted
    s[3], s[4] = s[4], s[3]


def break_sorted_repeat(table):
    table._sorted.insert(8, table._sorted[7])


def break_added_order(table):
    a = table._added
    a[0], a[-1] = a[-1], a[0]


def break_added_sorted_count(table):
    table._added_sorted = len(table._added) + 1


def unlist_from_sorted(table):
    table._sorted.remove(COLLIDING[7])


def unlist_from_added(table):
    table._added.remove(COLLIDING[33])
    table._added_sorted -= 1


def unlist_repeated(table):
    # COLLIDING[5] is in both lists: it must leave both to be missing.
    table._sorted.remove(COLLIDING[5])
    table._added.remove(COLLIDING[5])
    table._added_sorted -= 1


def break_listed_type(table):
    table._added.append("text")


def break_stale_bound(table):
    table._sorted += [b"\xff" + i.to_bytes(2, "big") for i in range(FOLD_SLACK + 10)]


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (break_stored_hash, "stored hash"),
        (break_reachability, "unreachable"),
        (break_duplicate, "stored twice"),
        (break_count, "len()"),
        (break_empty_slot_with_value, "empty slot"),
        (break_value_type, "str value"),
        (break_lengths, "lengths"),
        (refill_at(64, 43), "above 2/3"),
        (refill_at(256, 31), "below 1/8"),
        (break_sorted_order, "_sorted[3]"),
        (break_sorted_repeat, "_sorted[7]"),
        (break_added_order, "_added[0]"),
        (break_added_sorted_count, "_added_sorted 12 is outside 0..11"),
        (unlist_from_sorted, f"stored key {COLLIDING[7]!r} is in neither"),
        (unlist_from_added, f"stored key {COLLIDING[33]!r} is in neither"),
        (unlist_repeated, f"stored key {COLLIDING[5]!r} is in neither"),
        (break_listed_type, "_added holds a str"),
        (break_stale_bound, "stale entries"),
    ],
)
def test_validate_detects_corruption(corrupt, message):
    assert_detected(filled_table(), corrupt, re.escape(message))


def test_keys_listed_only_as_stale_entries_or_repeats_are_valid():
    """What validate() must NOT reject: removed keys still listed, a key listed twice."""
    table = filled_table()
    table.remove(COLLIDING[0])
    table.remove(COLLIDING[35])
    table._sorted.append(b"\xff")  # a key never stored, after the others: stale
    table.validate()
    assert table.structure_stats()["stale_keys"] == 4
