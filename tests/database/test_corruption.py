"""Damaged files seen through the public API: detected, named, never returned as data.

A WAL damaged in its middle refuses to open (or, with wal_recovery="point_in_time",
opens with exactly the records before the damage); a flipped byte in an SSTable or the
manifest raises CorruptionError naming the file; an unknown format version is refused.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys

import pytest

import concordkv_mp
from concordkv_mp.engines.wal import WAL_MAGIC, WAL_VERSION
from tests.support.layout import engine_directory
from concordkv_mp.errors import CorruptionError, UnsupportedFormatError

CHILD = """
import sys, os, concordkv_mp
db = concordkv_mp.open(sys.argv[1], fsync="always")
for i in range(int(sys.argv[2])):
    db.set(b"key%04d" % i, b"value %d" % i)
print("done", flush=True)
os.kill(os.getpid(), 9)
"""


def write_then_die(path, count: int) -> str:
    """Write `count` keys in a child that is killed without closing: they stay in the WAL."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(count)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL and "done" in proc.stdout, proc.stderr
    directory = engine_directory(path)
    wals = sorted(name for name in os.listdir(directory) if name.endswith(".wal"))
    assert wals, "the writes should still be in a WAL"
    return os.path.join(directory, wals[-1])


def used_size(path: str) -> int:
    """Bytes of records in a WAL; the rest of the file is preallocated zeros."""
    with open(path, "rb") as f:
        return len(f.read().rstrip(b"\0"))


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def test_mid_wal_corruption_is_refused_by_default(tmp_path):
    wal = write_then_die(tmp_path, 200)
    flip_byte(wal, used_size(wal) // 2)
    with pytest.raises(CorruptionError) as caught:
        concordkv_mp.open(tmp_path)
    assert caught.value.path == wal
    assert caught.value.code == "CORRUPTION"


def test_point_in_time_recovery_keeps_exactly_the_records_before_the_damage(tmp_path):
    wal = write_then_die(tmp_path, 200)
    flip_byte(wal, used_size(wal) // 2)
    with concordkv_mp.open(tmp_path, wal_recovery="point_in_time") as db:
        keys = [key for key, _ in db.scan()]
        recovery = db.stats()["recovery"]
    assert recovery["stopped_at"] and wal in recovery["stopped_at"]
    # A contiguous prefix of the writes, in order, and nothing after the damage.
    assert 50 < len(keys) < 200
    assert keys == [b"key%04d" % i for i in range(len(keys))]


def test_torn_wal_tail_reopens_with_every_complete_record(tmp_path):
    wal = write_then_die(tmp_path, 100)
    os.truncate(wal, used_size(wal) - 3)
    with concordkv_mp.open(tmp_path) as db:
        assert db.count() == 99
        assert db.stats()["recovery"]["torn_tail"] is True
        assert db.get(b"key0098") == b"value 98"
        assert db.get(b"key0099") is None


def make_flushed_db(path) -> str:
    with concordkv_mp.open(path, compression="none", block_size=512) as db:
        db.mset({b"key%04d" % i: b"value %d" % i for i in range(2000)})
        db.flush()
    directory = engine_directory(path)
    tables = [name for name in os.listdir(directory) if name.endswith(".sst")]
    assert len(tables) == 1
    return os.path.join(directory, tables[0])


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, 0.97, 0.995])
def test_flipped_byte_in_sstable_is_detected(tmp_path, where):
    table = make_flushed_db(tmp_path)
    flip_byte(table, int(os.path.getsize(table) * where))
    with pytest.raises(CorruptionError) as caught:
        with concordkv_mp.open(tmp_path) as db:
            for i in range(2000):
                assert db.get(b"key%04d" % i) == b"value %d" % i
            assert len(list(db.scan())) == 2000
    assert caught.value.path == table


def test_flipped_byte_in_manifest_is_detected(tmp_path):
    make_flushed_db(tmp_path)
    manifest = os.path.join(engine_directory(tmp_path), "MANIFEST")
    flip_byte(manifest, os.path.getsize(manifest) // 2)
    with pytest.raises(CorruptionError) as caught:
        concordkv_mp.open(tmp_path)
    assert caught.value.path == manifest


def test_unknown_wal_version_is_refused(tmp_path):
    wal = write_then_die(tmp_path, 10)
    with open(wal, "r+b") as f:
        assert f.read(len(WAL_MAGIC)) == WAL_MAGIC
        f.write(struct.pack("<H", WAL_VERSION + 1))  # a WAL from a future release
    with pytest.raises(UnsupportedFormatError):
        concordkv_mp.open(tmp_path)
