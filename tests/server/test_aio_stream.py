"""The asyncio client over the stream transport, against live servers: which endpoint
it picks for each partition (the Unix socket on the server's host, else TCP), what
calls in flight see when a partition is killed or stopped, how it connects again, and
thousands of requests in flight with replies out of request order.

The module's server holds write replies until fsync (fsync="always"), so a get sent
after a set on the same connection is answered first: replies must be matched by id.
Tests that kill a partition or need a second server make their own. Every test runs in
a fresh event loop that must end with no task of the client left (`run`), and with
nothing logged by asyncio (a destroyed pending task, an unretrieved exception).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time

import pytest

import concordkv_mp.aio as aio
from concordkv_mp.client.routing import ServerMap
from concordkv_mp.errors import ClosedError, ServerTimeoutError, UnavailableError
from concordkv_mp.ipc import stream
from tests.server.conftest import ServerProcess
from tests.server.test_aio_client import key_of_partition, run


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("aio_stream"), partitions=2, fsync="always")
    server.start()
    yield server
    try:
        server.stop()
    finally:
        server.kill()


@pytest.fixture(autouse=True)
def asyncio_stays_quiet(caplog):
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        yield
    complaints = [record.getMessage() for record in caplog.records if record.name == "asyncio"]
    assert not complaints, complaints


def socket_path(endpoint: str) -> str:
    return stream.address_of(endpoint)[1]


def endpoints_used(client) -> list[str]:
    return [channel.endpoint for channel in client._partitions]


def socket_of(channel) -> socket.socket:
    return channel.link.transport.get_extra_info("socket")


def family_of(channel) -> int:
    return socket_of(channel).family


@contextlib.contextmanager
def local_hello(monkeypatch, local_endpoints):
    """Clients connected inside the block see these partition_local_endpoints in HELLO."""
    real = ServerMap.from_hello
    monkeypatch.setattr(ServerMap, "from_hello", lambda hello: real({**hello, "partition_local_endpoints": list(local_endpoints)}))
    try:
        yield
    finally:
        monkeypatch.undo()


async def wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------- which endpoint


def test_on_the_servers_host_the_unix_sockets_are_used(shared):
    async def body():
        async with await aio.connect(shared.endpoint, timeout=10) as c:
            assert c.direct
            local = list(c.map.partition_local_endpoints)
            assert all(endpoint.startswith("ipc://") and os.path.exists(socket_path(endpoint)) for endpoint in local)
            assert endpoints_used(c) == local
            assert [family_of(channel) for channel in c._partitions] == [socket.AF_UNIX] * 2
            keys = [key_of_partition(0, prefix=b"unix"), key_of_partition(1, prefix=b"unix")]
            await c.mset({key: key * 2 for key in keys})
            assert await c.mget(keys) == [key * 2 for key in keys]

    run(body())


def test_without_the_unix_socket_files_the_public_tcp_endpoints_are_used(shared):
    async def body():
        async with await aio.connect(shared.endpoint, timeout=10) as c:
            local = c.map.partition_local_endpoints
        hidden = [(socket_path(endpoint), socket_path(endpoint) + ".hidden") for endpoint in local]
        for path, away in hidden:
            os.rename(path, away)
        try:
            async with await aio.connect(shared.endpoint, timeout=10) as c:
                assert c.direct
                assert endpoints_used(c) == list(c.map.partition_endpoints)
                assert all(endpoint.startswith("tcp://") for endpoint in endpoints_used(c))
                for channel in c._partitions:
                    sock = socket_of(channel)
                    assert sock.family == socket.AF_INET
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                key = key_of_partition(1, prefix=b"tcp")
                await c.set(key, b"over tcp")
                assert await c.get(key) == b"over tcp"
        finally:
            for path, away in hidden:
                os.rename(away, path)

    run(body())


def test_a_namesake_servers_unix_socket_is_not_used(server_factory, monkeypatch):
    """Partition 0's local path exists here but is another server's (its hello names
    another server id): the client takes partition 0's TCP endpoint, and still the Unix
    socket of partition 1, which is ours."""
    ours, other = server_factory(name="ours"), server_factory(name="other")
    ours.start()
    other.start()
    key = key_of_partition(0, prefix=b"whose")

    async def body():
        async with await aio.connect(other.endpoint, timeout=10) as c:
            foreign = c.map.partition_local_endpoints
        async with await aio.connect(ours.endpoint, timeout=10) as c:
            own = c.map.partition_local_endpoints
        with local_hello(monkeypatch, [foreign[0], own[1]]):
            c = await aio.connect(ours.endpoint, timeout=10)
        async with c:
            assert c.direct
            assert endpoints_used(c) == [c.map.partition_endpoints[0], own[1]]
            assert [family_of(channel) for channel in c._partitions] == [socket.AF_INET, socket.AF_UNIX]
            await c.set(key, b"ours")
        async with await aio.connect(other.endpoint, timeout=10) as c:
            assert await c.get(key) is None
        async with await aio.connect(ours.endpoint, timeout=10, direct=False) as c:
            assert await c.get(key) == b"ours"

    run(body())


# ---------------------------------------------------------------- failures


def test_a_killed_partition_fails_the_calls_in_flight_then_serves_again(server_factory, monkeypatch):
    """Both a Unix-socket client and a TCP client have 200 gets waiting on a stopped
    partition 0 when it is SIGKILLed: each fails at once with UnavailableError (their
    timeout is far off), and the next call connects to the restarted partition."""
    server = server_factory(fsync="always")
    server.start()
    on_zero = [key_of_partition(0, prefix=b"k%d-" % i) for i in range(5)]
    on_one = key_of_partition(1)

    async def body():
        unix = await aio.connect(server.endpoint, timeout=10)
        with local_hello(monkeypatch, [None, None]):
            tcp = await aio.connect(server.endpoint, timeout=10)
        async with unix, tcp:
            assert family_of(unix._partitions[0]) == socket.AF_UNIX and family_of(tcp._partitions[0]) == socket.AF_INET
            await unix.mset({key: key[::-1] for key in on_zero + [on_one]})
            before = [c._partitions[0].link for c in (unix, tcp)]
            untouched = [c._partitions[1].link for c in (unix, tcp)]
            victim = server.pid_of("partition", 0)
            os.kill(victim, signal.SIGSTOP)
            try:
                calls = [asyncio.ensure_future(c.get(on_zero[i % 5])) for c in (unix, tcp) for i in range(200)]
                await wait_until(lambda: all(len(c._partitions[0].waiting) == 200 for c in (unix, tcp)))
            finally:
                os.kill(victim, signal.SIGKILL)
            started = time.monotonic()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert time.monotonic() - started < 3.0
            assert all(isinstance(result, UnavailableError) for result in results), {type(r) for r in results}
            assert all(c._partitions[0].waiting == {} for c in (unix, tcp))
            # The first call after the loss connects again, retrying while the
            # partition restarts; the data it acknowledged before is still there.
            for c in (unix, tcp):
                assert await c.get(on_zero[0]) == on_zero[0][::-1]
                assert await c.mget(on_zero) == [key[::-1] for key in on_zero]
            assert [c._partitions[0].link for c in (unix, tcp)] != before
            assert all(link is not None for link in before)
            assert [c._partitions[1].link for c in (unix, tcp)] == untouched  # partition 1 kept its connection
            assert await tcp.get(on_one) == on_one[::-1]

    run(body())


def test_a_stopped_partition_times_out_every_call_waiting_on_it_at_once(shared, monkeypatch):
    """Gets wait on a SIGSTOPped partition 0 in two waves, the second sent half a timeout
    after the first: when the first wave's timeout comes, the second fails with it
    (its connection is dropped), not a timeout later. Partition 1 is unaffected; after
    SIGCONT the next call is answered over a new connection."""
    timeout = 0.6
    on_zero, on_one = key_of_partition(0, prefix=b"stop"), key_of_partition(1, prefix=b"stop")

    async def body():
        with local_hello(monkeypatch, [None, None]):  # over TCP (the SIGSTOP test in test_aio_client uses Unix sockets)
            c = await aio.connect(shared.endpoint, timeout=timeout)
        async with c:
            await c.mset({on_zero: b"zero", on_one: b"one"})
            channel = c._partitions[0]
            before = channel.link
            victim = shared.pid_of("partition", 0)
            failed_at: list[float] = []

            async def get_zero():
                try:
                    return await c.get(on_zero)
                finally:
                    failed_at.append(time.monotonic())

            os.kill(victim, signal.SIGSTOP)
            try:
                started = time.monotonic()
                first = [asyncio.ensure_future(get_zero()) for _ in range(100)]
                await asyncio.sleep(timeout / 2)
                second = [asyncio.ensure_future(get_zero()) for _ in range(100)]
                assert await c.get(on_one) == b"one"
                results = await asyncio.gather(*first, *second, return_exceptions=True)
                assert all(isinstance(result, ServerTimeoutError) for result in results), {type(r) for r in results}
                assert min(failed_at) - started >= timeout * 0.95  # not early
                assert max(failed_at) - started < timeout + 0.25  # the second wave with the first
                assert channel.waiting == {} and channel.link is None
                assert await c.get(on_one) == b"one"
            finally:
                os.kill(victim, signal.SIGCONT)
            deadline = time.monotonic() + 5
            while True:  # the resumed partition may take a moment to accept
                try:
                    assert await c.get(on_zero) == b"zero"
                    break
                except ServerTimeoutError:
                    assert time.monotonic() < deadline, "partition 0 never answered again"
            assert channel.link is not None and channel.link is not before

    run(body())


def test_a_call_given_up_by_its_caller_leaves_the_connection_in_use(shared):
    """A get cancelled by asyncio.wait_for while its partition is stopped: its reply,
    when it comes, is ignored, and the connection keeps serving the next calls."""
    on_zero = key_of_partition(0, prefix=b"gaveup")

    async def body():
        async with await aio.connect(shared.endpoint, timeout=10) as c:
            await c.set(on_zero, b"v")
            channel = c._partitions[0]
            link = channel.link
            victim = shared.pid_of("partition", 0)
            os.kill(victim, signal.SIGSTOP)
            try:
                with pytest.raises(TimeoutError) as raised:
                    await asyncio.wait_for(c.get(on_zero), 0.1)
                assert raised.type is TimeoutError  # asyncio's, not the client's ServerTimeoutError
                assert channel.waiting == {}
            finally:
                os.kill(victim, signal.SIGCONT)
            await c.set(on_zero, b"w")
            assert await c.get(on_zero) == b"w"
            assert channel.link is link

    run(body())


# ---------------------------------------------------------------- many in flight


def test_five_thousand_calls_in_flight_match_a_dict(shared):
    """5,000 gathered sets, gets and deletes over 300 keys, sent in list order: each
    partition runs its share in that order, while write replies wait for fsync and read
    replies do not, so replies come out of order and must find their callers by id. A
    few values are larger than one read of the socket."""
    rng = random.Random(7)
    keys = [b"many/%03d" % i for i in range(300)]
    big = {rng.randrange(5000) for _ in range(8)}

    def value(i: int) -> bytes:
        return rng.randbytes(300_000 if i in big else rng.randrange(0, 300))

    operations = []
    for i in range(5000):
        kind = rng.choice(("set", "set", "get", "get", "delete"))
        operations.append((kind, rng.choice(keys), value(i) if kind == "set" else None))

    async def body():
        async with await aio.connect(shared.endpoint, timeout=30) as c:
            await c.mdelete(keys)
            model: dict[bytes, bytes] = {}
            wanted, calls = [], []
            for kind, key, data in operations:
                if kind == "set":
                    calls.append(c.set(key, data))
                    model[key] = data
                    wanted.append(None)
                elif kind == "get":
                    calls.append(c.get(key))
                    wanted.append(model.get(key))
                else:
                    calls.append(c.delete(key))
                    wanted.append(model.pop(key, None) is not None)
            done_order: list[int] = []
            tasks = [asyncio.ensure_future(call) for call in calls]
            for position, task in enumerate(tasks):
                task.add_done_callback(lambda _, p=position: done_order.append(p))
            got = await asyncio.gather(*tasks)
            assert got == wanted
            # On one partition's connection, some replies overtook replies to earlier requests.
            owner = [c.map.slot_map.partition_of(key) for _, key, _ in operations]
            assert any(
                [p for p in done_order if owner[p] == partition] != sorted(p for p in done_order if owner[p] == partition)
                for partition in (0, 1)
            )
            assert await c.mget(keys) == [model.get(key) for key in keys]
            assert all(channel.waiting == {} for channel in c._partitions)
            await c.mdelete(keys)

    run(body())


# ---------------------------------------------------------------- connecting


def test_callers_share_one_connection_attempt_and_close_ends_it(shared, tmp_path):
    """Calls on a channel with no connection yet wait for one shared attempt. A path
    nobody listens on is retried until the call's timeout, then UnavailableError;
    close() ends an attempt in progress, failing its callers with ClosedError."""
    nobody = f"ipc://{tmp_path}/nobody.stream"

    async def body():
        async with await aio.connect(shared.endpoint, timeout=10) as c:
            fresh = c._stream_channel(c.map.partition_local_endpoints[0])
            assert await asyncio.gather(*(c._call(fresh, "ping") for _ in range(50))) == ["pong"] * 50
            assert len(fresh.links) == 1

            missing = c._stream_channel(nobody)
            started = time.monotonic()
            with pytest.raises(UnavailableError):
                await c._call(missing, "ping", timeout=0.3)
            assert 0.15 < time.monotonic() - started < 1.0  # retried, not failed at the first refusal

            waiting = [asyncio.ensure_future(c._call(missing, "ping")) for _ in range(3)]
            await asyncio.sleep(0.05)  # let them wait for the attempt
            assert not any(task.done() for task in waiting)
        for task in waiting:
            with pytest.raises(ClosedError):
                await task

    run(body())
