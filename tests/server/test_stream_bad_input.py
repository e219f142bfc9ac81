"""Bad input on the stream transport, sent with a raw socket to a partition: wrong
preambles, silent peers, oversized or garbled messages, keys of another partition,
clients that never read, too many connections. Each gets an error reply with a stable
code or a dropped connection, and the partition keeps serving everyone else."""

from __future__ import annotations

import socket
import time

import msgpack
import psutil
import pytest

from concordkv_mp.ipc import stream
from concordkv_mp.ipc.protocol import PROTOCOL_VERSION
from concordkv_mp.server.partition import MAX_STREAM_CONNECTIONS
from tests.server.conftest import running_server

LIMITS = {"max_key_size": 64, "max_value_size": 1024, "max_batch_keys": 100}
KEY = b"some-key"


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("stream-bad-input"), partitions=2, **LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def layout(limited_server):
    """(owner of KEY, the other partition, public endpoints, local endpoints)."""
    with limited_server.client() as client:
        owner = client.map.slot_map.partition_of(KEY)
        return owner, 1 - owner, client.map.partition_endpoints, client.map.partition_local_endpoints


def open_raw(endpoint: str, preamble: bytes = stream.PREAMBLE) -> socket.socket:
    family, address = stream.address_of(endpoint)
    deadline = time.monotonic() + 5.0
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            sock.connect(address)
            break
        except BlockingIOError:
            # A Unix socket whose accept backlog is full refuses at once (EAGAIN) until
            # the partition's loop accepts: on a loaded machine, when connections come
            # faster than one turn of its loop. The clients retry the same way.
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    if preamble:
        sock.sendall(preamble)
    return sock


_unread: dict[int, bytes] = {}  # socket id -> bytes read past the last message


def read_message(sock: socket.socket):
    """The next message, or None if the server closed the connection."""
    data = _unread.pop(id(sock), b"")
    while len(data) < stream.HEADER_SIZE or len(data) < stream.HEADER_SIZE + int.from_bytes(data[:4], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    end = stream.HEADER_SIZE + int.from_bytes(data[:4], "big")
    if end < len(data):
        _unread[id(sock)] = data[end:]
    return msgpack.unpackb(data[stream.HEADER_SIZE : end], raw=False)


def ask(sock: socket.socket, body: bytes):
    sock.sendall(stream.frame(body))
    return read_message(sock)


def closed_by_server(sock: socket.socket, within: float = 5.0) -> bool:
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def still_serves(server) -> None:
    with server.client(timeout=5.0) as client:
        assert client.direct
        client.set(b"canary", b"alive")
        assert client.get(b"canary") == b"alive"


@pytest.fixture(params=["public", "local"])
def owner_endpoint(request, layout):
    owner, _, public, local = layout
    return (public if request.param == "public" else local)[owner]


def test_a_good_connection_answers_in_both_transports(owner_endpoint):
    sock = open_raw(owner_endpoint)
    try:
        assert ask(sock, msgpack.packb([1, "set", KEY, b"v"])) == [1, 0, None]
        assert ask(sock, msgpack.packb([2, "get", KEY])) == [2, 0, b"v"]
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("preamble", "code"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "BAD_FRAME"),
        (b"CKVS" + (PROTOCOL_VERSION + 1).to_bytes(4, "big"), "PROTOCOL_VERSION"),
        (b"\x00" * 8, "BAD_FRAME"),
    ],
)
def test_a_wrong_preamble_gets_its_code_then_the_connection_is_dropped(owner_endpoint, limited_server, preamble, code):
    sock = open_raw(owner_endpoint, preamble)
    try:
        reply = read_message(sock)
        assert reply is not None and reply[:3] == [None, 1, code], reply
        assert closed_by_server(sock)
    finally:
        sock.close()
    still_serves(limited_server)


def test_a_connection_that_never_greets_is_dropped(owner_endpoint, limited_server):
    silent = open_raw(owner_endpoint, preamble=b"")
    half = open_raw(owner_endpoint, preamble=stream.PREAMBLE[:5])
    try:
        started = time.monotonic()
        assert closed_by_server(silent, within=6.0)
        assert closed_by_server(half, within=6.0)
        assert time.monotonic() - started < 5.0
    finally:
        silent.close()
        half.close()
    still_serves(limited_server)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",
        b"garbage \x00\xff" * 10,
        msgpack.packb({"op": "get"}),
        msgpack.packb([1]),
        msgpack.packb([1, "get", b"k"]) + b"trailing",
        b"\x91" * 50_000,
    ],
)
def test_malformed_messages_get_bad_frame_and_the_connection_stays(owner_endpoint, limited_server, body):
    sock = open_raw(owner_endpoint)
    try:
        reply = ask(sock, body)
        assert reply[1:3] == [1, "BAD_FRAME"], reply
        assert ask(sock, msgpack.packb([9, "get", KEY]))[:2] == [9, 0]
    finally:
        sock.close()
    still_serves(limited_server)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ([7, "frobnicate"], "UNKNOWN_OP"),
        ([7, "get", "a str key"], "BAD_REQUEST"),
        ([7, "status"], "BAD_REQUEST"),  # the front's, not a partition's
        ([7, "get", b"k" * 65], "KEY_TOO_LARGE"),
        ([7, "set", KEY, b"v" * 1025], "VALUE_TOO_LARGE"),
        ([7, "mget", 0, [b"k%d" % i for i in range(101)]], "BATCH_TOO_LARGE"),
        ([7, "scan_next", None, 1, None], "BAD_REQUEST"),
        ([7, "mget", "OWNER", [KEY, 1]], "BAD_REQUEST"),
        ([7, "mset", "OWNER", [[KEY, 5]]], "INVALID_TYPE"),
    ],
)
def test_bad_requests_get_their_code_and_id(owner_endpoint, layout, request_, code):
    request_ = [layout[0] if arg == "OWNER" else arg for arg in request_]
    sock = open_raw(owner_endpoint)
    try:
        reply = ask(sock, msgpack.packb(request_, use_bin_type=True))
        assert reply[:3] == [7, 1, code], reply
    finally:
        sock.close()


def test_keys_of_another_partition_are_refused(layout):
    owner, other, public, _ = layout
    sock = open_raw(public[other])
    try:
        assert ask(sock, msgpack.packb([3, "get", KEY]))[:3] == [3, 1, "WRONG_PARTITION"]
        assert ask(sock, msgpack.packb([4, "mget", owner, [KEY]]))[:3] == [4, 1, "WRONG_PARTITION"]
    finally:
        sock.close()


def test_an_oversized_message_drops_only_that_connection_unbuffered(layout, limited_server):
    owner, _, public, _ = layout
    partition = psutil.Process(limited_server.pid_of("partition", owner))
    before = partition.memory_info().rss
    sock = open_raw(public[owner])
    try:
        # Announces 1 GiB; the server must drop it on reading the length, not buffer it.
        sock.sendall((1 << 30).to_bytes(4, "big") + b"x" * 65536)
        assert closed_by_server(sock)
    finally:
        sock.close()
    assert partition.memory_info().rss - before < 32 << 20
    still_serves(limited_server)


def test_requests_split_across_many_writes_are_reassembled(owner_endpoint):
    sock = open_raw(owner_endpoint)
    try:
        wire = b"".join(stream.frame(msgpack.packb([i, "set", KEY + b"%d" % i, b"v" * 900])) for i in range(50))
        for first in range(0, len(wire), 7):
            sock.sendall(wire[first : first + 7])
        replies = [read_message(sock) for _ in range(50)]
        assert sorted(reply[0] for reply in replies) == list(range(50))
    finally:
        sock.close()


def test_clients_that_never_read_or_vanish_do_not_grow_the_partition(layout, limited_server):
    owner, _, public, _ = layout
    partition = psutil.Process(limited_server.pid_of("partition", owner))
    before = partition.memory_info().rss
    request = stream.frame(msgpack.packb([1, "mget", owner, [KEY] * 100]))
    greedy = []
    try:
        for _ in range(3):
            # Sends requests until the server stops taking them, and never reads.
            sock = open_raw(public[owner])
            sock.setblocking(False)
            sent = 0
            try:
                while sent < 200 << 20:
                    sent += sock.send(request * 64)
            except BlockingIOError:
                pass
            greedy.append(sock)
            assert sent < 200 << 20, "the server kept reading from a client that never reads"
            # Sends half a request and leaves.
            ghost = open_raw(public[owner])
            ghost.sendall(request[: len(request) // 2])
            ghost.close()
            started = time.monotonic()
            still_serves(limited_server)
            assert time.monotonic() - started < 5.0
        assert partition.memory_info().rss - before < 64 << 20
    finally:
        for sock in greedy:
            sock.close()
    assert limited_server.pid_of("partition", owner) == partition.pid


def test_connections_past_the_limit_are_closed_at_once(layout, limited_server):
    owner, _, _, local = layout
    limit = MAX_STREAM_CONNECTIONS
    held = []
    try:
        for _ in range(limit + 5):
            held.append(open_raw(local[owner]))
        time.sleep(0.3)
        assert ask(held[0], msgpack.packb([1, "ping"])) == [1, 0, "pong"]
        assert closed_by_server(held[-1])
    finally:
        for sock in held:
            sock.close()
    still_serves(limited_server)


def test_batches_larger_than_one_message_are_split_by_the_client(limited_server):
    # 300 values of 1,000 bytes: about 4.5 times max_message_size (64 + 1,024 + 64 KiB).
    pairs = {b"big-%03d" % i: bytes([i % 251]) * 1000 for i in range(300)}
    with limited_server.client() as client:
        assert sum(map(len, pairs.values())) > 4 * client.map.max_message_size
        client.mset(pairs)
        assert client.mget(list(pairs)) == list(pairs.values())
        assert client.mdelete(list(pairs)) == len(pairs)
