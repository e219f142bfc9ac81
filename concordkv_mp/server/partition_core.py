"""`PartitionCore`: one partition's operations over its Database, without sockets.

`answer(request bytes) -> reply bytes`: the request is decoded and validated by the
protocol, dispatched through the operation table (ipc/operations.py) to the `Database`
method of the same name once the partition's ownership of its keys is checked, and
every error becomes an error reply. The scan cursors (snapshots held between pages)
live here too. It knows no sockets and no timing but the cursors' idle expiry, so
tests drive it directly (tests/server/test_partition_core.py); the process loop around
it is server/partition.py.

Owned by the partition process; it must not touch another partition's data.
"""

from __future__ import annotations

import itertools
import time
import zlib
from itertools import islice

from concordkv_mp.database import Database
from concordkv_mp.errors import (
    BadRequestError,
    BusyError,
    ConcordKVError,
    CursorNotFoundError,
    InternalError,
    WrongPartitionError,
)
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.operations import FRONT, KEY, OPERATIONS, WRITE_OPERATIONS, Operation
from concordkv_mp.ipc.protocol import Limits, SlotMap

_MAX_CURSORS = 1024
_CURSOR_IDLE_SECONDS = 60.0


class PartitionCore:
    """Dispatches each operation a partition answers (ipc/operations.py) to the
    `Database` method of the same name, after checking that the partition owns its
    keys; the few that need state of the partition's own have a handler here."""

    def __init__(
        self, index: int, db: Database, slot_map: SlotMap, limits: Limits, max_message_size: int, endpoint: str,
        server_id: str,
    ):
        self.index = index
        self.server_id = server_id
        self.db = db
        self.slot_map = slot_map
        self.limits = limits
        self.endpoint = endpoint
        self._unpack_limits = protocol.unpacker_limits(limits, max_message_size)
        self._cursors: dict[int, list] = {}  # id -> [iterator, last use]
        self._cursor_ids = itertools.count(1)
        own_handlers = {
            "hello": self._hello,
            "ping": lambda: "pong",
            "scan": self._scan,
            "scan_next": self._scan_next,
            "scan_close": self._scan_close,
            "partition_status": self._partition_status,
            "switch_engine": self._switch_engine,
        }
        # Every operation in the table has a handler (the front's refuse), so a decoded
        # request needs no second lookup.
        self._handlers = {
            op.name: _front_only(op.name) if op.route == FRONT else own_handlers.get(op.name) or self._database_handler(op)
            for op in OPERATIONS.values()
        }

    def answer(self, body) -> tuple[bool, int | None, bytes]:
        """(whether the request writes, its id if it could be read, the encoded reply)
        of one request's bytes. Every error is a reply: the loop serves on."""
        request_id = op = None
        try:
            request_id, op, args = protocol.decode_request(body, self._unpack_limits, self.limits)
            return op in WRITE_OPERATIONS, request_id, protocol.encode_reply(request_id, self._handlers[op](*args))
        except ConcordKVError as exc:
            if op is None:  # refused while decoding: the id it could read, if any
                request_id = getattr(exc, "request_id", None)
            return op in WRITE_OPERATIONS, request_id, protocol.encode_error(request_id, exc)
        except Exception as exc:  # a bug: report it, keep serving everyone else
            error = InternalError(f"{type(exc).__name__}: {exc}")
            return op in WRITE_OPERATIONS, request_id, protocol.encode_error(request_id, error)

    def handle(self, op: str, args: list):
        """The result of one decoded request; raises ConcordKVError for an error reply."""
        return self._handlers[op](*args)

    def _database_handler(self, op: Operation):
        """`db.<op>(*args)` once the partition's ownership of the arguments is checked:
        a KEY operation's key, a PART operation's index and the keys of its `keys` or
        `pairs` argument."""
        method = getattr(self.db, op.name)
        if op.route == KEY:
            # The ownership test inline: this runs for every single-key request.
            owners, index, crc32, mask = self.slot_map.owners, self.index, zlib.crc32, protocol.SLOT_COUNT - 1
            not_ours = self._not_ours

            def handler(key, *args):
                if owners[crc32(key) & mask] != index:
                    raise not_ours(key)
                return method(key, *args)

            return handler
        check_part, own_all = self._check_part, self._own_all
        kinds = op.kinds[1:]
        batched = kinds.index("keys") if "keys" in kinds else None
        paired = kinds.index("pairs") if "pairs" in kinds else None

        def handler(part, *args):
            check_part(part)
            if batched is not None:
                own_all(args[batched])
            if paired is not None:
                own_all([pair[0] for pair in args[paired]])
            return method(*args)

        return handler

    # -------------------------------------------------------------- ownership

    def _not_ours(self, key: bytes) -> WrongPartitionError:
        return WrongPartitionError(f"slot {protocol.slot_of(key)} is not owned by partition {self.index}")

    def _check_part(self, part: int) -> None:
        if part != self.index:
            raise WrongPartitionError(f"this is partition {self.index}, not {part}")

    def _own_all(self, keys) -> None:
        # One comprehension over the batch: a quarter cheaper than a loop of two checks.
        owners, index, crc32, mask = self.slot_map.owners, self.index, zlib.crc32, protocol.SLOT_COUNT - 1
        strays = [key for key in keys if type(key) is not bytes or owners[crc32(key) & mask] != index]
        if strays:
            key = strays[0]
            if type(key) is not bytes:
                raise BadRequestError(f"keys must be bytes, not {type(key).__name__}")
            raise self._not_ours(key)

    def _partition_status(self, part):
        self._check_part(part)
        return self.status()

    def _switch_engine(self, part, name):
        self._check_part(part)
        self.close_cursors()  # their engine is about to close
        self.db.switch_engine(name)

    # -------------------------------------------------------------- scans

    def _scan(self, part, start, end, reverse, limit):
        """Open a cursor on a snapshot; returns [cursor id or nil when done, first page]."""
        self._check_part(part)
        if len(self._cursors) >= _MAX_CURSORS:
            self.expire_cursors(time.monotonic())
            if len(self._cursors) >= _MAX_CURSORS:
                raise BusyError(f"{_MAX_CURSORS} scan cursors are open on partition {self.index}")
        iterator = self.db.scan(start, end, reverse=reverse)
        cursor = next(self._cursor_ids)
        self._cursors[cursor] = [iterator, time.monotonic()]
        return self._page(cursor, limit)

    def _scan_next(self, part, cursor, limit):
        self._check_part(part)
        if cursor not in self._cursors:
            raise CursorNotFoundError(f"scan cursor {cursor} is not open on partition {self.index}")
        return self._page(cursor, limit)

    def _scan_close(self, part, cursor):
        self._check_part(part)
        self._cursors.pop(cursor, None)

    def _page(self, cursor: int, limit):
        entry = self._cursors[cursor]
        size = self.limits.scan_page_size if limit is None else min(limit, self.limits.scan_page_size)
        page = list(islice(entry[0], size))
        if len(page) < size or size == 0:
            del self._cursors[cursor]
            return [None, page]
        entry[1] = time.monotonic()
        return [cursor, page]

    def expire_cursors(self, now: float) -> None:
        """Drop cursors idle too long: a vanished client must not pin snapshots forever."""
        stale = [cursor for cursor, (_, used) in self._cursors.items() if now - used > _CURSOR_IDLE_SECONDS]
        for cursor in stale:
            del self._cursors[cursor]

    def close_cursors(self) -> None:
        self._cursors.clear()

    # -------------------------------------------------------------- the rest

    def _hello(self, version):
        protocol.check_version(version)
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "role": "partition",
            "index": self.index,
            "engine": self.db.engine,
            "server_id": self.server_id,
        }

    def status(self) -> dict:
        stats = self.db.stats()
        levels = stats.get("files_per_level", [])
        scores = stats.get("compaction_scores", [])
        return {
            "index": self.index,
            "slots": list(self.slot_map.ranges[self.index]),
            "endpoint": self.endpoint,
            "engine": self.db.engine,
            "keys": stats.get("count", 0),
            "memtable_bytes": stats.get("memtable_bytes", stats.get("memory_bytes", 0)),
            "files_per_level": levels,
            "pending_compactions": stats.get("immutable_memtables", 0) + sum(1 for score in scores if score >= 1),
            "open_cursors": len(self._cursors),
        }


def _front_only(name: str):
    def refuse(*args):
        raise BadRequestError(f"{name} is answered by the front, not by a partition")

    return refuse
