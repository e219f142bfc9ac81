"""The server's process table: which process plays which role, its pid and restarts.

Written only by the supervisor (replaced atomically on every change); read by the front
for STATUS and by partitions to notice that a compaction worker holding their job was
replaced. A JSON file in the server's run directory (tmpfs): a few hundred bytes read a
few times a second at most, so a file beats a shared-memory structure with its own
locking. It must not hold anything that has to survive the server.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass


@dataclass
class ProcessEntry:
    role: str  # supervisor, front, partition, io_optimizer, compactor
    index: int | None
    pid: int | None  # None while the process is down, waiting to be restarted
    started: float  # time.time() of the current incarnation's start
    restarts: int = 0


def write_table(path: str, entries: list[ProcessEntry]) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump([asdict(entry) for entry in entries], file)
    os.replace(temporary, path)


def read_table(path: str) -> list[ProcessEntry]:
    """The table as last written; empty if it is not there (the server is stopping)."""
    try:
        with open(path) as file:
            return [ProcessEntry(**record) for record in json.load(file)]
    except FileNotFoundError:
        return []


def pid_of(path: str, role: str, index: int | None) -> int | None:
    for entry in read_table(path):
        if entry.role == role and entry.index == index:
            return entry.pid
    return None
