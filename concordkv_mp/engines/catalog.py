"""The `ENGINE` file: which engine a database uses and which directory holds its data.

A database directory holds:

    LOCK               held by the `Database` while it is open
    ENGINE             JSON: {"format": 1, "engine": "btree", "directory": "btree-000002"}
    btree-000002/      that engine's own files (its own LOCK, WAL, snapshots or SSTables)

Replacing `ENGINE` (write, fsync, rename, fsync the directory) is the commit point of an
engine switch: before it the old engine's directory is the database, after it the new
one's. Any other engine directory is what an interrupted switch left behind, removed at
open. This module must not look inside an engine's directory.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from concordkv_mp.errors import CorruptionError, UnsupportedFormatError
from concordkv_mp.io.fs import write_file_atomically

ENGINE_FILE = "ENGINE"
CATALOG_FORMAT = 1  # on-disk: do not change
_ENGINE_DIRECTORY = re.compile(r"^[a-z]+-\d{6}$")


@dataclass(frozen=True)
class EngineRecord:
    engine: str
    generation: int

    @property
    def directory(self) -> str:
        return f"{self.engine}-{self.generation:06d}"

    def successor(self, engine: str) -> "EngineRecord":
        return EngineRecord(engine, self.generation + 1)


def read_engine_record(fs, path: str) -> EngineRecord | None:
    """The record of the database at `path`, or None if it has none yet."""
    file = os.path.join(path, ENGINE_FILE)
    if not fs.exists(file):
        if fs.exists(os.path.join(path, "MANIFEST")):
            raise UnsupportedFormatError(
                path, "this directory holds an LSM database of the pre-release layout (no ENGINE file)"
            )
        return None
    try:
        record = json.loads(fs.read(file))
        if record["format"] != CATALOG_FORMAT:
            raise UnsupportedFormatError(file, f"ENGINE format {record['format']} is not supported")
        directory = record["directory"]
        match = _ENGINE_DIRECTORY.match(directory)
        engine, generation = directory.rsplit("-", 1)
        if not match or engine != record["engine"]:
            raise ValueError(f"directory {directory!r} does not name engine {record['engine']!r}")
        return EngineRecord(engine, int(generation))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptionError(file, f"unreadable ENGINE file: {exc}") from None


def write_engine_record(fs, path: str, record: EngineRecord) -> None:
    """Make `record` the database's engine, atomically and durably."""
    data = {"format": CATALOG_FORMAT, "engine": record.engine, "directory": record.directory}
    write_file_atomically(fs, os.path.join(path, ENGINE_FILE), json.dumps(data).encode() + b"\n")


def remove_other_engine_directories(fs, path: str, keep: EngineRecord) -> None:
    """Remove the engine directories an interrupted switch left, and a half-written ENGINE."""
    for name in fs.listdir(path):
        if _ENGINE_DIRECTORY.match(name) and name != keep.directory:
            fs.remove_tree(os.path.join(path, name))
    fs.remove(os.path.join(path, ENGINE_FILE + ".tmp"))
