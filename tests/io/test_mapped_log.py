"""MappedLogFile, the WAL's file written through a memory map: appends land in the file
(also when the writer is SIGKILLed), the mapping grows past its preallocation, a sync
racing a growth is safe, and close trims the preallocated tail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import concordkv_mp
from concordkv_mp.io.mapped_log import MIN_CAPACITY, MappedLogFile


def test_appends_grow_past_the_preallocation_and_close_trims(tmp_path):
    path = str(tmp_path / "log")
    log = MappedLogFile(path, 0)
    assert os.path.getsize(path) == MIN_CAPACITY  # preallocated
    chunks = [bytes([i % 251]) * (300_000 + i) for i in range(12)]  # ~3.6 MB: grows twice
    for chunk in chunks:
        log.append(chunk)
    log.sync()
    assert log.size == sum(map(len, chunks))
    log.close()
    assert log.closed
    with open(path, "rb") as f:
        assert f.read() == b"".join(chunks)


def test_sync_racing_growth_is_safe(tmp_path):
    log = MappedLogFile(str(tmp_path / "log"), 0)
    stop = threading.Event()
    errors = []

    def syncer():
        while not stop.is_set():
            try:
                log.sync()
            except Exception as exc:  # reported below
                errors.append(exc)

    thread = threading.Thread(target=syncer)
    thread.start()
    try:
        for i in range(200):
            log.append(b"%06d" % i * 5000)  # 30 kB each: the map is resized several times
    finally:
        stop.set()
        thread.join()
    assert not errors
    log.close()
    assert os.path.getsize(str(tmp_path / "log")) == 200 * 30_000


CHILD = """
import os, sys
from concordkv_mp.io.mapped_log import MappedLogFile
log = MappedLogFile(sys.argv[1], 0)
for i in range(1000):
    log.append(b"record %04d;" % i)
print("appended", flush=True)
os.kill(os.getpid(), 9)
"""


def test_appends_survive_sigkill_of_the_writer(tmp_path):
    path = str(tmp_path / "log")
    proc = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL and "appended" in proc.stdout, proc.stderr
    with open(path, "rb") as f:
        data = f.read()
    expected = b"".join(b"record %04d;" % i for i in range(1000))
    assert data[: len(expected)] == expected
    assert data[len(expected) :] == bytes(len(data) - len(expected))  # the unused, zeroed tail


def test_values_larger_than_the_wal_preallocation_round_trip(tmp_path):
    big = {b"big%d" % i: bytes([i]) * (3 << 20) for i in range(3)}  # 3 MiB each, over 1 MiB
    with concordkv_mp.open(tmp_path, fsync="everysec", memtable_size=64 * 1024) as db:
        for key, value in big.items():
            db.set(key, value)
        assert db.get(b"big1") == big[b"big1"]
    with concordkv_mp.open(tmp_path) as db:
        assert dict(db.scan()) == big
