"""`concordkv demo`: a short tour of the embedded API that prints what it does.

It writes, reads, scans, deletes, flushes to SSTables, reopens and checks that the
data survived, then switches the database to the B+tree engine and reopens it again.
It only uses the public API.
"""

from __future__ import annotations

import shutil

import concordkv_mp


def run_demo(path: str, out=print) -> None:
    shutil.rmtree(path, ignore_errors=True)
    out(f"opening an LSM database in {path!r}")
    with concordkv_mp.open(path, memtable_size=64 * 1024) as db:
        db.set(b"user:1", b"ada")
        db.set("user:2", "grace")  # str is stored as UTF-8
        out(f"set user:1, user:2 -> get(user:1) = {db.get(b'user:1')!r}")
        db.mset({f"item:{i:04d}": f"value {i}" for i in range(5000)})
        out(f"mset 5,000 items -> count() = {db.count()}")
        out(f"scan(prefix='user:') = {list(db.scan(prefix='user:'))}")
        out(f"scan(start='item:0100', limit=3) = {list(db.scan(start='item:0100', limit=3))}")
        out(f"scan(prefix='item:', reverse=True, limit=2) = {list(db.scan(prefix='item:', reverse=True, limit=2))}")
        out(f"delete(user:2) = {db.delete('user:2')}, exists(user:2) = {db.exists('user:2')}")
        out(f"update(user:1, 'ada lovelace') = {db.update('user:1', 'ada lovelace')}, update(user:9) = {db.update('user:9', 'x')}")
        db.flush()
        stats = db.stats()
        out(f"flush() -> files per level {stats['files_per_level']}, write amplification {stats['write_amplification']}")
    out("closed; reopening")
    with concordkv_mp.open(path) as db:
        out(f"after reopen: get(user:1) = {db.get('user:1')!r}, get(user:2) = {db.get('user:2')!r}, count() = {db.count()}")
        db.compact()
        out(f"compact() -> files per level {db.stats()['files_per_level']}")
        db.switch_engine("btree")
        stats = db.stats()
        out(
            f"switch_engine('btree') -> engine {db.engine}, count() = {db.count()}, "
            f"B+tree height {stats['structure']['height']}, memory {stats['memory_bytes']:,} bytes"
        )
    with concordkv_mp.open(path) as db:
        out(f"reopened: engine {db.engine} (remembered), get(user:1) = {db.get('user:1')!r}")
