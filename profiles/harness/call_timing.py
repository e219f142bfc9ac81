"""How the server benchmark times calls over the network: one at a time, with a window of
requests in flight, in redis-py pipelines or in asyncio coroutines, each run summed up as
ops/s, latency percentiles and the client's CPU per op. It must not set up a client or a
server.
"""

from __future__ import annotations

import asyncio
import time
from array import array


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

