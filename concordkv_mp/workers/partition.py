"""A partition: the actor that owns one share of the slots and the database holding them.

`PartitionCore` is the deterministic part: `answer(request bytes) -> reply bytes` over
its `Database`, dispatched by the operation table (ipc/operations.py), with the
slot-ownership checks and the scan cursors; it knows no sockets. `ReplyHold`
(reply_hold.py) decides when a write's reply may go. `run_partition` sets both up and
`_serve` is the plain I/O around them: smart clients talk to the partition over the
stream transport (plain TCP or Unix sockets, ipc/stream_server.py), the front over a
ZeroMQ ROUTER on an internal ipc endpoint; one poller watches both.

Durability (docs/architecture.md): the engine's WAL bytes go into a shared-memory ring
(io/ring_fs.py) that the I/O optimizer drains. With fsync="always" a write's reply is
held back until the database is durable through the write's ticket; the loop keeps
taking requests meanwhile, so every write that arrives during one fsync shares the
next. With "everysec" and "none" the reply goes as soon as the bytes are in the ring:
the ring is shared memory and outlives this process.

Owned by the partition process; it must not touch another partition's data.
"""

from __future__ import annotations

import itertools
import time
import zlib
from dataclasses import dataclass
from itertools import islice

import zmq

from concordkv_mp.database import Database
from concordkv_mp.errors import (
    BadRequestError,
    BusyError,
    ConcordKVError,
    CursorNotFoundError,
    InternalError,
    WrongPartitionError,
)
from concordkv_mp.io.ring_fs import RingFileSystem
from concordkv_mp.io.wal_ring import WalRing
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.operations import FRONT, KEY, OPERATIONS, WRITE_OPERATIONS, Operation
from concordkv_mp.ipc.protocol import Limits, SlotMap
from concordkv_mp.ipc.sockets import configure_router, discard_pending, send_or_drop
from concordkv_mp.ipc.stream_server import StreamServer
from concordkv_mp.workers.compaction_pool import PoolWorkerClient
from concordkv_mp.workers.lifecycle import announce_ready, become_child, exit_child
from concordkv_mp.workers.reply_hold import ReplyHold

# Requests taken per loop turn before replies held for durability are considered: big
# enough to share an fsync among many writers, small enough to bound reply latency.
_BURST = 512
_MAX_CURSORS = 1024
# With fsync everysec/none, how long WAL bytes may wait in the ring before the I/O
# optimizer is woken to write them (writes within it share one wake-up).
_KICK_INTERVAL = 0.02
# How long the loop waits for input when nothing else is due.
_IDLE_POLL_MS = 200
_CURSOR_IDLE_SECONDS = 60.0
# Stream connections per partition; more are closed at once (docs/protocol.md, "Limits").
MAX_STREAM_CONNECTIONS = 1024


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
        self._handlers = {
            op.name: own_handlers.get(op.name) or self._database_handler(op)
            for op in OPERATIONS.values()
            if op.route != FRONT
        }

    def answer(self, body) -> tuple[bool, int | None, bytes]:
        """(whether the request writes, its id if it could be read, the encoded reply)
        of one request's bytes. Every error is a reply: the loop serves on."""
        request_id = op = None
        try:
            request_id, op, args = protocol.decode_request(body, self._unpack_limits, self.limits)
            return op in WRITE_OPERATIONS, request_id, protocol.encode_reply(request_id, self.handle(op, args))
        except ConcordKVError as exc:
            if op is None:  # refused while decoding: the id it could read, if any
                request_id = getattr(exc, "request_id", None)
            return op in WRITE_OPERATIONS, request_id, protocol.encode_error(request_id, exc)
        except Exception as exc:  # a bug: report it, keep serving everyone else
            error = InternalError(f"{type(exc).__name__}: {exc}")
            return op in WRITE_OPERATIONS, request_id, protocol.encode_error(request_id, error)

    def handle(self, op: str, args: list):
        """The result of one decoded request; raises ConcordKVError for an error reply."""
        try:
            handler = self._handlers[op]
        except KeyError:
            raise BadRequestError(f"{op} is answered by the front, not by a partition") from None
        return handler(*args)

    def _database_handler(self, op: Operation):
        """`db.<op>(*args)` once the partition's ownership of the arguments is checked:
        a KEY operation's key, a PART operation's index and the keys of its `keys` or
        `pairs` argument."""
        method = getattr(self.db, op.name)
        if op.route == KEY:
            own = self._own

            def handler(key, *args):
                return method(own(key), *args)

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

    def _own(self, key: bytes) -> bytes:
        if self.slot_map.partition_of(key) != self.index:
            raise self._not_ours(key)
        return key

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


@dataclass(frozen=True)
class PartitionSpec:
    """Everything a partition process needs; built by the supervisor."""

    index: int
    partitions: int
    directory: str
    options: object  # StorageOptions of the engine (which never syncs by itself here)
    fsync: str  # the server's policy, applied by the I/O optimizer and the reply hold
    limits: Limits
    max_message_size: int
    client_hwm: int
    public_endpoint: str  # stream transport, for smart clients anywhere
    local_endpoint: str | None  # stream over a Unix socket, for clients on this host
    internal_endpoint: str  # ZeroMQ, for the front
    server_id: str  # this server run's, answered in HELLO
    ring_path: str
    io_wake_endpoint: str
    io_notify_endpoint: str
    compactor_endpoints: tuple
    process_table: str


def run_partition(spec: PartitionSpec, stop) -> None:
    """The actor loop; returns after `stop()` turns true, with the database closed."""
    context = zmq.Context()
    wake = context.socket(zmq.PUSH)
    wake.setsockopt(zmq.LINGER, 0)
    wake.setsockopt(zmq.SNDHWM, 16)
    wake.connect(spec.io_wake_endpoint)
    kick = spec.index.to_bytes(2, "big")

    def wake_io_optimizer():
        try:
            wake.send(kick, zmq.NOBLOCK)
        except zmq.Again:
            pass  # kicks already queued will wake it

    notify = None
    if spec.fsync == "always":  # only held replies wait for the optimizer's news
        notify = context.socket(zmq.SUB)
        notify.setsockopt(zmq.LINGER, 0)
        notify.setsockopt(zmq.SUBSCRIBE, kick)
        notify.connect(spec.io_notify_endpoint)
    ring = WalRing.attach(spec.ring_path)
    fs = RingFileSystem(ring, wake_io_optimizer)
    router = streams = None
    db = None
    try:
        # The previous incarnation may have left WAL bytes in the ring: they must be in
        # the files before recovery reads them.
        fs.wait_drained(30.0)
        options = spec.options
        db = Database(
            spec.directory,
            options,
            fs,
            None,
            executor_factory=lambda _fs: PoolWorkerClient(list(spec.compactor_endpoints), spec.process_table),
        )
        core = PartitionCore(
            spec.index, db, SlotMap(spec.partitions), spec.limits, spec.max_message_size, spec.public_endpoint, spec.server_id
        )
        router = context.socket(zmq.ROUTER)
        configure_router(router, spec.max_message_size, spec.client_hwm)
        router.bind(spec.internal_endpoint)
        endpoints = [spec.public_endpoint] + ([spec.local_endpoint] if spec.local_endpoint else [])
        streams = StreamServer(endpoints, zmq.Poller(), spec.max_message_size, MAX_STREAM_CONNECTIONS)
        hold = ReplyHold(db, spec.fsync == "always", wake_io_optimizer, _KICK_INTERVAL)
        announce_ready()
        _serve(core, router, notify, streams, hold, stop)
        db.flush()
    finally:
        if streams is not None:
            streams.close()
        if router is not None:
            router.close(0)
        if db is not None:
            db.close()
        if notify is not None:
            notify.close(0)
        wake.close(0)
        ring.close()
        context.term()


def _serve(core: PartitionCore, router, notify, streams: StreamServer, hold: ReplyHold, stop) -> None:
    """Plain I/O: requests in from both transports, each answered by the core, and
    replies out where their requests came from when the hold lets them go."""

    def deliver(envelope, reply):
        """A stream connection's reply is queued on it; the ROUTER's goes behind its
        routing frames (`envelope` is then their list)."""
        if type(envelope) is list:
            envelope.append(reply)
            send_or_drop(router, envelope)
        else:
            streams.send(envelope, reply)

    poller = streams.poller
    poller.register(router, zmq.POLLIN)
    if notify is not None:
        poller.register(notify, zmq.POLLIN)
    last_tick = time.monotonic()
    while not (stop() and not hold.holding):
        requests = []  # (envelope, request bytes) of this turn, from either transport
        for item, events in poller.poll(hold.poll_timeout_ms(_IDLE_POLL_MS)):
            if item is router:
                _receive_burst(router, requests)
            elif item is notify:
                discard_pending(notify)  # news of the optimizer: the hold reads the ring itself
            else:
                streams.on_event(item, events, requests)
        for envelope, body in requests:
            writes, request_id, reply = core.answer(body)
            if not hold.add(writes, envelope, request_id, reply):
                deliver(envelope, reply)
        for envelope, reply in hold.end_turn(time.monotonic()):
            deliver(envelope, reply)
        streams.flush()
        if hold.failure is not None:
            raise hold.failure
        now = time.monotonic()
        if now - last_tick > 1.0:
            last_tick = now
            core.expire_cursors(now)
            streams.expire_greetings(now)


def _receive_burst(router, requests: list) -> None:
    for _ in range(_BURST):
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        requests.append((frames, frames.pop()))


def partition_main(spec: PartitionSpec, supervisor_pid: int) -> None:
    """Entry of the forked partition process."""
    stop = become_child(supervisor_pid)
    run_partition(spec, stop)
    exit_child(0)
