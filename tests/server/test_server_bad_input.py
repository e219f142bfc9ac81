"""Bad input sent with a raw ZeroMQ socket: every malformed request gets an error reply
with a stable code (or, past the message-size limit, a dropped connection), and the
server keeps serving every other client. Clients that do not read their replies or
vanish mid-request cannot make the server grow or stop."""

from __future__ import annotations

import time

import msgpack
import psutil
import pytest
import zmq

from concordkv_mp.ipc.protocol import PROTOCOL_VERSION
from tests.server.conftest import running_server

LIMITS = {"max_key_size": 64, "max_value_size": 1024, "max_batch_keys": 100}


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("bad-input"), partitions=2, **LIMITS) as server:
        yield server


@pytest.fixture
def raw(limited_server):
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, 5000)
    socket.connect(limited_server.endpoint)
    yield socket
    socket.close(0)
    context.destroy(linger=0)


def ask(socket, frame: bytes):
    socket.send(frame)
    return msgpack.unpackb(socket.recv(), raw=False)


def still_serves(server) -> None:
    with server.client(timeout=5.0) as client:
        client.set(b"canary", b"alive")
        assert client.get(b"canary") == b"alive"


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"garbage that is not msgpack \x00\xff" * 10,
        msgpack.packb({"op": "get"}),  # a map, not an array
        msgpack.packb("get"),
        msgpack.packb([1]),  # too short
        msgpack.packb(["1", "get", b"k"]),  # request id not an int
        msgpack.packb([-1, "get", b"k"]),
        msgpack.packb([1, "get", b"k"]) + b"trailing",
        b"\x91" * 50_000,  # nesting deeper than the decoder's stack
        msgpack.packb([1, "get", msgpack.ExtType(1, b"x")]),
    ],
)
def test_malformed_frames_get_bad_frame(raw, limited_server, frame):
    reply = ask(raw, frame)
    assert reply[1] == 1 and reply[2] == "BAD_FRAME", reply
    still_serves(limited_server)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ([7, "frobnicate"], "UNKNOWN_OP"),
        ([7, "get"], "BAD_REQUEST"),
        ([7, "get", b"k", b"extra"], "BAD_REQUEST"),
        ([7, "get", "a str key"], "BAD_REQUEST"),
        ([7, "get", 42], "BAD_REQUEST"),
        ([7, "set", b"k", None], "BAD_REQUEST"),
        ([7, "mget", 0, b"not a list"], "BAD_REQUEST"),
        ([7, "mset", 0, [[b"k"]]], "BAD_REQUEST"),
        ([7, "mget", 99, [b"k"]], "BAD_REQUEST"),  # no partition 99
        ([7, "mget", 0, [b"k%d" % i for i in range(101)]], "BATCH_TOO_LARGE"),
        ([7, "get", b""], "EMPTY_KEY"),
        ([7, "get", b"k" * 65], "KEY_TOO_LARGE"),
        ([7, "set", b"k", b"v" * 1025], "VALUE_TOO_LARGE"),
        ([7, "scan", 0, None, None, "yes", None], "BAD_REQUEST"),
        ([7, "scan_next", 0, 123456, None], "NO_SUCH_CURSOR"),
        ([7, "hello", PROTOCOL_VERSION + 1], "PROTOCOL_VERSION"),
        ([7, "set_engine", "no-such-engine"], "INVALID_CONFIG"),
    ],
)
def test_bad_requests_get_their_code_and_request_id(raw, limited_server, request_, code):
    reply = ask(raw, msgpack.packb(request_, use_bin_type=True))
    assert reply[:3] == [7, 1, code], reply
    assert isinstance(reply[3], str) and reply[3]
    still_serves(limited_server)


def test_a_message_over_max_message_size_drops_only_that_connection(limited_server):
    context = zmq.Context()
    big = context.socket(zmq.DEALER)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(limited_server.endpoint)
    try:
        # max_message_size defaults to max_key + max_value + 64 KiB.
        big.send(msgpack.packb([1, "set", b"k", b"v" * (200 * 1024)]))
        assert not big.poll(1000), "an oversized message must not be answered"
        still_serves(limited_server)
    finally:
        big.close(0)
        context.destroy(linger=0)


def test_a_two_frame_request_is_refused(raw, limited_server):
    raw.send_multipart([msgpack.packb([1, "ping"]), b"second frame"])
    reply = msgpack.unpackb(raw.recv(), raw=False)
    assert reply[2] == "BAD_FRAME"
    still_serves(limited_server)


def test_clients_that_never_read_or_vanish_do_not_grow_the_server(limited_server):
    front = psutil.Process(limited_server.pid_of("front"))
    partitions = [psutil.Process(limited_server.pid_of("partition", i)) for i in range(2)]
    before = sum(p.memory_info().rss for p in [front, *partitions])
    context = zmq.Context()
    request = msgpack.packb([1, "get", b"k"])
    try:
        for _ in range(3):
            # Sends 30k requests and never reads a reply.
            greedy = context.socket(zmq.DEALER)
            greedy.setsockopt(zmq.LINGER, 0)
            greedy.setsockopt(zmq.RCVHWM, 10)
            greedy.setsockopt(zmq.SNDHWM, 0)
            greedy.connect(limited_server.endpoint)
            for _ in range(30_000):
                greedy.send(request)
            # Sends and leaves before the replies come back.
            for _ in range(20):
                ghost = context.socket(zmq.DEALER)
                ghost.setsockopt(zmq.LINGER, 1000)
                ghost.connect(limited_server.endpoint)
                ghost.send(request)
                ghost.close()
            started = time.monotonic()
            still_serves(limited_server)
            assert time.monotonic() - started < 5.0
            greedy.close(0)
        time.sleep(0.5)
        after = sum(p.memory_info().rss for p in [front, *partitions])
        assert after - before < 64 << 20, (before, after)
        assert front.is_running() and all(p.is_running() for p in partitions)
        assert limited_server.pid_of("front") == front.pid
    finally:
        context.destroy(linger=0)
