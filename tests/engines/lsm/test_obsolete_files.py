"""Files replaced by compaction are deleted only when nothing reads them.

A scan pins the Version it started on; compaction may replace every file of that
Version meanwhile, and the scan must still read them (its snapshot's data). Once the
scan is gone, the next background job deletes them.
"""

from __future__ import annotations

import gc
import os

import concordkv_mp
from tests.support.layout import engine_directory

OPTIONS = dict(memtable_size=8192, l0_compaction_trigger=2, level_base_size=32 * 1024, target_file_size=16 * 1024)


def sstables(path) -> set[str]:
    return {name for name in os.listdir(engine_directory(path)) if name.endswith(".sst")}


def test_a_running_scan_keeps_replaced_files_until_it_ends(tmp_path):
    with concordkv_mp.open(tmp_path, **OPTIONS) as db:
        db.mset({b"k%05d" % i: b"old %d" % i for i in range(3000)})
        db.flush()
        pinned = sstables(tmp_path)
        scan = db.scan()
        first = next(scan)
        db.mset({b"k%05d" % i: b"new %d" % i for i in range(3000)})
        db.compact()
        assert pinned <= sstables(tmp_path), "compaction deleted files a scan still reads"
        assert db.stats()["obsolete_files_pending"] > 0
        rest = list(scan)
        assert [first] + rest == [(b"k%05d" % i, b"old %d" % i) for i in range(3000)]
        del scan, first, rest
        gc.collect()
        db.set(b"k00000", b"newest")
        db.compact()  # a background job, after which obsolete files are swept
        assert not pinned & sstables(tmp_path)
        assert db.stats()["obsolete_files_pending"] == 0
        assert db.get(b"k00001") == b"new 1"
