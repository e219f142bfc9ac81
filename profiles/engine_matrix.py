"""The engine matrix: ConcordKV-MP's five engines against each other and their peers.

All five engines (lsm, btree, rbtree, hash, array) through the engine interface with
fsync="none", a dict and a SortedDict behind the same in-memory engine path, and the raw
peers dict, sortedcontainers' SortedDict and LevelDB, on random put, random get, 100-pair
range scans and RSS memory per key (each store filled in a fresh subprocess), over --keys
(the array engine over --array-keys, next to btree, dict and SortedDict at that size); it
prints the ratios the engines are held to (btree vs SortedDict, hash vs dict, memory vs
dict) with each target met or missed. `bench_engine.py --engines` runs this script.

Stores, each filled from empty in a fresh directory:
  lsm, btree, rbtree, hash   the engines through the engine interface (`write([(k, v)])`,
                             `get`, `scan`), fsync="none", btree order 100; lsm with
                             --memtable-mb and --cache-mb, like LevelDB
  array                      the same, over --array-keys (a put is O(n) there), next to
                             btree, dict and SortedDict at that size ("@M" rows)
  dict (same path), SortedDict (same path)
                             `MemoryEngine` around `DictIndex` / `SortedDictIndex` (in
                             harness/engine_stores.py): the in-memory engines' WAL,
                             mutex and scan views with the fastest maps Python has
                             behind them, so that a ratio to them compares the index alone
  dict, SortedDict, LevelDB  the raw peers through their own APIs: d[k] = v, d.get, ranges
                             by bisect in a sorted key list built after the fill; sd[k] = v,
                             sd.get, ranges by sd.irange(start) and sd[k]; plyvel with
                             sync=False and bench_engine's LevelDB settings
                             (harness/stores.py)

Phases, on bench_engine's Workload (harness/workload.py: 16-byte keys, 100-byte values,
one seed for all):
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
Timing is bench_engine's (harness/phases.py): 1,000-op chunks, a budget per phase
(--phase-seconds), the fastest of --repeat rounds, with the stores taking turns within a
round.

  python profiles/engine_matrix.py [--keys N] [--array-keys M | --quick] [--repeat R] [--json FILE] [--markdown]
  python profiles/engine_matrix.py --profile   # cProfile of the btree and hash gets
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

# The harness first: it puts this checkout first on sys.path, for concordkv_mp below.
from harness.arguments import add_run_arguments
from harness.cleanup import run_directory
from harness.engine_stores import ENGINES, STORES, DictIndex
from harness.environment import new_run
from harness.memory_probe import measure_memory
from harness.phases import check_reads, fill_and_settle, phase_get, phase_range_scan, profiled, store_run, take_turns
from harness.report import TRUNCATED_NOTE, heading, load_lines, log, machine_lines, ops_cell, publish, render
from harness.stores import MiB, Store
from harness.workload import KEY_SIZE, KEY_VALUE_OBJECTS, VALUE_SIZE, Workload

from concordkv_mp.engines.memory.btree import BPlusTree
from concordkv_mp.engines.memory.engine import MemoryEngine
from concordkv_mp.engines.memory.hash_table import HashTable
from concordkv_mp.io.fs import DEFAULT_FS
from concordkv_mp.options import StorageOptions

PHASES = ("put", "get", "range100")
# snapshot_wal_size that keeps an in-memory engine from snapshotting on its own: its maximum.
NO_AUTO_SNAPSHOT = 1 << 40
GET_TARGET = RANGE_TARGET = 0.5  # engine ops/s over its peer's, at least
MEMORY_TARGET = 3.0  # engine bytes per key over a dict's, at most
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

    timed = {n: r for n, r in results.items() if "phases" in r}
    out += load_lines(run, list(timed))
    out.append(section("Throughput (ops/s; range100 in 100-pair scans/s)"))
    out.append(render(["store", "keys", "put", "get", "range100", "settle s"],
                      [[n, f"{r['keys']:,}"] + [ops_cell(r["phases"][p]) for p in PHASES] + [f"{r['settle_seconds']:.2f}"]
                       for n, r in timed.items()], markdown))
    if any(r["phases"][p]["truncated"] for r in timed.values() for p in PHASES):
        out.append(TRUNCATED_NOTE)

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(ap, quick_help="100,000 keys, 10,000 for array",
                      profile_help="instead of the matrix, cProfile the btree and hash gets")
    ap.add_argument("--array-keys", type=int, default=100_000,
                    help="keys for the array engine and its references (default 100,000)")
    ap.add_argument("--auto-snapshots", action="store_true",
                    help="keep the in-memory engines' automatic snapshots (snapshot_wal_size 64 MiB); "
                         "by default they are off and only the settle step writes one")
    args = ap.parse_args(argv)
    n = 100_000 if args.quick else args.keys
    m = 10_000 if args.quick else args.array_keys
    settings = {"keys": n, "array_keys": m, "cache_mb": args.cache_mb, "memtable_mb": args.memtable_mb,
                "phase_seconds": args.phase_seconds, "seed": args.seed, "repeat": args.repeat,
                "snapshot_wal_size": StorageOptions().snapshot_wal_size if args.auto_snapshots else NO_AUTO_SNAPSHOT}
    started = time.perf_counter()
    with run_directory("ckv-matrix-", args.tmpdir) as root:
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


if __name__ == "__main__":
    sys.exit(main())
