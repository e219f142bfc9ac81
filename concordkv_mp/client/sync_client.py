"""`Client`: the blocking network client, with the methods of the embedded `Database`.

At connect it asks the front for HELLO (protocol version, slot map, partition
endpoints, limits). By default it is a smart client: single-key requests go straight
to the owning partition's endpoint, and multi-key requests are split by partition and
sent to all of them before any reply is awaited (pipelined, so the partitions work in
parallel). If a partition endpoint does not answer at connect, or with `direct=False`,
everything goes through the front, which routes the same frames.

Every call has a timeout (`ServerTimeoutError`, also a `TimeoutError`). After a
timeout the socket is replaced: requests still queued in it are dropped instead of
reaching a restarted server late, and the new socket reconnects by itself.
A `Client` is not thread-safe (ZeroMQ sockets are not): use one per thread.
"""

from __future__ import annotations

import itertools
import time
import zlib

import msgpack
import zmq

from concordkv_mp.arguments import ArgumentChecker
from concordkv_mp.client.routing import (
    PROBE_TIMEOUT,
    SWITCH_TIMEOUT,
    ServerMap,
    combine_stats,
    merge_scans,
    scatter,
)
from concordkv_mp.errors import ServerTimeoutError, UnavailableError, error_from_code
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.protocol import DEFAULT_ENDPOINT



class _Channel:
    """One DEALER socket to one server endpoint, replaced after a timeout."""

    def __init__(self, context, endpoint: str):
        self.context = context
        self.endpoint = endpoint
        self.socket = None
        self.open()

    def open(self) -> None:
        socket = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.endpoint)
        self.socket = socket

    def reset(self) -> None:
        self.socket.close(0)
        self.open()

    def close(self) -> None:
        self.socket.close(0)


class Client:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, direct: bool = True):
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self._context = zmq.Context()
        self._ids = itertools.count(1)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._front = _Channel(self._context, endpoint)
        try:
            self.map = ServerMap.from_hello(self._call(self._front, "hello", protocol.PROTOCOL_VERSION))
            self._checker = ArgumentChecker(self.map.max_key_size, self.map.max_value_size)
            self._partitions = [self._front] * self.map.partitions
            self.direct = direct and self._probe_partitions()
        except BaseException:
            self.close()
            raise
        self._owner = self.map.slot_map.owners

    def _probe_partitions(self) -> bool:
        channels = [_Channel(self._context, endpoint) for endpoint in self.map.partition_endpoints]
        try:
            self._call_many([(channel, ("ping",)) for channel in channels], PROBE_TIMEOUT)
        except (ServerTimeoutError, UnavailableError):
            for channel in channels:
                channel.close()
            return False
        self._partitions = channels
        return True

    # ------------------------------------------------------------------ transport

    def _call(self, channel: _Channel, op: str, *args, timeout: float | None = None):
        request_id = next(self._ids)
        socket = channel.socket
        socket.send(self._packer.pack((request_id, op, *args)))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not socket.poll(remaining * 1000):
                channel.reset()
                raise ServerTimeoutError(f"no reply to {op} from {channel.endpoint} within {timeout or self.timeout:g} s")
            reply = msgpack.unpackb(socket.recv(), raw=False)
            if reply[0] == request_id:
                if reply[1] == protocol.OK:
                    return reply[2]
                raise error_from_code(reply[2], reply[3])
            # A reply to a request that timed out earlier: drop it.

    def _call_many(self, calls, timeout: float | None = None) -> list:
        """Send every (channel, (op, *args)) first, then gather the results in order."""
        waiting: dict[int, int] = {}
        for position, (channel, request) in enumerate(calls):
            request_id = next(self._ids)
            channel.socket.send(self._packer.pack((request_id, *request)))
            waiting[request_id] = position
        results: list = [None] * len(calls)
        errors = []
        sockets = {id(channel.socket): channel for channel, _ in calls}
        poller = zmq.Poller()
        for channel in sockets.values():
            poller.register(channel.socket, zmq.POLLIN)
        deadline = time.monotonic() + (timeout or self.timeout)
        while waiting:
            remaining = deadline - time.monotonic()
            ready = poller.poll(remaining * 1000) if remaining > 0 else []
            if not ready:
                for channel in sockets.values():
                    channel.reset()
                raise ServerTimeoutError(f"{len(waiting)} of {len(calls)} replies missing after {timeout or self.timeout:g} s")
            for socket, _ in ready:
                while True:
                    try:
                        reply = msgpack.unpackb(socket.recv(zmq.NOBLOCK), raw=False)
                    except zmq.Again:
                        break
                    position = waiting.pop(reply[0], None)
                    if position is None:
                        continue
                    if reply[1] == protocol.OK:
                        results[position] = reply[2]
                    else:
                        errors.append(error_from_code(reply[2], reply[3]))
        if errors:
            raise errors[0]
        return results

    def _channel_for(self, key: bytes) -> _Channel:
        return self._partitions[self._owner[zlib.crc32(key) & (protocol.SLOT_COUNT - 1)]]

    def _each_partition(self, op: str, *args) -> list:
        return self._call_many([(self._partitions[i], (op, i, *args)) for i in range(self.map.partitions)])

    # ------------------------------------------------------------------ single keys

    def get(self, key) -> bytes | None:
        if type(key) is not bytes or not 0 < len(key) <= self._checker.max_key:
            key = self._checker.key(key)
        return self._call(self._channel_for(key), "get", key)

    def set(self, key, value) -> None:
        if type(key) is not bytes or not 0 < len(key) <= self._checker.max_key:
            key = self._checker.key(key)
        if type(value) is not bytes or len(value) > self._checker.max_value:
            value = self._checker.value(value)
        self._call(self._channel_for(key), "set", key, value)

    def delete(self, key) -> bool:
        key = self._checker.key(key)
        return self._call(self._channel_for(key), "delete", key)

    def exists(self, key) -> bool:
        key = self._checker.key(key)
        return self._call(self._channel_for(key), "exists", key)

    def update(self, key, value) -> bool:
        key, value = self._checker.key(key), self._checker.value(value)
        return self._call(self._channel_for(key), "update", key, value)

    # ------------------------------------------------------------------ many keys

    def mget(self, keys) -> list:
        keys = self._checker.keys(keys)
        chunks = self.map.split_keys(keys)
        replies = self._call_many([(self._partitions[p], ("mget", p, chunk)) for p, _, chunk in chunks])
        return scatter(chunks, replies, len(keys))

    def mset(self, mapping_or_pairs) -> None:
        """Set many keys; atomic within each partition (not across partitions)."""
        pairs = self._checker.pairs(mapping_or_pairs)
        if pairs:
            self._call_many([(self._partitions[p], ("mset", p, chunk)) for p, chunk in self.map.split_pairs(pairs)])

    def mdelete(self, keys) -> int:
        keys = list(dict.fromkeys(self._checker.keys(keys)))
        if not keys:
            return 0
        chunks = self.map.split_keys(keys)
        return sum(self._call_many([(self._partitions[p], ("mdelete", p, chunk)) for p, _, chunk in chunks]))

    # ------------------------------------------------------------------ scans

    def scan(self, start=None, end=None, prefix=None, reverse: bool = False, limit: int | None = None):
        """(key, value) pairs with start <= key < end (and the prefix), in key order.

        Each partition serves its share from one snapshot, in pages; the pages of all
        partitions are merged here. The first pages are requested from every partition
        at once.
        """
        start, end, empty = self._checker.scan_range(start, end, prefix, limit)
        if empty:
            return iter(())
        reverse = bool(reverse)
        page = self.map.scan_page_size if limit is None else min(limit, self.map.scan_page_size)
        firsts = self._each_partition("scan", start, end, reverse, page)
        streams = [self._scan_stream(p, cursor, items, page) for p, (cursor, items) in enumerate(firsts)]
        merged = merge_scans(streams, reverse)
        return merged if limit is None else _take(merged, limit, streams)

    def _scan_stream(self, partition: int, cursor, items, page: int):
        channel = self._partitions[partition]
        try:
            while True:
                for key, value in items:
                    yield key, value
                if cursor is None:
                    return
                cursor, items = self._call(channel, "scan_next", partition, cursor, page)
        finally:
            if cursor is not None:  # abandoned early: free the server's snapshot now
                try:
                    self._call(channel, "scan_close", partition, cursor)
                except (ServerTimeoutError, UnavailableError):
                    pass

    # ------------------------------------------------------------------ whole database

    def count(self) -> int:
        return sum(self._each_partition("count"))

    def stats(self) -> dict:
        per_partition = self._each_partition("stats")
        return combine_stats(per_partition)

    def flush(self) -> None:
        self._each_partition("flush")

    def compact(self) -> None:
        self._each_partition("compact")

    def status(self) -> dict:
        return self._call(self._front, "status")

    @property
    def engine(self) -> str:
        return self._call(self._front, "engine")

    def switch_engine(self, name: str) -> None:
        """Switch every partition to engine `name` (each one's data is copied)."""
        self._call(self._front, "set_engine", name, timeout=SWITCH_TIMEOUT)

    def ping(self) -> str:
        return self._call(self._front, "ping")

    def close(self) -> None:
        channels = {id(c): c for c in [self._front, *getattr(self, "_partitions", [])]}
        for channel in channels.values():
            channel.close()
        self._context.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<concordkv_mp.Client {self.endpoint} partitions={self.map.partitions} direct={self.direct}>"


def _take(merged, limit: int, streams):
    taken = 0
    try:
        for pair in merged:
            yield pair
            taken += 1
            if taken == limit:
                return
    finally:
        for stream in streams:
            stream.close()


def connect(endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, direct: bool = True) -> Client:
    """Connect to a ConcordKV-MP server; raises ServerTimeoutError if it does not answer."""
    return Client(endpoint, timeout=timeout, direct=direct)
