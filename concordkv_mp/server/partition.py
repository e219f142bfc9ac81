"""A partition process: the actor that owns one share of the slots and the database
holding them.

`run_partition` opens the Database (its WAL through the shared-memory ring, its
compactions on the server's pool) and sets up the two deterministic parts:
`PartitionCore` (partition_core.py: request bytes to reply bytes) and `ReplyHold`
(reply_hold.py: when a write's reply may go). `_serve` is the plain I/O around them:
smart clients talk to the partition over the stream transport (plain TCP or Unix
sockets, ipc/stream_server.py), the front over a ZeroMQ ROUTER on an internal ipc
endpoint; one poller watches both.

Durability (docs/architecture/partition.md): the engine's WAL bytes go into a shared-memory ring
(io/ring_fs.py) that the I/O optimizer drains. With fsync="always" a write's reply is
held back until the database is durable through the write's ticket; the loop keeps
taking requests meanwhile, so every write that arrives during one fsync shares the
next. With "everysec" and "none" the reply goes as soon as the bytes are in the ring:
the ring is shared memory and outlives this process.

Owned by the partition process; it must not touch another partition's data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import zmq

from concordkv_mp.database import Database
from concordkv_mp.io.ring_fs import RingFileSystem
from concordkv_mp.io.wal_ring import WalRing
from concordkv_mp.ipc.protocol import Limits, SlotMap
from concordkv_mp.ipc.sockets import configure_router, discard_pending, send_or_drop
from concordkv_mp.ipc.stream_server import StreamServer
from concordkv_mp.server.compaction_pool import PoolWorkerClient
from concordkv_mp.server.lifecycle import announce_ready, become_child, exit_child
from concordkv_mp.server.partition_core import PartitionCore
from concordkv_mp.server.reply_hold import ReplyHold

# Requests taken per loop turn before replies held for durability are considered: big
# enough to share an fsync among many writers, small enough to bound reply latency.
_BURST = 512
# With fsync everysec/none, how long WAL bytes may wait in the ring before the I/O
# optimizer is woken to write them (writes within it share one wake-up).
_KICK_INTERVAL = 0.02
# How long the loop waits for input when nothing else is due.
_IDLE_POLL_MS = 200
# Stream connections per partition; more are closed at once (docs/protocol.md, "Limits").
MAX_STREAM_CONNECTIONS = 1024


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
            if not (writes and hold.wrote(envelope, request_id, reply)):
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
