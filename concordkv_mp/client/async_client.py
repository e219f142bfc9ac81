"""`AsyncClient`: the asyncio network client, with the methods of the blocking `Client`
as coroutines and many requests in flight on one connection.

Owns the asyncio transport: a DEALER socket (zmq.asyncio) to the front, read by ONE
reader task, and, when direct, a stream connection (ipc/stream.py) to each partition,
an `asyncio.Protocol` whose `data_received` cuts the replies. Either kind resolves
the futures of its own `request_id -> Future` table, so
`await asyncio.gather(*(c.get(k) for k in keys))` pipelines every get, and replies
that come out of request order (writes held for fsync) still find their callers.
Partitions are reached by their Unix socket when the server runs on this host (and
that socket answers with the front's server id), else by their public endpoint. The
routing rules (HELLO, slot map, batch splitting) come from routing.py, the framing
from ipc/stream.py and the argument checks from arguments.py, shared with the sync
client; this module must not restate them.

Every call has a timeout (`ServerTimeoutError`), kept by ONE timer per connection
over its deadlines, not one per call. After a timeout the connection is dropped:
requests still queued in it go with it instead of reaching a restarted server late,
and the futures still waiting on it fail with `ServerTimeoutError` at once. A lost
connection fails its futures with `UnavailableError`. Either way the next call
connects again (retrying a partition that refuses while it restarts, within the
call's timeout). Replies that arrive for a dropped future are ignored. An
`AsyncClient` belongs to the event loop it was connected in.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections import deque

import msgpack
import zmq
import zmq.asyncio

from concordkv_mp.arguments import ArgumentChecker
from concordkv_mp.client.methods import ASYNC, with_operations
from concordkv_mp.client.routing import PROBE_TIMEOUT, RECONNECT_FIRST, RECONNECT_MAX, ServerMap, checked_timeout
from concordkv_mp.client.scan_merge import ScanMerge
from concordkv_mp.errors import ClosedError, ConcordKVError, ServerTimeoutError, UnavailableError, error_from_code
from concordkv_mp.ipc import protocol, stream
from concordkv_mp.ipc.protocol import decode_reply
from concordkv_mp.ipc.protocol import DEFAULT_ENDPOINT


def _closed_error() -> ClosedError:
    return ClosedError("the client was closed")


def _retrieve(future: asyncio.Future) -> None:
    """Mark a future's exception as seen: whoever wanted it has its own error by now."""
    if not future.cancelled():
        future.exception()


class _Link:
    """One connection's calls: the `request_id -> Future` table, and the deadlines in
    one deque per timeout length (so each deque's deadlines only grow), watched by ONE
    timer. The timer wakes at the earliest deadline it knows, skips the calls answered
    since, and sleeps again until the oldest one still waiting is due: under load about
    once per timeout length, however many calls pass."""

    def __init__(self, channel):
        self.channel = channel
        self.loop = channel.loop
        self.waiting: dict[int, asyncio.Future] = {}
        self.dropped = False
        # An error reply that names no request: the server refused what it could not
        # read. A partition drops the connection next, and its loss is reported as this.
        self.refusal: ConcordKVError | None = None
        self._deadlines: dict[float, deque] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def expect(self, request_id: int, op: str, seconds: float, deadline: float | None = None) -> asyncio.Future:
        """The future of a request just sent, failed with ServerTimeoutError at `deadline`
        (`seconds` from now by default) unless its reply comes first."""
        future = self.loop.create_future()
        self.waiting[request_id] = future
        if deadline is None:
            deadline = self.loop.time() + seconds
        queue = self._deadlines.get(seconds)
        if queue is None:
            queue = self._deadlines[seconds] = deque()
        elif queue and queue[-1][0] > deadline:
            deadline = queue[-1][0]  # it waited for the connection: keep the deque in order
        queue.append((deadline, request_id, op))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        return future

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._check)
        self._timer_at = when

    def _forget_answered(self) -> None:
        """Drop the deadlines at the head of each deque whose calls no longer wait."""
        waiting = self.waiting
        for queue in self._deadlines.values():
            while queue:
                future = waiting.get(queue[0][1])
                if future is not None and not future.done():
                    break
                queue.popleft()

    def _check(self) -> None:
        self._timer = None
        self._forget_answered()
        now = self.loop.time()
        earliest = None
        for seconds, queue in self._deadlines.items():
            if not queue:
                continue
            deadline, request_id, op = queue[0]
            if deadline <= now:
                self._expire(request_id, f"no reply to {op} from {self.channel.endpoint} within {seconds:g} s")
                return
            if earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._arm(earliest)

    def _expire(self, request_id: int, message: str) -> None:
        self.waiting.pop(request_id).set_exception(ServerTimeoutError(message))
        endpoint = self.channel.endpoint
        self.drop(lambda: ServerTimeoutError(f"dropped with the connection to {endpoint}: {message}"))

    def _settle(self, bodies) -> None:
        """Resolve the futures that these reply bodies answer."""
        waiting = self.waiting
        for body in bodies:
            try:
                request_id, result, error = decode_reply(body)
            except Exception:  # a garbled reply names no caller to tell: that caller times out
                continue
            future = waiting.pop(request_id, None)
            if future is None:
                if request_id is None and error is not None:
                    self.refusal = error
                continue  # late: its caller timed out or gave up
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        # Replies come mostly in order, so a deque stays about as long as the table.
        self._forget_answered()

    def drop(self, make_error) -> None:
        """Fail every waiting future with `make_error()`, close the connection and let
        the channel's next call make a new one."""
        if self.dropped:
            return
        self.dropped = True
        if self.channel.link is self:
            self.channel.link = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(make_error())
        self.waiting.clear()
        self._close()

    def _close(self) -> None:
        raise NotImplementedError


class _StreamLink(_Link, asyncio.Protocol):
    """A stream connection to a partition. Requests go straight to `transport.write`;
    `data_received` cuts the replies out of what the socket delivers."""

    def __init__(self, channel):
        super().__init__(channel)
        self.transport: asyncio.Transport | None = None
        self.lost = self.loop.create_future()  # done once asyncio let go of the socket
        self._reader = stream.MessageReader()

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            # A request is one small write that must leave now, not wait for more.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(stream.PREAMBLE)

    def send(self, body: bytes) -> None:
        transport = self.transport
        if transport.is_closing():  # lost, and connection_lost() not yet run
            raise UnavailableError(f"lost the connection to {self.channel.endpoint}")
        transport.write(stream.frame(body))

    def data_received(self, data: bytes) -> None:
        bodies = self._reader.feed(data)
        if bodies:
            self._settle(bodies)

    def eof_received(self) -> None:
        self._lose(None)  # fail the waiting calls now; asyncio closes the socket next

    def connection_lost(self, exc) -> None:
        self._lose(exc)
        self.channel.links.discard(self)
        self.lost.set_result(None)

    def _lose(self, exc) -> None:
        refusal = self.refusal
        if refusal is not None:
            self.drop(lambda: error_from_code(refusal.code, str(refusal)))
        else:
            reason = f"lost the connection to {self.channel.endpoint}: {exc or 'closed by the server'}"
            self.drop(lambda: UnavailableError(reason))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # whatever is still queued in it goes too


class _Channel:
    """One endpoint and its current connection (`link`): None until a call connects,
    and again once a timeout or a loss drops it, so that the next call connects anew."""

    def __init__(self, loop, endpoint: str):
        self.loop = loop
        self.endpoint = endpoint
        self.link: _Link | None = None
        self.closed = False

    @property
    def waiting(self) -> dict:
        return self.link.waiting if self.link is not None else {}


class _StreamChannel(_Channel):
    """A partition over the stream transport. Its connection is made by the first call
    and made again by the first call after a timeout or a loss; while a partition
    restarts, refused connections are retried within the calling call's timeout."""

    def __init__(self, loop, endpoint: str):
        super().__init__(loop, endpoint)
        self.links: set[_StreamLink] = set()  # every one not yet let go of by asyncio
        self._opening: asyncio.Task | None = None

    def _timed_out(self, seconds: float) -> ServerTimeoutError:
        return ServerTimeoutError(f"no connection to {self.endpoint} within {seconds:g} s")

    def _new_link(self) -> _StreamLink:
        link = _StreamLink(self)
        self.links.add(link)
        return link

    async def connect(self, deadline: float, seconds: float) -> _StreamLink:
        """The channel's connection, made if there is none (by one task that every
        caller waiting for it shares)."""
        if self.closed:
            raise _closed_error()
        opening = self._opening
        if opening is None or opening.done():
            opening = self._opening = self.loop.create_task(self._open(deadline, seconds))
            opening.add_done_callback(_retrieve)
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.wait((opening,))
        except TimeoutError:
            raise self._timed_out(seconds) from None
        if self.closed:
            raise _closed_error()
        error = opening.exception()
        if error is not None:
            if isinstance(error, ConcordKVError):
                raise type(error)(*error.args) from None  # each caller its own instance
            raise error
        if self.link is None:
            raise UnavailableError(f"lost the connection to {self.endpoint} as it was made")
        return self.link

    async def _open(self, deadline: float, seconds: float) -> None:
        loop = self.loop
        family, address = stream.address_of(self.endpoint)
        delay = RECONNECT_FIRST
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    if family == socket.AF_UNIX:
                        _, link = await loop.create_unix_connection(self._new_link, address)
                    else:
                        _, link = await loop.create_connection(self._new_link, *address, family=family)
                break
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                # A restarting partition refuses for a moment: try again while time is left.
                if loop.time() + delay > deadline:
                    raise UnavailableError(f"{self.endpoint} refuses connections: {exc}") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            except TimeoutError:
                raise self._timed_out(seconds) from None
            except OSError as exc:
                raise UnavailableError(f"cannot connect to {self.endpoint}: {exc}") from None
        if not link.dropped:
            self.link = link

    async def close(self) -> None:
        """Fail the waiting calls with ClosedError; return once every socket is closed."""
        self.closed = True
        opening = self._opening
        if opening is not None:
            opening.cancel()
        for link in list(self.links):  # the current one, and any still being made or let go of
            link.drop(_closed_error)
        waits = [link.lost for link in self.links] + ([opening] if opening is not None else [])
        await asyncio.gather(*waits, return_exceptions=True)


class _ZmqLink(_Link):
    """A DEALER socket to the front, and its ONE reader task."""

    def __init__(self, channel):
        super().__init__(channel)
        sock = channel.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # No send high-water mark: a send never waits, so every request is in the table,
        # where a timeout drops it. The callers' own concurrency bounds the queue, and
        # the server's receive limit pushes back through TCP.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.connect(channel.endpoint)
        self.socket = sock
        self.reader = self.loop.create_task(self._read())

    def send(self, body: bytes) -> None:
        sent = self.socket.send(body)
        if not sent.done():  # not expected without a high-water mark
            sent.add_done_callback(_retrieve)
            return
        error = None if sent.cancelled() else sent.exception()
        if error is not None:
            raise UnavailableError(f"cannot send to {self.channel.endpoint}: {error}")

    async def _read(self) -> None:
        # After each awaited message, drain what else is queued through a blocking
        # twin of the socket (zmq.NOBLOCK): one reply per trip through pyzmq's asyncio
        # machinery costs more than the reply itself. The next awaited recv checks the
        # socket's events before it sleeps, so nothing drained this way is missed.
        sock = self.socket
        drain = zmq.Socket.shadow(sock.underlying).recv
        again = zmq.Again
        while True:
            try:
                bodies = [await sock.recv()]
                while True:
                    try:
                        bodies.append(drain(zmq.NOBLOCK))
                    except again:
                        break
            except zmq.ZMQError:  # the socket was closed under us: drop() or close()
                return
            self._settle(bodies)

    def _close(self) -> None:
        self.reader.cancel()
        self.socket.close(0)


class _ZmqChannel(_Channel):
    """The front over ZeroMQ. A timeout replaces its socket, at the next call."""

    def __init__(self, loop, context: zmq.asyncio.Context, endpoint: str):
        super().__init__(loop, endpoint)
        self.context = context
        self.readers: list[asyncio.Task] = []  # every link's, for close() to wait for

    async def connect(self, deadline: float, seconds: float) -> _ZmqLink:
        if self.closed:
            raise _closed_error()
        self.link = _ZmqLink(self)  # ZeroMQ connects in the background
        self.readers = [reader for reader in self.readers if not reader.done()] + [self.link.reader]
        return self.link

    async def close(self) -> None:
        self.closed = True
        if self.link is not None:
            self.link.drop(_closed_error)
        await asyncio.gather(*self.readers, return_exceptions=True)


@with_operations(ASYNC)
class AsyncClient:
    """Made by `await connect(endpoint)`; use as `async with await connect(...) as c:`.
    Its coroutines `get`, `set`, `mget`, `count` ... come from the operation table
    (client/methods.py); `scan` is written here."""

    def __init__(
        self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, direct: bool = True, local: bool = True
    ):
        self.timeout = checked_timeout(timeout)
        self.endpoint = endpoint
        self.direct = False
        self.map: ServerMap | None = None
        self._wanted_direct = direct
        self._wanted_local = local
        # The process's one asyncio context, as in the sync client: never finalized by
        # the garbage collector before its sockets, so a leaked client cannot hang it.
        self._context = zmq.asyncio.Context.instance()
        self._ids = itertools.count(1)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._front: _ZmqChannel | None = None
        self._partitions: list = []
        self._channels: list = []  # every channel not yet closed, for close()
        self._closed = False

    async def _connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._front = _ZmqChannel(self._loop, self._context, self.endpoint)
        self._channels.append(self._front)
        self.map = ServerMap.from_hello(await self._call(self._front, "hello", protocol.PROTOCOL_VERSION))
        self._checker = ArgumentChecker(self.map.max_key_size, self.map.max_value_size)
        self._partition_of = self.map.slot_map.partition_of
        self._partitions = [self._front] * self.map.partitions
        self.direct = self._wanted_direct and await self._connect_partitions()

    def _stream_channel(self, endpoint: str) -> _StreamChannel:
        channel = _StreamChannel(self._loop, endpoint)
        self._channels.append(channel)
        return channel

    async def _discard(self, channels) -> None:
        for channel in channels:
            self._channels.remove(channel)
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)

    async def _connect_partitions(self) -> bool:
        """Reach every partition over the stream transport: by its Unix socket when this
        host has it (and it answers with this server's id), else by its public endpoint.
        False, with everything left to the front, if some partition is unreachable."""
        channels = await self._gather([self._reach(partition) for partition in range(self.map.partitions)])
        try:
            await self._call_many([(channel, ("ping",)) for channel in channels], PROBE_TIMEOUT)
        except (ServerTimeoutError, UnavailableError):
            # Unreachable from here (NAT, another host's loopback...): the front routes
            # the same messages, so everything goes through it.
            await self._discard(channels)
            return False
        self._partitions = channels
        return True

    async def _reach(self, partition: int) -> _StreamChannel:
        local = self.map.local_endpoint(partition) if self._wanted_local else None
        if local is not None:
            channel = self._stream_channel(local)
            if await self._is_ours(channel):
                return channel
            await self._discard([channel])
        return self._stream_channel(self.map.partition_endpoints[partition])

    async def _is_ours(self, channel: _StreamChannel) -> bool:
        try:
            return self.map.is_ours(await self._call(channel, "hello", protocol.PROTOCOL_VERSION, timeout=PROBE_TIMEOUT))
        except ConcordKVError:
            return False

    # ------------------------------------------------------------------ transport

    async def _call(self, channel, op: str, *args, timeout: float | None = None):
        if self._closed:
            raise _closed_error()
        request_id = next(self._ids)
        body = self._packer.pack((request_id, op, *args))
        seconds = timeout or self.timeout
        link, deadline = channel.link, None
        if link is None:  # the first call, or the first since a timeout or a loss
            deadline = self._loop.time() + seconds
            link = await channel.connect(deadline, seconds)
        link.send(body)
        future = link.expect(request_id, op, seconds, deadline)
        try:
            return await future
        except asyncio.CancelledError:
            link.waiting.pop(request_id, None)  # the caller gave up: a late reply is ignored
            raise

    async def _gather(self, calls: list):
        """Run the calls concurrently; every one finishes before the first error is raised."""
        if len(calls) == 1:
            return [await calls[0]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    async def _call_many(self, calls, timeout: float | None = None) -> list:
        """Send every (channel, (op, *args)) at once; their results, in order."""
        return await self._gather([self._call(channel, *request, timeout=timeout) for channel, request in calls])

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
        merge = ScanMerge(self._channel_of, await self._open_cursors(start, end, reverse, page), reverse, page, limit)
        try:
            while True:
                for pair in merge.take():
                    yield pair
                requests = merge.next_pages()
                if not requests:
                    return
                merge.feed(await self._call_many(requests))
        finally:
            await self._close_cursors(merge.close_requests())

    def _channel_of(self, partition: int):
        return self._partitions[partition]

    async def _open_cursors(self, start, end, reverse: bool, page: int) -> list:
        calls = [self._call(channel, "scan", p, start, end, reverse, page) for p, channel in enumerate(self._partitions)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            # Partitions that did open a cursor must not keep its snapshot pinned.
            opened = [(p, r[0]) for p, r in enumerate(results) if not isinstance(r, BaseException) and r[0] is not None]
            await self._close_cursors([(self._partitions[p], ("scan_close", p, cursor)) for p, cursor in opened])
            raise failures[0]
        return results

    async def _close_cursors(self, requests: list) -> None:
        # Best effort: a cursor that cannot be closed expires on the server by itself.
        await asyncio.gather(*(self._call(channel, *request) for channel, request in requests), return_exceptions=True)

    async def close(self) -> None:
        """Close every connection; calls still waiting fail with ClosedError."""
        if self._closed:
            return
        self._closed = True
        channels, self._channels = self._channels, []
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def __repr__(self) -> str:
        partitions = self.map.partitions if self.map else "?"
        return f"<concordkv_mp.aio.AsyncClient {self.endpoint} partitions={partitions} direct={self.direct}>"


async def connect(
    endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, direct: bool = True, local: bool = True
) -> AsyncClient:
    """Connect to a ConcordKV-MP server; raises ServerTimeoutError if it does not answer."""
    client = AsyncClient(endpoint, timeout=timeout, direct=direct, local=local)
    try:
        await client._connect()
    except BaseException:
        await client.close()
        raise
    return client
