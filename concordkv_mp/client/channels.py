"""The blocking client's connections: a ZeroMQ DEALER to the front, and a stream
connection (ipc/stream.py) to each partition.

Both offer the same small interface, so `Client` runs one request/reply logic over
either: `send` + `receive` for one call at a time, and `queue`, `write_some`,
`read_available` around a `zmq.Poller` (which watches ZeroMQ sockets and plain file
descriptors alike) for many calls in flight at once. They move message bytes; what the
bytes mean is the client's business.

Timeouts and failures surface as `ServerTimeoutError` and `UnavailableError`. After
either, the client calls `reset()`: the connection is dropped with whatever is queued
in it, so a late reply can never be taken for the answer to a later request.
"""

from __future__ import annotations

import collections
import socket
import struct
import time

import zmq

from concordkv_mp.client.routing import RECONNECT_FIRST, RECONNECT_MAX
from concordkv_mp.errors import ClosedError, ServerTimeoutError, UnavailableError
from concordkv_mp.ipc import stream

_RECV_SIZE = 1 << 18


class ZmqChannel:
    """One DEALER socket to one endpoint (the front)."""

    def __init__(self, context, endpoint: str):
        self.context = context
        self.endpoint = endpoint
        self._outbox: list[bytes] = []
        self.socket = None
        self._open()

    def _open(self) -> None:
        socket_ = self.context.socket(zmq.DEALER)
        socket_.setsockopt(zmq.LINGER, 0)
        socket_.connect(self.endpoint)
        self.socket = socket_

    @property
    def poll_handle(self):
        return self.socket

    def send(self, body: bytes, timeout: float) -> None:
        self.socket.send(body)

    def receive(self, timeout: float) -> bytes:
        if not self.socket.poll(timeout * 1000):
            raise ServerTimeoutError(f"no reply from {self.endpoint} within {timeout:g} s")
        return self.socket.recv()

    def queue(self, body: bytes, timeout: float) -> None:
        self._outbox.append(body)

    def write_some(self) -> bool:
        """Send what the socket takes now; True while some is left."""
        outbox, sent = self._outbox, 0
        for body in outbox:
            try:
                self.socket.send(body, zmq.NOBLOCK)
            except zmq.Again:
                break
            sent += 1
        del outbox[:sent]
        return bool(outbox)

    def read_available(self) -> list[bytes]:
        bodies = []
        while True:
            try:
                bodies.append(self.socket.recv(zmq.NOBLOCK))
            except zmq.Again:
                return bodies

    def reset(self) -> None:
        self.socket.close(0)
        self._outbox.clear()
        self._open()

    def close(self) -> None:
        self.socket.close(0)


class StreamChannel:
    """One stream connection to a partition: a blocking socket whose timeouts are kept
    by the kernel (SO_RCVTIMEO/SO_SNDTIMEO), which saves a poll() per call. It connects
    lazily, so a connection lost in a partition restart is made again by the next call."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.sock: socket.socket | None = None
        self._timeout: float | None = None
        self._reader = stream.MessageReader()
        self._replies: collections.deque[bytes] = collections.deque()  # cut, not yet taken
        self._outbox = bytearray()

    def connect(self, timeout: float) -> socket.socket:
        if self.sock is not None:
            if timeout != self._timeout:
                self._set_timeout(timeout)
            return self.sock
        deadline = time.monotonic() + timeout
        delay = RECONNECT_FIRST
        while True:
            try:
                sock = stream.connect(self.endpoint, max(deadline - time.monotonic(), 0.001))
                break
            except (ConnectionRefusedError, FileNotFoundError, BlockingIOError) as exc:
                # Restarting, or (Unix socket) its accept backlog is full for a moment.
                if time.monotonic() + delay > deadline:
                    raise UnavailableError(f"{self.endpoint} refuses connections: {exc}") from None
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            except TimeoutError:
                raise ServerTimeoutError(f"no connection to {self.endpoint} within {timeout:g} s") from None
            except OSError as exc:
                raise UnavailableError(f"cannot connect to {self.endpoint}: {exc}") from None
        sock.settimeout(None)
        self.sock = sock
        self._set_timeout(timeout)
        return sock

    def _set_timeout(self, timeout: float) -> None:
        seconds = int(timeout)
        value = struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._timeout = timeout

    @property
    def poll_handle(self) -> int:
        return self.sock.fileno()

    def send(self, body: bytes, timeout: float) -> None:
        sock = self.connect(timeout)
        try:
            sock.sendall(stream.frame(body))
        except BlockingIOError:
            raise ServerTimeoutError(f"{self.endpoint} took no request within {timeout:g} s") from None
        except OSError as exc:
            raise UnavailableError(f"lost the connection to {self.endpoint}: {exc}") from None

    def receive(self, timeout: float) -> bytes:
        replies = self._replies
        while not replies:
            try:
                data = self.sock.recv(_RECV_SIZE)
            except BlockingIOError:
                raise ServerTimeoutError(f"no reply from {self.endpoint} within {timeout:g} s") from None
            except OSError as exc:
                raise UnavailableError(f"lost the connection to {self.endpoint}: {exc}") from None
            if not data:
                raise UnavailableError(f"{self.endpoint} closed the connection")
            replies.extend(self._reader.feed(data))
        return replies.popleft()

    def queue(self, body: bytes, timeout: float) -> None:
        self.connect(timeout)
        self._outbox += stream.frame(body)

    def write_some(self) -> bool:
        """Send what the kernel takes now; True while some is left."""
        outbox = self._outbox
        try:
            sent = self.sock.send(outbox, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError as exc:
            raise UnavailableError(f"lost the connection to {self.endpoint}: {exc}") from None
        del outbox[:sent]
        return bool(outbox)

    def read_available(self) -> list[bytes]:
        replies = self._replies
        while True:
            try:
                data = self.sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                raise UnavailableError(f"lost the connection to {self.endpoint}: {exc}") from None
            if not data:
                raise UnavailableError(f"{self.endpoint} closed the connection")
            replies.extend(self._reader.feed(data))
            if len(data) < _RECV_SIZE:
                break
        taken = list(replies)
        replies.clear()
        return taken

    def reset(self) -> None:
        self.close()
        self._reader = stream.MessageReader()
        self._replies.clear()
        self._outbox.clear()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _ClosedChannel:
    """Every channel of a closed client: any request raises ClosedError (and nothing,
    not even a scan's clean-up, reconnects)."""

    endpoint = "(closed)"

    def send(self, body: bytes, timeout: float) -> None:
        raise ClosedError("the client was closed")

    queue = send

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


CLOSED = _ClosedChannel()
