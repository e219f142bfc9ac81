"""The shared durability of the in-memory engines (btree, rbtree, hash, array), and the
stats every engine reports.

* Power loss (tests/support/faulty_fs.py) during a snapshot, at each of its steps: the
  previous snapshot and the WAL after it still hold every acknowledged write.
* A damaged snapshot is refused with `CorruptionError` naming it.
* Recovery cuts a torn WAL tail, and removes a segment killed while being created, so
  that the next recovery does not find a torn segment followed by newer ones.
* Snapshots keep the WAL bounded; a failed WAL write makes the engine read-only.
* stats(): count, key and value bytes, measured memory and each engine's own figures.
"""

from __future__ import annotations

import errno
import os
import random
import time

import pytest

import concordkv_mp
from concordkv_mp.errors import ClosedError, CorruptionError, ReadOnlyError, StorageIOError
from concordkv_mp.options import ENGINES
from tests.support.faulty_fs import FaultInjectionFS
from tests.support.layout import engine_directory

MEMORY_ENGINES = [name for name in ENGINES if name != "lsm"]
OPTIONS = {"memtable_size": 4096, "btree_order": 5}


@pytest.fixture(params=MEMORY_ENGINES)
def memory_engine(request) -> str:
    return request.param


def files(path, suffix: str) -> list[str]:
    return sorted(name for name in os.listdir(engine_directory(path)) if name.endswith(suffix))


@pytest.mark.parametrize("failing", [("write", 1), ("sync", 1), ("rename", 1), ("sync_dir", 1), ("write", 3)])
def test_power_loss_during_a_snapshot_keeps_every_acknowledged_write(tmp_path, memory_engine, failing):
    fs = FaultInjectionFS()
    options = dict(OPTIONS, engine=memory_engine, fsync="always", for_testing_fs=fs)
    model = {}
    db = concordkv_mp.open(str(tmp_path), **options)
    for i in range(300):
        db.set(b"a%04d" % i, b"first %d" % i)
        model[b"a%04d" % i] = b"first %d" % i
    db.flush()  # snapshot 1
    for i in range(0, 300, 2):
        db.set(b"a%04d" % i, b"second %d" % i)
        model[b"a%04d" % i] = b"second %d" % i
    db.delete(b"a0001")
    del model[b"a0001"]
    op, n = failing
    fs.fail_nth(op, n)
    with pytest.raises(StorageIOError):
        db.flush()  # snapshot 2 fails at the chosen step
    with pytest.raises(ReadOnlyError):
        db.set(b"late", b"x")
    fs.crash()
    fs.revive()
    with concordkv_mp.open(str(tmp_path), **options) as db:
        assert dict(db.scan()) == model
        assert not any(name.endswith(".tmp") for name in os.listdir(engine_directory(tmp_path)))
        db.set(b"after", b"reopen")
        db.flush()
    with concordkv_mp.open(str(tmp_path), **options) as db:
        assert db.count() == len(model) + 1
        assert db.stats()["recovery"]["replayed_records"] == 0  # all in the new snapshot


def test_a_damaged_snapshot_is_refused(tmp_path, memory_engine):
    with concordkv_mp.open(tmp_path, engine=memory_engine, **OPTIONS) as db:
        db.mset({b"k%04d" % i: b"v%d" % i for i in range(500)})
        db.flush()
    (snapshot,) = files(tmp_path, ".snapshot")
    path = os.path.join(engine_directory(tmp_path), snapshot)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(CorruptionError) as caught:
        concordkv_mp.open(tmp_path)
    assert caught.value.path == path


@pytest.mark.parametrize("damage", ["torn tail", "headless newest segment"])
def test_recovery_cuts_a_torn_tail_or_drops_a_headless_segment(tmp_path, memory_engine, damage):
    with concordkv_mp.open(tmp_path, engine=memory_engine, fsync="always", **OPTIONS) as db:
        for i in range(50):
            db.set(b"k%03d" % i, b"v%d" % i)
    directory = engine_directory(tmp_path)
    (segment,) = [name for name in files(tmp_path, ".wal") if os.path.getsize(os.path.join(directory, name)) > 8]
    path = os.path.join(directory, segment)
    newest = os.path.join(directory, "%06d.wal" % (int(segment[:6]) + 5))
    if damage == "torn tail":
        os.truncate(path, os.path.getsize(path) - 3)  # the last record loses its end
        expected = 49
    else:
        open(newest, "wb").close()  # a segment whose creation was cut before its header
        expected = 50
    for _ in range(2):  # the second open must not find a torn segment before newer ones
        with concordkv_mp.open(tmp_path) as db:
            assert db.count() == expected and db.get(b"k048") == b"v48"
            assert db.get(b"k049") == (b"v49" if expected == 50 else None)
            assert not os.path.exists(newest)


def test_snapshots_keep_the_wal_bounded(tmp_path, memory_engine):
    rng = random.Random(5)
    with concordkv_mp.open(tmp_path, engine=memory_engine, snapshot_wal_size=8192, **OPTIONS) as db:
        for _round in range(10):
            for i in range(2000):
                db.set(b"k%03d" % rng.randrange(200), b"%d" % i + b"x" * 30)
            # The snapshot thread catches up once the writer pauses.
            deadline = time.monotonic() + 10
            while db.stats()["wal_bytes_since_snapshot"] > 20_000 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert db.stats()["snapshots"] >= 10
    directory = engine_directory(tmp_path)
    wal_bytes = sum(os.path.getsize(os.path.join(directory, name)) for name in files(tmp_path, ".wal"))
    assert wal_bytes <= 20_000  # 20000 writes of ~40 bytes were 800 KB of WAL
    assert len(files(tmp_path, ".snapshot")) == 1
    with concordkv_mp.open(tmp_path) as db:
        assert db.stats()["recovery"]["replayed_records"] < 1000
        assert db.count() == 200


def test_a_failed_wal_write_makes_the_engine_read_only(tmp_path, memory_engine):
    fs = FaultInjectionFS()
    options = dict(OPTIONS, engine=memory_engine, fsync="always", for_testing_fs=fs)
    db = concordkv_mp.open(str(tmp_path), **options)
    db.set(b"kept", b"1")
    fs.fail_nth("sync", 1, errno.ENOSPC)
    with pytest.raises(StorageIOError):
        db.set(b"lost", b"2")
    assert db.get(b"lost") is None  # never acknowledged, never visible
    with pytest.raises(ReadOnlyError):
        db.set(b"other", b"3")
    assert db.stats()["read_only"] is True
    db.close()
    fs.crash()
    fs.revive()
    with concordkv_mp.open(str(tmp_path), **options) as db:
        assert db.get(b"kept") == b"1" and db.get(b"lost") is None


def test_stats_report_counts_bytes_memory_and_structure(tmp_path, engine):
    pairs = {b"key%05d" % i: b"v" * (i % 40) for i in range(3000)}
    with concordkv_mp.open(tmp_path, engine=engine, btree_order=8) as db:
        db.mset(pairs)
        db.delete(b"key00000")
        db.set(b"key00001", b"replaced")
        del pairs[b"key00000"]
        pairs[b"key00001"] = b"replaced"
        stats = db.stats()
    assert stats["engine"] == engine
    assert stats["count"] == len(pairs)
    assert stats["key_bytes"] == sum(map(len, pairs))
    assert stats["value_bytes"] == sum(map(len, pairs.values()))
    assert stats["memory_bytes"] > stats["key_bytes"] + stats["value_bytes"]
    if engine == "btree":
        structure = stats["structure"]
        assert structure["order"] == 8 and structure["height"] >= 4  # 3000 keys, <= 7 per node
        assert 0.4 < structure["leaf_fill"] <= 1.0
    if engine == "rbtree":
        assert 12 <= stats["structure"]["height"] <= 2 * 12  # log2(3000) ~ 11.6


def test_every_call_after_close_raises_closed(tmp_path, memory_engine):
    # btree's get runs without the engine's mutex; after close it must still refuse.
    db = concordkv_mp.open(tmp_path, engine=memory_engine)
    db.set(b"k", b"v")
    scan = db.scan()
    db.close()
    for call in (lambda: db.get(b"k"), lambda: db.set(b"k", b"w"), db.count, lambda: list(scan)):
        with pytest.raises(ClosedError):
            call()


@pytest.mark.parametrize("reverse", [False, True])
def test_a_scan_across_many_chunks_keeps_its_snapshot_under_writes(tmp_path, memory_engine, reverse):
    # Thousands of keys, so the scan crosses chunk boundaries (128, 256, ... 1,024 pairs)
    # while keys ahead of it, behind it and at its edges are inserted, rewritten, deleted.
    rng = random.Random(11)
    with concordkv_mp.open(tmp_path, engine=memory_engine, btree_order=4) as db:
        snapshot = {b"k%05d" % i: b"v%d" % i for i in range(0, 6000, 2)}
        db.mset(snapshot)
        scan = db.scan(reverse=reverse)
        got = []
        for step, pair in enumerate(scan):
            got.append(pair)
            if step % 7 == 0:
                key = b"k%05d" % rng.randrange(6000)
                roll = rng.random()
                if roll < 0.4:
                    db.set(key, b"new")
                elif roll < 0.7:
                    db.delete(key)
                else:
                    db.mset({key: b"batch", b"k%05d" % rng.randrange(6000): b"batch"})
        assert got == sorted(snapshot.items(), reverse=reverse)
