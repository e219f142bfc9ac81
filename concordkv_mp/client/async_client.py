"""`AsyncClient`: the asyncio network client, with the methods of the blocking `Client`
as coroutines and many requests in flight on one connection.

Owns the asyncio transport: one DEALER socket per server endpoint (the front, and one
per partition when direct), each with ONE reader task that resolves the futures of a
`request_id -> Future` table. A caller sends its frame and awaits its future, so
`await asyncio.gather(*(c.get(k) for k in keys))` pipelines every get. The routing
rules (HELLO, slot map, batch splitting) come from routing.py and the argument checks
from arguments.py, shared with the sync client; this module must not restate them.

Every call has a timeout (`ServerTimeoutError`). After one, the socket it was sent on
is replaced: requests still queued in it are dropped instead of reaching a restarted
server late, and the futures still waiting on it fail with `ServerTimeoutError` at
once. Replies that arrive for a dropped future are ignored. An `AsyncClient` belongs
to the event loop it was connected in.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import zlib

import msgpack
import zmq
import zmq.asyncio

from concordkv_mp.arguments import ArgumentChecker
from concordkv_mp.client.routing import (
    PROBE_TIMEOUT,
    SWITCH_TIMEOUT,
    ServerMap,
    combine_stats,
    scatter,
)
from concordkv_mp.errors import ClosedError, ServerTimeoutError, UnavailableError, error_from_code
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.protocol import DEFAULT_ENDPOINT



class _Channel:
    """One DEALER socket to one endpoint, its reader task and its waiting futures."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str):
        self.context = context
        self.endpoint = endpoint
        self.waiting: dict[int, asyncio.Future] = {}
        self.socket = None
        self.reader = None
        self.open()

    def open(self) -> None:
        socket = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        # No send high-water mark: a send that blocked would hold a request outside the
        # waiting table, where a timeout could not drop it. The caller's own concurrency
        # bounds the queue, and the server's receive limit pushes back through TCP.
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.connect(self.endpoint)
        self.socket = socket
        self.reader = asyncio.get_running_loop().create_task(self._read(socket, self.waiting))

    @staticmethod
    async def _read(socket, waiting: dict) -> None:
        # After each awaited message, drain what else is queued through a blocking
        # twin of the socket (zmq.NOBLOCK): one reply per trip through pyzmq's asyncio
        # machinery costs more than the reply itself. The next awaited recv checks the
        # socket's events before it sleeps, so nothing drained this way is missed.
        drain = zmq.Socket.shadow(socket.underlying).recv
        unpackb, ok, again = msgpack.unpackb, protocol.OK, zmq.Again
        while True:
            try:
                frames = [await socket.recv()]
                while True:
                    try:
                        frames.append(drain(zmq.NOBLOCK))
                    except again:
                        break
            except zmq.ZMQError:  # the socket was closed under us: replace() or close()
                return
            for frame in frames:
                try:
                    reply = unpackb(frame, raw=False)
                    future = waiting.pop(reply[0], None)
                    if future is None or future.done():
                        continue  # late: its caller timed out or gave up
                    if reply[1] == ok:
                        future.set_result(reply[2])
                    else:
                        future.set_exception(error_from_code(reply[2], reply[3]))
                except Exception:  # a garbled reply names no caller to tell: that caller times out
                    continue

    def replace(self, reason: str) -> None:
        """Drop the socket and what is queued in it; fail its waiting futures."""
        self._shut(lambda: ServerTimeoutError(f"dropped with the connection to {self.endpoint}: {reason}"))
        self.waiting = {}
        self.open()

    def close(self) -> asyncio.Task:
        self._shut(lambda: ClosedError("the client was closed"))
        return self.reader

    def _shut(self, make_error) -> None:
        self.reader.cancel()
        self.socket.close(0)
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(make_error())
        self.waiting.clear()


class AsyncClient:
    """Made by `await connect(endpoint)`; use as `async with await connect(...) as c:`."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, direct: bool = True):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.direct = False
        self.map: ServerMap | None = None
        self._wanted_direct = direct
        self._context = zmq.asyncio.Context()
        self._ids = itertools.count(1)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._front: _Channel | None = None
        self._partitions: list[_Channel] = []
        self._closed = False

    async def _connect(self) -> None:
        self._front = _Channel(self._context, self.endpoint)
        self.map = ServerMap.from_hello(await self._call(self._front, "hello", protocol.PROTOCOL_VERSION))
        self._checker = ArgumentChecker(self.map.max_key_size, self.map.max_value_size)
        self._owner = self.map.slot_map.owners
        self._partitions = [self._front] * self.map.partitions
        self.direct = self._wanted_direct and await self._probe_partitions()

    async def _probe_partitions(self) -> bool:
        channels = [_Channel(self._context, endpoint) for endpoint in self.map.partition_endpoints]
        try:
            await self._gather([self._call(channel, "ping", timeout=PROBE_TIMEOUT) for channel in channels])
        except BaseException as exc:
            # Open sockets would hang Context.term() in close(): shut these whatever happened.
            await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)
            if isinstance(exc, (ServerTimeoutError, UnavailableError)):
                # Unreachable from here (NAT, another host's loopback...): the front routes
                # the same frames, so everything goes through it.
                return False
            raise
        self._partitions = channels
        return True

    # ------------------------------------------------------------------ transport

    async def _call(self, channel: _Channel, op: str, *args, timeout: float | None = None):
        if self._closed:
            raise ClosedError("the client was closed")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        waiting, socket = channel.waiting, channel.socket
        waiting[request_id] = future
        seconds = timeout or self.timeout
        try:
            async with asyncio.timeout(seconds):
                await socket.send(self._packer.pack((request_id, op, *args)))
                return await future
        except ServerTimeoutError:
            raise  # failed by a replace() that another caller's timeout triggered
        except TimeoutError:
            message = f"no reply to {op} from {channel.endpoint} within {seconds:g} s"
            if channel.socket is socket:  # not yet replaced by an earlier timeout
                channel.replace(message)
            raise ServerTimeoutError(message) from None
        finally:
            waiting.pop(request_id, None)

    async def _gather(self, calls: list):
        """Run the calls concurrently; every one finishes before the first error is raised."""
        if len(calls) == 1:
            return [await calls[0]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    def _channel_for(self, key: bytes) -> _Channel:
        return self._partitions[self._owner[zlib.crc32(key) & (protocol.SLOT_COUNT - 1)]]

    async def _each_partition(self, op: str, *args) -> list:
        return await self._gather([self._call(self._partitions[i], op, i, *args) for i in range(self.map.partitions)])

    # ------------------------------------------------------------------ single keys

    async def get(self, key) -> bytes | None:
        if type(key) is not bytes or not 0 < len(key) <= self._checker.max_key:
            key = self._checker.key(key)
        return await self._call(self._channel_for(key), "get", key)

    async def set(self, key, value) -> None:
        if type(key) is not bytes or not 0 < len(key) <= self._checker.max_key:
            key = self._checker.key(key)
        if type(value) is not bytes or len(value) > self._checker.max_value:
            value = self._checker.value(value)
        await self._call(self._channel_for(key), "set", key, value)

    async def delete(self, key) -> bool:
        key = self._checker.key(key)
        return await self._call(self._channel_for(key), "delete", key)

    async def exists(self, key) -> bool:
        key = self._checker.key(key)
        return await self._call(self._channel_for(key), "exists", key)

    async def update(self, key, value) -> bool:
        key, value = self._checker.key(key), self._checker.value(value)
        return await self._call(self._channel_for(key), "update", key, value)

    # ------------------------------------------------------------------ many keys

    async def mget(self, keys) -> list:
        keys = self._checker.keys(keys)
        if not keys:
            return []
        chunks = self.map.split_keys(keys)
        replies = await self._gather([self._call(self._partitions[p], "mget", p, chunk) for p, _, chunk in chunks])
        return scatter(chunks, replies, len(keys))

    async def mset(self, mapping_or_pairs) -> None:
        """Set many keys; atomic within each partition (not across partitions)."""
        pairs = self._checker.pairs(mapping_or_pairs)
        if pairs:
            chunks = self.map.split_pairs(pairs)
            await self._gather([self._call(self._partitions[p], "mset", p, chunk) for p, chunk in chunks])

    async def mdelete(self, keys) -> int:
        keys = list(dict.fromkeys(self._checker.keys(keys)))
        if not keys:
            return 0
        chunks = self.map.split_keys(keys)
        return sum(await self._gather([self._call(self._partitions[p], "mdelete", p, chunk) for p, _, chunk in chunks]))

    # ------------------------------------------------------------------ scans

    def scan(self, start=None, end=None, prefix=None, reverse: bool = False, limit: int | None = None):
        """An async iterator of (key, value) with start <= key < end (and the prefix), in
        key order: `async for key, value in c.scan(...)`.

        Arguments are checked now; the first pages are requested from every partition at
        once on the first iteration. Each partition serves its share from one snapshot.
        Stopping early closes the server cursors when the iterator is closed: at once
        with `contextlib.aclosing(c.scan(...))`, otherwise when asyncio finalizes it.
        """
        start, end, empty = self._checker.scan_range(start, end, prefix, limit)
        return self._scan(start, end, bool(reverse), limit, empty)

    async def _scan(self, start, end, reverse: bool, limit: int | None, empty: bool):
        if empty:
            return
        page = self.map.scan_page_size if limit is None else min(limit, self.map.scan_page_size)
        firsts = await self._open_cursors(start, end, reverse, page)
        cursors = [cursor for cursor, _ in firsts]
        pages = [items for _, items in firsts]
        positions = [0] * len(pages)

        async def settle(p: int, position: int) -> bool:
            """Fetch partition p's pages until one has an item at `position`; False
            once the partition has no more."""
            while position == len(pages[p]) and cursors[p] is not None:
                cursors[p], pages[p] = await self._call(self._partitions[p], "scan_next", p, cursors[p], page)
                position = 0
            positions[p] = position
            return position < len(pages[p])

        # The k-way merge holds the head of each partition's stream. Partitions own
        # disjoint keys, so (key, partition) never ties; reverse order inverts the keys.
        order = _Descending if reverse else bytes
        taken = 0
        try:
            heap = [(order(pages[p][0][0]), p) for p in range(len(pages)) if await settle(p, 0)]
            heapq.heapify(heap)
            while heap:
                p = heap[0][1]
                key, value = pages[p][positions[p]]
                yield key, value
                taken += 1
                if taken == limit:
                    return
                if await settle(p, positions[p] + 1):
                    heapq.heapreplace(heap, (order(pages[p][positions[p]][0]), p))
                else:
                    heapq.heappop(heap)
        finally:
            await self._close_cursors(cursors)

    async def _open_cursors(self, start, end, reverse: bool, page: int) -> list:
        calls = [self._call(self._partitions[p], "scan", p, start, end, reverse, page) for p in range(self.map.partitions)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            # Partitions that did open a cursor must not keep its snapshot pinned.
            await self._close_cursors([None if isinstance(r, BaseException) else r[0] for r in results])
            raise failures[0]
        return results

    async def _close_cursors(self, cursors: list) -> None:
        calls = [
            self._call(self._partitions[p], "scan_close", p, cursor) for p, cursor in enumerate(cursors) if cursor is not None
        ]
        # Best effort: a cursor that cannot be closed expires on the server by itself.
        await asyncio.gather(*calls, return_exceptions=True)

    # ------------------------------------------------------------------ whole database

    async def count(self) -> int:
        return sum(await self._each_partition("count"))

    async def stats(self) -> dict:
        per_partition = await self._each_partition("stats")
        return combine_stats(per_partition)

    async def flush(self) -> None:
        await self._each_partition("flush")

    async def compact(self) -> None:
        await self._each_partition("compact")

    async def status(self) -> dict:
        return await self._call(self._front, "status")

    async def engine(self) -> str:
        """The engine's name (a method here, where the sync client has a property)."""
        return await self._call(self._front, "engine")

    async def switch_engine(self, name: str) -> None:
        """Switch every partition to engine `name` (each one's data is copied)."""
        await self._call(self._front, "set_engine", name, timeout=SWITCH_TIMEOUT)

    async def ping(self) -> str:
        return await self._call(self._front, "ping")

    async def close(self) -> None:
        """Close every socket; calls still waiting fail with ClosedError."""
        if self._closed:
            return
        self._closed = True
        channels = {id(c): c for c in [self._front, *self._partitions] if c is not None}
        readers = [channel.close() for channel in channels.values()]
        await asyncio.gather(*readers, return_exceptions=True)
        self._context.term()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def __repr__(self) -> str:
        partitions = self.map.partitions if self.map else "?"
        return f"<concordkv_mp.aio.AsyncClient {self.endpoint} partitions={partitions} direct={self.direct}>"


class _Descending:
    """A key that sorts backwards, so one min-heap serves reverse scans."""

    __slots__ = ("key",)

    def __init__(self, key: bytes):
        self.key = key

    def __lt__(self, other: "_Descending") -> bool:
        return self.key > other.key


async def connect(endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, direct: bool = True) -> AsyncClient:
    """Connect to a ConcordKV-MP server; raises ServerTimeoutError if it does not answer."""
    client = AsyncClient(endpoint, timeout=timeout, direct=direct)
    try:
        await client._connect()
    except BaseException:
        await client.close()
        raise
    return client
