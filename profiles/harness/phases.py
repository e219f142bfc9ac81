"""How the embedded benchmarks time a store: the timed phases (chunks of 1,000 single-key
calls, one clock read a chunk, a time budget each), a store run's record, the fastest of
repeated rounds taken in turns, and the cProfile of a phase. It must not set up a store
nor choose the workload: the scripts do.
"""

from __future__ import annotations

import bisect
import cProfile
import gc
import os
import pstats
import random
import sys
import time
from collections import deque
from itertools import islice

from harness.stores import Store
from harness.workload import RANGE_LEN, Workload

CHUNK = 1000


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


def check_reads(store: Store, w: Workload) -> None:
    """A benchmark of wrong answers is worthless: sample the store's gets and one range scan."""
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


def fastest_of(runs: list, phases) -> dict:
    """Each phase's fastest run (as timeit does: interference only ever slows a run);
    the shape and stats of the last run."""
    best = dict(runs[-1])
    best["phases"] = {p: max((r["phases"][p] for r in runs), key=lambda x: x["ops_per_sec"]) for p in phases}
    best["settle_seconds"] = min(r["settle_seconds"] for r in runs)
    best["loadavg_1min"] = [x for r in runs for x in r["loadavg_1min"]]
    return best


def take_turns(entries: dict, repeat: int, bench_one, log, phases) -> None:
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
