"""The server-wide commands end to end: the `concordkv` command line against a live
server (one-shot cli, piped cli, status), and ENGINE switching every partition while
the data stays."""

from __future__ import annotations

import json
import subprocess
import sys


def concordkv(*args, stdin: str | None = None):
    return subprocess.run([sys.executable, "-m", "concordkv_mp.cli.main", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_one_shot_and_piped_cli(server):
    assert concordkv("cli", server.endpoint, "SET", "greeting", "hello world").stdout.strip() == "OK"
    assert concordkv("cli", server.endpoint, "GET", "greeting").stdout.strip() == '"hello world"'
    assert concordkv("cli", server.endpoint, "GET", "missing").stdout.strip() == "(nil)"
    failed = concordkv("cli", server.endpoint, "SET", "k" * 20000, "v")
    assert failed.returncode == 1 and "KEY_TOO_LARGE" in failed.stdout + failed.stderr
    piped = concordkv("cli", server.endpoint, stdin="MSET a 1 b 2 c 3\nCOUNT\nSCAN LIMIT 2\nDEL a b\nMGET a c\n")
    assert piped.returncode == 0, piped.stderr
    out = piped.stdout
    assert "(integer) 4" in out  # greeting, a, b, c
    assert '"a"' in out and '"b"' in out
    assert "(integer) 2" in out
    with server.client() as client:
        assert client.mget([b"a", b"c", b"greeting"]) == [None, b"3", b"hello world"]


def test_status_command_shows_every_process_and_partition(server):
    with server.client() as client:
        client.mset({b"k%d" % i: b"v" for i in range(1000)})
    result = concordkv("status", server.endpoint, "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    roles = sorted(p["role"] for p in status["processes"])
    assert roles == ["compactor", "front", "io_optimizer", "partition", "partition", "supervisor"]
    assert all(p["alive"] and p["pid"] and p["rss"] > 0 for p in status["processes"])
    assert sum(p["keys"] for p in status["partitions"]) == 1000
    assert status["io_optimizer"]["bytes_written"] > 0
    text = concordkv("status", server.endpoint)
    assert text.returncode == 0 and "partition" in text.stdout and "io_optimizer" in text.stdout.replace(" ", "_")


def test_engine_switch_through_the_server_keeps_every_key(server):
    with server.client() as client:
        data = {b"key-%05d" % i: b"value-%d" % i for i in range(3000)}
        client.mset(data)
        assert client.engine == "lsm"
        for engine in ("btree", "hash", "lsm"):
            client.switch_engine(engine)
            assert client.engine == engine
            assert client.count() == len(data)
            assert dict(client.scan()) == data
            client.set(b"after-" + engine.encode(), b"x")
            data[b"after-" + engine.encode()] = b"x"
    result = concordkv("cli", server.endpoint, "ENGINE")
    assert result.stdout.strip().strip('"') == "lsm"
    server.stop()
    server.start()
    with server.client() as client:
        assert client.engine == "lsm"
        assert dict(client.scan()) == data
