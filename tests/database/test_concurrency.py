"""Threads sharing one handle, on every engine: group commit, snapshot scans during writes
and background work (LSM flushes and compactions, in-memory snapshots).

Group commit is observed, not assumed: with fsync="always", several writer threads and
a WAL sync slowed to 3 ms (a slow disk), the number of WAL write groups (one sync each)
must be well below the number of writes, and every write must be there afterwards.
"""

from __future__ import annotations

import threading
import time

import concordkv_mp
from concordkv_mp.io.fs import FileSystem

SMALL_LSM = dict(memtable_size=8192, l0_compaction_trigger=2, level_base_size=32 * 1024, target_file_size=16 * 1024)


def small(engine: str) -> dict:
    if engine == "lsm":
        return dict(SMALL_LSM, engine=engine)
    return dict(engine=engine, memtable_size=8192, snapshot_wal_size=8192)


class SlowLogSyncFS(FileSystem):
    def create_log(self, path, capacity):
        log = super().create_log(path, capacity)
        real_sync = log.sync

        def slow_sync():
            time.sleep(0.003)
            real_sync()

        log.sync = slow_sync
        return log


def test_concurrent_writers_share_fsyncs_and_lose_nothing(tmp_path, engine):
    threads_count, per_thread = 6, 150
    fs = SlowLogSyncFS()
    with concordkv_mp.open(tmp_path, fsync="always", for_testing_fs=fs, compaction_workers=0, **small(engine)) as db:
        errors = []

        def writer(t: int) -> None:
            try:
                for i in range(per_thread):
                    db.set(b"t%d-%04d" % (t, i), b"value %d %d" % (t, i))
            except Exception as exc:  # reported below; a thread cannot fail the test itself
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        stats = db.stats()
        assert stats["writes"] == threads_count * per_thread
        assert stats["write_groups"] < stats["writes"] / 2, stats
    with concordkv_mp.open(tmp_path) as db:
        assert db.count() == threads_count * per_thread
        for t in range(threads_count):
            for i in range(per_thread):
                assert db.get(b"t%d-%04d" % (t, i)) == b"value %d %d" % (t, i)


def test_scans_see_their_snapshot_while_writers_and_compactions_run(tmp_path, engine):
    with concordkv_mp.open(tmp_path, fsync="none", **small(engine)) as db:
        db.mset({b"k%05d" % i: b"gen0" for i in range(3000)})
        stop = threading.Event()
        generations = []

        def rewriter() -> None:
            generation = 0
            while not stop.is_set():
                generation += 1
                db.mset({b"k%05d" % i: b"gen%d" % generation for i in range(0, 3000, 7)})
                if generation % 10 == 1:
                    db.compact()  # LSM: a full compaction; in-memory: a snapshot
            generations.append(generation)

        thread = threading.Thread(target=rewriter)
        thread.start()
        try:
            for _ in range(15):
                # Every mset is one batch: a snapshot sees it completely or not at all,
                # so all rewritten keys in one scan carry one generation.
                seen = {}
                count = 0
                for key, value in db.scan():
                    count += 1
                    index = int(key[1:])
                    if index % 7 == 0:
                        seen.setdefault(value, []).append(index)
                assert len(seen) == 1, sorted(seen)[:5]
                assert count == 3000
        finally:
            stop.set()
            thread.join()
        assert generations[0] > 0
        assert db.stats()["flushes" if engine == "lsm" else "snapshots"] > 0


def test_group_commit_on_the_real_log_file(tmp_path, engine):
    """Regression: mmap.flush() (msync) held the GIL for the whole sync, so writers could
    not even queue behind it — 1,934 syncs for 2,000 writes from 4 threads. With the real
    file system, fdatasync, and 4 writers, syncs must be shared."""
    per_thread = 500
    with concordkv_mp.open(tmp_path, fsync="always", engine=engine) as db:

        def writer(t: int) -> None:
            for i in range(per_thread):
                db.set(b"t%d-%05d" % (t, i), b"v" * 100)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = db.stats()
        assert stats["writes"] == 4 * per_thread
        assert stats["write_groups"] < 0.85 * stats["writes"], stats["write_groups"]
