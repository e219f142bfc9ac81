"""The servers that the server scripts measure, started and stopped for real: a
ConcordKV-MP server (`python -m concordkv_mp.cli.main serve`, LSM engine) and a
redis-server, each on free loopback ports, in a data directory of the run, stopped by the
run's ExitStack; the pids of a ConcordKV-MP server's processes; and the spawn context
that every process the scripts start in Python comes from. It must not send the servers
any load.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import concordkv_mp
from harness import REPO

SERVER_START_SECONDS = 60.0
REDIS_CONF = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
# spawn, not fork: the parent holds ZeroMQ contexts, which a forked child must not inherit.
SPAWN = multiprocessing.get_context("spawn")


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


def server_processes(endpoint: str) -> dict:
    """{"front": pid, "partition 0": pid, ...}: every process of a ConcordKV-MP server."""
    with concordkv_mp.connect(endpoint, timeout=5) as client:
        table = client.status()["processes"]
    processes = {row["role"] + ("" if row["index"] is None else f" {row['index']}"): row["pid"] for row in table}
    down = [name for name, pid in processes.items() if pid is None]
    if down:  # psutil.Process(None) would be this process: its CPU would pass for the server's
        raise RuntimeError(f"server processes not running: {', '.join(down)}")
    return processes

