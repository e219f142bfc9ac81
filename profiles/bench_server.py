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
import contextlib
import importlib.metadata
import itertools
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import msgpack
import psutil
import zmq

# The harness first: it puts this checkout first on sys.path, for concordkv_mp below.
from harness import REPO
from harness.environment import new_run
from harness.report import heading, log, machine_lines, publish, render

import concordkv_mp

KEY_SIZE = 16
VALUE_SIZE = 100
BATCH = 1000
SERVER_START_SECONDS = 60.0
REDIS_CONF = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
# spawn, not fork: the parent holds ZeroMQ contexts, which a forked child must not inherit.
SPAWN = multiprocessing.get_context("spawn")

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
        self.keys = [b"%016d" % i for i in range(n)]
        self.values = [rng.randbytes(VALUE_SIZE) for _ in range(n)]
        self.value_of = dict(zip(self.keys, self.values))
        order = rng.sample(range(n), n)
        self.set_args = [(self.keys[i], self.values[i]) for i in order]
        self.get_keys = rng.sample(self.keys, n)
        self.get_args = [(k,) for k in self.get_keys]
        self.mset_args = [(dict(zip(rng.sample(self.keys, BATCH), rng.sample(self.values, BATCH))),)
                          for _ in range(batches)]
        self.mget_args = [(rng.sample(self.keys, BATCH),) for _ in range(batches)]


# --- timing ----------------------------------------------------------------------------


def summary(calls: int, keys_per_call: int, wall: float, cpu: float, latencies) -> dict:
    """One run's figures; an op is a key, so a batch call of 1,000 keys is 1,000 ops."""
    latencies = sorted(latencies)
    ops = calls * keys_per_call
    return {
        "ops": ops,
        "calls": calls,
        "seconds": wall,
        "ops_per_sec": ops / wall,
        "calls_per_sec": calls / wall,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] * 1e6,
        "client_cpu_us_per_op": cpu / ops * 1e6,
    }


def time_calls(call, args: list, keys_per_call: int = 1) -> dict:
    """Call call(*a) for each tuple a of `args`, one at a time."""
    clock = time.perf_counter
    latencies = array("d")
    record = latencies.append
    cpu0 = time.process_time()
    start = clock()
    for a in args:
        t0 = clock()
        call(*a)
        record(clock() - t0)
    wall = clock() - start
    return summary(len(args), keys_per_call, wall, time.process_time() - cpu0, latencies)


def time_window(send, recv, requests: list, window: int) -> dict:
    """Keep `window` requests outstanding: send(i, request) sends request i, recv() returns
    the index of one that completed."""
    clock = time.perf_counter
    sent = [0.0] * len(requests)
    latencies = array("d")
    cpu0 = time.process_time()
    start = clock()
    n = len(requests)
    first = min(window, n)
    for i in range(first):
        sent[i] = clock()
        send(i, requests[i])
    for i in range(first, n + first):
        done = recv()
        latencies.append(clock() - sent[done])
        if i < n:
            sent[i] = clock()
            send(i, requests[i])
    wall = clock() - start
    return summary(n, 1, wall, time.process_time() - cpu0, latencies)


def time_pipelines(make_pipeline, add, requests: list, window: int) -> dict:
    """redis-py pipelines of `window` commands: add(pipe, request) queues one; each
    command's latency is its pipeline's round trip."""
    clock = time.perf_counter
    latencies = array("d")
    chunks = [requests[first : first + window] for first in range(0, len(requests), window)]
    cpu0 = time.process_time()
    start = clock()
    for chunk in chunks:
        t0 = clock()
        pipe = make_pipeline()
        for request in chunk:
            add(pipe, request)
        pipe.execute()
        latencies.extend([clock() - t0] * len(chunk))
    wall = clock() - start
    return summary(len(requests), 1, wall, time.process_time() - cpu0, latencies)


async def time_async(call, args: list, window: int) -> dict:
    """`window` coroutines taking calls from one shared list: `window` requests in flight."""
    clock = time.perf_counter
    latencies = array("d")
    pending = iter(args)

    async def worker():
        for a in pending:
            t0 = clock()
            await call(*a)
            latencies.append(clock() - t0)

    cpu0 = time.process_time()
    start = clock()
    await asyncio.gather(*(worker() for _ in range(window)))
    wall = clock() - start
    return summary(len(args), 1, wall, time.process_time() - cpu0, latencies)


# --- servers ---------------------------------------------------------------------------


def free_port_block(count: int) -> int:
    """A port p with p .. p+count-1 all free on 127.0.0.1 (ConcordKV-MP's partitions listen
    on the ports after the front's)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no block of {count} free ports found")


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(ready, process, what: str, log_path: Path) -> None:
    """Poll ready() (which raises until the server answers) while `process` lives."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        if process.poll() is not None:
            log = log_path.read_text()[-2000:] if log_path.exists() else "(none written)"
            raise RuntimeError(f"{what} exited with {process.returncode} at start; log:\n{log}")
        try:
            ready()
            return
        except Exception:  # noqa: BLE001 -- any failure means "not yet"
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer within {SERVER_START_SECONDS:.0f} s") from None
            time.sleep(0.1)


def start_concordkv(stack: contextlib.ExitStack, root: Path, partitions: int, fsync: str):
    """(endpoint, Popen) of a fresh server in root/concordkv, stopped by `stack`."""
    port = free_port_block(partitions + 1)
    endpoint = f"tcp://127.0.0.1:{port}"
    log_path = root / "concordkv.log"
    command = [sys.executable, "-m", "concordkv_mp.cli.main", "serve", "--data-dir", str(root / "concordkv"),
               "--endpoint", endpoint, "--partitions", str(partitions), "--fsync", fsync, "--engine", "lsm"]
    with open(log_path, "wb") as log:
        # A session of its own: Ctrl-C reaches only this script, which then stops the
        # server in order through SIGTERM (the supervisor's clean shutdown).
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
    stack.callback(stop_process, process)
    wait_until(lambda: concordkv_mp.connect(endpoint, timeout=1).close(), process, "concordkv serve", log_path)
    return endpoint, process


def start_redis(stack: contextlib.ExitStack, root: Path, executable: str):
    """(port, Popen) of a redis-server in root/redis with the durability of REDIS_CONF."""
    import redis

    port = free_port_block(1)
    directory = root / "redis"
    directory.mkdir()
    log_path = root / "redis.log"
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
               "--daemonize", "no", "--logfile", str(log_path), *REDIS_CONF]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop_process, process)
    wait_until(lambda: redis.Redis(port=port, socket_timeout=1).ping(), process, "redis-server", log_path)
    return port, process


def echo_server(port: int) -> None:
    """The raw pyzmq peer: one ROUTER, decode each msgpack request, reply [id, 0, result]
    with a dict as the store, exactly the reply shape of a partition."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it; Ctrl-C must not
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    pack = msgpack.Packer(use_bin_type=True).pack
    unpackb = msgpack.unpackb
    store = {}
    while True:
        envelope, body = router.recv_multipart()
        request = unpackb(body, raw=False)
        op = request[1]
        if op == "get":
            result = store.get(request[2])
        elif op == "set":
            store[request[2]] = request[3]
            result = None
        else:  # ping
            result = "pong"
        router.send_multipart([envelope, pack((request[0], 0, result))])


class EchoClient:
    """The wire work of our sync client and nothing else: pack, send, receive, unpack."""

    def __init__(self, context, port: int):
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(f"tcp://127.0.0.1:{port}")
        self.pack = msgpack.Packer(use_bin_type=True).pack
        self.ids = 0

    def call(self, *request):
        self.ids += 1
        self.socket.send(self.pack((self.ids, *request)))
        return msgpack.unpackb(self.socket.recv(), raw=False)[2]

    def get(self, key):
        return self.call("get", key)

    def set(self, key, value):
        self.call("set", key, value)

    def mset(self, mapping: dict) -> None:
        """The echo peer has no batches: one call per pair (used only to preload)."""
        for key, value in mapping.items():
            self.set(key, value)

    def send(self, index: int, request: tuple) -> None:
        self.socket.send(self.pack((index, *request)))

    def recv(self) -> int:
        return msgpack.unpackb(self.socket.recv(), raw=False)[0]

    def close(self) -> None:
        self.socket.close(0)


def start_echo(stack: contextlib.ExitStack, context) -> tuple:
    """(client, process) of the echo peer in its own process, stopped by `stack`."""
    port = free_port_block(1)
    process = SPAWN.Process(target=echo_server, args=(port,), daemon=True, name="bench-echo")
    process.start()
    stack.callback(lambda: (process.terminate(), process.join()))
    client = EchoClient(context, port)
    stack.callback(client.close)
    client.socket.setsockopt(zmq.RCVTIMEO, int(SERVER_START_SECONDS * 1000))
    client.call("ping")
    client.socket.setsockopt(zmq.RCVTIMEO, -1)
    return client, process


# --- server CPU ------------------------------------------------------------------------


def server_processes(endpoint: str) -> dict:
    """{"front": pid, "partition 0": pid, ...}: every process of a ConcordKV-MP server."""
    with concordkv_mp.connect(endpoint, timeout=5) as client:
        table = client.status()["processes"]
    processes = {row["role"] + ("" if row["index"] is None else f" {row['index']}"): row["pid"] for row in table}
    down = [name for name, pid in processes.items() if pid is None]
    if down:  # psutil.Process(None) would be this process: its CPU would pass for the server's
        raise RuntimeError(f"server processes not running: {', '.join(down)}")
    return processes


class CpuMeter:
    """CPU seconds of a server's processes, by name ("front", "partition 0", ...)."""

    def __init__(self, processes: dict):
        self.processes = {name: psutil.Process(pid) for name, pid in processes.items()}

    def read(self) -> dict:
        out = {}
        for name, process in self.processes.items():
            try:
                times = process.cpu_times()
                out[name] = times.user + times.system
            except psutil.Error:
                out[name] = 0.0
        return out


def measured(meter: CpuMeter, run) -> dict:
    """run() -> a summary, with the server's CPU over the run (see with_server_cpu)."""
    before = meter.read()
    result = run()
    return with_server_cpu(result, before, meter.read())


def metered(meter: CpuMeter, runs: dict) -> dict:
    """{workload: run} -> {workload: a function that runs it `measured`}."""
    return {workload: (lambda run=run: measured(meter, run)) for workload, run in runs.items()}


def with_server_cpu(result: dict, before: dict, after: dict) -> dict:
    """`result` with the server's CPU per op (total and by process) between the meter's
    readings `before` and `after`, and each process's share of one core over the run's
    wall time."""
    spent = {name: after[name] - before[name] for name in after}
    result["server_cpu_us_per_op"] = sum(spent.values()) / result["ops"] * 1e6
    result["server_cpu_by_process"] = {
        name: {"us_per_op": s / result["ops"] * 1e6, "core_percent": 100 * s / result["seconds"]}
        for name, s in spent.items()
    }
    return result


# --- 8 concurrent clients --------------------------------------------------------------


def mixed_client(kind: str, address, keys: list, values: list, seconds: float, seed: int, barrier, results) -> None:
    """One client process of the concurrent run: GETs and SETs 50/50 over `keys` for
    `seconds`, starting when all have connected; puts its summary on `results`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it; Ctrl-C must not
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
    barrier = SPAWN.Barrier(clients + 1)  # this process too: it reads the server's CPU as the load starts
    results = SPAWN.Queue()
    processes = [SPAWN.Process(target=mixed_client, daemon=True, name=f"bench-client-{i}",
                               args=(kind, address, w.keys, w.values, seconds, seed + i, barrier, results))
                 for i in range(clients)]
    try:
        for process in processes:
            process.start()
        # Start-up (interpreter, imports, connect) comes before the barrier and is not
        # timed, nor is the server's CPU for it counted.
        barrier.wait(SERVER_START_SECONDS)
        before = meter.read()
        parts = [results.get(timeout=SERVER_START_SECONDS + seconds) for _ in processes]
        after = meter.read()
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
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


def interrupted(signum, frame):
    """SIGTERM takes the way out of Ctrl-C, through every cleanup of the ExitStack."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def cleanup_scope(prefix: str, tmpdir: str):
    """(stack, root): an ExitStack that undoes what is started on it and then removes
    `root`, a fresh directory under `tmpdir`, also on Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, interrupted)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=tmpdir))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        yield stack, root


def run_script(main) -> None:
    """Exit with main()'s status, or with 130 on Ctrl-C or SIGTERM."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # cleanup_scope has stopped and removed everything by now
        print("interrupted", file=sys.stderr)
        sys.exit(130)


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
