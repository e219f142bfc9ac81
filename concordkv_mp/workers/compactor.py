"""The compaction worker process: flushes MemTables and runs compactions for its owner.

Started as `python -m concordkv_mp.workers.compactor OWNER_PID` with pipes for stdin
and stdout.
Requests and replies are msgpack maps, one after another on the pipes (see
docs/architecture/compaction-workers.md). The worker writes a shipped MemTable as an L0 table
(`write_flush`) or reads a task's input SSTables and writes its outputs
(`run_compaction`) — the pure steps, unchanged; it never touches a manifest or a WAL
— the owning engine installs the results. It exits when stdin reaches EOF, and the
kernel kills it the moment its owner dies (PR_SET_PDEATHSIG): a worker finishing a task
for a dead owner could overwrite files that the next owner's recovery has created
under the same numbers.
"""

from __future__ import annotations

import sys

import msgpack

from concordkv_mp.engines.lsm.compaction import CompactionTask, run_compaction, write_flush
from concordkv_mp.engines.lsm.memtable import sorted_columns
from concordkv_mp.errors import ConcordKVError
from concordkv_mp.io.fs import DEFAULT_FS
from concordkv_mp.options import StorageOptions
from concordkv_mp.workers.compaction_client import MAX_MESSAGE_BYTES, PROTOCOL_VERSION
from concordkv_mp.workers.owner import die_with_owner


def handle(request: dict) -> dict:
    """One request -> one reply; errors are replies, never a dead worker."""
    if request.get("version") != PROTOCOL_VERSION:
        return {"error": f"protocol version {request.get('version')!r} is not {PROTOCOL_VERSION}", "code": "PROTOCOL"}
    try:
        options = StorageOptions(**request["options"])
        if request["op"] == "flush":
            # A MemTable arrives as its dict items, unsorted: sorting is part of the
            # work taken off the owner's interpreter.
            columns = sorted_columns(request["items"])
            meta = write_flush(DEFAULT_FS, request["directory"], columns, request["number"], options)
            outputs = [meta] if meta is not None else []
        elif request["op"] == "compact":
            task = CompactionTask.from_record(request["task"])
            outputs = run_compaction(DEFAULT_FS, request["directory"], task, options)
        else:
            return {"error": f"unknown op {request['op']!r}", "code": "PROTOCOL"}
    except ConcordKVError as exc:
        reply = {"error": str(exc), "code": exc.code}
        if isinstance(exc, OSError):
            reply["errno"] = exc.errno
        if getattr(exc, "path", None):
            reply["path"] = exc.path
        return reply
    except Exception as exc:  # a bug, not bad data: reported to the owner, which goes read-only
        return {"error": f"{type(exc).__name__}: {exc}", "code": "INTERNAL"}
    return {"outputs": [meta.to_record() for meta in outputs]}


def main() -> int:
    die_with_owner(int(sys.argv[1]))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    unpacker = msgpack.Unpacker(max_buffer_size=MAX_MESSAGE_BYTES)
    while True:
        data = stdin.read1(1 << 16)
        if not data:
            return 0
        unpacker.feed(data)
        for request in unpacker:
            stdout.write(msgpack.packb(handle(request)))
            stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
