"""The worker processes (flush and compaction): they die with their owner, and a worker
that dies on its own is restarted without the owner losing data or becoming read-only.
`open()` gives them to an LSM engine only on the real file system."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

import pytest

import concordkv_mp
from concordkv_mp.errors import ConfigError
from concordkv_mp.io.fs import FileSystem

OPTIONS = dict(memtable_size=8192, l0_compaction_trigger=2, level_base_size=16 * 1024, target_file_size=8 * 1024)

OWNER = """
import sys, time, concordkv_mp
db = concordkv_mp.open(sys.argv[1], memtable_size=8192, l0_compaction_trigger=2, compaction_workers=1)
for i in range(4000):
    db.set(b"key%05d" % (i % 1500), b"v" * 50)
db.compact()
print(db.stats()["workers"]["compaction"]["pid"], db.stats()["workers"]["flush"]["pid"], flush=True)
time.sleep(60)
"""


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_worker_dies_with_its_owner(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        worker_pids = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(worker_pids) == 2
        for pid in worker_pids:
            assert psutil.Process(pid).ppid() == owner.pid
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        for pid in worker_pids:
            assert wait_gone(pid, 5), "a worker outlived its owner"
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()


def test_killed_worker_is_restarted_and_nothing_is_lost(tmp_path):
    model = {}
    with concordkv_mp.open(tmp_path, compaction_workers=1, **OPTIONS) as db:
        for round_ in range(6):
            for i in range(1500):
                key, value = b"key%05d" % ((i * 7 + round_) % 2000), b"round %d %d" % (round_, i)
                db.set(key, value)
                model[key] = value
            db.compact()
            for worker in db.stats()["workers"].values():
                assert worker["pid"] is not None
                os.kill(worker["pid"], signal.SIGKILL)
        db.compact()
        stats = db.stats()
        assert not stats["read_only"]
        assert stats["workers"]["compaction"]["restarts"] >= 1
        assert stats["workers"]["flush"]["restarts"] >= 1
        assert dict(db.scan()) == model
    assert not any(p.name().startswith("python") and "compactor" in " ".join(p.cmdline()) for p in psutil.Process().children())
    with concordkv_mp.open(tmp_path, **OPTIONS) as db:
        assert dict(db.scan()) == model



def test_a_value_larger_than_64_mib_ships_to_the_flush_worker(tmp_path):
    """Regression: both ends of the worker pipe capped msgpack buffers at 64 MiB, which
    also caps one bin (value) at 64 MiB, while max_value_size may be up to 512 MiB: the
    worker died on such a value, twice, and the database went read-only. The pipe is
    private to the owner, so it has no size cap of its own."""
    from concordkv_mp.engines.lsm.memtable import MemTable
    from concordkv_mp.options import StorageOptions
    from concordkv_mp.workers.compaction_client import CompactionWorkerClient

    memtable = MemTable(wal_number=0)
    memtable.apply(1, [(b"big", b"v" * (70 << 20)), (b"small", b"s")], None)
    memtable.freeze()
    client = CompactionWorkerClient()
    try:
        meta = client.flush(str(tmp_path), 7, memtable, StorageOptions(compression="none"))
    finally:
        client.stop()
    assert (meta.number, meta.entries, meta.smallest, meta.largest) == (7, 2, b"big", b"small")
    assert client.restarts == 0


def test_a_test_file_system_needs_compaction_workers_0_for_lsm(tmp_path):
    test_fs = FileSystem()  # any file system but the default one
    with pytest.raises(ConfigError) as refused:
        concordkv_mp.open(tmp_path / "lsm", for_testing_fs=test_fs)
    assert refused.value.field == "compaction_workers"
    assert os.listdir(tmp_path / "lsm") == ["LOCK"]  # refused before the engine created anything
    with concordkv_mp.open(tmp_path / "lsm", compaction_workers=0, for_testing_fs=test_fs) as db:
        db.set(b"k", b"v")
        db.compact()
        assert db.stats()["workers"] == {}
    with concordkv_mp.open(tmp_path / "hash", engine="hash", for_testing_fs=test_fs) as db:
        db.set(b"k", b"v")
        with pytest.raises(ConfigError) as refused:
            db.switch_engine("lsm")
        assert refused.value.field == "compaction_workers"
        assert (db.engine, db.get(b"k")) == ("hash", b"v")
