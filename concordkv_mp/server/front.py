"""The front: the server's public endpoint. It routes each request to the partition that
owns it and answers the server-wide operations (HELLO, STATUS, ENGINE) itself.

Routing never re-encodes: a request for a key or a partition is decoded once (to
validate it and find its partition) and its original frame is forwarded on that
partition's DEALER with the client's routing id in front; the partition's reply comes
back with the id and is passed through. Requests the front makes itself (the fan-out of
STATUS and ENGINE) carry an empty routing frame, which ZeroMQ never gives a client.

Multi-key operations and scans arrive already split by partition (the client groups
keys with the slot map from HELLO), so the front holds no per-request state except for
its own fan-outs. Owned by the front process; it must not open a database.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import psutil
import zmq

from concordkv_mp.errors import (
    BadFrameError,
    BadRequestError,
    ConcordKVError,
    ConfigError,
    InternalError,
    ServerTimeoutError,
    UnavailableError,
)
from concordkv_mp.io.wal_ring import WalRing
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.operations import ANY, FRONT, KEY, OPERATIONS, PART, SWITCH_TIMEOUT
from concordkv_mp.ipc.protocol import Limits, SlotMap
from concordkv_mp.ipc.sockets import configure_router, send_or_drop
from concordkv_mp.options import ENGINES
from concordkv_mp.server.lifecycle import announce_ready, become_child, exit_child
from concordkv_mp.server.process_table import read_table
from concordkv_mp.version import __version__

_INTERNAL = b""  # the routing frame of the front's own requests
_STATUS_TIMEOUT = 5.0
# Requests queued for one partition while it is down (restarting); past it, callers get
# UNAVAILABLE at once instead of waiting for their timeout.
_PARTITION_HWM = 10_000


@dataclass(frozen=True)
class FrontSpec:
    endpoint: str
    partitions: int
    partition_internal_endpoints: tuple
    partition_public_endpoints: tuple
    partition_local_endpoints: tuple  # Unix sockets for clients on this host (None: none)
    server_id: str
    ring_paths: tuple
    process_table: str
    limits: Limits
    max_message_size: int
    client_hwm: int
    fsync: str
    data_dir: str


class _FanOut:
    """One server-wide request waiting for every partition's reply."""

    def __init__(self, envelope, request_id, op, partitions, deadline):
        self.envelope = envelope
        self.request_id = request_id
        self.op = op
        self.replies: list = [None] * partitions
        self.remaining = partitions
        self.deadline = deadline


class Front:
    def __init__(self, spec: FrontSpec, context):
        self.spec = spec
        self.slot_map = SlotMap(spec.partitions)
        self.started = time.time()
        self.clients = context.socket(zmq.ROUTER)
        configure_router(self.clients, spec.max_message_size, spec.client_hwm)
        self.partitions = []
        for endpoint in spec.partition_internal_endpoints:
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.SNDHWM, _PARTITION_HWM)
            dealer.setsockopt(zmq.RCVHWM, 0)  # replies are bounded by what we sent
            dealer.setsockopt(zmq.MAXMSGSIZE, -1)
            dealer.connect(endpoint)
            self.partitions.append(dealer)
        self.clients.bind(spec.endpoint)
        self.rings = [WalRing.attach(path) for path in spec.ring_paths]
        self._fanouts: dict[int, tuple[_FanOut, int]] = {}  # internal id -> (fan-out, partition)
        self._internal_ids = itertools.count(1)
        self._processes: dict[int, psutil.Process] = {}
        self._unpack = protocol.unpacker_limits(spec.limits, spec.max_message_size)
        self._hello = self._hello_reply()

    def _hello_reply(self) -> dict:
        """What HELLO answers: fixed for the server's life, so built once."""
        limits = self.spec.limits
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "role": "front",
            "server": __version__,
            "partitions": self.spec.partitions,
            "slot_count": protocol.SLOT_COUNT,
            "slot_ranges": [list(r) for r in self.slot_map.ranges],
            "partition_endpoints": list(self.spec.partition_public_endpoints),
            "partition_local_endpoints": list(self.spec.partition_local_endpoints),
            "server_id": self.spec.server_id,
            "limits": {
                "max_key_size": limits.max_key_size,
                "max_value_size": limits.max_value_size,
                "max_batch_keys": limits.max_batch_keys,
                "scan_page_size": limits.scan_page_size,
                "max_message_size": self.spec.max_message_size,
            },
        }

    def close(self) -> None:
        for ring in self.rings:
            ring.close()
        for socket in [self.clients, *self.partitions]:
            socket.close(0)

    # ------------------------------------------------------------------ loop

    def serve(self, stop) -> None:
        poller = zmq.Poller()
        poller.register(self.clients, zmq.POLLIN)
        for dealer in self.partitions:
            poller.register(dealer, zmq.POLLIN)
        next_tick = 0.0
        while not stop():
            for socket, _ in poller.poll(200):
                if socket is self.clients:
                    self._from_clients()
                else:
                    self._from_partition(socket)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + 1.0
                self._sample_processes()
                self._expire_fanouts(now)

    def _from_clients(self) -> None:
        clients = self.clients
        for _ in range(1024):
            try:
                frames = clients.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self._reply(frames[0], protocol.encode_error(None, BadFrameError("a request is exactly one frame")))
                continue
            envelope, body = frames
            request_id = None
            try:
                request_id, op, args = protocol.decode_request(body, self._unpack, self.spec.limits)
                route = OPERATIONS[op].route
                if route is KEY:
                    self._forward(self.slot_map.partition_of(args[0]), envelope, request_id, body)
                elif route is PART:
                    if args[0] >= self.spec.partitions:
                        raise BadRequestError(f"partition {args[0]} does not exist (0..{self.spec.partitions - 1})")
                    self._forward(args[0], envelope, request_id, body)
                elif route is ANY:
                    self._reply(envelope, protocol.encode_reply(request_id, self._answer(op, args)))
                elif route is FRONT:
                    self._start_fanout(envelope, request_id, op, args)
            except ConcordKVError as exc:
                rid = getattr(exc, "request_id", request_id)
                self._reply(envelope, protocol.encode_error(rid, exc))
            except Exception as exc:  # a bug: answer it, keep serving
                self._reply(envelope, protocol.encode_error(request_id, InternalError(f"{type(exc).__name__}: {exc}")))

    def _forward(self, partition: int, envelope: bytes, request_id: int, body: bytes) -> None:
        try:
            self.partitions[partition].send_multipart([envelope, body], zmq.NOBLOCK)
        except zmq.Again:
            raise UnavailableError(f"partition {partition} is not keeping up or is restarting") from None

    def _from_partition(self, dealer) -> None:
        for _ in range(1024):
            try:
                envelope, body = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            if envelope == _INTERNAL:
                self._fanout_reply(body)
            else:
                self._reply(envelope, body)

    def _reply(self, envelope: bytes, body: bytes) -> None:
        send_or_drop(self.clients, [envelope, body])

    # ------------------------------------------------------------------ answers

    def _answer(self, op: str, args):
        if op == "ping":
            return "pong"
        protocol.check_version(args[0])
        return self._hello

    def _start_fanout(self, envelope, request_id, op, args) -> None:
        if op == "set_engine":
            if args[0] not in ENGINES:
                raise ConfigError("engine", f"{args[0]!r} is not one of {', '.join(ENGINES)}")
            make, timeout = (lambda i: ("switch_engine", i, args[0])), SWITCH_TIMEOUT
        elif op == "engine":
            make, timeout = (lambda i: ("hello", protocol.PROTOCOL_VERSION)), _STATUS_TIMEOUT
        else:  # status
            make, timeout = (lambda i: ("partition_status", i)), _STATUS_TIMEOUT
        fanout = _FanOut(envelope, request_id, op, self.spec.partitions, time.monotonic() + timeout)
        for index, dealer in enumerate(self.partitions):
            internal_id = next(self._internal_ids)
            self._fanouts[internal_id] = (fanout, index)
            try:
                dealer.send_multipart([_INTERNAL, protocol.encode_request(internal_id, *make(index))], zmq.NOBLOCK)
            except zmq.Again:
                self._fanouts.pop(internal_id)
                self._record(fanout, index, UnavailableError(f"partition {index} is not keeping up or is restarting"))

    def _fanout_reply(self, body: bytes) -> None:
        internal_id, result, error = protocol.decode_reply(body)
        entry = self._fanouts.pop(internal_id, None)
        if entry is None:
            return  # arrived after its fan-out timed out
        fanout, index = entry
        self._record(fanout, index, result if error is None else error)

    def _record(self, fanout: _FanOut, index: int, result) -> None:
        fanout.replies[index] = result
        fanout.remaining -= 1
        if fanout.remaining == 0:
            self._finish(fanout)

    def _expire_fanouts(self, now: float) -> None:
        for internal_id, (fanout, index) in list(self._fanouts.items()):
            if now >= fanout.deadline:
                del self._fanouts[internal_id]
                self._record(fanout, index, ServerTimeoutError(f"partition {index} did not answer {fanout.op}"))

    def _finish(self, fanout: _FanOut) -> None:
        errors = [r for r in fanout.replies if isinstance(r, ConcordKVError)]
        if fanout.op == "status":
            body = protocol.encode_reply(fanout.request_id, self._status(fanout.replies))
        elif errors:
            body = protocol.encode_error(fanout.request_id, errors[0])
        elif fanout.op == "engine":
            engines = sorted({reply["engine"] for reply in fanout.replies})
            body = protocol.encode_reply(fanout.request_id, engines[0] if len(engines) == 1 else ",".join(engines))
        else:
            body = protocol.encode_reply(fanout.request_id, None)
        self._reply(fanout.envelope, body)

    # ------------------------------------------------------------------ status

    def _sample_processes(self) -> None:
        """Keep a psutil handle per pid so cpu_percent measures the last interval."""
        live = {}
        for entry in read_table(self.spec.process_table):
            if entry.pid is None:
                continue
            process = self._processes.get(entry.pid)
            try:
                if process is None:
                    process = psutil.Process(entry.pid)
                process.cpu_percent(None)
            except psutil.Error:
                continue
            live[entry.pid] = process
        self._processes = live

    def _status(self, partition_replies) -> dict:
        now = time.time()
        processes = []
        for entry in read_table(self.spec.process_table):
            row = {"role": entry.role, "index": entry.index, "pid": entry.pid, "alive": False,
                   "cpu_percent": 0.0, "rss": 0, "uptime": 0.0, "restarts": entry.restarts}
            process = self._processes.get(entry.pid) if entry.pid is not None else None
            if process is not None:
                try:
                    with process.oneshot():
                        row.update(alive=process.is_running(), cpu_percent=process.cpu_percent(None),
                                   rss=process.memory_info().rss, uptime=round(now - entry.started, 3))
                except psutil.Error:
                    pass
            processes.append(row)
        partitions = []
        for index, reply in enumerate(partition_replies):
            if isinstance(reply, ConcordKVError):
                partitions.append({"index": index, "slots": list(self.slot_map.ranges[index]),
                                   "endpoint": self.spec.partition_public_endpoints[index],
                                   "error": f"{reply.code}: {reply}"})
            else:
                partitions.append(reply)
        totals = dict.fromkeys(("bytes_written", "fsyncs", "write_batches"), 0)
        for ring in self.rings:
            for name in totals:
                totals[name] += getattr(ring, name)
        engines = sorted({p["engine"] for p in partitions if "engine" in p})
        return {
            "server": {
                "version": __version__,
                "protocol": protocol.PROTOCOL_VERSION,
                "endpoint": self.spec.endpoint,
                "data_dir": self.spec.data_dir,
                "fsync": self.spec.fsync,
                "engine": ",".join(engines),
                "partitions": self.spec.partitions,
                "uptime": round(now - self.started, 3),
            },
            "processes": processes,
            "partitions": partitions,
            "io_optimizer": {
                "fsync": self.spec.fsync,
                **totals,
                "mean_batch_bytes": round(totals["bytes_written"] / totals["write_batches"], 1) if totals["write_batches"] else 0.0,
            },
        }


def front_main(spec: FrontSpec, supervisor_pid: int) -> None:
    stop = become_child(supervisor_pid)
    context = zmq.Context()
    front = Front(spec, context)
    announce_ready()
    try:
        front.serve(stop)
    finally:
        front.close()
        context.term()
    exit_child(0)
