"""The engine matrix: ConcordKV-MP's five engines against each other and their peers.

Run by `bench_engine.py --engines` (its docstring lists the flags). This module owns the
matrix's stores, phases, memory probe, report and get profile; it borrows the workload,
the timing loop, the dict and LevelDB stores and the report helpers from bench_engine.
It also runs as a script, but only as the memory probe's subprocess (`measure_memory`).

Stores, each filled from empty in a fresh directory:
  lsm, btree, rbtree, hash   the engines through the engine interface (`write([(k, v)])`,
                             `get`, `scan`), fsync="none", btree order 100; lsm with
                             --memtable-mb and --cache-mb, like LevelDB
  array                      the same, over --array-keys (a put is O(n) there), next to
                             btree, dict and SortedDict at that size ("@M" rows)
  dict (same path), SortedDict (same path)
                             `MemoryEngine` around `DictIndex` / `SortedDictIndex` below:
                             the in-memory engines' WAL, mutex and scan views with the
                             fastest maps Python has behind them, so that a ratio to them
                             compares the index alone
  dict, SortedDict, LevelDB  the raw peers through their own APIs: d[k] = v, d.get, ranges
                             by bisect in a sorted key list built after the fill; sd[k] = v,
                             sd.get, ranges by sd.irange(start) and sd[k]; plyvel with
                             sync=False and bench_engine's LevelDB settings

Phases, on bench_engine's Workload (16-byte keys, 100-byte values, one seed for all):
  put        N puts in random order into the fresh store
  (settle)   untimed: engines compact (lsm: flush and full compaction; in-memory: a
             snapshot), LevelDB compacts, the dict sorts its keys for ranges
  get        N random gets of existing keys
  range100   N/100 forward scans of 100 pairs from random existing keys (ops = scans)
  memory     in a fresh subprocess: generate the workload, read RSS, fill the store with
             N fresh copies of its keys and values (so that the store alone holds them,
             182 bytes of objects per key), settle it (not the dict: its sorted key list
             is a range index a plain dict does not have), read RSS again; the growth / N.
             Before each reading: gc.collect() and glibc's malloc_trim(0), so that freed
             memory is not counted; a throwaway store is opened and filled first, so that
             lazy imports and one-off buffers are in the baseline. The lsm figure leaves
             out its compaction worker process.
The in-memory engines run with automatic snapshots off (snapshot_wal_size at its maximum)
unless --auto-snapshots. By default one starts once the WAL passes 64 MiB and the data,
at about 550,000 keys here, and runs while the fill goes on: that halves the puts of the
ordered engines (the snapshot thread shares the GIL and writers save pre-images), and
brings hash and the DictIndex baseline to about 2,000 puts/s, since every chunk the
snapshot reads re-sorts all keys (each insert drops their sorted-key cache). The puts'
own cost would be lost in that, and the run would not fit its time budget.
Timing is bench_engine's: 1,000-op chunks, a budget per phase (--phase-seconds), the
fastest of --repeat rounds, with the stores taking turns within a round.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

from bench_engine import (
    KEY_SIZE,
    KEY_VALUE_OBJECTS,
    VALUE_SIZE,
    Dict,
    LevelDB,
    MiB,
    Store,
    Workload,
    check_reads,
    fill_and_settle,
    heading,
    load_lines,
    log,
    machine_lines,
    new_run,
    phase_get,
    phase_range_scan,
    profiled,
    publish,
    render,
    store_run,
    take_turns,
)
from sortedcontainers import SortedDict

from concordkv_mp.engines import open_engine
from concordkv_mp.engines.memory.btree import BPlusTree
from concordkv_mp.engines.memory.engine import MemoryEngine
from concordkv_mp.engines.memory.hash_table import HashTable
from concordkv_mp.engines.memory.invariant import InvariantError
from concordkv_mp.io.fs import DEFAULT_FS
from concordkv_mp.options import StorageOptions

PHASES = ("put", "get", "range100")
# snapshot_wal_size that keeps an in-memory engine from snapshotting on its own: its maximum.
NO_AUTO_SNAPSHOT = 1 << 40
GET_TARGET = RANGE_TARGET = 0.5  # engine ops/s over its peer's, at least
MEMORY_TARGET = 3.0  # engine bytes per key over a dict's, at most
WARM_UP_KEYS = 1000  # the memory probe's throwaway fill


# --- baseline indexes: the fastest Python maps behind MemoryEngine -----------------------


class _MapIndex:
    """What the two baselines share: a map in `_data` whose get and put are the map's."""

    __slots__ = ("_data",)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key):
        return self._data.get(key)

    def put(self, key, value):
        data = self._data
        old = data.get(key)
        data[key] = value
        if old is None:
            self._key_set_changed()
        return old

    def remove(self, key):
        old = self._data.pop(key, None)
        if old is not None:
            self._key_set_changed()
        return old

    def _key_set_changed(self):
        """Drop whatever depends on the set of keys; nothing, unless overridden."""


class DictIndex(_MapIndex):
    """A dict under the index contract; ranges bisect a sorted key list, cached until the
    key set changes. A benchmark baseline: `validate` checks only that cache."""

    name = "dict"
    __slots__ = ("_sorted",)

    def __init__(self):
        self._data = {}
        self._sorted = None

    def _key_set_changed(self):
        self._sorted = None

    def range_list(self, start, end, reverse, limit):
        keys = self._sorted
        if keys is None:
            keys = self._sorted = sorted(self._data)
        lo = 0 if start is None else bisect_left(keys, start)
        hi = len(keys) if end is None else bisect_left(keys, end)
        chosen = keys[max(lo, hi - limit):hi][::-1] if reverse else keys[lo:min(hi, lo + limit)]
        data = self._data
        return [(k, data[k]) for k in chosen]

    def load_sorted(self, keys, values):
        self._data = dict(zip(keys, values))
        self._sorted = None

    def clear(self):
        self._data = {}
        self._sorted = None

    def structure_stats(self):
        return {"sorted_key_cache": self._sorted is not None}

    def container_bytes(self):
        return sys.getsizeof(self._data) + (sys.getsizeof(self._sorted) if self._sorted is not None else 0)

    def validate(self):
        if self._sorted is not None and self._sorted != sorted(self._data):
            raise InvariantError("the sorted key cache is stale")


class SortedDictIndex(_MapIndex):
    """sortedcontainers' SortedDict under the index contract; ranges by irange."""

    name = "sorteddict"
    __slots__ = ()

    def __init__(self):
        self._data = SortedDict()

    def range_list(self, start, end, reverse, limit):
        data = self._data
        keys = data.irange(start, end, inclusive=(True, False), reverse=reverse)
        return [(k, data[k]) for k in islice(keys, limit)]

    def load_sorted(self, keys, values):
        self._data = SortedDict(zip(keys, values))

    def clear(self):
        self._data.clear()

    def structure_stats(self):
        return {"sublists": len(self._data._list._lists)}

    def container_bytes(self):
        # The dict, plus the SortedList of keys: its list of sublists, the sublists, and
        # its per-sublist maxima (the positional index is built only by index lookups).
        keys = self._data._list
        return (sys.getsizeof(self._data) + sys.getsizeof(keys._lists) + sys.getsizeof(keys._maxes)
                + sum(map(sys.getsizeof, keys._lists)))

    def validate(self):
        try:
            self._data._check()  # sortedcontainers' own consistency check
        except AssertionError as exc:
            raise InvariantError(f"SortedDict: {exc}") from None


# --- the stores --------------------------------------------------------------------------


class EngineStore(Store):
    """An engine through the engine interface: `Database` minus its argument checks."""

    module = "concordkv_mp"
    durability = 'fsync="none": each write goes to the WAL file, no fsync'

    def __init__(self, settings: dict, name: str, make_index=None):
        super().__init__(settings)
        self.name = name
        self.make_index = make_index  # None: the engine called `name`, from open_engine

    def open(self, path):
        self.path = path
        s = self.settings
        # memtable_size and cache_size concern only lsm (the in-memory engines size their
        # WAL buffer by memtable_size: the default either way); snapshot_wal_size only the others.
        options = StorageOptions(fsync="none", memtable_size=s["memtable_mb"] * MiB, cache_size=s["cache_mb"] * MiB,
                                 snapshot_wal_size=s["snapshot_wal_size"])
        if self.make_index is None:
            self.engine = open_engine(self.name, str(path), options, DEFAULT_FS)
        else:
            self.engine = MemoryEngine(str(path), options, DEFAULT_FS, self.make_index())
        write = self.engine.write

        def put(key, value):
            write([(key, value)])

        self.put = put
        self.get = self.engine.get

    def close(self):
        self.engine.close()

    def settle(self):
        self.engine.compact()

    def scan_range(self, start, n):
        return islice(self.engine.scan(start, None, False), n)

    def stats(self):
        return self.engine.stats()

    def version(self):
        inside = f"MemoryEngine around {self.make_index.__name__}" if self.make_index else "engine"
        return f"concordkv-mp {self.lib.__version__} {inside}"


class SortedDictStore(Store):
    name = "SortedDict"
    module = "sortedcontainers"
    durability = "none (in memory)"

    def open(self, path):
        self.path = path
        self.data = self.lib.SortedDict()
        self.put = self.data.__setitem__
        self.get = self.data.get

    def close(self):
        """Nothing to release."""

    def scan_range(self, start, n):
        data = self.data
        return ((k, data[k]) for k in islice(data.irange(start), n))

    def version(self):
        return f"sortedcontainers {self.lib.__version__}"


ENGINES = ("lsm", "btree", "rbtree", "hash", "array")
# key -> (row name, factory(settings) -> Store). A run makes a fresh store, so that the
# data of one is freed before the next fills.
STORES = {
    **{e: (e, lambda s, e=e: EngineStore(s, e)) for e in ENGINES},
    "dict-path": ("dict (same path)", lambda s: EngineStore(s, "dict (same path)", DictIndex)),
    "sorteddict-path": ("SortedDict (same path)", lambda s: EngineStore(s, "SortedDict (same path)", SortedDictIndex)),
    "dict": ("dict", Dict),
    "sorteddict": ("SortedDict", SortedDictStore),
    "leveldb": ("LevelDB", LevelDB),
}
ON_DISK = ("lsm", "leveldb")  # their data is in files: their memory is buffers, caches and indexes
FULL_SIZE = ("lsm", "btree", "rbtree", "hash", "dict-path", "sorteddict-path", "dict", "sorteddict", "leveldb")
ARRAY_SIZE = ("array", "btree", "dict", "sorteddict")


# --- one store's run ---------------------------------------------------------------------


def bench_store(store: Store, w: Workload, path: Path, budget: float, log) -> dict:
    out, run = store_run(store, budget)
    phases = out["phases"]
    store.open(path)
    fill_and_settle(store, out, run, "put", w.rand_keys, w.rand_values)
    out["stats"] = store.stats()
    run("get", phase_get, w.warm_keys)
    check_reads(store, w)
    run("range100", phase_range_scan, w.range_starts)
    store.close()
    shutil.rmtree(path, ignore_errors=True)
    out["loadavg_1min"].append(os.getloadavg()[0])
    log("  " + ", ".join(f"{p} {phases[p]['ops_per_sec']:,.0f}/s" for p in PHASES)
        + f", settle {out['settle_seconds']:.2f} s")
    return out


# --- memory per key ----------------------------------------------------------------------


def settled_memory() -> dict:
    """RSS and its anonymous part (the heap, no mapped files), in bytes, with freed
    memory handed back first."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                fields[name] = int(value.split()[0]) * 1024
    return {"rss": fields["VmRSS"], "anon": fields["RssAnon"]}


def probe_memory(key: str, n: int, settings: dict, directory: Path) -> dict:
    """The memory probe, in its own process: see the module docstring."""
    make = STORES[key][1]
    w = Workload(n, settings["seed"])
    warm_up = make(settings)
    warm_up.open(directory / "warm-up")
    for k, v in zip(w.rand_keys[:WARM_UP_KEYS], w.rand_values):
        warm_up.put(k, v)
    warm_up.settle()
    warm_up.close()
    del warm_up
    shutil.rmtree(directory / "warm-up", ignore_errors=True)  # the in-memory peers make none

    store = make(settings)
    before = settled_memory()
    store.open(directory / "store")
    put = store.put
    for k, v in zip(w.rand_keys, w.rand_values):
        put(bytes(memoryview(k)), bytes(memoryview(v)))
    if not isinstance(store, Dict):
        store.settle()
    after = settled_memory()
    stats = store.stats() or {}
    store.close()
    return {
        "keys": n,
        "rss_bytes_per_key": (after["rss"] - before["rss"]) / n,
        "anon_bytes_per_key": (after["anon"] - before["anon"]) / n,
        "engine_bytes_per_key": stats["memory_bytes"] / stats["count"] if "memory_bytes" in stats else None,
    }


def measure_memory(key: str, n: int, settings: dict, root: Path) -> dict:
    directory = root / f"memory-{key}-{n}"
    directory.mkdir()
    try:
        proc = subprocess.run([sys.executable, __file__, key, str(n), json.dumps(settings), str(directory)],
                              capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if proc.returncode:
        raise RuntimeError(f"memory probe of {key} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


# --- profile -----------------------------------------------------------------------------


def profile_gets(w: Workload, root: Path, budget: float, top: int) -> None:
    """cProfile the engine-level get of btree, hash and the dict behind the same path
    (and btree's range100); then take each get path apart without cProfile."""
    for name, make_index in (("btree", BPlusTree), ("hash", HashTable), ("dict (same path)", DictIndex)):
        index = make_index()
        options = StorageOptions(fsync="none", snapshot_wal_size=NO_AUTO_SNAPSHOT)
        engine = MemoryEngine(str(root / f"profile-{index.name}"), options, DEFAULT_FS, index)
        write = engine.write
        for k, v in zip(w.rand_keys, w.rand_values):
            write([(k, v)])
        engine.compact()
        store = SimpleNamespace(name=name, get=engine.get,
                                scan_range=lambda start, n, scan=engine.scan: islice(scan(start, None, False), n))
        profiled(f"{name}: engine.get", lambda store=store: phase_get(store, w.warm_keys, budget), top)
        if name == "btree":
            profiled(f"{name}: engine.scan, 100 pairs",
                     lambda store=store: phase_range_scan(store, w.range_starts, budget), top)
        print(f"\n=== {name}: the get path layer by layer, {w.n:,} keys, fastest of 3 ===")
        print(render(["layer", "gets/s", "ns/get", "ns added"], get_layers(index.get, engine.get, w, budget),
                     markdown=False))
        engine.close()


def get_layers(get, engine_get, w: Workload, budget: float) -> list:
    """Time, without cProfile, the index's get, then it inside one Python call, then
    also under a held threading.Lock, then engine.get as the engine binds it (the mutex
    and a closed check, or the index's own get if the index declares lock_free_get)."""
    mutex = threading.Lock()

    def called(key):
        return get(key)

    def locked(key):
        with mutex:
            return get(key)

    layers = {"index.get, bound method": get, "+ one Python call": called, "+ threading.Lock held": locked,
              "engine.get": engine_get}
    best = dict.fromkeys(layers, 0.0)
    for _ in range(3):  # the layers take turns, so that drift in the machine's speed hits all alike
        for title, fn in layers.items():
            best[title] = max(best[title], phase_get(SimpleNamespace(get=fn), w.warm_keys, budget)["ops_per_sec"])
    rows, previous = [], None
    for title, ops in best.items():
        ns = 1e9 / ops
        rows.append([title, f"{ops:,.0f}", f"{ns:.0f}", "" if previous is None else f"{ns - previous:+.0f}"])
        previous = ns
    return rows


# --- report ------------------------------------------------------------------------------


def row_name(key: str, size: int, settings: dict) -> str:
    name = STORES[key][0]
    return name if size == settings["keys"] or key == "array" else f"{name} @{size:,}"


def rss_per_key(results: dict, name: str) -> float | None:
    """The row's memory probe figure, None if it has none."""
    return results.get(name, {}).get("memory", {}).get("rss_bytes_per_key")


def target_rows(results: dict, settings: dict) -> list:
    """[ratio, measured, target, status] for each target of the engines, and references."""
    def speed(name, phase):
        return results.get(name, {}).get("phases", {}).get(phase, {}).get("ops_per_sec")

    checks = [  # (what, numerator, denominator, bound: +x = at least x, -x = at most x, None = reference)
        ("btree get / SortedDict get", speed("btree", "get"), speed("SortedDict", "get"), GET_TARGET),
        ("btree get / SortedDict (same path) get", speed("btree", "get"), speed("SortedDict (same path)", "get"),
         GET_TARGET),
        ("btree range100 / SortedDict irange range100", speed("btree", "range100"), speed("SortedDict", "range100"),
         RANGE_TARGET),
        ("btree range100 / SortedDict (same path) range100", speed("btree", "range100"),
         speed("SortedDict (same path)", "range100"), RANGE_TARGET),
        ("hash get / dict (same path) get", speed("hash", "get"), speed("dict (same path)", "get"), GET_TARGET),
        ("hash get / dict get (reference)", speed("hash", "get"), speed("dict", "get"), None),
    ]
    for e in ENGINES:
        dict_name = row_name("dict", settings["array_keys"] if e == "array" else settings["keys"], settings)
        checks.append((f"{e} memory per key / {dict_name}'s", rss_per_key(results, e), rss_per_key(results, dict_name),
                       -MEMORY_TARGET))
    rows = []
    for what, num, den, bound in checks:
        if not num or not den:
            rows.append([what, "n/a", "", "not measured"])
            continue
        ratio = num / den
        if bound is None:
            rows.append([what, f"{ratio:.2f}", "", "reference"])
        elif bound > 0:
            rows.append([what, f"{ratio:.2f}", f">= {bound}", "met" if ratio >= bound else "MISSED"])
        else:
            rows.append([what, f"{ratio:.2f}", f"<= {-bound}", "met" if ratio <= -bound else "MISSED"])
    return rows


def report(run: dict, markdown: bool) -> str:
    results = run["results"]
    s = run["settings"]
    section = heading(markdown)
    out = machine_lines(run, markdown)
    snapshots = ("automatic snapshots off (snapshot_wal_size 1 TiB), the settle step writes one"
                 if s["snapshot_wal_size"] == NO_AUTO_SNAPSHOT
                 else f"automatic snapshots on (snapshot_wal_size {s['snapshot_wal_size'] // MiB} MiB)")
    out.append(f"{s['keys']:,} keys ({s['array_keys']:,} for array and the rows marked @) of {KEY_SIZE} bytes, "
               f"{VALUE_SIZE}-byte values, seed {s['seed']}, budget {s['phase_seconds']} s per phase, fastest of "
               f"{s['repeat']} run(s) per phase; lsm and LevelDB: memtable {s['memtable_mb']} MiB, "
               f"cache {s['cache_mb']} MiB; in-memory engines: " + snapshots + f". Whole run: {run['seconds'] / 60:.1f} min.")

    out.append(section("Stores"))
    out.append(render(["store", "version", "durability of a put"],
                      [[n, r["version"], r["durability"]] for n, r in results.items()], markdown, numeric=False))
    for n, r in results.items():
        for failure in ("error", "memory_error"):
            if failure in r:
                out.append(f"{n}: FAILED: {r[failure]}")

    def ops(r, p):
        x = r["phases"][p]
        return f"{x['ops_per_sec']:,.0f}" + ("*" if x["truncated"] else "")

    timed = {n: r for n, r in results.items() if "phases" in r}
    out += load_lines(run, list(timed))
    out.append(section("Throughput (ops/s; range100 in 100-pair scans/s)"))
    out.append(render(["store", "keys", "put", "get", "range100", "settle s"],
                      [[n, f"{r['keys']:,}"] + [ops(r, p) for p in PHASES] + [f"{r['settle_seconds']:.2f}"]
                       for n, r in timed.items()], markdown))
    if any(r["phases"][p]["truncated"] for r in timed.values() for p in PHASES):
        out.append("* phase stopped by its time budget; figure over the ops done")

    measured = {n: r["memory"] for n, r in results.items() if "memory" in r}
    rows = []
    for n, mem in measured.items():
        est = mem["engine_bytes_per_key"]
        base = rss_per_key(results, row_name("dict", mem["keys"], s))
        rows.append([n, f"{mem['keys']:,}", f"{mem['rss_bytes_per_key']:.0f}", f"{mem['anon_bytes_per_key']:.0f}",
                     "" if results[n]["store"] in ON_DISK else f"{mem['rss_bytes_per_key'] - KEY_VALUE_OBJECTS:.0f}",
                     "" if est is None else f"{est:.0f}",
                     f"{mem['rss_bytes_per_key'] / base:.2f}" if base else ""])
    out.append(section("Memory per key (bytes)"))
    out.append(render(["store", "keys", "RSS", "anonymous", "RSS beyond the key and value objects",
                       "engine's stats()", "RSS / dict's"], rows, markdown))
    out.append(f"RSS growth of a fresh process filled with fresh keys and values, after settling, over the keys; "
               f"'anonymous' leaves out mapped files. The key and value objects alone are {KEY_VALUE_OBJECTS} bytes "
               f"a key. 'engine's stats()' is stats()[\"memory_bytes\"] / count (structure by sys.getsizeof plus "
               f"those objects; for lsm: its memtables and block cache). lsm and LevelDB keep their data in files, so "
               f"theirs is memtables, caches and indexes; lsm's compaction worker process is left out.")

    out.append(section("Targets (ratios of figures from this run)"))
    out.append(render(["ratio", "measured", "target", "status"], target_rows(results, s), markdown))
    return ("\n\n" if markdown else "\n").join(out)


# --- main ----------------------------------------------------------------------------------


def main(args) -> int:
    """`bench_engine.py --engines`: `args` are bench_engine's parsed arguments."""
    n = 100_000 if args.quick else args.keys
    m = 10_000 if args.quick else args.array_keys
    settings = {"keys": n, "array_keys": m, "cache_mb": args.cache_mb, "memtable_mb": args.memtable_mb,
                "phase_seconds": args.phase_seconds, "seed": args.seed, "repeat": args.repeat,
                "snapshot_wal_size": StorageOptions().snapshot_wal_size if args.auto_snapshots else NO_AUTO_SNAPSHOT}
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="ckv-matrix-", dir=args.tmpdir))
    try:
        if args.profile:
            profile_gets(Workload(n, args.seed), root, args.phase_seconds, args.profile_top)
            return 0
        workloads = {size: Workload(size, args.seed) for size in {n, m}}
        log(f"workloads of {n:,} and {m:,} keys generated in {time.perf_counter() - started:.1f} s; stores under {root}")
        plan = {row_name(key, size, settings): (key, size)
                for size, keys in ((n, FULL_SIZE), (m, ARRAY_SIZE)) for key in keys}
        run = new_run(root, settings)
        entries = run["results"]
        for name, (key, size) in plan.items():
            store = STORES[key][1](settings)
            entries[name] = {"store": key, "keys": size, "version": store.version(), "durability": store.durability, "runs": []}

        def bench_one(name):
            key, size = plan[name]
            return bench_store(STORES[key][1](settings), workloads[size], root / f"{key}-{size}",
                               args.phase_seconds, log)

        take_turns(entries, args.repeat, bench_one, log, PHASES)
        for name, (key, size) in plan.items():
            log(f"memory of {name}")
            try:
                entries[name]["memory"] = measure_memory(key, size, settings, root)
            except Exception as e:  # noqa: BLE001 -- one failed probe must not void the others
                entries[name]["memory_error"] = f"{type(e).__name__}: {e}"
                log(f"  FAILED: {entries[name]['memory_error']}")
        run["seconds"] = time.perf_counter() - started
        publish(run, report(run, args.markdown), args.json)
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("engine_matrix.py runs only as bench_engine.py's memory probe; "
                 "the matrix is: python profiles/bench_engine.py --engines [--help]")
    key, n, settings, directory = sys.argv[1:]
    print(json.dumps(probe_memory(key, int(n), json.loads(settings), Path(directory))))
