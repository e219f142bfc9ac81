"""`Client`: the blocking network client, with the methods of the embedded `Database`.

At connect it asks the front for HELLO (protocol version, slot map, partition
endpoints, limits). By default it is a smart client: it keeps a stream connection
(client/channels.py) to every partition, over a Unix socket when the server runs on
this host, and sends single-key requests straight to the owner; multi-key requests
are split by partition and all sent before any reply is awaited (pipelined, so the
partitions work in parallel). If a partition does not answer at connect, or with
`direct=False`, everything goes over ZeroMQ through the front, which routes the same
messages.

Every call has a timeout (`ServerTimeoutError`, also a `TimeoutError`); a lost
connection raises `UnavailableError`. After either, the connection is dropped with
whatever was queued in it, and the next call connects again: a client keeps working
across a server or partition restart. After `close()` every call raises ClosedError.
A `Client` is not thread-safe: use one per thread.
"""

from __future__ import annotations

import itertools
import time

import msgpack
import zmq

from concordkv_mp.arguments import ArgumentChecker
from concordkv_mp.client.routing import (
    PROBE_TIMEOUT,
    ServerMap,
    checked_timeout,
    combine_stats,
    merge_scans,
    scatter,
)
from concordkv_mp.client.channels import CLOSED, StreamChannel, ZmqChannel
from concordkv_mp.errors import ClosedError, ConcordKVError, ServerTimeoutError, UnavailableError, error_from_code
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.protocol import DEFAULT_ENDPOINT



class Client:
    def __init__(
        self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, direct: bool = True, local: bool = True
    ):
        self.timeout = checked_timeout(timeout)
        self.endpoint = endpoint
        # The process's one context, never garbage-collected: a per-client context that
        # the collector finalized before its sockets (a client leaked in a reference
        # cycle) would block forever in term().
        self._context = zmq.Context.instance()
        self._ids = itertools.count(1)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._front = ZmqChannel(self._context, endpoint)
        try:
            self.map = ServerMap.from_hello(self._call(self._front, "hello", protocol.PROTOCOL_VERSION))
            self._checker = ArgumentChecker(self.map.max_key_size, self.map.max_value_size)
            self._partitions = [self._front] * self.map.partitions
            self.direct = direct and self._connect_partitions(local)
        except BaseException:
            self.close()
            raise
        self._partition_of = self.map.slot_map.partition_of

    def _connect_partitions(self, local: bool) -> bool:
        """Reach every partition over the stream transport: by its Unix socket when this
        host has it (and it answers with this server's id), else by its public endpoint.
        False, with everything left to the front, if some partition is unreachable."""
        channels = []
        for partition in range(self.map.partitions):
            endpoint = self.map.local_endpoint(partition) if local else None
            channel = StreamChannel(endpoint) if endpoint else None
            if channel is not None and not self._is_ours(channel):
                channel = None
            channels.append(channel or StreamChannel(self.map.partition_endpoints[partition]))
        try:
            self._call_many([(channel, ("ping",)) for channel in channels], PROBE_TIMEOUT)
        except (ServerTimeoutError, UnavailableError):
            for channel in channels:
                channel.close()
            return False
        self._partitions = channels
        return True

    def _is_ours(self, channel: StreamChannel) -> bool:
        """Whether the partition behind `channel` belongs to this server; closes it if not."""
        try:
            hello = self._call(channel, "hello", protocol.PROTOCOL_VERSION, timeout=PROBE_TIMEOUT)
            ours = hello.get("server_id") == self.map.server_id
        except ConcordKVError:
            ours = False
        if not ours:
            channel.close()
        return ours

    # ------------------------------------------------------------------ transport

    def _call(self, channel, op: str, *args, timeout: float | None = None):
        request_id = next(self._ids)
        seconds = timeout or self.timeout
        try:
            channel.send(self._packer.pack((request_id, op, *args)), seconds)
            while True:
                reply = msgpack.unpackb(channel.receive(seconds), raw=False)
                if reply[0] == request_id:
                    break
                # A reply to a request that timed out earlier: drop it.
        except (ServerTimeoutError, UnavailableError) as exc:
            channel.reset()
            if isinstance(exc, ServerTimeoutError):
                raise ServerTimeoutError(f"no reply to {op} from {channel.endpoint} within {seconds:g} s") from None
            raise
        if reply[1] == protocol.OK:
            return reply[2]
        raise error_from_code(reply[2], reply[3])

    def _call_many(self, calls, timeout: float | None = None) -> list:
        """Send every (channel, (op, *args)) and gather the results in order. Sends and
        reads interleave, so a long pipeline never waits on its own unread replies."""
        seconds = timeout or self.timeout
        waiting: dict[int, int] = {}
        channels = {}
        try:
            for position, (channel, request) in enumerate(calls):
                request_id = next(self._ids)
                channels[id(channel)] = channel
                channel.queue(self._packer.pack((request_id, *request)), seconds)
                waiting[request_id] = position
        except (ServerTimeoutError, UnavailableError):
            self._reset(channels)
            raise
        results: list = [None] * len(calls)
        errors = []
        try:
            self._exchange(list(channels.values()), waiting, results, errors, time.monotonic() + seconds)
        except (ServerTimeoutError, UnavailableError) as exc:
            self._reset(channels)
            if isinstance(exc, ServerTimeoutError):
                raise ServerTimeoutError(f"{len(waiting)} of {len(calls)} replies missing after {seconds:g} s") from None
            raise
        if errors:
            raise errors[0]
        return results

    @staticmethod
    def _exchange(channels, waiting: dict, results: list, errors: list, deadline: float) -> None:
        writing = {id(channel): channel.write_some() for channel in channels}
        poller = zmq.Poller()
        handles = {}
        for channel in channels:
            handles[channel.poll_handle] = channel
            poller.register(channel.poll_handle, zmq.POLLIN | (zmq.POLLOUT if writing[id(channel)] else 0))
        while waiting:
            remaining = deadline - time.monotonic()
            ready = poller.poll(remaining * 1000) if remaining > 0 else []
            if not ready:
                raise ServerTimeoutError("replies missing")
            for handle, events in ready:
                channel = handles[handle]
                if events & zmq.POLLOUT and not channel.write_some():
                    poller.modify(handle, zmq.POLLIN)
                if not events & zmq.POLLIN:
                    continue
                for body in channel.read_available():
                    reply = msgpack.unpackb(body, raw=False)
                    position = waiting.pop(reply[0], None)
                    if position is None:
                        continue
                    if reply[1] == protocol.OK:
                        results[position] = reply[2]
                    else:
                        errors.append(error_from_code(reply[2], reply[3]))

    @staticmethod
    def _reset(channels: dict) -> None:
        for channel in channels.values():
            channel.reset()

    def _channel_for(self, key: bytes):
        return self._partitions[self._partition_of(key)]

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
        try:
            while True:
                for key, value in items:
                    yield key, value
                if cursor is None:
                    return
                cursor, items = self._call(self._partitions[partition], "scan_next", partition, cursor, page)
        finally:
            if cursor is not None:  # abandoned early: free the server's snapshot now
                try:
                    self._call(self._partitions[partition], "scan_close", partition, cursor)
                except (ServerTimeoutError, UnavailableError, ClosedError):
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
        self._call(self._front, "set_engine", name, timeout=protocol.SWITCH_TIMEOUT)

    def ping(self) -> str:
        return self._call(self._front, "ping")

    def close(self) -> None:
        """Close every connection; later calls raise ClosedError."""
        channels = {id(c): c for c in [self._front, *getattr(self, "_partitions", [])]}
        for channel in channels.values():
            channel.close()
        self._front = CLOSED
        self._partitions = [CLOSED] * len(getattr(self, "_partitions", ()))

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


def connect(
    endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, direct: bool = True, local: bool = True
) -> Client:
    """Connect to a ConcordKV-MP server; raises ServerTimeoutError if it does not answer.

    `direct`: talk to the partitions themselves (else everything goes through the front).
    `local`: on the server's host, reach them by their Unix sockets (else by TCP)."""
    return Client(endpoint, timeout=timeout, direct=direct, local=local)
