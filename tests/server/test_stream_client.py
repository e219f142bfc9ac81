"""The blocking client over the stream transport: which endpoint it picks, timeouts,
reconnection after a partition restart, and Unix-socket endpoints that leave no file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

import concordkv_mp
from concordkv_mp.client import sync_client
from concordkv_mp.client.routing import ServerMap
from concordkv_mp.errors import ClosedError, InvalidArgumentError, ServerTimeoutError, UnavailableError


def endpoints_used(client) -> list[str]:
    return [channel.endpoint for channel in client._partitions]


def test_a_client_on_the_servers_host_uses_the_unix_sockets(server):
    with server.client() as client:
        assert client.direct
        local = list(client.map.partition_local_endpoints)
        assert all(endpoint.startswith("ipc://") for endpoint in local)
        assert endpoints_used(client) == local
        client.set(b"k", b"v")
        assert client.get(b"k") == b"v"


def test_a_namesake_servers_unix_sockets_are_not_used(server_factory, monkeypatch):
    ours, other = server_factory(name="ours"), server_factory(name="other")
    ours.start()
    other.start()
    with other.client() as client:
        foreign = client.map.partition_local_endpoints
    real = ServerMap.from_hello

    def with_foreign_locals(hello):
        # As if another server on this host had our server's run directory.
        return real({**hello, "partition_local_endpoints": list(foreign)})

    monkeypatch.setattr(sync_client.ServerMap, "from_hello", with_foreign_locals)
    with concordkv_mp.connect(ours.endpoint) as client:
        assert client.direct
        assert endpoints_used(client) == list(client.map.partition_endpoints)
        client.set(b"whose", b"ours")
    monkeypatch.undo()
    with other.client() as client:
        assert client.get(b"whose") is None
    with ours.client(direct=False) as client:
        assert client.get(b"whose") == b"ours"


def test_a_stopped_partition_times_out_then_serves_again(server):
    with server.client(timeout=1.0) as client:
        key = b"stalled"
        owner = client.map.slot_map.partition_of(key)
        client.set(key, b"before")
        pid = server.pid_of("partition", owner)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(ServerTimeoutError):
                client.get(key)
            assert 0.9 < time.monotonic() - started < 3.0
        finally:
            os.kill(pid, signal.SIGCONT)
        assert client.get(key) == b"before"


def test_a_killed_partition_fails_only_the_call_in_flight_then_serves_again(server):
    with server.client(timeout=5.0) as client:
        key = b"restarted"
        owner = client.map.slot_map.partition_of(key)
        client.set(key, b"v1")
        pid = server.pid_of("partition", owner)
        os.kill(pid, signal.SIGKILL)
        try:
            client.get(key)  # the connection is gone; either it fails, or it reconnected
        except (UnavailableError, ServerTimeoutError):
            pass
        deadline = time.monotonic() + 5.0
        while True:
            try:
                assert client.get(key) == b"v1"
                break
            except (UnavailableError, ServerTimeoutError):
                assert time.monotonic() < deadline, "the partition did not serve again within 5 s"
        assert server.pid_of("partition", owner) != pid


def test_an_ipc_server_serves_partitions_over_unix_sockets_and_removes_them(server_factory, tmp_path):
    path = tmp_path / "ckv.sock"
    server = server_factory(endpoint=f"ipc://{path}")
    server.start()
    with server.client() as client:
        assert client.direct
        assert endpoints_used(client) == [f"ipc://{path}.p0", f"ipc://{path}.p1"]
        client.mset({b"a": b"1", b"b": b"2", b"c": b"3"})
        assert client.mget([b"a", b"b", b"c"]) == [b"1", b"2", b"3"]
    assert os.path.exists(f"{path}.p0")
    server.stop()
    assert not os.path.exists(f"{path}.p0") and not os.path.exists(f"{path}.p1")


def test_local_false_uses_tcp_even_on_the_servers_host(server):
    with server.client(local=False) as client:
        assert endpoints_used(client) == list(client.map.partition_endpoints)
        assert all(endpoint.startswith("tcp://") for endpoint in endpoints_used(client))
        client.set(b"over-tcp", b"yes")

    async def read_back():
        aclient = await concordkv_mp.aio.connect(server.endpoint, local=False)
        try:
            assert endpoints_used(aclient) == list(aclient.map.partition_endpoints)
            return await aclient.get(b"over-tcp")
        finally:
            await aclient.close()

    assert asyncio.run(read_back()) == b"yes"


@pytest.mark.parametrize("timeout", [0, -1, True, "5", float("nan")])
def test_a_bad_timeout_is_refused_before_connecting(timeout):
    with pytest.raises(InvalidArgumentError):
        concordkv_mp.connect("tcp://127.0.0.1:1", timeout=timeout)
    with pytest.raises(InvalidArgumentError):
        asyncio.run(concordkv_mp.aio.connect("tcp://127.0.0.1:1", timeout=timeout))


def test_calls_after_close_raise_closed_error_and_nothing_reconnects(server):
    client = server.client()
    client.mset({b"s%04d" % i: b"v" for i in range(client.map.scan_page_size * 3)})
    scan = client.scan()
    next(scan)
    client.close()
    for call in (lambda: client.get(b"s0001"), lambda: client.mget([b"s0001"]), client.count, lambda: list(scan)):
        with pytest.raises(ClosedError):
            call()
    assert all(channel.endpoint == "(closed)" for channel in client._partitions)


LEAK = """
import asyncio, gc, sys
import concordkv_mp

endpoint = sys.argv[1]
for direct in (True, False):
    client = concordkv_mp.connect(endpoint, direct=direct)
    client.get(b"k")
    client.cycle = client  # never closed, and only the collector can free it
    del client
    gc.collect()

async def leak():
    client = await concordkv_mp.aio.connect(endpoint)
    await client.get(b"k")
    client.cycle = client

asyncio.run(leak())
gc.collect()
print("collected")
"""


def test_clients_leaked_in_a_reference_cycle_do_not_hang_the_collector(server):
    # A context per client once let the collector finalize it before its sockets:
    # term() then waited forever (a hang seen in the test suite).
    done = subprocess.run([sys.executable, "-c", LEAK, server.endpoint], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "collected", done.stderr[-2000:]
