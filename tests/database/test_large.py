"""A large data set through the embedded LSM engine: 2,000,000 keys down to L2 or deeper.

Writes 2,000,000 keys in mset batches of 10,000 in a scrambled order (so that compactions
merge overlapping files rather than only moving them), then overwrites about 1 % and deletes
1 % of them, so that old versions and tombstones must be resolved across levels. Checks from
stats()["files_per_level"] that the data reached level 2 or deeper, then reads every key
back with mget batches, runs a full scan (order, count, values) and checks count(); reopens
the database and checks a sample of keys, two range scans and count() again.
"""

from __future__ import annotations

import random
import time

import pytest

import concordkv_mp

N = 2_000_000
BATCH = 10_000
STRIDE = 1_000_003  # coprime with N: i -> i * STRIDE % N visits every key once, scrambled

OPTIONS = dict(
    engine="lsm",
    fsync="none",
    memtable_size=1 << 20,
    level_base_size=2 << 20,
    target_file_size=1 << 20,
)


def key(i: int) -> bytes:
    return b"user%010d" % i


def first_value(i: int) -> bytes:
    return b"v%d-" % i + b"." * (i % 16)


def expected(i: int):
    """The value key(i) must have after the whole workload, or None if it was deleted."""
    if i % 100 == 0:
        return None
    if i % 97 == 0:
        return b"second-%d" % i
    return first_value(i)


def deepest_level(db) -> int:
    levels = db.stats()["files_per_level"]
    assert len(levels) == 7
    return max(level for level, files in enumerate(levels) if files) if any(levels) else -1


def wait_for_level(db, level: int, timeout: float = 120.0) -> int:
    """Background compaction may still be catching up: poll until `level` has files."""
    deadline = time.monotonic() + timeout
    while (deepest := deepest_level(db)) < level and time.monotonic() < deadline:
        time.sleep(0.2)
    return deepest


@pytest.mark.slow
def test_two_million_keys_reach_level_2_and_read_back(tmp_path):
    path = str(tmp_path / "db")
    live = N - N // 100
    with concordkv_mp.open(path, **OPTIONS) as db:
        for start in range(0, N, BATCH):
            db.mset([(key(j), first_value(j)) for j in (i * STRIDE % N for i in range(start, start + BATCH))])
        db.mset([(key(i), b"second-%d" % i) for i in range(0, N, 97) if i % 100])
        assert db.mdelete([key(i) for i in range(0, N, 100)]) == N // 100
        db.flush()

        assert wait_for_level(db, 2) >= 2, db.stats()["files_per_level"]

        for start in range(0, N, BATCH):
            indexes = range(start, start + BATCH)
            got = db.mget([key(i) for i in indexes])
            for i, value in zip(indexes, got):
                assert value == expected(i), (key(i), value)

        live_indexes = (i for i in range(N) if i % 100)
        for k, v in db.scan():
            i = next(live_indexes, None)
            assert i is not None, f"scan returned {k!r} after the last live key"
            assert k == key(i) and v == expected(i), (k, v, i)
        assert next(live_indexes, None) is None, "scan stopped early"
        assert db.count() == live

    with concordkv_mp.open(path, **OPTIONS) as db:
        assert deepest_level(db) >= 2
        assert db.count() == live
        sample = random.Random(7).sample(range(N), 20_000)
        assert db.mget([key(i) for i in sample]) == [expected(i) for i in sample]
        lo = 1_234_500
        want = [(key(i), expected(i)) for i in range(lo, lo + 1_000) if i % 100]
        assert list(db.scan(start=key(lo), end=key(lo + 1_000))) == want
        assert list(db.scan(prefix=b"user000000123", reverse=True)) == [
            (key(i), expected(i)) for i in reversed(range(1230, 1240)) if i % 100
        ]
