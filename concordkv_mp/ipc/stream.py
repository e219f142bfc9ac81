"""The stream transport: protocol messages over a plain TCP or Unix socket (docs/protocol.md).

Partitions answer smart clients on plain sockets, because a ZeroMQ round trip costs
two I/O-thread hand-offs on each side and bounds a single client's GET rate
(docs/benchmarks.md). A connection starts with the client's 8-byte preamble: the
magic `CKVS` and the protocol version as a 32-bit big-endian integer. Then every
message, either way, is a 4-byte big-endian length followed by that many bytes: one
msgpack request or reply, exactly as in a ZeroMQ frame.

This module owns the preamble, the framing and the endpoint syntax, shared by the
server and both clients. It must not touch message contents or any socket's loop.
"""

from __future__ import annotations

import os
import socket
import stat

from concordkv_mp.ipc.protocol import PROTOCOL_VERSION

MAGIC = b"CKVS"
PREAMBLE = MAGIC + PROTOCOL_VERSION.to_bytes(4, "big")
HEADER_SIZE = 4


def frame(body: bytes) -> bytes:
    """One message on the wire: its length, then its bytes."""
    return len(body).to_bytes(HEADER_SIZE, "big") + body


class MessageReader:
    """Cuts whole messages out of a byte stream that arrives in pieces of any size.

    A message still arriving is kept whole in one buffer and not re-scanned (or copied)
    until enough bytes are in. With `max_size`, a length over it stops the cutting:
    `oversized` turns true and the bytes after it are never buffered."""

    __slots__ = ("max_size", "oversized", "_pending", "_needed")

    def __init__(self, max_size: int | None = None):
        self.max_size = max_size
        self.oversized = False
        self._pending = bytearray()
        self._needed = 0  # bytes `_pending` must hold before its first message is whole

    def feed(self, data: bytes) -> list[bytes]:
        """The messages that `data` completes, in order."""
        pending = self._pending
        if pending:
            pending += data
            if len(pending) < self._needed:
                return []
            data = bytes(pending)
            pending.clear()
        bodies = []
        limit, size, position = self.max_size, len(data), 0
        while size - position >= HEADER_SIZE:
            length = int.from_bytes(data[position : position + HEADER_SIZE], "big")
            if limit is not None and length > limit:
                self.oversized = True
                return bodies
            end = position + HEADER_SIZE + length
            if end > size:
                break
            bodies.append(data[position + HEADER_SIZE : end])
            position = end
        if position < size:
            pending += data[position:] if position else data
            self._needed = HEADER_SIZE + int.from_bytes(pending[:HEADER_SIZE], "big") if len(pending) >= HEADER_SIZE else 0
        return bodies


def address_of(endpoint: str) -> tuple[int, object]:
    """(address family, address) of `tcp://host:port` or `ipc:///path/to/socket`."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, int(port))
    if endpoint.startswith("ipc://"):
        return socket.AF_UNIX, endpoint[len("ipc://") :]
    raise ValueError(f"a stream endpoint is tcp://host:port or ipc://path, not {endpoint!r}")


def connect(endpoint: str, timeout: float) -> socket.socket:
    """A connected blocking socket that has sent the preamble."""
    family, address = address_of(endpoint)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        if family != socket.AF_UNIX:
            # A request is one small write that must leave now, not wait for more.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(PREAMBLE)
    except BaseException:
        sock.close()
        raise
    return sock


def listen(endpoint: str, backlog: int = 1024) -> socket.socket:
    """A non-blocking listening socket on `endpoint`. A stale Unix socket file left by a
    killed server is replaced; any other file at that path is an error."""
    family, address = address_of(endpoint)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            try:
                if stat.S_ISSOCK(os.lstat(address).st_mode):
                    os.unlink(address)
            except FileNotFoundError:
                pass
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def unlink_socket_file(endpoint: str) -> None:
    """Remove a Unix socket's file at shutdown (TCP endpoints have none)."""
    family, address = address_of(endpoint)
    if family == socket.AF_UNIX:
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass
