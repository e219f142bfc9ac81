"""SIGKILL of server processes during a write load: nothing acknowledged is lost, and the
server serves again within 5 s.

Writer threads write unique keys (single sets and msets, so both paths are covered) and
remember what was acknowledged; requests in flight at a crash may fail (timeout) and
count as unknown. Meanwhile one role is SIGKILLed again and again: a partition (it
recovers from its WAL after the I/O optimizer drains what its ring still holds), the
I/O optimizer (the rings are shared memory and outlive it), a compaction worker (the
partition sends the lost job again), or everything at once (the next start drains the
rings left in /dev/shm). Afterwards every acknowledged key must read back its value.
MemTables are small so that flushes and compactions keep the pool busy during kills.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from concordkv_mp.errors import ConcordKVError

SMALL = {"memtable_size": 64 * 1024, "target_file_size": 64 * 1024, "level_base_size": 256 * 1024,
         "l0_compaction_trigger": 2}


class Load:
    """Writer threads, each with its own client, recording acknowledged writes."""

    def __init__(self, server, threads: int = 3, value_size: int = 300):
        self.server = server
        self.acked: dict[bytes, bytes] = {}
        self.failures = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._write, args=(t, value_size)) for t in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _write(self, number: int, value_size: int) -> None:
        rng = random.Random(number)
        client = self.server.client(timeout=2.0)
        try:
            sequence = 0
            while not self._stop.is_set():
                batch = {}
                for _ in range(1 if rng.random() < 0.7 else 20):
                    sequence += 1
                    key = b"w%d-%08d" % (number, sequence)
                    batch[key] = rng.randbytes(value_size)
                try:
                    if len(batch) == 1:
                        (key, value), = batch.items()
                        client.set(key, value)
                    else:
                        client.mset(batch)
                except ConcordKVError:
                    with self._lock:
                        self.failures += 1
                    continue
                with self._lock:
                    self.acked.update(batch)
        finally:
            client.close()

    def count(self) -> int:
        with self._lock:
            return len(self.acked)


def wait_until_serving(server, deadline_seconds: float = 5.0) -> float:
    """Seconds until a write to every partition succeeds; fails past the deadline."""
    started = time.monotonic()
    client = server.client(timeout=0.5)
    try:
        keys = {}
        for i in range(10_000):
            key = b"probe-%d" % i
            keys.setdefault(client.map.slot_map.partition_of(key), key)
            if len(keys) == server.partitions:
                break
        pending = dict(keys)
        while pending:
            assert time.monotonic() - started < deadline_seconds, f"not serving after {deadline_seconds} s"
            for partition, key in list(pending.items()):
                try:
                    client.set(key, b"x")
                    del pending[partition]
                except ConcordKVError:
                    pass
    finally:
        client.close()
    return time.monotonic() - started


def check_all_acked(server, acked: dict) -> None:
    with server.client(timeout=30.0) as client:
        keys = sorted(acked)
        for first in range(0, len(keys), 5000):
            chunk = keys[first : first + 5000]
            got = client.mget(chunk)
            lost = [key for key, value in zip(chunk, got) if value != acked[key]]
            assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"


def kill_repeatedly(server, role: str, indexes, kills: int) -> list[float]:
    recoveries = []
    with Load(server) as load:
        for round_number in range(kills):
            time.sleep(random.uniform(0.15, 0.5))
            index = indexes[round_number % len(indexes)]
            victim = server.pid_of(role, index)
            os.kill(victim, signal.SIGKILL)
            recoveries.append(wait_until_serving(server))
        acked_during = load.count()
    assert acked_during > 100, "the load did not get going"
    check_all_acked(server, load.acked)
    return recoveries


@pytest.mark.slow
def test_sigkill_partitions_under_fsync_always(server_factory):
    server = server_factory(partitions=2, fsync="always", compaction_workers=1, **SMALL)
    server.start()
    recoveries = kill_repeatedly(server, "partition", [0, 1], kills=12)
    assert max(recoveries) < 5.0
    # And after a clean restart too.
    server.stop()
    server.start()
    assert server.children()[("partition", 0)]


@pytest.mark.slow
def test_sigkill_io_optimizer_under_fsync_always(server_factory):
    server = server_factory(partitions=2, fsync="always", **SMALL)
    server.start()
    recoveries = kill_repeatedly(server, "io_optimizer", [None], kills=12)
    assert max(recoveries) < 5.0


@pytest.mark.slow
def test_sigkill_compaction_workers_under_fsync_always(server_factory):
    server = server_factory(partitions=2, fsync="always", compaction_workers=2, **SMALL)
    server.start()
    kill_repeatedly(server, "compactor", [0, 1], kills=12)
    with server.client() as client:
        workers = [stats["workers"] for stats in client.stats()["partitions"]]
    assert sum(w["flush"]["tasks"] + w["compaction"]["tasks"] for w in workers) > 10, workers


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_sigkill_whole_server_keeps_acknowledged_writes(server_factory, fsync):
    """Every process dies at once; what the rings held is drained by the next start."""
    server = server_factory(partitions=2, fsync=fsync, **SMALL)
    server.start()
    acked: dict = {}
    for _ in range(3):
        with Load(server) as load:
            time.sleep(random.uniform(0.5, 1.0))
            server.kill()
        acked.update(load.acked)
        server.start()
    check_all_acked(server, acked)
