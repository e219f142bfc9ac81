"""The stores of the embedded benchmarks behind one interface: ConcordKV-MP's `lsm` engine
through its public API and its peers LevelDB, RocksDB, LMDB, sqlite3 and a dict, each set
up as bench_engine.py's docstring says (matched durability, caches and LSM shape). It
must not time anything: the phases that drive a store are in harness.phases.
"""

from __future__ import annotations

import bisect
import importlib
import importlib.metadata
import os
import platform
from itertools import islice
from pathlib import Path

from harness.workload import KEY_SIZE

MiB = 1024 * 1024
TARGET_FILE_SIZE = 2 * MiB
LEVEL_BASE_SIZE = 10 * MiB
LEVELS = 7


class Store:
    """One store under test. `open` binds `put(k, v)` and `get(k)` to the fastest
    single-key call the store's API offers, so the harness adds nothing per op."""

    name = ""
    module = ""
    durability = ""
    cache = ""  # a description, formatted with the settings: "{cache_mb}" is --cache-mb

    def __init__(self, settings: dict):
        self.settings = settings
        self.cache = self.cache.format(**settings)
        self.lib = importlib.import_module(self.module)
        self.path = None

    def open(self, path: Path) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def reopen_cold(self) -> None:
        """Close, evict the files from the OS page cache, open again: every cache is cold."""
        self.close()
        drop_page_cache(self.path)
        self.open(self.path)

    def settle(self) -> None:
        """Leave all data in files, compacted as far as the store goes."""

    def scan_all(self):
        raise NotImplementedError

    def scan_range(self, start: bytes, n: int):
        raise NotImplementedError

    def files_per_level(self) -> list | None:
        return None

    def stats(self) -> dict | None:
        return None

    def version(self) -> str:
        raise NotImplementedError


class ConcordKV(Store):
    name = "ConcordKV-MP"
    module = "concordkv_mp"
    durability = 'fsync="none": each write goes to the WAL file, no fsync'
    cache = "block cache {cache_mb} MiB"

    def open(self, path: Path, memtable_size: int | None = None) -> None:
        self.path = path
        self.db = self.lib.open(
            str(path),
            engine="lsm",
            fsync="none",
            memtable_size=memtable_size or self.settings["memtable_mb"] * MiB,
            cache_size=self.settings["cache_mb"] * MiB,
            compression="lz4",
            block_size=4096,
            bloom_bits_per_key=10,
            target_file_size=TARGET_FILE_SIZE,
            level_base_size=LEVEL_BASE_SIZE,
            level_size_ratio=10,
            l0_compaction_trigger=4,
        )
        self.put = self.db.set
        self.get = self.db.get

    def close(self) -> None:
        self.db.close()

    def settle(self) -> None:
        self.db.flush()
        self.db.compact()

    def scan_all(self):
        return self.db.scan()

    def scan_range(self, start, n):
        return self.db.scan(start=start, limit=n)

    def stats(self):
        return self.db.stats()

    def files_per_level(self):
        return list(self.db.stats().get("files_per_level", []))

    def version(self):
        return f"concordkv-mp {self.lib.__version__} ({Path(self.lib.__file__).parent})"


class LevelDB(Store):
    name = "LevelDB"
    module = "plyvel"
    durability = "sync=false (default): each write goes to the log file, no fsync"
    cache = "LRU block cache {cache_mb} MiB"

    def open(self, path):
        self.path = path
        self.db = self.lib.DB(
            str(path),
            create_if_missing=True,
            write_buffer_size=self.settings["memtable_mb"] * MiB,
            lru_cache_size=self.settings["cache_mb"] * MiB,
            block_size=4096,
            max_file_size=TARGET_FILE_SIZE,
            compression="snappy",
            bloom_filter_bits=10,
        )
        self.put = self.db.put
        self.get = self.db.get

    def close(self):
        self.db.close()

    def settle(self):
        # plyvel passes empty slices, not NULL, for omitted bounds, so a bare
        # compact_range() compacts the range ["", ""]: it only flushes the memtable.
        self.db.compact_range(start=b"", stop=b"\xff" * (KEY_SIZE + 1))

    def scan_all(self):
        return self.db.iterator()

    def scan_range(self, start, n):
        return islice(self.db.iterator(start=start), n)

    def files_per_level(self):
        return [int(self.db.get_property(b"leveldb.num-files-at-level%d" % i)) for i in range(LEVELS)]

    def version(self):
        return f"plyvel {self.lib.__version__}"


class RocksDB(Store):
    name = "RocksDB"
    module = "rocksdict"
    durability = "sync=false (default): each write goes to the WAL file, no fsync"
    cache = "block cache {cache_mb} MiB"

    def open(self, path):
        r = self.lib
        self.path = path
        opts = r.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(self.settings["memtable_mb"] * MiB)
        opts.set_target_file_size_base(TARGET_FILE_SIZE)
        opts.set_max_bytes_for_level_base(LEVEL_BASE_SIZE)
        opts.set_level_zero_file_num_compaction_trigger(4)
        opts.set_compression_type(r.DBCompressionType.lz4())
        table = r.BlockBasedOptions()
        table.set_block_cache(r.Cache(self.settings["cache_mb"] * MiB))
        table.set_block_size(4096)
        table.set_bloom_filter(10, False)
        opts.set_block_based_table_factory(table)
        self.db = r.Rdict(str(path), opts)
        self.put = self.db.put
        self.get = self.db.get

    def close(self):
        self.db.close()

    def settle(self):
        self.db.flush()
        self.db.compact_range(None, None)

    def scan_all(self):
        return self.db.items()

    def scan_range(self, start, n):
        return islice(self.db.items(from_key=start), n)

    def files_per_level(self):
        return [self.db.property_int_value(f"rocksdb.num-files-at-level{i}") for i in range(LEVELS)]

    def version(self):
        return f"rocksdict {importlib.metadata.version('rocksdict')}"


class LMDB(Store):
    name = "LMDB"
    module = "lmdb"
    durability = "sync=False, metasync=False, one write txn per put: pages written to the OS, no fsync"
    cache = "none of its own: OS page cache (unbounded)"

    def open(self, path):
        self.path = path
        # map_size is only an address-space reservation; 1 KiB per key is ample for 116-byte pairs.
        self.env = self.lib.open(str(path), map_size=max(64 * MiB, 1024 * self.settings["keys"]),
                                 sync=False, metasync=False)
        begin = self.env.begin

        def put(key, value):
            with begin(write=True) as txn:
                txn.put(key, value)

        def get(key):
            with begin() as txn:
                return txn.get(key)

        self.put = put
        self.get = get

    def close(self):
        self.env.close()

    def scan_all(self):
        with self.env.begin() as txn:
            yield from txn.cursor().iternext()

    def scan_range(self, start, n):
        with self.env.begin() as txn:
            cursor = txn.cursor()
            if cursor.set_range(start):
                yield from islice(cursor.iternext(), n)

    def version(self):
        return f"py-lmdb {self.lib.__version__}, LMDB {'.'.join(map(str, self.lib.version()))}"


class SQLite(Store):
    name = "sqlite3"
    module = "sqlite3"
    durability = "WAL journal, synchronous=OFF, autocommit (one transaction per put), no fsync"
    cache = "page cache {cache_mb} MiB"

    def open(self, path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.conn = self.lib.connect(str(path / "kv.sqlite"), isolation_level=None)
        execute = self.conn.execute
        execute("PRAGMA journal_mode=WAL")
        execute("PRAGMA synchronous=OFF")
        execute(f"PRAGMA cache_size=-{self.settings['cache_mb'] * 1024}")
        execute("CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

        def put(key, value):
            execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

        def get(key):
            row = execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
            return row[0] if row else None

        self.put = put
        self.get = get

    def close(self):
        self.conn.close()

    def settle(self):
        # Moves every page from the WAL into the database file, sqlite's equivalent of a flush.
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def scan_all(self):
        return self.conn.execute("SELECT k, v FROM kv ORDER BY k")

    def scan_range(self, start, n):
        return self.conn.execute("SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?", (start, n))

    def version(self):
        return f"SQLite {self.lib.sqlite_version}"


class Dict(Store):
    name = "dict"
    module = "builtins"
    durability = "none (in memory)"
    cache = "everything in memory"

    def open(self, path):
        self.path = path
        self.data = {}
        self.sorted_keys = []
        self.put = self.data.__setitem__
        self.get = self.data.get

    def close(self):
        """Nothing to release: the dict lives until the next `open`."""

    def reopen_cold(self):
        """No persistence and no cache: the same dict stays."""

    def settle(self):
        self.sorted_keys = sorted(self.data)

    def scan_all(self):
        data = self.data
        return ((k, data[k]) for k in self.sorted_keys)

    def scan_range(self, start, n):
        data = self.data
        i = bisect.bisect_left(self.sorted_keys, start)
        return ((k, data[k]) for k in self.sorted_keys[i:i + n])

    def version(self):
        return f"Python {platform.python_version()}"


STORE_CLASSES = {"concordkv": ConcordKV, "leveldb": LevelDB, "rocksdb": RocksDB,
                 "lmdb": LMDB, "sqlite": SQLite, "dict": Dict}


def drop_page_cache(path: Path) -> None:
    """Evict a closed store's files from the OS page cache, so a reopen reads from disk.
    DONTNEED only drops clean pages, hence the fsync first (outside any timed phase)."""
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
