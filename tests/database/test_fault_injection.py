"""Simulated power loss and injected I/O errors, through the public API, on every engine.

The file-system seam is replaced by `FaultInjectionFS`: a power loss drops every byte
and directory change not yet fsynced (LevelDB's fault-injection test); a fault makes
the Nth write, fsync, directory fsync or rename fail with EIO or ENOSPC. Each test
keeps a dict of what was acknowledged and checks the reopened database against it.
"""

from __future__ import annotations

import contextlib
import errno
import random
import time

import pytest

import concordkv_mp
from concordkv_mp.errors import ConcordKVError, ReadOnlyError, StorageIOError
from tests.support.faulty_fs import FaultInjectionFS

SMALL_LSM = dict(
    memtable_size=4096,
    l0_compaction_trigger=2,
    level_base_size=16 * 1024,
    target_file_size=8 * 1024,
    block_size=512,
    compaction_workers=0,  # compaction I/O must go through the fault-injecting seam
)
# The in-memory engines snapshot every 4 KiB of WAL: faults hit snapshots too.
SMALL_MEMORY = dict(memtable_size=4096, snapshot_wal_size=4096, btree_order=3)


def small(engine: str) -> dict:
    return dict(SMALL_LSM if engine == "lsm" else SMALL_MEMORY, engine=engine)


def random_op(rng: random.Random, counter: int):
    """(kind, payload) with values unique to the op, so a value never written is caught."""
    key = b"k%03d" % rng.randrange(150)
    roll = rng.random()
    if roll < 0.6:
        return "set", (key, b"v%d-" % counter + b"x" * rng.randrange(60))
    if roll < 0.8:
        return "delete", key
    batch = [(b"k%03d" % rng.randrange(150), b"m%d-%d" % (counter, i)) for i in range(rng.randrange(1, 6))]
    return "mset", batch


def apply_op(target, op) -> None:
    """Apply an op to a Database or to a dict model."""
    kind, payload = op
    if isinstance(target, dict):
        if kind == "set":
            target[payload[0]] = payload[1]
        elif kind == "delete":
            target.pop(payload, None)
        else:
            target.update(payload)
        return
    if kind == "set":
        target.set(*payload)
    elif kind == "delete":
        target.delete(payload)
    else:
        target.mset(payload)


def contents(db) -> dict:
    return dict(db.scan())


def crash_and_close(fs: FaultInjectionFS, db) -> None:
    fs.crash()
    with contextlib.suppress(ConcordKVError):
        db.close()


@pytest.mark.parametrize("seed", range(6))
def test_power_loss_with_fsync_always_loses_no_acknowledged_write(tmp_path, seed, engine):
    rng = random.Random(seed)
    model: dict = {}
    counter = 0
    for _ in range(4):
        fs = FaultInjectionFS()
        db = concordkv_mp.open(tmp_path, fsync="always", for_testing_fs=fs, **small(engine))
        assert contents(db) == model
        for _ in range(rng.randrange(50, 400)):
            counter += 1
            op = random_op(rng, counter)
            apply_op(db, op)
            apply_op(model, op)
        crash_and_close(fs, db)
    with concordkv_mp.open(tmp_path, **small(engine)) as db:
        assert contents(db) == model
        assert db.count() == len(model)


@pytest.mark.parametrize("seed", range(4))
def test_power_loss_with_fsync_everysec_recovers_a_prefix(tmp_path, seed, engine):
    rng = random.Random(100 + seed)
    fs = FaultInjectionFS()
    db = concordkv_mp.open(tmp_path, fsync="everysec", for_testing_fs=fs, **small(engine))
    acknowledged = []
    for counter in range(rng.randrange(200, 1500)):
        op = random_op(rng, counter)
        apply_op(db, op)
        acknowledged.append(op)
    crash_and_close(fs, db)
    with concordkv_mp.open(tmp_path, **small(engine)) as db:
        recovered = contents(db)
    # The recovered state must equal the state after some prefix of the acknowledged
    # order: nothing later survives without everything before it.
    model: dict = {}
    prefixes_matching = [0] if recovered == model else []
    for index, op in enumerate(acknowledged, start=1):
        apply_op(model, op)
        if model == recovered:
            prefixes_matching.append(index)
    assert prefixes_matching, "recovered state is not any prefix of the acknowledged writes"


def test_power_loss_keeps_what_a_flush_made_durable(tmp_path, engine):
    fs = FaultInjectionFS()
    db = concordkv_mp.open(tmp_path, fsync="none", for_testing_fs=fs, **small(engine))
    durable = {b"d%04d" % i: b"value %d" % i for i in range(500)}
    db.mset(durable)
    db.flush()  # flushed SSTables (a snapshot) are durable whatever the fsync policy
    db.set(b"late", b"maybe lost")
    crash_and_close(fs, db)
    with concordkv_mp.open(tmp_path, **small(engine)) as db:
        recovered = contents(db)
    recovered.pop(b"late", None)
    assert recovered == durable


def run_until_fault(db, fs, rng, model: dict):
    """Apply ops until one fails; return the op in flight when it failed (or None)."""
    for counter in range(300):
        op = random_op(rng, counter)
        try:
            apply_op(db, op)
        except ConcordKVError as exc:
            assert isinstance(exc, (StorageIOError, ReadOnlyError)), exc
            return op
        apply_op(model, op)
    try:
        # Surfaces a failure that hit the background flush/compaction (ReadOnlyError),
        # or meets the fault itself (an in-memory engine's flush writes a snapshot).
        db.flush()
    except (ReadOnlyError, StorageIOError):
        return None
    return None


@pytest.mark.parametrize("op_name", ["write", "sync", "sync_dir", "rename"])
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_nth_io_failure_is_never_acknowledged_and_stops_writes(tmp_path, op_name, err, engine):
    triggered = 0
    for n in range(1, 40, 3):
        directory = tmp_path / f"n{n}"
        rng = random.Random(n)
        fs = FaultInjectionFS()
        db = concordkv_mp.open(directory, fsync="always", for_testing_fs=fs, **small(engine))
        fs.fail_nth(op_name, n, err, partial=(n % 2 == 0))
        model: dict = {}
        in_flight = run_until_fault(db, fs, rng, model)
        if db.stats()["read_only"]:
            triggered += 1
            with pytest.raises(ReadOnlyError):
                db.set(b"after", b"failure")
            assert db.get(b"after") is None
            for key, value in model.items():  # reads keep working
                assert db.get(key) == value
        with contextlib.suppress(ConcordKVError):
            db.close()
        with concordkv_mp.open(directory, **small(engine)) as reopened:
            recovered = contents(reopened)
        # Every acknowledged write is there; the failed one may or may not be.
        if recovered != model:
            assert in_flight is not None, f"n={n}: lost acknowledged writes"
            apply_op(model, in_flight)
            assert recovered == model, f"n={n}: state is neither before nor after the failed write"
    assert triggered >= 3, f"the injected {op_name} failure never hit the database"


def test_everysec_makes_writes_durable_within_about_a_second(tmp_path, engine):
    fs = FaultInjectionFS()
    db = concordkv_mp.open(tmp_path, fsync="everysec", for_testing_fs=fs, **small(engine))
    written = {b"k%03d" % i: b"v%d" % i for i in range(300)}
    for key, value in written.items():
        db.set(key, value)
    time.sleep(2.5)  # the sync thread runs once a second
    crash_and_close(fs, db)
    with concordkv_mp.open(tmp_path) as db:
        assert contents(db) == written
