"""The engine matrix's memory probe: one store's RSS per key, measured in a fresh process
as engine_matrix.py's docstring says. It owns both ends: measure_memory starts the probe
(`python -P -m harness.memory_probe KEY N SETTINGS DIR`) and reads its JSON line. It
must not time anything.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.engine_stores import STORES
from harness.stores import Dict
from harness.workload import Workload

WARM_UP_KEYS = 1000  # the probe's throwaway fill
PROFILES = Path(__file__).resolve().parents[1]


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
    """The probe itself, run in its own process by measure_memory."""
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
    """probe_memory(key, n, ...) in a fresh process, with a directory of its own under root."""
    directory = root / f"memory-{key}-{n}"
    directory.mkdir()
    # -P keeps the working directory off the probe's path: only profiles/ provides `harness`.
    path = os.pathsep.join(filter(None, (str(PROFILES), os.environ.get("PYTHONPATH"))))
    try:
        proc = subprocess.run([sys.executable, "-P", "-m", "harness.memory_probe", key, str(n), json.dumps(settings),
                               str(directory)], capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": path})
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if proc.returncode:
        raise RuntimeError(f"memory probe of {key} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


if __name__ == "__main__":
    key, n, settings, directory = sys.argv[1:]
    print(json.dumps(probe_memory(key, int(n), json.loads(settings), Path(directory))))
