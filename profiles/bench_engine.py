"""Embedded-engine benchmark: ConcordKV-MP's `lsm` engine side by side with its peers.

What it measures, in one process run, for each store in turn (each in a fresh directory
under the temp dir, removed at the end):

  seq_put     N puts in key order into a fresh store
  rand_put    N puts in a random order into another fresh store; this store is kept
  (settle)    flush + full compaction, so that every read below is served from files;
              its duration is reported separately ("flush+compact s")
  get_cold    N random gets after closing the store, dropping its files from the OS page
              cache (fsync + posix_fadvise DONTNEED) and reopening: cold block cache
  get_warm    N random gets again, in another order: the block cache is warm
  full_scan   one ordered pass over all N pairs (ops = pairs)
  range_scan  N/100 scans of 100 pairs from random existing start keys (ops = scans)
  mix_90_10   N ops: 90% random gets, 10% random overwrites

Stores: ConcordKV-MP (`lsm`), LevelDB (plyvel), RocksDB (rocksdict), LMDB (lmdb), sqlite3
and a plain dict; a store whose module cannot be imported is skipped with a notice.

How:
  * Keys are 16 bytes (zero-padded decimal, so byte order = numeric order), values 100
    bytes, half random and half zeros so they compress to about half, like db_bench's
    default. Every key, value and operation order is generated before timing from a fixed
    seed, so each store sees the same sequence.
  * Every operation is one call of the store's single-key API: no batches. Operations run
    in chunks of 1,000 timed with time.perf_counter (one clock read per chunk, so the timer
    costs nothing measurable); ops/s = ops / summed chunk time. The chunk times also give
    p50/p99/max of the per-op latency averaged over a chunk, which shows flush and
    compaction stalls (it is not a per-op percentile). A phase stops early when its time
    budget (--phase-seconds) runs out; its figure is then marked '*'. With --repeat R the
    stores take turns R times and each phase reports its fastest run, since load from
    elsewhere on the machine only ever slows a run.
  * Durability is matched, not maximal: every persistent store hands each write to the OS
    before returning and none fsyncs (ConcordKV-MP fsync="none"; LevelDB and RocksDB
    sync=false, their default; LMDB sync=False/metasync=False with one write transaction
    per put; sqlite3 in WAL mode with synchronous=OFF and autocommit, i.e. one transaction
    per put). Each write survives a crash of the process, not of the machine.
    For sqlite3 we chose per-op autocommit with synchronous=OFF over batched commits because
    a batch would hold acknowledged writes in the process, a weaker guarantee than the others.
  * Caches are matched: the block/page cache of ConcordKV-MP, LevelDB, RocksDB and sqlite3
    gets --cache-mb; LMDB has no cache of its own and uses the OS page cache, unbounded; the
    dict holds everything in memory. The three LSMs get the same shape: --memtable-mb
    memtable, 2 MiB files, 10 MiB level 1, x10 per level, L0 compaction at 4 files, 10-bit
    bloom filters, 4 KiB blocks. Compression: lz4 for ConcordKV-MP and RocksDB, snappy for
    LevelDB (plyvel offers only snappy or none).
  * The dict has no persistence: "reopen" is a no-op, so its cold and warm figures are the
    same thing. Its range and full scans walk a sorted list of its keys built in the settle
    step, with bisect to find a start key.

Also reported: ConcordKV-MP's MemTable memory per key (a store with a memtable large
enough to never flush is filled with K keys; the tracemalloc difference over the fill,
keeping only what the store retains, divided by K; a plain dict is measured the same way
for reference), the files per level of the three LSMs and ConcordKV-MP's write
amplification after the settle step (from db.stats()), and each store's size on disk.

With --engines the run is the engine matrix instead (profiles/engine_matrix.py): all five
engines (lsm, btree, rbtree, hash, array) through the engine interface with fsync="none",
a dict and a SortedDict behind the same in-memory engine path, and the raw peers dict,
sortedcontainers' SortedDict and LevelDB, on random put, random get, 100-pair range
scans and RSS memory per key (each store filled in a fresh subprocess), over --keys (the
array engine over --array-keys, next to btree, dict and SortedDict at that size); it
prints the ratios the engines are held to (btree vs SortedDict, hash vs dict, memory vs
dict) with each target met or missed. --keys, --quick, --repeat, --phase-seconds,
--seed, --cache-mb, --memtable-mb, --markdown and --json apply to it too; --auto-snapshots
lets the in-memory engines snapshot on their own during the fill, as they do by default.

  python profiles/bench_engine.py [--keys N | --quick] [--repeat R] [--json FILE] [--markdown]
  python profiles/bench_engine.py --profile      # cProfile of ConcordKV-MP's phases
  python profiles/bench_engine.py --engines [--keys N] [--array-keys M | --quick] [--repeat R]
  python profiles/bench_engine.py --engines --profile   # cProfile of the btree and hash gets
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import deque
from itertools import islice
from pathlib import Path

# Benchmark the checkout this file lives in, not some installed copy (the other scripts
# here import this module first, and so get the same).
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MiB = 1024 * 1024
KEY_SIZE = 16
VALUE_SIZE = 100
# What a store that keeps its own copies holds in key and value objects alone, per key.
KEY_VALUE_OBJECTS = sys.getsizeof(bytes(KEY_SIZE)) + sys.getsizeof(bytes(VALUE_SIZE))
RANGE_LEN = 100
WRITE_FRACTION = 0.10
CHUNK = 1000
TARGET_FILE_SIZE = 2 * MiB
LEVEL_BASE_SIZE = 10 * MiB
LEVELS = 7
MEMTABLE_PROBE_KEYS = 100_000
PHASES = ("seq_put", "rand_put", "get_cold", "get_warm", "full_scan", "range_scan", "mix_90_10")


# --- the workload ----------------------------------------------------------------------


class Workload:
    """Every key, value and operation order of one run, generated from one seed."""

    def __init__(self, n: int, seed: int):
        rng = random.Random(seed)
        self.n = n
        self.seq_keys = [b"%016d" % i for i in range(n)]
        filler = bytes(VALUE_SIZE - VALUE_SIZE // 2)
        self.seq_values = [rng.randbytes(VALUE_SIZE // 2) + filler for _ in range(n)]
        order = list(range(n))
        rng.shuffle(order)
        self.rand_keys = [self.seq_keys[i] for i in order]
        self.rand_values = [self.seq_values[i] for i in order]
        self.cold_keys = rng.sample(self.seq_keys, n)
        self.warm_keys = rng.sample(self.seq_keys, n)
        last_start = max(0, n - RANGE_LEN)
        self.range_starts = [self.seq_keys[rng.randint(0, last_start)] for _ in range(max(1, n // RANGE_LEN))]
        self.mix_keys = [self.seq_keys[rng.randrange(n)] for _ in range(n)]
        # None marks a get; a value marks an overwrite with that value.
        self.mix_values = [
            self.seq_values[rng.randrange(n)] if rng.random() < WRITE_FRACTION else None for _ in range(n)
        ]


# --- the stores ------------------------------------------------------------------------


class Store:
    """One store under test. `open` binds `put(k, v)` and `get(k)` to the fastest
    single-key call the store's API offers, so the harness adds nothing per op."""

    name = ""
    module = ""
    durability = ""
    cache = ""

    def __init__(self, settings: dict):
        self.settings = settings
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

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.cache = f"block cache {settings['cache_mb']} MiB"

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

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.cache = f"LRU block cache {settings['cache_mb']} MiB"

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

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.cache = f"block cache {settings['cache_mb']} MiB"

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

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.cache = f"page cache {settings['cache_mb']} MiB"

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


# --- timing ----------------------------------------------------------------------------


def run_chunks(n: int, body, budget: float) -> dict:
    """Call body(a, b) on consecutive chunks of range(n) until done or `budget` seconds
    of timed work are spent."""
    clock = time.perf_counter
    cpu0 = time.process_time()
    per_op = []
    spent = 0.0
    done = 0
    for a in range(0, n, CHUNK):
        b = min(a + CHUNK, n)
        t0 = clock()
        body(a, b)
        dt = clock() - t0
        per_op.append(dt / (b - a))
        spent += dt
        done = b
        if spent > budget:
            break
    per_op.sort()
    return {
        "ops": done,
        "seconds": spent,
        "process_cpu_seconds": time.process_time() - cpu0,  # all threads, untimed gaps included
        "ops_per_sec": done / spent if spent else float("inf"),
        "truncated": done < n,
        "chunk_us_p50": per_op[len(per_op) // 2] * 1e6,
        "chunk_us_p99": per_op[min(len(per_op) - 1, len(per_op) * 99 // 100)] * 1e6,
        "chunk_us_max": per_op[-1] * 1e6,
    }


def phase_put(store: Store, keys, values, budget):
    put = store.put

    def body(a, b):
        for k, v in zip(keys[a:b], values[a:b]):
            put(k, v)

    return run_chunks(len(keys), body, budget)


def phase_get(store: Store, keys, budget):
    get = store.get

    def body(a, b):
        for k in keys[a:b]:
            get(k)

    return run_chunks(len(keys), body, budget)


def phase_full_scan(store: Store, n, budget):
    pairs = None
    counted = deque(maxlen=1)

    def body(a, b):
        nonlocal pairs
        if pairs is None:
            pairs = store.scan_all()
        counted.extend(enumerate(islice(pairs, b - a), a + 1))

    result = run_chunks(n, body, budget)
    seen = counted[0][0] if counted else 0
    if not result["truncated"] and (seen != n or next(iter(pairs), None) is not None):
        raise AssertionError(f"{store.name}: full scan saw {seen} pairs or more, expected {n}")
    return result


def phase_range_scan(store: Store, starts, budget):
    scan_range = store.scan_range

    def body(a, b):
        for start in starts[a:b]:
            deque(scan_range(start, RANGE_LEN), maxlen=0)

    return run_chunks(len(starts), body, budget)


def phase_mix(store: Store, keys, values, budget):
    put = store.put
    get = store.get

    def body(a, b):
        for k, v in zip(keys[a:b], values[a:b]):
            if v is None:
                get(k)
            else:
                put(k, v)

    return run_chunks(len(keys), body, budget)


# --- one store's run -------------------------------------------------------------------


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


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_reads(store: Store, w: Workload) -> None:
    rng = random.Random(1)
    for i in rng.sample(range(w.n), min(w.n, 200)):
        if store.get(w.seq_keys[i]) != w.seq_values[i]:
            raise AssertionError(f"{store.name}: wrong value for {w.seq_keys[i]!r}")
    start = w.range_starts[0]
    got = [k for k, _ in store.scan_range(start, RANGE_LEN)]
    i = bisect.bisect_left(w.seq_keys, start)
    if got != w.seq_keys[i:i + RANGE_LEN]:
        raise AssertionError(f"{store.name}: range scan from {start!r} returned wrong keys")


def store_run(store: Store, budget: float):
    """A run's record for one store, and `run(name, phase, *args)`, which times
    phase(store, *args, budget) into record["phases"][name]."""
    out = {"phases": {}, "loadavg_1min": [os.getloadavg()[0]]}

    def run(name, phase, *args):
        gc.collect()  # outside the timing: no store pays for the garbage of the one before
        out["phases"][name] = phase(store, *args, budget)

    return out, run


def fill_and_settle(store: Store, out: dict, run, phase: str, keys, values) -> None:
    """Time a fill of the open store as `phase` (see store_run); refuse one the budget cut
    short, since reads would then miss keys; then time store.settle()."""
    run(phase, phase_put, keys, values)
    if out["phases"][phase]["truncated"]:
        raise RuntimeError(f"{store.name}: {phase} did not finish within --phase-seconds; raise it")
    t0 = time.perf_counter()
    store.settle()
    out["settle_seconds"] = time.perf_counter() - t0


def bench_store(store: Store, w: Workload, root: Path, budget: float, log) -> dict:
    out, run = store_run(store, budget)
    phases = out["phases"]
    path = root / f"{store.name}-seq"
    store.open(path)
    run("seq_put", phase_put, w.seq_keys, w.seq_values)
    store.close()
    shutil.rmtree(path, ignore_errors=True)
    log(f"  seq_put     {phases['seq_put']['ops_per_sec']:>12,.0f}/s")

    path = root / f"{store.name}-rand"
    store.open(path)
    fill_and_settle(store, out, run, "rand_put", w.rand_keys, w.rand_values)
    log(f"  rand_put    {phases['rand_put']['ops_per_sec']:>12,.0f}/s")
    out["files_per_level"] = store.files_per_level()
    out["stats_after_settle"] = store.stats()
    store.reopen_cold()
    out["disk_bytes"] = disk_bytes(path)

    run("get_cold", phase_get, w.cold_keys)
    out["stats_after_get_cold"] = store.stats()
    run("get_warm", phase_get, w.warm_keys)
    out["stats_after_get_warm"] = store.stats()
    check_reads(store, w)
    log(f"  get         {phases['get_cold']['ops_per_sec']:>12,.0f}/s cold, "
        f"{phases['get_warm']['ops_per_sec']:,.0f}/s warm")
    run("full_scan", phase_full_scan, w.n)
    run("range_scan", phase_range_scan, w.range_starts)
    log(f"  scans       {phases['full_scan']['ops_per_sec']:>12,.0f} pairs/s full, "
        f"{phases['range_scan']['ops_per_sec']:,.0f} range scans/s")
    run("mix_90_10", phase_mix, w.mix_keys, w.mix_values)
    log(f"  mix_90_10   {phases['mix_90_10']['ops_per_sec']:>12,.0f}/s")
    store.close()
    shutil.rmtree(path, ignore_errors=True)
    out["loadavg_1min"].append(os.getloadavg()[0])
    return out


def fastest_of(runs: list, phases=PHASES) -> dict:
    """Each phase's fastest run (as timeit does: interference only ever slows a run);
    the shape and stats of the last run."""
    best = dict(runs[-1])
    best["phases"] = {p: max((r["phases"][p] for r in runs), key=lambda x: x["ops_per_sec"]) for p in phases}
    best["settle_seconds"] = min(r["settle_seconds"] for r in runs)
    best["loadavg_1min"] = [x for r in runs for x in r["loadavg_1min"]]
    return best


def take_turns(entries: dict, repeat: int, bench_one, log, phases=PHASES) -> None:
    """`repeat` rounds of entries[name]["runs"].append(bench_one(name)) over every entry
    (a dict with "version" and "runs"), then each entry takes its fastest_of. Rounds go
    over all stores in turn, so that a burst of load from elsewhere on the machine hits
    one round of every store rather than every round of one store."""
    for r in range(repeat):
        for name, entry in entries.items():
            if "error" in entry:
                continue
            log(f"{name} ({entry['version']}), run {r + 1} of {repeat}")
            try:
                entry["runs"].append(bench_one(name))
            except Exception as e:  # noqa: BLE001 -- one broken store must not void the others' run
                entry["error"] = f"{type(e).__name__}: {e}"
                log(f"  FAILED: {entry['error']}")
    for entry in entries.values():
        if entry["runs"]:
            entry.update(fastest_of(entry["runs"], phases))


# --- MemTable memory -------------------------------------------------------------------


def retained_bytes_per_key(put, k: int) -> float:
    """Python heap the store keeps per key after `put` of k fresh 16+100-byte pairs.
    Keys and values are created inside the traced region and dropped by us at once, so
    what remains is exactly what the store holds on to."""
    rng = random.Random(2)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(k):
        put(b"%016d" % i, rng.randbytes(VALUE_SIZE))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / k


def measure_memtable(settings: dict, root: Path, k: int) -> dict:
    store = ConcordKV(settings)
    path = root / "memtable-probe"
    store.open(path, memtable_size=1024 * MiB)
    per_key = retained_bytes_per_key(store.put, k)
    stats = store.stats()
    store.close()
    shutil.rmtree(path, ignore_errors=True)
    entries = stats.get("memtable_entries")
    return {
        "keys": k,
        "tracemalloc_bytes_per_key": per_key,
        "engine_estimate_bytes_per_key": stats["memtable_bytes"] / entries if entries else None,
        "all_in_memtable": entries == k,
        "dict_bytes_per_key": retained_bytes_per_key({}.__setitem__, k),
        "key_value_objects_bytes": KEY_VALUE_OBJECTS,
    }


# --- profiling -------------------------------------------------------------------------


def profiled(title: str, phase, top: int) -> None:
    """Run `phase()` (a phase_* call) under cProfile; print the `top` functions by own
    time. cProfile sees only the calling thread (not an engine's background threads) and
    inflates the cost of Python calls, so its ops/s are not the benchmark's."""
    gc.collect()
    profile = cProfile.Profile()
    profile.enable()
    result = phase()
    profile.disable()
    print(f"\n=== {title}: {result['ops']:,} ops, {result['ops_per_sec']:,.0f}/s under cProfile ===")
    pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def profile_concordkv(w: Workload, settings: dict, root: Path, budget: float, top: int) -> None:
    """cProfile ConcordKV-MP's random put, warm get and full scan."""
    store = ConcordKV(settings)
    path = root / "profile"
    store.open(path)
    profiled("rand_put", lambda: phase_put(store, w.rand_keys, w.rand_values, budget), top)
    store.settle()
    store.reopen_cold()
    phase_get(store, w.cold_keys, budget)
    profiled("get_warm", lambda: phase_get(store, w.warm_keys, budget), top)
    profiled("full_scan", lambda: phase_full_scan(store, w.n, budget), top)
    store.close()


# --- report ----------------------------------------------------------------------------


def log(msg: str) -> None:
    """Progress, on stderr: stdout is the report."""
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict:
    import psutil

    cpu = platform.processor()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
    }


def checkout_revision() -> str:
    """The commit of the code under test, and whether concordkv_mp/ differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "concordkv_mp"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes in concordkv_mp/" if dirty else "")


def filesystem_of(path: Path) -> str:
    import psutil

    mounts = [p for p in psutil.disk_partitions(all=True) if str(path).startswith(p.mountpoint)]
    best = max(mounts, key=lambda p: len(p.mountpoint), default=None)
    return f"{best.fstype} ({best.device})" if best else "unknown"


def render(headers: list, rows: list, markdown: bool, numeric: bool = True) -> str:
    """A table as Markdown or as aligned text; `numeric` right-aligns all but the first column."""
    cells = [[str(c) for c in row] for row in [headers] + rows]
    if markdown:
        rule = ["---"] + ["---:" if numeric else "---"] * (len(headers) - 1)
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join(rule) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    fmt = lambda row: "  ".join(c.rjust(w) if numeric and i else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(row) for row in cells[1:]])


def new_run(root: Path, settings: dict) -> dict:
    """A run's record, before any results: where and what it runs on, and its settings."""
    return {"machine": machine(), "filesystem": filesystem_of(root), "revision": checkout_revision(),
            "settings": settings, "results": {}}


def publish(run: dict, text: str, json_path: str | None) -> None:
    """Print the report; write the whole record to `json_path` if given."""
    print(text)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(run, f, indent=2, default=str)


def heading(markdown: bool):
    """A function that makes a section title."""
    return (lambda title: f"### {title}") if markdown else (lambda title: f"\n== {title} ==")


def machine_lines(run: dict, markdown: bool) -> list:
    """The report's opening section: the machine and the revision under test."""
    m = run["machine"]
    return [heading(markdown)("Machine"),
            (f"{m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores, "
             f"{m['ram_gib']} GiB RAM, {m['python']}, {m['os']}; data on {run['filesystem']}"),
            f"ConcordKV-MP revision: {run['revision']}"]


def load_lines(run: dict, names: list) -> list:
    """The range of the load average over the runs of the stores `names`, if any ran."""
    loads = [x for n in names for x in run["results"][n]["loadavg_1min"]]
    if not loads:
        return []
    return [(f"1-minute load average at the start and end of each store's runs: {min(loads):.2f} to {max(loads):.2f} "
             f"on {run['machine']['logical_cores']} cores (this benchmark alone accounts for about 1)")]


def report(run: dict, markdown: bool) -> str:
    results = run["results"]
    names = [name for name in results if "phases" in results[name]]
    section = heading(markdown)
    out = machine_lines(run, markdown)
    s = run["settings"]
    out.append(f"{s['keys']:,} keys of {KEY_SIZE} bytes, {VALUE_SIZE}-byte values (half compressible), "
               f"seed {s['seed']}, memtable {s['memtable_mb']} MiB, cache {s['cache_mb']} MiB, "
               f"budget {s['phase_seconds']} s per phase, fastest of {s['repeat']} run(s) per phase")

    out.append(section("Stores and their settings"))
    out.append(render(["store", "version", "durability of a put", "cache"],
                      [[n, results[n]["version"], results[n]["durability"], results[n]["cache"]]
                       for n in results], markdown, numeric=False))
    for n in results:
        if "error" in results[n]:
            out.append(f"{n}: FAILED: {results[n]['error']}")
    out += load_lines(run, names)
    out.append("Durability: ConcordKV-MP runs with fsync=\"none\" against the peers' default "
               "non-sync writes; no store fsyncs, every write reaches the OS before the call returns.")

    def ops(n, phase):
        r = results[n]["phases"][phase]
        return f"{r['ops_per_sec']:,.0f}" + ("*" if r["truncated"] else "")

    out.append(section("Throughput (ops/s; full_scan in pairs/s, range_scan in 100-pair scans/s)"))
    rows = [[p] + [ops(n, p) for n in names] for p in PHASES]
    rows.append(["flush+compact s"] + [f"{results[n]['settle_seconds']:.2f}" for n in names])
    rows.append(["disk MiB"] + [f"{results[n]['disk_bytes'] / MiB:.1f}" for n in names])
    out.append(render(["phase"] + names, rows, markdown))
    if any(results[n]["phases"][p]["truncated"] for n in names for p in PHASES):
        out.append("* phase stopped by its time budget; figure over the ops done")

    ours = ConcordKV.name
    peers = [n for n in names if n != ours]
    if ours in names and peers:
        out.append(section(f"{ours} / peer (above 1 = {ours} faster)"))
        rows = [[p] + [f"{results[ours]['phases'][p]['ops_per_sec'] / results[n]['phases'][p]['ops_per_sec']:.2f}"
                       for n in peers] for p in PHASES]
        out.append(render(["phase"] + peers, rows, markdown))

    out.append(section("Latency per op within 1,000-op chunks, p50 / p99 / max (us)"))
    rows = [[p] + [("{chunk_us_p50:.1f} / {chunk_us_p99:.1f} / {chunk_us_max:.1f}").format(**results[n]["phases"][p])
                   for n in names] for p in PHASES]
    out.append(render(["phase"] + names, rows, markdown))

    lsm = [n for n in names if results[n]["files_per_level"]]
    if lsm:
        out.append(section("LSM shape after flush + full compaction"))
        rows = [[n] + results[n]["files_per_level"] for n in lsm]
        out.append(render(["store"] + [f"L{i}" for i in range(LEVELS)], rows, markdown))
    if ours in names:
        st = results[ours]["stats_after_settle"]
        out.append(f"{ours} write amplification after compaction: {st.get('write_amplification', 'n/a')} "
                   "(bytes written to SSTables + WAL / user bytes)")
        out.append(f"{ours} bytes per level: {st.get('bytes_per_level', 'n/a')}")
        workers = st.get("workers") or {}
        tasks = ", ".join(f"{role} worker: {w['tasks']} jobs" for role, w in workers.items()) or "no worker processes"
        out.append(f"{ours} during the random load and settle step: {st.get('flushes')} flushes, "
                   f"{st.get('compactions')} compactions, {st.get('trivial_moves')} trivial moves, "
                   f"{st.get('write_stalls')} write stalls ({tasks})")
        hits = misses = 0  # counters start at the cold reopen
        for phase in ("get_cold", "get_warm"):
            cache = results[ours][f"stats_after_{phase}"]["block_cache"]
            h, m = cache["hits"] - hits, cache["misses"] - misses
            hits, misses = cache["hits"], cache["misses"]
            out.append(f"{ours} block cache during {phase}: {h:,} hits, {m:,} misses "
                       f"({100 * h / max(1, h + m):.1f}% hits), {cache['size_bytes'] / MiB:.1f} MiB cached")

    mt = run.get("memtable")
    if mt:
        out.append(section("MemTable memory"))
        est = mt["engine_estimate_bytes_per_key"]
        out.append(f"{mt['tracemalloc_bytes_per_key']:.0f} bytes/key retained by a memtable-only {ours} store "
                   f"of {mt['keys']:,} keys (tracemalloc)" + ("" if mt["all_in_memtable"] else " -- WARNING: it flushed"))
        out.append(f"engine's own estimate: {est:.0f} bytes/key" if est else "engine reports no estimate")
        out.append(f"for reference: plain dict {mt['dict_bytes_per_key']:.0f} bytes/key; the key and value "
                   f"objects alone are {mt['key_value_objects_bytes']} bytes, the payload {KEY_SIZE + VALUE_SIZE} bytes")
    return ("\n\n" if markdown else "\n").join(out)


# --- main ------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="number of keys (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="100,000 keys")
    ap.add_argument("--stores", default=",".join(STORE_CLASSES),
                    help=f"comma-separated subset of {','.join(STORE_CLASSES)}")
    ap.add_argument("--cache-mb", type=int, default=256, help="block/page cache of every store (MiB)")
    ap.add_argument("--memtable-mb", type=int, default=4, help="memtable / write buffer of the LSMs (MiB)")
    ap.add_argument("--phase-seconds", type=float, default=120.0, help="time budget of each phase")
    ap.add_argument("--repeat", type=int, default=1, help="runs per store; each phase reports its fastest")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tmpdir", default=tempfile.gettempdir(), help="where the stores' directories go")
    ap.add_argument("--json", metavar="FILE", help="write all results to FILE")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the benchmark, cProfile ConcordKV-MP's rand_put, get_warm and full_scan")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--engines", action="store_true",
                    help="instead of the LSM-vs-peers run, compare the five engines with each other and "
                         "with dict, SortedDict and LevelDB (profiles/engine_matrix.py); with --profile, "
                         "cProfile the btree and hash gets")
    ap.add_argument("--array-keys", type=int, default=100_000,
                    help="with --engines: keys for the array engine and its references (default 100,000)")
    ap.add_argument("--auto-snapshots", action="store_true",
                    help="with --engines: keep the in-memory engines' automatic snapshots (snapshot_wal_size "
                         "64 MiB); by default they are off and only the settle step writes one")
    args = ap.parse_args(argv)
    if args.engines:
        import engine_matrix  # imports this module back by name, for the shared helpers

        return engine_matrix.main(args)

    n = 100_000 if args.quick else args.keys
    settings = {"keys": n, "cache_mb": args.cache_mb, "memtable_mb": args.memtable_mb,
                "phase_seconds": args.phase_seconds, "seed": args.seed, "repeat": args.repeat}

    stores = []
    for key in args.stores.split(","):
        cls = STORE_CLASSES[key.strip()]
        try:
            stores.append(cls(settings))
        except ImportError as e:
            print(f"skipping {cls.name}: cannot import {cls.module} ({e})")

    root = Path(tempfile.mkdtemp(prefix="ckv-bench-", dir=args.tmpdir))
    try:
        t0 = time.perf_counter()
        w = Workload(n, args.seed)
        log(f"workload of {n:,} keys generated in {time.perf_counter() - t0:.1f} s; stores under {root}")
        if args.profile:
            profile_concordkv(w, settings, root, args.phase_seconds, args.profile_top)
            return 0

        run = new_run(root, settings)
        entries = run["results"]
        for s in stores:
            entries[s.name] = {"version": s.version(), "durability": s.durability, "cache": s.cache, "runs": []}
        by_name = {s.name: s for s in stores}
        take_turns(entries, args.repeat, lambda name: bench_store(by_name[name], w, root, args.phase_seconds, log), log)
        if "phases" in entries.get(ConcordKV.name, {}):
            run["memtable"] = measure_memtable(settings, root, min(n, MEMTABLE_PROBE_KEYS))

        publish(run, report(run, args.markdown), args.json)
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
