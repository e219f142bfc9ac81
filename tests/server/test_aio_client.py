"""The asyncio client (`concordkv_mp.aio`) against a live 2-partition server, and its
timeout handling against a fake front whose replies the test controls.

The module shares one server (small scan pages and batches, so that scans page and
batches split); the SIGSTOP test gets its own from the `server` fixture, because it
freezes a partition. Every test runs in a fresh event loop and checks that no task of
the client outlives `close()`; the server fixtures check that no process outlives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import threading
import time

import msgpack
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import concordkv_mp
import concordkv_mp.aio as aio
from concordkv_mp.errors import (
    ClosedError,
    ConcordKVError,
    CursorNotFoundError,
    EmptyKeyError,
    KeyTooLargeError,
    ServerTimeoutError,
    UnknownOperationError,
    ValueTooLargeError,
)
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.protocol import SlotMap
from tests.server.conftest import ServerProcess, free_port_block

PAGE = 7
BATCH = 50
MAX_VALUE = 65536
_namespaces = itertools.count()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> ServerProcess:
    server = ServerProcess(
        tmp_path_factory.mktemp("aio"), partitions=2, fsync="everysec",
        scan_page_size=PAGE, max_batch_keys=BATCH, max_value_size=MAX_VALUE,
    )
    server.start()
    yield server
    children = server.descendants()
    try:
        server.stop()
    finally:
        server.kill()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"server processes left behind: {alive}"


def run(coroutine):
    """Run in a fresh loop; fail if any task (a reader, a scan's close) is left over."""

    async def checked():
        result = await coroutine
        await asyncio.sleep(0)
        leftover = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        assert not leftover, leftover
        return result

    return asyncio.run(checked())


def namespace() -> bytes:
    """A key prefix no other test or example uses, so all share one server."""
    return b"ns%d/" % next(_namespaces)


def key_of_partition(partition: int, partitions: int = 2, prefix: bytes = b"p") -> bytes:
    slot_map = SlotMap(partitions)
    return next(key for key in (prefix + b"%d" % i for i in itertools.count()) if slot_map.partition_of(key) == partition)


async def open_cursors(client) -> list[int]:
    return [partition["open_cursors"] for partition in (await client.status())["partitions"]]


# ---------------------------------------------------------------- every method against a dict


@pytest.mark.parametrize("direct", [True, False])
def test_every_method_matches_a_dict(shared, direct):
    ns = namespace()
    k = [ns + b"%03d" % i for i in range(120)]

    async def body():
        async with await aio.connect(shared.endpoint, timeout=10, direct=direct) as c:
            assert c.direct is direct
            base = await c.count()
            model: dict[bytes, bytes] = {}
            assert await c.get(k[0]) is None
            await c.set(k[0], b"zero")
            model[k[0]] = b"zero"
            await c.set(k[1].decode(), "one")  # str keys and values are UTF-8
            model[k[1]] = b"one"
            assert await c.get(k[1]) == b"one"
            assert await c.exists(k[0]) and not await c.exists(k[2])
            assert await c.update(k[0], b"ZERO") and not await c.update(k[2], b"x")
            model[k[0]] = b"ZERO"
            assert await c.delete(k[1]) and not await c.delete(k[1])
            del model[k[1]]
            pairs = {key: key[::-1] for key in k[10:110]}  # > BATCH: split into chunks
            await c.mset(pairs)
            model.update(pairs)
            await c.mset([(k[3], b"a"), (k[3], b"b")])  # the last value given wins
            model[k[3]] = b"b"
            wanted = k[::-1] + [ns + b"missing"]
            assert await c.mget(wanted) == [model.get(key) for key in wanted]
            assert await c.mget([]) == []
            assert await c.mdelete(k[50:70] + k[50:55] + [ns + b"missing"]) == 20
            for key in k[50:70]:
                del model[key]
            assert await c.mdelete([]) == 0
            assert await c.count() == base + len(model)
            stats = await c.stats()
            assert len(stats["partitions"]) == 2 and stats["count"] == base + len(model)
            assert [pair async for pair in c.scan(prefix=ns)] == sorted(model.items())
            await c.flush()
            await c.compact()
            assert await c.mget(k) == [model.get(key) for key in k]
            assert await c.ping() == "pong"
            assert await c.engine() == "lsm"
            status = await c.status()
            assert len(status["partitions"]) == 2
            await c.mdelete(list(model))

    run(body())


def test_switch_engine_keeps_the_data(shared):
    ns = namespace()

    async def body():
        async with await aio.connect(shared.endpoint, timeout=10) as c:
            pairs = {ns + b"%d" % i: b"v%d" % i for i in range(40)}
            await c.mset(pairs)
            await c.switch_engine("btree")
            assert await c.engine() == "btree"
            assert [pair async for pair in c.scan(prefix=ns)] == sorted(pairs.items())
            await c.switch_engine("lsm")
            assert await c.engine() == "lsm"
            assert await c.mget(list(pairs)) == list(pairs.values())
            await c.mdelete(list(pairs))

    run(body())


# ---------------------------------------------------------------- random sequences (hypothesis)

_keys = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"ab", b"abc", b"b\x00", b"\xff"]) | st.binary(min_size=1, max_size=3)
_values = st.binary(max_size=20)
_operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _keys, _values),
        st.tuples(st.just("get"), _keys),
        st.tuples(st.just("delete"), _keys),
        st.tuples(st.just("exists"), _keys),
        st.tuples(st.just("update"), _keys, _values),
        st.tuples(st.just("mget"), st.lists(_keys, max_size=8)),
        st.tuples(st.just("mset"), st.lists(st.tuples(_keys, _values), max_size=8)),
        st.tuples(st.just("mdelete"), st.lists(_keys, max_size=8)),
        st.tuples(st.just("gather_get"), st.lists(_keys, max_size=20)),
        st.tuples(st.just("scan"), st.none() | _keys, st.none() | _keys, st.booleans(), st.none() | st.integers(0, 20)),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=_operations, direct=st.booleans())
def test_random_operations_match_a_dict(shared, operations, direct):
    ns = namespace()

    async def body():
        async with await aio.connect(shared.endpoint, timeout=10, direct=direct) as c:
            base = await c.count()
            model: dict[bytes, bytes] = {}
            for op, *args in operations:
                await apply(c, model, ns, op, args)
            assert await c.count() == base + len(model)
            assert [pair async for pair in c.scan(prefix=ns)] == sorted((ns + k, v) for k, v in model.items())
            await c.mdelete([ns + key for key in model])

    run(body())


async def apply(c, model: dict, ns: bytes, op: str, args: list) -> None:
    if op == "set":
        await c.set(ns + args[0], args[1])
        model[args[0]] = args[1]
    elif op == "get":
        assert await c.get(ns + args[0]) == model.get(args[0])
    elif op == "delete":
        assert await c.delete(ns + args[0]) == (model.pop(args[0], None) is not None)
    elif op == "exists":
        assert await c.exists(ns + args[0]) == (args[0] in model)
    elif op == "update":
        present = args[0] in model
        assert await c.update(ns + args[0], args[1]) == present
        if present:
            model[args[0]] = args[1]
    elif op == "mget":
        assert await c.mget([ns + key for key in args[0]]) == [model.get(key) for key in args[0]]
    elif op == "mset":
        await c.mset([(ns + key, value) for key, value in args[0]])
        model.update(args[0])
    elif op == "mdelete":
        present = {key for key in args[0] if key in model}
        assert await c.mdelete([ns + key for key in args[0]]) == len(present)
        for key in present:
            del model[key]
    elif op == "gather_get":
        got = await asyncio.gather(*(c.get(ns + key) for key in args[0]))
        assert got == [model.get(key) for key in args[0]]
    elif op == "scan":
        start, end, reverse, limit = args
        scan = c.scan(None if start is None else ns + start, None if end is None else ns + end, ns, reverse, limit)
        async with contextlib.aclosing(scan):
            got = [pair async for pair in scan]
        wanted = sorted(
            ((key, value) for key, value in model.items() if (start is None or key >= start) and (end is None or key < end)),
            reverse=reverse,
        )
        assert got == [(ns + key, value) for key, value in wanted][:limit]
    else:
        raise AssertionError(op)


# ---------------------------------------------------------------- scans


def test_scans_merge_the_partitions_pages_in_key_order(shared):
    ns = namespace()
    pairs = {ns + b"%04d" % i: b"%d" % i for i in range(0, 400, 2)}  # many pages of PAGE
    ordered = sorted(pairs.items())

    async def body():
        async with await aio.connect(shared.endpoint, timeout=10) as c:
            await c.mset(pairs)

            async def scan(**kwargs):
                return [pair async for pair in c.scan(prefix=kwargs.pop("prefix", ns), **kwargs)]

            assert await scan() == ordered
            assert await scan(reverse=True) == ordered[::-1]
            assert await scan(prefix=ns + b"01") == [p for p in ordered if p[0].startswith(ns + b"01")]
            assert await scan(start=ns + b"0101", end=ns + b"0201") == [p for p in ordered if ns + b"0101" <= p[0] < ns + b"0201"]
            assert await scan(start=ns + b"0101", end=ns + b"0201", reverse=True) == [
                p for p in ordered[::-1] if ns + b"0101" <= p[0] < ns + b"0201"
            ]
            for limit in (0, 1, PAGE, PAGE + 1, 3 * PAGE + 2, 1000):
                assert await scan(limit=limit) == ordered[:limit]
                assert await scan(limit=limit, reverse=True) == ordered[::-1][:limit]
            assert await scan(start=ns + b"9", end=ns + b"0") == []
            assert await scan(prefix=ns + b"x") == []
            assert await open_cursors(c) == [0, 0]  # limits closed theirs
            await c.mdelete(list(pairs))

    run(body())


def test_stopping_a_scan_early_closes_the_server_cursors(shared):
    ns = namespace()
    pairs = {ns + b"%04d" % i: b"v" for i in range(100)}

    async def body():
        async with await aio.connect(shared.endpoint, timeout=10) as c:
            await c.mset(pairs)
            async with contextlib.aclosing(c.scan(prefix=ns)) as scan:
                async for _ in scan:
                    assert await open_cursors(c) == [1, 1]
                    break
            assert await open_cursors(c) == [0, 0]

            # Without aclosing, asyncio finalizes the abandoned generator soon after.
            async for _ in c.scan(prefix=ns, reverse=True):
                break
            for _ in range(100):
                if await open_cursors(c) == [0, 0]:
                    break
                await asyncio.sleep(0.01)
            assert await open_cursors(c) == [0, 0]
            await c.mdelete(list(pairs))

    run(body())


def test_scan_arguments_are_checked_at_the_call(shared):
    async def body():
        async with await aio.connect(shared.endpoint, timeout=10) as c:
            with pytest.raises(concordkv_mp.errors.InvalidArgumentError):
                c.scan(limit=-1)
            with pytest.raises(concordkv_mp.errors.InvalidTypeError):
                c.scan(start=5)

    run(body())


# ---------------------------------------------------------------- many requests in flight


def test_a_thousand_concurrent_requests_on_one_client(shared):
    ns = namespace()
    keys = [ns + b"%04d" % i for i in range(1000)]

    async def body():
        async with await aio.connect(shared.endpoint, timeout=30) as c:
            await asyncio.gather(*(c.set(key, key[::-1]) for key in keys))
            assert await asyncio.gather(*(c.get(key) for key in keys)) == [key[::-1] for key in keys]
            mixed = await asyncio.gather(c.mget(keys[:300]), c.count(), c.exists(keys[5]), c.get(ns + b"none"))
            assert mixed[0] == [key[::-1] for key in keys[:300]] and mixed[2] is True and mixed[3] is None
            assert await c.mdelete(keys) == 1000

    run(body())


# ---------------------------------------------------------------- errors: the sync client's codes


def test_errors_carry_the_same_codes_as_the_sync_client(shared):
    bad_calls = [
        ("get", (b"",)),
        ("get", (b"k" * 20000,)),
        ("get", (7,)),
        ("set", (b"k", b"v" * (MAX_VALUE + 1))),
        ("set", (b"k", None)),
        ("update", (b"", b"v")),
        ("mget", (b"not a list",)),
        ("mset", ({b"k": b"v" * (MAX_VALUE + 1)},)),
        ("mset", ([b"abc"],)),
        ("mdelete", ([b"ok", b""],)),
        ("switch_engine", ("no-such-engine",)),  # refused by the server
    ]

    def code_of(call) -> tuple[type, str]:
        try:
            call()
        except ConcordKVError as exc:
            return type(exc), exc.code
        raise AssertionError("no error")

    with concordkv_mp.connect(shared.endpoint, timeout=10) as sync:
        wanted = [code_of(lambda m=method, a=args: getattr(sync, m)(*a)) for method, args in bad_calls]
        wanted.append(code_of(lambda: sync._call(sync._front, "no-such-op")))
        wanted.append(code_of(lambda: sync._call(sync._partitions[0], "scan_next", 0, 10**9, 5)))

    async def body():
        got = []
        async with await aio.connect(shared.endpoint, timeout=10) as c:
            for method, args in bad_calls:
                try:
                    await getattr(c, method)(*args)
                except ConcordKVError as exc:
                    got.append((type(exc), exc.code))
            for channel, request in ((c._front, ("no-such-op",)), (c._partitions[0], ("scan_next", 0, 10**9, 5))):
                try:
                    await c._call(channel, *request)
                except ConcordKVError as exc:
                    got.append((type(exc), exc.code))
        return got

    got = run(body())
    assert got == wanted
    assert (EmptyKeyError, "EMPTY_KEY") in got and (KeyTooLargeError, "KEY_TOO_LARGE") in got
    assert (ValueTooLargeError, "VALUE_TOO_LARGE") in got
    assert (UnknownOperationError, "UNKNOWN_OP") in got and (CursorNotFoundError, "NO_SUCH_CURSOR") in got


def test_close_fails_waiting_calls_and_later_ones(shared):
    async def body():
        c = await aio.connect(shared.endpoint, timeout=10)
        waiting = asyncio.ensure_future(c.get(b"some key"))
        await asyncio.sleep(0)  # sent, not yet answered
        await c.close()
        with pytest.raises(ClosedError):
            await waiting
        with pytest.raises(ClosedError):
            await c.get(b"k")
        await c.close()  # a second close is harmless

    run(body())


# ---------------------------------------------------------------- timeouts


def test_connecting_to_nobody_times_out_fast():
    endpoint = f"tcp://127.0.0.1:{free_port_block(1)}"

    async def body():
        started = time.monotonic()
        with pytest.raises(ServerTimeoutError):
            await aio.connect(endpoint, timeout=0.3)
        return time.monotonic() - started

    assert run(body()) < 2.0


class FakeFront:
    """A ROUTER that answers HELLO (announcing partition stream endpoints nobody serves,
    and no local Unix sockets) and
    PING at once, and GET with the key itself after `delays[key]` seconds (never, when
    `silent`). It runs in a thread with its own ZeroMQ context."""

    def __init__(self):
        port = free_port_block(3)
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.partition_endpoints = [f"tcp://127.0.0.1:{port + 1}", f"tcp://127.0.0.1:{port + 2}"]
        self.silent = False
        self.delays: dict[bytes, float] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _hello(self) -> dict:
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "partitions": 2,
            "slot_ranges": [list(r) for r in SlotMap(2).ranges],
            "partition_endpoints": self.partition_endpoints,
            "partition_local_endpoints": [None, None],
            "server_id": "fake",
            "limits": {
                "max_key_size": 1024, "max_value_size": 1024, "max_batch_keys": 100,
                "max_message_size": 1 << 20, "scan_page_size": 10,
            },
        }

    def _serve(self) -> None:
        context = zmq.Context()
        socket = context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(self.endpoint)
        self._ready.set()
        due: list[tuple[float, list]] = []
        try:
            while not self._stop.is_set():
                if socket.poll(10):
                    identity, frame = socket.recv_multipart()
                    request_id, op, *args = msgpack.unpackb(frame)
                    if op == "hello":
                        due.append((0.0, [identity, msgpack.packb([request_id, 0, self._hello()])]))
                    elif op == "ping":
                        due.append((0.0, [identity, msgpack.packb([request_id, 0, "pong"])]))
                    elif not self.silent:
                        reply = [identity, msgpack.packb([request_id, 0, args[0]])]
                        due.append((time.monotonic() + self.delays.get(args[0], 0.0), reply))
                now = time.monotonic()
                for entry in [entry for entry in due if entry[0] <= now]:
                    due.remove(entry)
                    socket.send_multipart(entry[1])
        finally:
            socket.close(0)
            context.term()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()


@pytest.fixture
def fake_front():
    front = FakeFront()
    yield front
    front.stop()


def test_a_silent_server_times_out_every_request_in_flight_fast(fake_front):
    async def body():
        async with await aio.connect(fake_front.endpoint, timeout=0.3) as c:
            assert c.direct is False  # the partitions did not answer the probe
            assert await c.get(b"k") == b"k"  # routed through the front
            fake_front.silent = True
            started = time.monotonic()
            results = await asyncio.gather(*(c.get(b"k%d" % i) for i in range(200)), return_exceptions=True)
            elapsed = time.monotonic() - started
            assert all(isinstance(r, ServerTimeoutError) for r in results), {type(r) for r in results}
            assert elapsed < 1.5
            assert c._front.waiting == {}
            fake_front.silent = False
            assert await c.get(b"again") == b"again"  # on the replacement socket

    run(body())


def test_late_replies_are_ignored(fake_front):
    fake_front.delays = {b"slow": 0.2, b"fast": 0.4}

    async def body():
        async with await aio.connect(fake_front.endpoint, timeout=5) as c:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.get(b"slow"), 0.05)  # the caller gives up
            # The reply to "slow" arrives while "fast" waits on the same socket.
            assert await c.get(b"fast") == b"fast"
            assert c._front.waiting == {}

    run(body())


def test_a_stopped_partition_times_out_and_its_socket_recovers(server):
    on_zero, on_one = key_of_partition(0), key_of_partition(1)
    partition = server.pid_of("partition", 0)

    async def body():
        async with await aio.connect(server.endpoint, timeout=0.5) as c:
            await c.set(on_zero, b"0")
            await c.set(on_one, b"1")
            os.kill(partition, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(ServerTimeoutError):
                    await c.get(on_zero)
                assert time.monotonic() - started < 1.5
                assert await c.get(on_one) == b"1"  # the other partition is unaffected
            finally:
                os.kill(partition, signal.SIGCONT)
            for _ in range(20):
                with contextlib.suppress(ServerTimeoutError):
                    assert await c.get(on_zero) == b"0"
                    return
            raise AssertionError("partition 0 never answered again")

    run(body())
