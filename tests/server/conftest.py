"""A real server for the end-to-end suites: `concordkv serve` started as a subprocess on
free ports in a temporary data directory, stopped (and checked to leave nothing
behind) at the end.

`ServerProcess` also finds the server's children in its process table, so crash tests
can SIGKILL a partition, the I/O optimizer or a compaction worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

import concordkv_mp
from concordkv_mp.errors import ConcordKVError
from concordkv_mp.server.process_table import read_table
from concordkv_mp.server.supervisor import run_directory


def free_port_block(size: int) -> int:
    """A port p such that p .. p+size-1 are free now on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - size)
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports")


class ServerProcess:
    def __init__(self, directory, partitions: int = 2, **config):
        self.data_dir = str(directory / "data")
        self.partitions = partitions
        self.endpoint = config.pop("endpoint", None) or f"tcp://127.0.0.1:{free_port_block(partitions + 1)}"
        self.config = {"data_dir": self.data_dir, "endpoint": self.endpoint, "partitions": partitions, **config}
        self.config_path = str(directory / "server.json")
        with open(self.config_path, "w") as file:
            json.dump(self.config, file)
        self.log_path = str(directory / "server.log")
        self.process: subprocess.Popen | None = None
        self.run_dir = run_directory(self.data_dir)

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "concordkv_mp.cli.main", "serve", "-c", self.config_path],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with concordkv_mp.connect(self.endpoint, timeout=0.5) as client:
                    client.ping()
                return
            except ConcordKVError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log()}") from None

    def log(self) -> str:
        with open(self.log_path, errors="replace") as file:
            return file.read()

    def client(self, **options):
        options.setdefault("timeout", 10.0)
        return concordkv_mp.connect(self.endpoint, **options)

    def children(self) -> dict:
        """{(role, index): pid} of the live processes in the process table."""
        return {(e.role, e.index): e.pid for e in read_table(os.path.join(self.run_dir, "processes.json")) if e.pid}

    def pid_of(self, role: str, index=None, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.children().get((role, index))
            if pid:
                return pid
            time.sleep(0.02)
        raise RuntimeError(f"no live {role} {index} in the process table")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 20.0) -> float:
        """SIGTERM the supervisor; the seconds it took to exit."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the supervisor and every child (what a machine crash does to processes)."""
        if self.process is None:
            return
        victims = self.descendants()
        self.process.kill()
        for victim in victims:
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait()
        psutil.wait_procs(victims, timeout=5)


@contextlib.contextmanager
def running_server(directory, partitions: int = 2, **config):
    """A started server, stopped (or killed) when the block ends: for module fixtures."""
    server = ServerProcess(directory, partitions, **config)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.kill()


@pytest.fixture
def server_factory(tmp_path):
    """Make servers (started by the test); every one is stopped at the end."""
    servers = []

    def make(partitions: int = 2, name: str = "server", **config) -> ServerProcess:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        server = ServerProcess(directory, partitions, **config)
        servers.append(server)
        return server

    yield make
    for server in servers:
        try:
            server.stop()
        finally:
            server.kill()


@pytest.fixture
def server(server_factory) -> ServerProcess:
    """A running 2-partition server (fsync everysec, default sizes)."""
    server = server_factory()
    server.start()
    return server
