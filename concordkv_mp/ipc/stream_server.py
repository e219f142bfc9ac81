"""`StreamServer`: a partition's plain-socket listeners and client connections.

It accepts connections on its endpoints, checks each one's preamble, cuts the bytes
it reads into messages (ipc/stream.py) and queues replies, without ever blocking. Its
sockets are registered, as file descriptors, in the caller's `zmq.Poller`, so one loop
serves ZeroMQ and plain sockets alike. It owns connections and bytes; what a message
means is the caller's business.

The bounds that ZeroMQ's options give the ROUTER sockets are kept here by hand
(docs/protocol.md, "Limits"): a message longer than `max_message_size` drops its
connection before it is buffered; a connection with more than `_OUT_LIMIT` bytes of
replies waiting is not read until they drain, so a client that does not read its
replies stalls only itself (TCP pushes back on it); a connection that has not sent
its preamble within `_GREETING_SECONDS` is dropped; past `max_connections`, new
connections are closed at once.
"""

from __future__ import annotations

import errno
import socket
import time

import zmq

from concordkv_mp.ipc import protocol, stream
from concordkv_mp.errors import BadFrameError, ProtocolVersionError

_READ_SIZE = 1 << 18
_OUT_LIMIT = 4 << 20
_GREETING_SECONDS = 2.0


class StreamConnection:
    """One client connection: its socket, unparsed input and queued replies."""

    __slots__ = ("sock", "fd", "greeting", "reader", "outbox", "opened", "closed", "events")

    def __init__(self, sock, opened: float, max_message_size: int):
        self.sock = sock
        self.fd = sock.fileno()
        self.greeting: bytearray | None = bytearray()  # None once the preamble checked out
        self.reader = stream.MessageReader(max_message_size)
        self.outbox: list[bytes] = []
        self.opened = opened
        self.closed = False
        self.events = zmq.POLLIN  # as registered in the poller


class StreamServer:
    def __init__(self, endpoints, poller: zmq.Poller, max_message_size: int, max_connections: int):
        self.endpoints = tuple(endpoints)
        self.poller = poller
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.listeners: dict[int, object] = {}
        self.connections: dict[int, StreamConnection] = {}
        self._dirty: list[StreamConnection] = []
        try:
            for endpoint in self.endpoints:
                sock = stream.listen(endpoint)
                self.listeners[sock.fileno()] = sock
                poller.register(sock.fileno(), zmq.POLLIN)
        except BaseException:
            self.close()
            raise

    def on_event(self, fd: int, events: int, requests: list) -> None:
        """Handle one polled descriptor; append (connection, message bytes) to `requests`."""
        listener = self.listeners.get(fd)
        if listener is not None:
            self._accept(listener)
            return
        conn = self.connections.get(fd)
        if conn is None:
            return
        if events & zmq.POLLOUT:
            self._write(conn)
        if events & zmq.POLLIN and not conn.closed:
            self._read(conn, requests)

    def send(self, conn: StreamConnection, reply: bytes) -> None:
        """Queue a reply; it goes out at the next `flush()`. Dropped if the client has gone."""
        if conn.closed:
            return
        if not conn.outbox:
            self._dirty.append(conn)
        conn.outbox.append(stream.frame(reply))

    def flush(self) -> None:
        """Hand every queued reply to the kernel, as far as it takes them now."""
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            if not conn.closed:
                self._write(conn)

    def expire_greetings(self, now: float) -> None:
        late = [c for c in self.connections.values() if c.greeting is not None and now - c.opened > _GREETING_SECONDS]
        for conn in late:
            self._drop(conn)

    def close(self) -> None:
        for conn in list(self.connections.values()):
            self._drop(conn)
        for fd, sock in self.listeners.items():
            self.poller.unregister(fd)
            sock.close()
        self.listeners.clear()
        for endpoint in self.endpoints:
            stream.unlink_socket_file(endpoint)

    # ------------------------------------------------------------------ inside

    def _accept(self, listener) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return  # out of descriptors: the connection waits in the backlog
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            if len(self.connections) >= self.max_connections:
                sock.close()
                continue
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = StreamConnection(sock, time.monotonic(), self.max_message_size)
            self.connections[conn.fd] = conn
            self.poller.register(conn.fd, zmq.POLLIN)

    def _read(self, conn: StreamConnection, requests: list) -> None:
        try:
            data = conn.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        if conn.greeting is not None:
            data = self._greet(conn, data)
            if not data:
                return
        reader = conn.reader
        requests.extend((conn, body) for body in reader.feed(data))
        if reader.oversized:
            self._drop(conn)  # as ZeroMQ's MAXMSGSIZE: nothing of it is buffered

    def _greet(self, conn: StreamConnection, data: bytes) -> bytes | None:
        """Check the preamble once its bytes are in; what follows it, or None while
        waiting for it or if the connection was refused."""
        greeting = conn.greeting
        greeting += data
        size = len(stream.PREAMBLE)
        if not stream.MAGIC.startswith(bytes(greeting[:4])):
            self._refuse(conn, BadFrameError("not a ConcordKV-MP stream connection"))
            return None
        if len(greeting) < size:
            return None
        if greeting[:size] != stream.PREAMBLE:
            version = int.from_bytes(greeting[4:size], "big")
            self._refuse(conn, ProtocolVersionError(f"server speaks protocol {protocol.PROTOCOL_VERSION}, client {version}"))
            return None
        conn.greeting = None
        return bytes(greeting[size:])

    def _refuse(self, conn: StreamConnection, error) -> None:
        """Tell a peer why (one error reply, best effort), then drop it."""
        try:
            conn.sock.send(stream.frame(protocol.encode_error(None, error)))
        except OSError:
            pass
        self._drop(conn)

    def _write(self, conn: StreamConnection) -> None:
        data = conn.outbox[0] if len(conn.outbox) == 1 else b"".join(conn.outbox)
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(conn)
            return
        left = len(data) - sent
        conn.outbox[:] = [data[sent:]] if left else []
        wanted = zmq.POLLOUT if left else 0
        if left <= _OUT_LIMIT:
            wanted |= zmq.POLLIN
        if wanted != conn.events:
            conn.events = wanted
            self.poller.modify(conn.fd, wanted)

    def _drop(self, conn: StreamConnection) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.outbox.clear()
        del self.connections[conn.fd]
        self.poller.unregister(conn.fd)
        conn.sock.close()
