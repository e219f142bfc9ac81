"""ZeroMQ socket settings shared by every server socket that faces clients.

Each setting bounds what one peer can cost the server (docs/protocol.md, "Limits"),
and `send_or_drop` is how a reply meets those bounds; `discard_pending` empties a
socket whose messages only mean "wake up". It owns socket options, sending and
receiving, never message contents.
"""

from __future__ import annotations

import zmq

# A peer that has not finished the ZMTP handshake within this time is dropped: a
# connection that never speaks must not hold a slot.
HANDSHAKE_IVL_MS = 2000


def configure_router(socket, max_message_size: int, hwm: int) -> None:
    """Options of a client-facing ROUTER, set before bind."""
    # A frame over this size makes ZeroMQ drop that connection before any of it is
    # buffered, so a huge message costs nothing but the peer's own connection.
    socket.setsockopt(zmq.MAXMSGSIZE, max_message_size)
    # Per-peer queues: a client that sends faster than we serve, or does not read its
    # replies, fills its own queue, not the server's memory.
    socket.setsockopt(zmq.RCVHWM, hwm)
    socket.setsockopt(zmq.SNDHWM, hwm)
    # A reply to a peer that is gone or full raises instead of vanishing silently.
    socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
    socket.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
    socket.setsockopt(zmq.LINGER, 0)


def send_or_drop(socket, frames) -> None:
    """Send a reply on a client-facing ROUTER without ever blocking, or drop it.

    With ROUTER_MANDATORY, a peer whose queue is full (it does not read its replies)
    raises EAGAIN and one that is gone raises EHOSTUNREACH: the reply is dropped and
    that client times out, while everyone else is served.
    """
    try:
        socket.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        pass
    except zmq.ZMQError as exc:
        if exc.errno != zmq.EHOSTUNREACH:
            raise


def discard_pending(socket) -> None:
    """Receive and drop every message waiting on `socket`, without blocking: wake-ups
    and notifications, whose only news is that they came."""
    while True:
        try:
            socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
