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

With --engines it runs profiles/engine_matrix.py in its place, with the other arguments:
the five engines against each other and their peers (that script's docstring says how).

  python profiles/bench_engine.py [--keys N | --quick] [--repeat R] [--json FILE] [--markdown]
  python profiles/bench_engine.py --profile      # cProfile of ConcordKV-MP's phases
  python profiles/bench_engine.py --engines [ARGS...]   # = python profiles/engine_matrix.py [ARGS...]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import sys
import time
import tracemalloc
from pathlib import Path

from harness.arguments import add_run_arguments
from harness.cleanup import run_directory
from harness.environment import new_run
from harness.phases import (
    check_reads,
    fill_and_settle,
    phase_full_scan,
    phase_get,
    phase_mix,
    phase_put,
    phase_range_scan,
    profiled,
    store_run,
    take_turns,
)
from harness.report import (
    TRUNCATED_NOTE,
    heading,
    load_lines,
    log,
    machine_lines,
    ops_cell,
    publish,
    render,
)
from harness.stores import LEVELS, MiB, STORE_CLASSES, ConcordKV, Store
from harness.workload import KEY_SIZE, KEY_VALUE_OBJECTS, VALUE_SIZE, Workload

MEMTABLE_PROBE_KEYS = 100_000
PHASES = ("seq_put", "rand_put", "get_cold", "get_warm", "full_scan", "range_scan", "mix_90_10")
ENGINE_MATRIX = Path(__file__).with_name("engine_matrix.py")


# --- one store's run -------------------------------------------------------------------


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


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

    out.append(section("Throughput (ops/s; full_scan in pairs/s, range_scan in 100-pair scans/s)"))
    rows = [[p] + [ops_cell(results[n]["phases"][p]) for n in names] for p in PHASES]
    rows.append(["flush+compact s"] + [f"{results[n]['settle_seconds']:.2f}" for n in names])
    rows.append(["disk MiB"] + [f"{results[n]['disk_bytes'] / MiB:.1f}" for n in names])
    out.append(render(["phase"] + names, rows, markdown))
    if any(results[n]["phases"][p]["truncated"] for n in names for p in PHASES):
        out.append(TRUNCATED_NOTE)

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


def run_engine_matrix(arguments: list) -> None:
    """Become engine_matrix.py with `arguments`: exec, not a child process, so that Ctrl-C
    reaches the matrix alone (it removes its stores) and its exit status is this run's."""
    os.execv(sys.executable, [sys.executable, str(ENGINE_MATRIX), *arguments])


def main(argv=None) -> int:
    # --engines hands every other argument on, so it is read before this script's parser.
    engines = argparse.ArgumentParser(add_help=False)
    engines.add_argument("--engines", action="store_true")
    wanted, others = engines.parse_known_args(argv)
    if wanted.engines:
        run_engine_matrix(others)

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(ap, quick_help="100,000 keys",
                      profile_help="instead of the benchmark, cProfile ConcordKV-MP's rand_put, get_warm and full_scan")
    ap.add_argument("--stores", default=",".join(STORE_CLASSES),
                    help=f"comma-separated subset of {','.join(STORE_CLASSES)}")
    ap.add_argument("--engines", action="store_true",
                    help="instead of the LSM-vs-peers run, run profiles/engine_matrix.py with the other arguments: "
                         "the five engines compared with each other and with dict, SortedDict and LevelDB "
                         "(see its --help)")
    args = ap.parse_args(argv)

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

    with run_directory("ckv-bench-", args.tmpdir) as root:
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
        take_turns(entries, args.repeat, lambda name: bench_store(by_name[name], w, root, args.phase_seconds, log), log,
                   PHASES)
        if "phases" in entries.get(ConcordKV.name, {}):
            run["memtable"] = measure_memtable(settings, root, min(n, MEMTABLE_PROBE_KEYS))

        publish(run, report(run, args.markdown), args.json)
        return 0


if __name__ == "__main__":
    sys.exit(main())
