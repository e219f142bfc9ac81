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
from concordkv_mp.client.channels import CLOSED, StreamChannel, ZmqChannel
from concordkv_mp.client.methods import SYNC, with_operations
from concordkv_mp.client.routing import PROBE_TIMEOUT, ServerMap, checked_timeout
from concordkv_mp.client.scan_merge import ScanMerge
from concordkv_mp.errors import ClosedError, ConcordKVError, ServerTimeoutError, UnavailableError
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.protocol import DEFAULT_ENDPOINT, decode_reply


@with_operations(SYNC)
class Client:
    """A connection to a server; `get`, `set`, `mget`, `count` ... come from the
    operation table (client/methods.py), `scan` is written here."""

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
        channels = [self._reach(partition, local) for partition in range(self.map.partitions)]
        try:
            self._call_many([(channel, ("ping",)) for channel in channels], PROBE_TIMEOUT)
        except (ServerTimeoutError, UnavailableError):
            for channel in channels:
                channel.close()
            return False
        self._partitions = channels
        return True

    def _reach(self, partition: int, local: bool) -> StreamChannel:
        endpoint = self.map.local_endpoint(partition) if local else None
        if endpoint is not None:
            channel = StreamChannel(endpoint)
            if self._is_ours(channel):
                return channel
            channel.close()
        return StreamChannel(self.map.partition_endpoints[partition])

    def _is_ours(self, channel: StreamChannel) -> bool:
        try:
            return self.map.is_ours(self._call(channel, "hello", protocol.PROTOCOL_VERSION, timeout=PROBE_TIMEOUT))
        except ConcordKVError:
            return False

    # ------------------------------------------------------------------ transport

    def _call(self, channel, op: str, *args, timeout: float | None = None):
        request_id = next(self._ids)
        seconds = timeout or self.timeout
        try:
            channel.send(self._packer.pack((request_id, op, *args)), seconds)
            while True:
                reply_id, result, error = decode_reply(channel.receive(seconds))
                if reply_id == request_id:
                    break
                # A reply to a request that timed out earlier: drop it.
        except (ServerTimeoutError, UnavailableError) as exc:
            channel.reset()
            if isinstance(exc, ServerTimeoutError):
                raise ServerTimeoutError(f"no reply to {op} from {channel.endpoint} within {seconds:g} s") from None
            raise
        if error is not None:
            raise error
        return result

    def _call_many(self, calls, timeout: float | None = None) -> list:
        """Send every (channel, (op, *args)) and gather the results in order. Sends and
        reads interleave, so a long pipeline never waits on its own unread replies."""
        if not calls:
            return []
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
                    reply_id, result, error = decode_reply(body)
                    position = waiting.pop(reply_id, None)
                    if position is None:
                        continue
                    if error is None:
                        results[position] = result
                    else:
                        errors.append(error)

    @staticmethod
    def _reset(channels: dict) -> None:
        for channel in channels.values():
            channel.reset()

    # ------------------------------------------------------------------ scans

    def scan(self, start=None, end=None, prefix=None, reverse: bool = False, limit: int | None = None):
        """(key, value) pairs with start <= key < end (and the prefix), in key order.

        Each partition serves its share from one snapshot, in pages; the pages of all
        partitions are merged here. The first pages are requested from every partition
        at once, by this call.
        """
        start, end, empty = self._checker.scan_range(start, end, prefix, limit)
        if empty:
            return iter(())
        reverse = bool(reverse)
        page = self.map.scan_page_size if limit is None else min(limit, self.map.scan_page_size)
        partitions = self._partitions
        firsts = self._call_many([(partitions[p], ("scan", p, start, end, reverse, page)) for p in range(len(partitions))])
        return self._scan_pairs(ScanMerge(self._channel_of, firsts, reverse, page, limit))

    def _channel_of(self, partition: int):
        return self._partitions[partition]

    def _scan_pairs(self, merge: ScanMerge):
        try:
            while True:
                yield from merge.take()
                requests = merge.next_pages()
                if not requests:
                    return
                merge.feed(self._call_many(requests))
        finally:
            try:
                self._call_many(merge.close_requests())
            except (ServerTimeoutError, UnavailableError, ClosedError):
                pass  # best effort: a cursor left open expires on the server by itself

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


def connect(
    endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, direct: bool = True, local: bool = True
) -> Client:
    """Connect to a ConcordKV-MP server; raises ServerTimeoutError if it does not answer.

    `direct`: talk to the partitions themselves (else everything goes through the front).
    `local`: on the server's host, reach them by their Unix sockets (else by TCP)."""
    return Client(endpoint, timeout=timeout, direct=direct, local=local)
