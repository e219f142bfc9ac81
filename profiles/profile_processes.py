"""Where a ConcordKV-MP server spends CPU and memory under a mixed load, process by process.

It starts a server (`python -m concordkv_mp.cli.main serve`, LSM engine), preloads
--keys pairs (16-byte keys, 100-byte values), then runs --clients client processes for
--duration seconds, started together through a barrier; each loops over a random mix of

    get 45 %, set 45 %, mset of 100 pairs 4 %, mget of 100 keys 4 %, scan of 100 pairs 2 %

with the sync client, --front-clients of them with direct=False (through the front, so
the front's routing loop is loaded and profiled too), the others straight to the
partitions. Meanwhile:

  * every --interval seconds (0.5) it samples CPU % (of one core) and RSS of every
    server process, found through `status()["processes"]` (supervisor, front, partitions,
    I/O optimizer, compactors), and of the client processes together; it prints that
    table over time, then per process the mean and max CPU %, CPU seconds and max RSS;
  * unless --no-py-spy, or py-spy is not found (.venv/bin/py-spy or on PATH), it runs
    `py-spy record --format raw --nolineno --threads --nonblocking` on every server and
    client process for the load's duration. From the raw stacks it writes a flame graph
    per process (<out>/<process>.svg, with the stacks in <out>/<process>.txt) and prints
    each process's top functions by own samples (the function on top of the stack:
    where the CPU was), with their inclusive share. py-spy leaves out idle threads, so a
    process's samples over (rate x duration) is roughly how busy its Python threads were;
    but a thread that is runnable and waiting for a core also counts as busy, so on a
    loaded machine read it next to the CPU % table. Native frames (libzmq, the kernel) are
    charged to the Python function that called them, and threads with no Python frames
    (ZeroMQ's I/O thread) are not sampled at all: their CPU is only in the CPU % table.

At the end it prints the operations the clients completed, by kind. py-spy reads each
process's memory --rate times a second (100) without pausing it: a sample's stack may
now and then be torn, and the py-spy processes take some of the machine's CPU.

  python profiles/profile_processes.py [--duration S] [--partitions N] [--fsync POLICY]
                                       [--clients N] [--front-clients N] [--out DIR] [--no-py-spy]
"""

from __future__ import annotations

import argparse
import html
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import psutil

# The harness first: it puts this checkout first on sys.path, for concordkv_mp below.
from harness import REPO
from harness.cleanup import cleanup_scope, run_script
from harness.client_processes import ClientGroup
from harness.report import log, render
from harness.server_cpu import CpuMeter
from harness.servers import server_processes, start_concordkv
from harness.workload import VALUE_SIZE, sequential_keys

import concordkv_mp

MIX = {"get": 45, "set": 45, "mset": 4, "mget": 4, "scan": 2}
BATCH = 100
PY_SPY_START_SECONDS = 1.0  # attaching takes a few hundred ms; the load waits this long
TOP = 10


# --- the load --------------------------------------------------------------------------


def load_client(endpoint: str, direct: bool, keys: list, seconds: float, seed: int, barrier, results) -> None:
    """One client process: the MIX of operations over `keys` for `seconds` after the
    barrier; puts (counts by kind, seconds, CPU seconds) on `results`."""
    client = concordkv_mp.connect(endpoint, timeout=30, direct=direct)
    rng = random.Random(seed)
    plan = rng.choices(list(MIX), weights=list(MIX.values()), k=4096)
    # Arguments are made before the barrier, so the load is the client's calls alone.
    picks = [keys[rng.randrange(len(keys))] for _ in range(4096)]
    values = [rng.randbytes(VALUE_SIZE) for _ in range(64)]
    msets = [{k: values[i % 64] for i, k in enumerate(rng.sample(keys, BATCH))} for _ in range(64)]
    mgets = [rng.sample(keys, BATCH) for _ in range(64)]
    counts = Counter()
    barrier.wait()
    cpu0 = time.process_time()
    start = time.monotonic()
    stop = start + seconds
    i = 0
    while time.monotonic() < stop:
        kind = plan[i & 4095]
        key = picks[i & 4095]
        if kind == "get":
            client.get(key)
        elif kind == "set":
            client.set(key, values[i & 63])
        elif kind == "mset":
            client.mset(msets[i & 63])
        elif kind == "mget":
            client.mget(mgets[i & 63])
        else:
            for _ in client.scan(start=key, limit=BATCH):
                pass
        counts[kind] += 1
        i += 1
    results.put((dict(counts), time.monotonic() - start, time.process_time() - cpu0))
    client.close()


def preload(endpoint: str, n: int) -> list:
    keys = sequential_keys(n)
    rng = random.Random(7)
    with concordkv_mp.connect(endpoint, timeout=60) as client:
        for first in range(0, n, 1000):
            client.mset({k: rng.randbytes(VALUE_SIZE) for k in keys[first : first + 1000]})
    return keys


# --- sampling --------------------------------------------------------------------------


def sample_loop(server: dict, clients: list, seconds: float, interval: float) -> list:
    """Rows of {name: (cpu %, rss bytes)} every `interval` s for `seconds`; the client
    processes are summed under "clients"."""
    watched = {name: psutil.Process(pid) for name, pid in server.items()}
    for process in [*watched.values(), *clients]:
        process.cpu_percent(None)  # the first call only starts the interval
    rows = []
    start = time.monotonic()
    next_at = start + interval
    while next_at <= start + seconds + interval / 2:
        time.sleep(max(0.0, next_at - time.monotonic()))
        row = {"t": next_at - start}
        for name, process in watched.items():
            row[name] = usage(process)
        totals = [usage(process) for process in clients]
        row["clients"] = (sum(c for c, _ in totals), sum(r for _, r in totals))
        rows.append(row)
        next_at += interval
    return rows


def usage(process: psutil.Process) -> tuple[float, int]:
    try:
        with process.oneshot():
            return process.cpu_percent(None), process.memory_info().rss
    except psutil.Error:
        return 0.0, 0


# --- py-spy ----------------------------------------------------------------------------


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def start_py_spy(stack, executable: str, pid: int, output: Path, seconds: float, rate: int) -> subprocess.Popen:
    command = [executable, "record", "--pid", str(pid), "--duration", str(int(seconds + 0.999)), "--rate", str(rate),
               "--format", "raw", "--nolineno", "--threads", "--output", str(output),
               # Pausing the process (py-spy's default) wakes threads blocked in poll or
               # Condition.wait, which then sample as busy; without it, idle is idle.
               "--nonblocking"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    stack.callback(lambda: process.poll() is None and (process.kill(), process.wait()))
    return process


def read_stacks(path: Path) -> dict:
    """{(frame, ...): samples} of a py-spy raw file, root first."""
    stacks = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            frames, _, count = line.rpartition(" ")
            if frames:
                stacks[tuple(frames.split(";"))] += int(count)
    return stacks


def top_functions(stacks: dict, n: int) -> list:
    """[(function, own samples, inclusive samples)] by own samples. The root frame is
    the thread (--threads), not a function, so it is left out of both."""
    own, inclusive = Counter(), Counter()
    for frames, count in stacks.items():
        functions = frames[1:]
        if functions:
            own[functions[-1]] += count
            for function in set(functions):
                inclusive[function] += count
    return [(f, c, inclusive[f]) for f, c in own.most_common(n)]


class _Node:
    __slots__ = ("children", "count")

    def __init__(self):
        self.count = 0
        self.children: dict[str, _Node] = {}


def flamegraph_svg(stacks: dict, title: str) -> str:
    """A flame graph (Brendan Gregg's layout: root at the bottom, width = samples, a
    tooltip per frame) of `stacks`, as standalone SVG. Written here, not by a second
    py-spy in svg format, so that each process is sampled once."""
    root = _Node()
    for frames, count in stacks.items():
        node = root
        node.count += count
        for frame in frames:
            node = node.children.setdefault(frame, _Node())
            node.count += count
    width, row, top = 1200.0, 16, 28
    depth = max((len(frames) for frames in stacks), default=0) + 1
    height = top + depth * row + 4
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
              'font-family="Verdana, sans-serif" font-size="11">'),
             '<rect width="100%" height="100%" fill="#f8f8f8"/>',
             f'<text x="{width / 2:.0f}" y="18" text-anchor="middle" font-size="15">{html.escape(title)}</text>']
    total = root.count or 1

    def draw(name: str, node: _Node, x: float, level: int) -> None:
        w = node.count / total * width
        if w < 0.2:  # narrower than a pixel's fraction: invisible, and would bloat the file
            return
        y = height - 4 - (level + 1) * row
        hue = zlib.crc32(name.encode()) % 55
        label = html.escape(name)
        parts.append(f'<g><title>{label} ({node.count:,} samples, {100 * node.count / total:.2f}%)</title>'
                     f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="rgb(230,{90 + 2 * hue},40)"/>')
        chars = int(w / 7)
        if chars >= 3:
            text = name if len(name) <= chars else name[: chars - 2] + ".."
            parts.append(f'<text x="{x + 3:.1f}" y="{y + row - 4}">{html.escape(text)}</text>')
        parts.append("</g>")
        offset = x
        for child_name, child in sorted(node.children.items()):
            draw(child_name, child, offset, level + 1)
            offset += child.count / total * width

    draw("all", root, 0.0, 0)
    parts.append("</svg>")
    return "\n".join(parts)


# --- report ----------------------------------------------------------------------------


def print_timeline(rows: list, names: list) -> None:
    print("\n== CPU % of one core / RSS MiB, every sample ==")
    headers = ["t s"] + names
    table = [[f"{row['t']:.1f}"] + [f"{row[n][0]:.0f}% {row[n][1] / 2**20:.0f}M" for n in names] for row in rows]
    print(render(headers, table, markdown=False))


def print_summary(rows: list, names: list, cpu_seconds: dict) -> None:
    print("\n== Per process over the load ==")
    table = []
    for name in names:
        cpus = [row[name][0] for row in rows]
        table.append([name, f"{sum(cpus) / len(cpus):.0f}", f"{max(cpus):.0f}", f"{cpu_seconds.get(name, 0):.2f}",
                      f"{max(row[name][1] for row in rows) / 2**20:.0f}"])
    print(render(["process", "mean CPU %", "max CPU %", "CPU s", "max RSS MiB"], table, markdown=False))


def print_profiles(profiles: dict, rate: int, seconds: float, out: Path) -> None:
    for name, stacks in profiles.items():
        samples = sum(stacks.values())
        busy = 100 * samples / (rate * seconds)
        print(f"\n== {name}: {samples:,} samples ({busy:.0f}% of {seconds:g} s at {rate} Hz, over its "
              f"Python threads), flame graph {out / (slug(name) + '.svg')} ==")
        threads = Counter()
        for frames, count in stacks.items():
            threads[frames[0]] += count
        if len(threads) > 1:
            print("threads: " + ", ".join(f"{t} {100 * c / samples:.0f}%" for t, c in threads.most_common()))
        table = [[str(i + 1), f"{100 * own / samples:.1f}", f"{100 * incl / samples:.1f}", function]
                 for i, (function, own, incl) in enumerate(top_functions(stacks, TOP))]
        if table:
            print(render(["#", "own %", "incl %", "function (file)"], table, markdown=False, numeric=True))


def slug(name: str) -> str:
    """A file name for a process name: "client 0 (direct)" -> "client-0-direct"."""
    return re.sub(r"\W+", "-", name).strip("-")


# --- main ------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    ap.add_argument("--partitions", type=int, default=os.cpu_count() or 1, help="default: the CPU count")
    ap.add_argument("--fsync", default="everysec", help="the server's fsync policy (default everysec)")
    ap.add_argument("--clients", type=int, default=3, help="client processes (default 3)")
    ap.add_argument("--front-clients", type=int, default=1,
                    help="how many of them go through the front (direct=False; default 1)")
    ap.add_argument("--keys", type=int, default=50_000, help="pairs preloaded and used by the load (default 50,000)")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between CPU/RSS samples (default 0.5)")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default 100)")
    ap.add_argument("--out", default=str(REPO / "profiles" / "out"), help="where flame graphs go (profiles/out/)")
    ap.add_argument("--no-py-spy", action="store_true", help="only the CPU/RSS table, no py-spy")
    ap.add_argument("--tmpdir", default=tempfile.gettempdir(), help="where the server's data directory goes")
    args = ap.parse_args(argv)
    py_spy = None if args.no_py_spy else find_py_spy()
    if not args.no_py_spy and py_spy is None:
        print("py-spy not found (.venv/bin/py-spy or PATH): no flame graphs, only the CPU/RSS table")

    with cleanup_scope("ckv-profile-", args.tmpdir) as (stack, root):
        log(f"starting ConcordKV-MP: {args.partitions} partitions, fsync {args.fsync}")
        endpoint, _ = start_concordkv(stack, root, args.partitions, args.fsync)
        log(f"preloading {args.keys:,} keys")
        keys = preload(endpoint, args.keys)
        server = server_processes(endpoint)

        clients = ClientGroup(load_client, args.clients, "profile-client",
                              lambda i: (endpoint, i >= args.front_clients, keys, args.duration, i))
        stack.callback(clients.stop)
        clients.start()
        client_names = {f"client {i} ({'direct' if i >= args.front_clients else 'via front'})": p.pid
                        for i, p in enumerate(clients.processes)}

        spies = {}
        out = Path(args.out)
        if py_spy:
            out.mkdir(parents=True, exist_ok=True)
            # Clients finish connecting first: py-spy then sees the load, not the imports.
            while clients.barrier.n_waiting < args.clients:
                if not all(p.is_alive() for p in clients.processes):
                    raise RuntimeError("a client process exited before the load")
                time.sleep(0.05)
            for name, pid in {**server, **client_names}.items():
                spies[name] = start_py_spy(stack, py_spy, pid, out / f"{slug(name)}.txt",
                                           args.duration + PY_SPY_START_SECONDS, args.rate)
            time.sleep(PY_SPY_START_SECONDS)

        meter = CpuMeter(server)
        log(f"load: {args.clients} clients ({args.front_clients} via the front) for {args.duration:g} s")
        clients.release()
        cpu_before = meter.read()  # after the barrier, as the clients' own CPU times: the load's alone
        rows = sample_loop(server, [psutil.Process(p.pid) for p in clients.processes], args.duration, args.interval)
        done = clients.collect(60)
        cpu = {name: seconds - cpu_before[name] for name, seconds in meter.read().items()}
        cpu["clients"] = sum(c for _, _, c in done)

        names = list(server) + ["clients"]
        print_timeline(rows, names)
        print_summary(rows, names, cpu)

        print("\n== Operations completed by the clients ==")
        counts = Counter()
        for by_kind, _, _ in done:
            counts.update(by_kind)
        seconds = max(s for _, s, _ in done)
        print(render(["kind", "ops", "ops/s"], [[k, f"{counts[k]:,}", f"{counts[k] / seconds:,.0f}"] for k in MIX]
                     + [["all", f"{sum(counts.values()):,}", f"{sum(counts.values()) / seconds:,.0f}"]], markdown=False))

        if spies:
            profiles = {}
            for name, spy in spies.items():
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    log(f"py-spy of {name} did not finish")
                    continue
                if spy.returncode != 0:
                    log(f"py-spy of {name} failed: {spy.stderr.read().decode(errors='replace')[-500:]}")
                stacks = read_stacks(out / f"{slug(name)}.txt")
                (out / f"{slug(name)}.svg").write_text(flamegraph_svg(stacks, f"{name}: {sum(stacks.values()):,} samples"))
                profiles[name] = stacks
            print_profiles(profiles, args.rate, args.duration, out)
    return 0


if __name__ == "__main__":
    run_script(main)
