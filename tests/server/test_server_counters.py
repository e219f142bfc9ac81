"""`incr` through a live server: the operation added by one table entry and one
Database method reaches both clients, the front and the CLI, stays atomic under
concurrent clients (straight to the partition and through the front), and its errors
come back with their codes."""

from __future__ import annotations

import asyncio
import threading

import pytest

import concordkv_mp.aio
from concordkv_mp.errors import InvalidArgumentError, NotAnIntegerError
from tests.server.test_server_commands import concordkv


def test_concurrent_increments_through_every_client_add_up(server):
    rounds = 150

    def work(direct: bool):
        with server.client(direct=direct) as client:
            for _ in range(rounds):
                client.incr(b"hits")

    threads = [threading.Thread(target=work, args=(direct,)) for direct in (True, True, False, False)]
    for thread in threads:
        thread.start()

    async def pipelined():
        client = await concordkv_mp.aio.connect(server.endpoint, timeout=10.0)
        try:
            results = await asyncio.gather(*(client.incr(b"hits", by=2) for _ in range(rounds)))
            assert len(set(results)) == rounds  # each saw a different value: none was lost
            return await client.incr(b"hits", 0)
        finally:
            await client.close()

    asyncio.run(pipelined())
    for thread in threads:
        thread.join()
    with server.client() as client:
        assert client.incr(b"hits", 0) == 4 * rounds + 2 * rounds
        assert client.get(b"hits") == b"%d" % (6 * rounds)


def test_errors_come_back_with_their_codes(server):
    with server.client() as client:
        client.set(b"name", b"ada")
        with pytest.raises(NotAnIntegerError):
            client.incr(b"name")
        with pytest.raises(InvalidArgumentError):
            client.incr(b"n", 1 << 63)  # refused by the client before it is sent
        assert client.get(b"name") == b"ada"
    result = concordkv("cli", server.endpoint, "INCR", "visits", "5")
    assert result.stdout.strip() == "(integer) 5"
    failed = concordkv("cli", server.endpoint, "INCR", "name")
    assert failed.returncode == 1 and "NOT_AN_INTEGER" in failed.stdout
