"""Server benchmark: ConcordKV-MP's network clients side by side with redis-server and
with a raw ZeroMQ round trip (the floor of the all-ZeroMQ design it started from), in one run.

What it measures (every figure from this one run; the machines are shared and noisy):

  set, get        N single-key calls, one at a time, 16-byte keys and 100-byte values in
                  a random order; gets read keys preloaded before timing
  mset, mget      N/20 calls (at least 5) of 1,000 keys each; ops/s counts keys, batches/s calls
  concurrent      --clients (8) client processes, started together through a barrier, each doing
                  random GETs and SETs 50/50 over the preloaded keys for a fixed time;
                  ops/s is the sum over the processes

Clients and servers:

  ConcordKV sync, direct TCP `concordkv_mp.connect(local=False)`: a single-key request goes
                             straight to the partition that owns the key, over loopback TCP
                             as redis-py's does; the targets use this row
  ConcordKV sync, direct Unix
                             `concordkv_mp.connect()`, the default on the server's host: the
                             same over the partitions' Unix sockets
  ConcordKV sync, via front  `direct=False`: every request goes through the front process
                             over ZeroMQ (the pair answers "does the smart client pay?")
  ConcordKV asyncio [TCP], W `concordkv_mp.aio.connect([local=False])`: W coroutines, so W
                             requests in flight
  raw pyzmq echo             a DEALER doing what our client does on the wire, against a
                             ROUTER in its own process that decodes the msgpack request
                             and replies [id, 0, result] like a partition (a dict as its
                             store): the floor of a one-hop ZeroMQ + msgpack design in
                             Python; "W in flight" keeps W requests outstanding
  redis-py                   redis-py with hiredis against a redis-server this script
                             starts in a temp dir with --appendonly yes --appendfsync
                             everysec --save "" (skipped with a notice when redis-server
                             is not installed); "pipeline W" sends W commands per
                             round trip, redis-py's way of having W requests in flight

ConcordKV-MP runs with the LSM engine, `--fsync everysec` (the promise of redis'
appendfsync everysec: an acknowledged write reaches the disk within about a second) and
--partitions = the CPU count, as a subprocess `python -m concordkv_mp.cli.main serve`.

How:
  * Latency is measured per call (a clock read before and after each; about 0.1 us,
    nothing next to a round trip) and reported as p50/p99 in microseconds; for a pipeline,
    each command's latency is its pipeline's round trip. ops/s = calls / wall time of the loop.
  * "client CPU us/op" is the benchmark process's CPU time (all threads, so ZeroMQ's I/O
    thread too) over the ops; "server CPU us/op" is the CPU time of every server process
    (ConcordKV-MP: supervisor, front, partitions, I/O optimizer, compactors) over the
    ops. A second table splits ConcordKV-MP's by process and gives each process's share
    of one core during the workload: a process near 100 % bounds the figure. CPU times
    come in clock ticks (10 ms), so the figures of a short run (--quick) are coarse.
  * With --repeat R the whole set of workloads runs R times, every client taking its turn
    in each round (a burst of load from elsewhere hits one round of all, not all rounds
    of one); each figure is the fastest of its R runs, since interference only slows a run.
  * The targets are ratios of figures from this run and are printed MET / MISSED.

Everything it starts (servers, the echo process, client processes, temp dirs) it stops
and removes, also on Ctrl-C, SIGTERM or an exception.

  python profiles/bench_server.py [--quick] [--repeat R] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import itertools
import os
import random
import shutil
import subprocess
import tempfile
import time
from array import array
from pathlib import Path

import zmq

# The harness first: it puts this checkout first on sys.path, for concordkv_mp below.
from harness.call_timing import summary, time_async, time_calls, time_pipelines, time_window
from harness.cleanup import cleanup_scope, run_script
from harness.client_processes import ClientGroup
from harness.environment import new_run
from harness.report import heading, log, machine_lines, publish, render
from harness.server_cpu import CpuMeter, metered, with_server_cpu
from harness.servers import REDIS_CONF, SERVER_START_SECONDS, server_processes, start_concordkv, start_redis
from harness.workload import KEY_SIZE, VALUE_SIZE, sequential_keys
from harness.zmq_echo import start_echo

import concordkv_mp

BATCH = 1000

WORKLOADS = ("set", "get", "mset", "mget", "concurrent")
# (label, numerator (client, workload), denominator (client, workload), target);
# {clients} in a label is the --clients count.
DIRECT, UNIX = "ConcordKV sync, direct TCP", "ConcordKV sync, direct Unix"
TARGETS = (
    ("sync GET (direct TCP) / redis-py GET", (DIRECT, "get"), ("redis-py", "get"), 0.9),
    ("sync GET (direct TCP) / raw pyzmq GET", (DIRECT, "get"), ("raw pyzmq echo", "get"), 0.8),
    ("mget of 1000 / redis-py mget", (DIRECT, "mget"), ("redis-py", "mget"), 0.5),
    ("mset of 1000 / redis-py mset", (DIRECT, "mset"), ("redis-py", "mset"), 0.5),
    ("{clients} clients / redis-server {clients} clients", (DIRECT, "concurrent"), ("redis-py", "concurrent"), 0.5),
)


def reference_ratios(window: int) -> tuple:
    """Same-run ratios without a target, for reading the figures."""
    asyncio_unix, asyncio_tcp = f"ConcordKV asyncio, {window} in flight", f"ConcordKV asyncio TCP, {window} in flight"
    return (
        ("sync GET direct Unix / direct TCP", (UNIX, "get"), (DIRECT, "get")),
        ("sync GET direct Unix / redis-py GET", (UNIX, "get"), ("redis-py", "get")),
        ("sync GET via front / direct TCP", ("ConcordKV sync, via front", "get"), (DIRECT, "get")),
        ("sync SET via front / direct TCP", ("ConcordKV sync, via front", "set"), (DIRECT, "set")),
        ("sync SET (direct TCP) / redis-py SET", (DIRECT, "set"), ("redis-py", "set")),
        ("sync SET (direct TCP) / raw pyzmq SET", (DIRECT, "set"), ("raw pyzmq echo", "set")),
        ("raw pyzmq GET / redis-py GET", ("raw pyzmq echo", "get"), ("redis-py", "get")),
        (f"asyncio TCP GET, {window} in flight / sync GET (direct TCP)", (asyncio_tcp, "get"), (DIRECT, "get")),
        (f"asyncio TCP GET / raw pyzmq GET, {window} in flight", (asyncio_tcp, "get"),
         (f"raw pyzmq echo, {window} in flight", "get")),
        (f"asyncio TCP GET / redis-py pipeline of {window} GET", (asyncio_tcp, "get"),
         (f"redis-py pipeline of {window}", "get")),
        (f"asyncio Unix GET / redis-py pipeline of {window} GET", (asyncio_unix, "get"),
         (f"redis-py pipeline of {window}", "get")),
        ("mget of 1000 via front / direct TCP", ("ConcordKV sync, via front", "mget"), (DIRECT, "mget")),
    )


# --- the workload ----------------------------------------------------------------------


class Workload:
    """Keys, values and orders of one run, from one seed, made before any timing, once:
    the *_args lists are the calls' argument tuples (see time_calls)."""

    def __init__(self, n: int, batches: int, seed: int):
        rng = random.Random(seed)
        self.n = n
        self.keys = sequential_keys(n)
        self.values = [rng.randbytes(VALUE_SIZE) for _ in range(n)]
        self.value_of = dict(zip(self.keys, self.values))
        order = rng.sample(range(n), n)
        self.set_args = [(self.keys[i], self.values[i]) for i in order]
        self.get_keys = rng.sample(self.keys, n)
        self.get_args = [(k,) for k in self.get_keys]
        self.mset_args = [(dict(zip(rng.sample(self.keys, BATCH), rng.sample(self.values, BATCH))),)
                          for _ in range(batches)]
        self.mget_args = [(rng.sample(self.keys, BATCH),) for _ in range(batches)]


# --- 8 concurrent clients --------------------------------------------------------------


def mixed_client(kind: str, address, keys: list, values: list, seconds: float, seed: int, barrier, results) -> None:
    """One client process of the concurrent run: GETs and SETs 50/50 over `keys` for
    `seconds`, starting when all have connected; puts its summary on `results`."""
    if kind == "concordkv":
        client = concordkv_mp.connect(address, timeout=30, local=False)
    else:
        import redis

        client = redis.Redis(port=address)
    get, set_ = client.get, client.set
    rng = random.Random(seed)
    plan = [(rng.randrange(len(keys)), rng.random() < 0.5) for _ in range(1 << 16)]
    clock = time.perf_counter
    latencies = array("d")
    barrier.wait()
    cpu0 = time.process_time()
    start = clock()
    stop = start + seconds
    done = 0
    while True:
        i, write = plan[done & 0xFFFF]
        t0 = clock()
        if write:
            set_(keys[i], values[i])
        else:
            get(keys[i])
        t1 = clock()
        latencies.append(t1 - t0)
        done += 1
        if t1 >= stop:
            break
    results.put({"ops": done, "seconds": clock() - start, "cpu": time.process_time() - cpu0, "latencies": latencies})
    client.close()


def run_concurrent(kind: str, address, w: Workload, clients: int, seconds: float, seed: int, meter: CpuMeter) -> dict:
    """The summary of `clients` mixed_client processes, measured (as by `measured`) from
    the barrier that starts them to the last one's result."""
    group = ClientGroup(mixed_client, clients, "bench-client",
                        lambda i: (kind, address, w.keys, w.values, seconds, seed + i))
    try:
        group.start()
        # Start-up (interpreter, imports, connect) comes before the barrier and is not
        # timed, nor is the server's CPU for it counted.
        group.release()
        before = meter.read()
        parts = group.collect(SERVER_START_SECONDS + seconds)
        after = meter.read()
        group.join()
    finally:
        group.stop()
    ops = sum(p["ops"] for p in parts)
    wall = max(p["seconds"] for p in parts)
    latencies = array("d")
    for p in parts:
        latencies.extend(p["latencies"])
    result = summary(ops, 1, wall, sum(p["cpu"] for p in parts), latencies)
    # Each process ran for its own `seconds`; the sum of their rates is the server's rate.
    result["ops_per_sec"] = result["calls_per_sec"] = sum(p["ops"] / p["seconds"] for p in parts)
    return with_server_cpu(result, before, after)


# --- the clients' runs -----------------------------------------------------------------


def single_key_runs(get, set_, w: Workload) -> dict:
    return {"set": lambda: time_calls(set_, w.set_args), "get": lambda: time_calls(get, w.get_args)}


def batch_runs(mget, mset, w: Workload) -> dict:
    return {"mset": lambda: time_calls(mset, w.mset_args, BATCH), "mget": lambda: time_calls(mget, w.mget_args, BATCH)}


def check_reads(get, w: Workload, who: str) -> None:
    """A benchmark of wrong answers is worthless: sample the preloaded keys."""
    for key in random.Random(3).sample(w.keys, min(200, w.n)):
        if get(key) != w.value_of[key]:
            raise AssertionError(f"{who}: wrong value for {key!r}")


def preload(mset, w: Workload) -> None:
    for first in range(0, w.n, BATCH):
        mset(dict(zip(w.keys[first : first + BATCH], w.values[first : first + BATCH])))


def setup_clients(stack, root: Path, args, w: Workload, log) -> tuple[dict, dict, list]:
    """Start the servers; return (plans, systems, notices): plans[client] is a dict
    workload -> a function that runs it once and returns its summary."""
    plans, systems, notices = {}, {}, []
    context = zmq.Context()
    stack.callback(context.term)  # after every socket of this context is closed (LIFO)

    log(f"starting ConcordKV-MP: {args.partitions} partitions, fsync {args.fsync}")
    endpoint, _ = start_concordkv(stack, root, args.partitions, args.fsync)
    meter = CpuMeter(server_processes(endpoint))
    systems["ConcordKV-MP server"] = {
        "version": f"concordkv-mp {concordkv_mp.__version__}, {args.partitions} partitions, lsm engine",
        "durability": f"--fsync {args.fsync}: WAL bytes in a shared-memory ring, fdatasync once a second",
    }
    for name, direct, local in ((DIRECT, True, False), (UNIX, True, True), ("ConcordKV sync, via front", False, True)):
        client = concordkv_mp.connect(endpoint, timeout=30, direct=direct, local=local)
        stack.callback(client.close)
        if client.direct != direct:
            raise RuntimeError(f"{name}: the client did not take the direct path")
        if name == DIRECT:
            preload(client.mset, w)
            check_reads(client.get, w, name)
        plans[name] = metered(meter, {**single_key_runs(client.get, client.set, w),
                                      **batch_runs(client.mget, client.mset, w)})
    # Each round's client processes draw their own operations.
    seeds = itertools.count(args.seed * 1000, args.clients)
    plans[DIRECT]["concurrent"] = lambda: run_concurrent("concordkv", endpoint, w, args.clients, args.seconds,
                                                         next(seeds), meter)

    try:
        from concordkv_mp import aio
    except ImportError as e:
        notices.append(f"skipping the asyncio client: {e}")
    else:
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        window = args.window
        for name, local in ((f"ConcordKV asyncio, {window} in flight", True), (f"ConcordKV asyncio TCP, {window} in flight", False)):
            aclient = loop.run_until_complete(aio.connect(endpoint, local=local))
            stack.callback(lambda aclient=aclient: loop.run_until_complete(aclient.close()))
            plans[name] = metered(meter, {
                "set": lambda aclient=aclient: loop.run_until_complete(time_async(aclient.set, w.set_args, window)),
                "get": lambda aclient=aclient: loop.run_until_complete(time_async(aclient.get, w.get_args, window)),
            })

    echo, echo_process = start_echo(stack, context)
    echo_meter = CpuMeter({"echo": echo_process.pid})
    systems["raw pyzmq echo"] = {
        "version": f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, msgpack {importlib.metadata.version('msgpack')}",
        "durability": "none (a dict in the echo process)",
    }
    preload(echo.mset, w)
    check_reads(echo.get, w, "raw pyzmq echo")
    plans["raw pyzmq echo"] = metered(echo_meter, single_key_runs(echo.get, echo.set, w))
    window_requests = {"set": [("set", *a) for a in w.set_args], "get": [("get", *a) for a in w.get_args]}
    plans[f"raw pyzmq echo, {args.window} in flight"] = metered(echo_meter, {
        k: (lambda reqs=reqs: time_window(echo.send, echo.recv, reqs, args.window)) for k, reqs in window_requests.items()
    })

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        notices.append("skipping redis: redis-server is not installed (its targets are n/a)")
        return plans, systems, notices
    try:
        import redis
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError as e:
        notices.append(f"skipping redis: cannot import redis-py ({e}); pip install -e '.[bench]'")
        return plans, systems, notices
    log("starting redis-server")
    port, redis_process = start_redis(stack, root, redis_server)
    redis_meter = CpuMeter({"redis-server": redis_process.pid})
    server_version = subprocess.run([redis_server, "--version"], capture_output=True, text=True, check=True).stdout.split()[2]
    systems["redis-server"] = {"version": f"redis-server {server_version.removeprefix('v=')}",
                               "durability": " ".join(REDIS_CONF).replace('""', "") + '"" (no RDB snapshots)'}
    parser = f"hiredis {importlib.metadata.version('hiredis')}" if HIREDIS_AVAILABLE else "pure-Python parser"
    systems["redis-py"] = {"version": f"redis-py {redis.__version__} with {parser}", "durability": "(client)"}
    r = redis.Redis(port=port)
    stack.callback(r.close)
    preload(r.mset, w)
    check_reads(r.get, w, "redis-py")
    plans["redis-py"] = metered(redis_meter, {**single_key_runs(r.get, r.set, w), **batch_runs(r.mget, r.mset, w)})
    redis_seeds = itertools.count(args.seed * 1000, args.clients)
    plans["redis-py"]["concurrent"] = lambda: run_concurrent("redis", port, w, args.clients, args.seconds,
                                                             next(redis_seeds), redis_meter)
    adders = {"set": lambda pipe, kv: pipe.set(*kv), "get": lambda pipe, k: pipe.get(k)}
    requests = {"set": w.set_args, "get": w.get_keys}
    plans[f"redis-py pipeline of {args.window}"] = metered(redis_meter, {
        k: (lambda k=k: time_pipelines(lambda: r.pipeline(transaction=False), adders[k], requests[k], args.window))
        for k in ("set", "get")
    })
    return plans, systems, notices


def take_turns(plans: dict, repeat: int, log) -> dict:
    """results[client][workload]: the fastest of `repeat` rounds over every client."""
    runs: dict = {client: {} for client in plans}
    for round_ in range(repeat):
        for client, plan in plans.items():
            log(f"{client}, round {round_ + 1} of {repeat}")
            for workload, run in plan.items():
                result = run()
                runs[client].setdefault(workload, []).append(result)
                log(f"  {workload:<9} {result['ops_per_sec']:>12,.0f} ops/s   p50 {result['p50_us']:,.0f} us")
    return {client: {workload: max(rs, key=lambda r: r["ops_per_sec"]) for workload, rs in by.items()}
            for client, by in runs.items()}


# --- report ----------------------------------------------------------------------------


def ratio_of(results: dict, top, bottom) -> float | None:
    try:
        return results[top[0]][top[1]]["ops_per_sec"] / results[bottom[0]][bottom[1]]["ops_per_sec"]
    except KeyError:
        return None


def each_result(results: dict):
    """(client, workload, figures) of every run, clients in order, workloads in WORKLOADS order."""
    for client, by in results.items():
        for workload in WORKLOADS:
            if workload in by:
                yield client, workload, by[workload]


def report(run: dict, markdown: bool) -> str:
    section = heading(markdown)
    results, s = run["results"], run["settings"]
    shown = lambda workload: f"{s['clients']} clients" if workload == "concurrent" else workload
    out = machine_lines(run, markdown)
    out.append(f"{s['keys']:,} single-key calls per workload ({KEY_SIZE}-byte keys, {VALUE_SIZE}-byte values), "
               f"{s['batches']} batch calls of {BATCH:,} keys, {s['clients']} client processes for {s['seconds']:g} s, "
               f"{s['window']} requests in flight for the pipelined rows, seed {s['seed']}, "
               f"fastest of {s['repeat']} round(s)")
    loads = run["loadavg_1min"]
    out.append(f"1-minute load average at the start and end: {loads[0]:.2f} and {loads[-1]:.2f} on "
               f"{run['machine']['logical_cores']} cores (a shared machine: other tenants' load slows any figure)")

    out.append(section("Servers and clients"))
    out.append(render(["", "version", "durability of a write"],
                      [[n, v["version"], v["durability"]] for n, v in run["systems"].items()], markdown, numeric=False))
    out += run["notices"]

    out.append(section("Throughput and latency (ops/s count keys; batches/s count mset/mget calls)"))
    rows = []
    for client, workload, r in each_result(results):
        batches = f"{r['calls_per_sec']:,.0f}" if workload in ("mset", "mget") else ""
        rows.append([client, shown(workload), f"{r['ops_per_sec']:,.0f}", batches, f"{r['p50_us']:,.1f}",
                     f"{r['p99_us']:,.1f}", f"{r['client_cpu_us_per_op']:.1f}", f"{r['server_cpu_us_per_op']:.1f}"])
    out.append(render(["client", "workload", "ops/s", "batches/s", "p50 us", "p99 us", "client CPU us/op",
                       "server CPU us/op"], rows, markdown))

    out.append(section("ConcordKV-MP server CPU by process: us per op (share of one core during the workload)"))
    names = []
    rows = []
    for client, workload, r in each_result(results):
        if not client.startswith("ConcordKV"):
            continue
        per = r["server_cpu_by_process"]
        names = names or list(per)
        rows.append([client, shown(workload)]
                    + [f"{per[n]['us_per_op']:.1f} ({per[n]['core_percent']:.0f}%)" for n in names])
    out.append(render(["client", "workload"] + names, rows, markdown))

    out.append(section("Targets (ratios of ops/s from this run)"))
    rows = []
    for label, top, bottom, target in TARGETS:
        value = ratio_of(results, top, bottom)
        status = "n/a" if value is None else ("MET" if value >= target else "MISSED")
        rows.append([label.format(clients=s["clients"]), "n/a" if value is None else f"{value:.2f}", f">= {target}",
                     status])
    for label, top, bottom in reference_ratios(s["window"]):
        value = ratio_of(results, top, bottom)
        if value is not None:
            rows.append([label, f"{value:.2f}", "", "reference"])
    out.append(render(["ratio", "measured", "target", "status"], rows, markdown))
    return ("\n\n" if markdown else "\n").join(out)


# --- main ------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=20_000, help="single-key calls per workload (default 20,000)")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 2,000 keys, 100 batches, 1 s of concurrent clients")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; each figure is the fastest of them")
    ap.add_argument("--clients", type=int, default=8, help="client processes of the concurrent run (default 8)")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of the concurrent run (default 5)")
    ap.add_argument("--window", type=int, default=128, help="requests in flight for the pipelined rows (default 128)")
    ap.add_argument("--partitions", type=int, default=os.cpu_count() or 1, help="default: the CPU count")
    ap.add_argument("--fsync", default="everysec", help="ConcordKV-MP's fsync policy (default everysec, as redis')")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tmpdir", default=tempfile.gettempdir(), help="where the servers' data directories go")
    ap.add_argument("--json", metavar="FILE", help="write all results to FILE")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = ap.parse_args(argv)
    if args.quick:
        args.keys, args.seconds = 2000, 1.0
    batches = max(5, args.keys // 20)

    with cleanup_scope("ckv-bench-server-", args.tmpdir) as (stack, root):
        w = Workload(args.keys, batches, args.seed)
        run = new_run(root, {"keys": args.keys, "batches": batches, "clients": args.clients, "seconds": args.seconds,
                             "window": args.window, "partitions": args.partitions, "fsync": args.fsync,
                             "seed": args.seed, "repeat": args.repeat})
        run["loadavg_1min"] = [os.getloadavg()[0]]
        plans, run["systems"], run["notices"] = setup_clients(stack, root, args, w, log)
        for notice in run["notices"]:
            log(notice)
        run["results"] = take_turns(plans, args.repeat, log)
        run["loadavg_1min"].append(os.getloadavg()[0])
        publish(run, report(run, args.markdown), args.json)
    return 0


if __name__ == "__main__":
    run_script(main)
