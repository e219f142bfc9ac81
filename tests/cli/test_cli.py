"""The `concordkv` command: shell quoting, every shell command's parsing and output
against a fake client, STATUS rendering, and the subcommands' routing and exit codes
(a bad configuration: 2). End-to-end tests against a live server live elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.application import create_app_session
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

import concordkv_mp
from concordkv_mp.cli import bench, shell
from concordkv_mp.cli.commands import COMMANDS, SCAN_DISPLAY_LIMIT, execute, execute_line
from concordkv_mp.cli.main import main
from concordkv_mp.cli.quoting import QuotingError, quote_bytes, split_line
from concordkv_mp.cli.server_control import FIELD_HELP
from concordkv_mp.cli.status_view import render_text, run_status
from concordkv_mp.config import FIELD_NAMES
from concordkv_mp.errors import BusyError, ServerTimeoutError, UnavailableError

SAMPLE_STATUS = {
    "server": {
        "version": "0.1.0",
        "protocol": 1,
        "endpoint": "tcp://127.0.0.1:7379",
        "data_dir": "/srv/[ckv]",
        "fsync": "everysec",
        "engine": "lsm",
        "partitions": 2,
        "uptime": 3725.0,
    },
    "processes": [
        {
            "role": "supervisor",
            "index": None,
            "pid": 100,
            "alive": True,
            "cpu_percent": 0.5,
            "rss": 30 * 2**20,
            "uptime": 3725.0,
            "restarts": 0,
        },
        {
            "role": "front",
            "index": None,
            "pid": 101,
            "alive": True,
            "cpu_percent": 12.25,
            "rss": 40 * 2**20,
            "uptime": 3724.0,
            "restarts": 0,
        },
        {
            "role": "partition",
            "index": 0,
            "pid": 102,
            "alive": True,
            "cpu_percent": 50.0,
            "rss": 100 * 2**20,
            "uptime": 42.0,
            "restarts": 1,
        },
        {
            "role": "partition",
            "index": 1,
            "pid": None,
            "alive": False,
            "cpu_percent": 0.0,
            "rss": 0,
            "uptime": 0.0,
            "restarts": 3,
        },
        {
            "role": "io_optimizer",
            "index": None,
            "pid": 104,
            "alive": True,
            "cpu_percent": 3.0,
            "rss": 20 * 2**20,
            "uptime": 90000.0,
            "restarts": 0,
        },
    ],
    "partitions": [
        {
            "index": 0,
            "slots": [0, 8191],
            "endpoint": "ipc:///tmp/p0",
            "engine": "lsm",
            "keys": 123456,
            "memtable_bytes": 2048,
            "files_per_level": [2, 5, 0, 0, 0, 0, 0],
            "pending_compactions": 1,
        },
        {
            "index": 1,
            "slots": [8192, 16383],
            "endpoint": "ipc:///tmp/p1",
            "engine": "lsm",
            "keys": 1000,
            "memtable_bytes": 0,
            "files_per_level": [0] * 7,
            "pending_compactions": 0,
        },
    ],
    "io_optimizer": {
        "fsync": "everysec",
        "bytes_written": 5 * 2**30,
        "fsyncs": 4321,
        "write_batches": 98765,
        "mean_batch_bytes": 1536.0,
    },
}


class FakeClient:
    """A client of the shell without a server: the embedded database (which has the
    same data methods, and so the same errors) plus the server-only calls."""

    def __init__(self, db):
        self._db = db
        self.pings = 0
        self.closed = False

    def __getattr__(self, name):
        return getattr(self._db, name)

    def ping(self):
        self.pings += 1

    def status(self):
        return SAMPLE_STATUS

    def close(self):
        self.closed = True


@pytest.fixture
def client(tmp_path):
    with concordkv_mp.open(str(tmp_path / "db"), engine="btree", fsync="none", max_key_size=64) as db:
        yield FakeClient(db)


def run(client, line: str) -> str:
    reply = execute_line(client, line)
    assert not reply.is_error, reply.text
    return reply.text


def error(client, line: str, start: str = "(error) ") -> str:
    """The error reply to `line`, which must start with `start`."""
    reply = execute_line(client, line)
    assert reply.is_error and not reply.quit
    assert reply.text.startswith(start)
    return reply.text


# ---------------------------------------------------------------- quoting


@pytest.mark.parametrize(
    "line, words",
    [
        ("SET k v", [b"SET", b"k", b"v"]),
        ("  GET   k  ", [b"GET", b"k"]),
        ("", []),
        ("   ", []),
        ('SET "a key" "a value"', [b"SET", b"a key", b"a value"]),
        ("SET 'a key' 'it\\'s'", [b"SET", b"a key", b"it's"]),
        ('SET k "\\x00\\xff\\n\\t\\"\\\\"', [b"SET", b"k", b'\x00\xff\n\t"\\']),
        ("SET k '\\x00'", [b"SET", b"k", b"\\x00"]),  # single quotes are literal
        ('SET k ""', [b"SET", b"k", b""]),
        ("SET clé café", [b"SET", "clé".encode(), "café".encode()]),
        ('SET k "\\xZZ"', [b"SET", b"k", b"xZZ"]),  # not an escape: the backslash goes
        ('SET k"v w"', [b"SET", b"kv w"]),
    ],
)
def test_split_line(line, words):
    assert split_line(line) == words


@pytest.mark.parametrize("line", ['SET k "v', "SET k 'v", 'SET "k"v', "SET 'k'v"])
def test_split_line_refuses(line):
    with pytest.raises(QuotingError):
        split_line(line)


@pytest.mark.parametrize(
    "data, shown",
    [
        (b"ada", '"ada"'),
        (b"", '""'),
        (b'say "hi"\n', '"say \\"hi\\"\\n"'),
        (b"\x00\xff", '"\\x00\\xff"'),
        ("café".encode(), '"café"'),
        ("a\u200bb".encode(), '"a\\xe2\\x80\\x8bb"'),  # invisible: shown as its bytes
    ],
)
def test_quote_bytes(data, shown):
    assert quote_bytes(data) == shown


@given(st.binary())
def test_what_is_shown_can_be_typed_back(data):
    assert split_line(quote_bytes(data)) == [data]


@given(st.text())
def test_shown_text_reads_back_as_its_utf8(text):
    assert split_line(quote_bytes(text.encode())) == [text.encode()]


# ---------------------------------------------------------------- commands


def test_set_get(client):
    assert run(client, "SET user:1 ada") == "OK"
    assert run(client, "GET user:1") == '"ada"'
    assert run(client, "GET nobody") == "(nil)"


def test_commands_are_case_insensitive_but_keys_are_not(client):
    assert run(client, "set K v") == "OK"
    assert run(client, "gEt K") == '"v"'
    assert run(client, "get k") == "(nil)"


def test_binary_values_round_trip_through_the_shell(client):
    assert run(client, 'SET bin "\\x00\\xff\\x80 ok"') == "OK"
    assert client.get(b"bin") == b"\x00\xff\x80 ok"
    assert run(client, "GET bin") == '"\\x00\\xff\\x80 ok"'
    assert run(client, 'SET "key with spaces" "multi\\nline"') == "OK"
    assert run(client, 'GET "key with spaces"') == '"multi\\nline"'


def test_del_prints_how_many_existed(client):
    run(client, "MSET a 1 b 2 c 3")
    assert run(client, "DEL a") == "(integer) 1"
    assert run(client, "DEL a b c zz") == "(integer) 2"
    assert run(client, "COUNT") == "(integer) 0"


def test_exists_and_update(client):
    assert run(client, "EXISTS k") == "(integer) 0"
    assert run(client, "UPDATE k v") == "(integer) 0"
    assert run(client, "GET k") == "(nil)"
    run(client, "SET k v")
    assert run(client, "EXISTS k") == "(integer) 1"
    assert run(client, "UPDATE k w") == "(integer) 1"
    assert run(client, "GET k") == '"w"'


def test_incr(client):
    assert run(client, "INCR hits") == "(integer) 1"
    assert run(client, "INCR hits 41") == "(integer) 42"
    assert run(client, "incr hits -50") == "(integer) -8"
    assert run(client, "GET hits") == '"-8"'
    run(client, "SET name ada")
    assert error(client, "INCR name").startswith("(error) NOT_AN_INTEGER: ")
    assert error(client, "INCR hits 1.5").startswith("(error) INVALID_ARGUMENT: by takes an integer")
    assert run(client, "GET hits") == '"-8"'


def test_mset_mget(client):
    assert run(client, "MSET a 1 b 2 a 3") == "OK"  # the last value of a repeated key wins
    assert run(client, "MGET a b zz") == '1) "3"\n2) "2"\n3) (nil)'


def test_numbered_lists_align(client):
    keys = " ".join(f"k{i}" for i in range(10))
    assert run(client, f"MGET {keys}").splitlines()[0] == " 1) (nil)"
    assert run(client, f"MGET {keys}").splitlines()[-1] == "10) (nil)"


def test_mset_needs_pairs(client):
    assert "the last key has no value" in error(client, "MSET a 1 b")
    assert run(client, "COUNT") == "(integer) 0"


def test_scan(client):
    run(client, "MSET user:1 ada user:2 grace item:1 x item:2 y zebra z")
    assert run(client, "SCAN") == (
        '1) "item:1" -> "x"\n2) "item:2" -> "y"\n3) "user:1" -> "ada"\n4) "user:2" -> "grace"\n5) "zebra" -> "z"'
    )
    assert run(client, "SCAN item:2 user:2") == '1) "item:2" -> "y"\n2) "user:1" -> "ada"'
    assert run(client, "SCAN user:") == '1) "user:1" -> "ada"\n2) "user:2" -> "grace"\n3) "zebra" -> "z"'
    assert run(client, "scan prefix user: reverse") == '1) "user:2" -> "grace"\n2) "user:1" -> "ada"'
    assert run(client, "SCAN LIMIT 2 REVERSE") == '1) "zebra" -> "z"\n2) "user:2" -> "grace"'
    assert run(client, "SCAN PREFIX nothing") == "(empty)"
    assert run(client, "SCAN LIMIT 0") == "(empty)"


def test_scan_without_limit_shows_a_page_and_says_there_is_more(client):
    client.mset([(f"k{i:04d}", "v") for i in range(SCAN_DISPLAY_LIMIT + 5)])
    lines = run(client, "SCAN").splitlines()
    assert len(lines) == SCAN_DISPLAY_LIMIT + 1
    assert lines[-2].endswith(f'"k{SCAN_DISPLAY_LIMIT - 1:04d}" -> "v"')
    assert "more follow" in lines[-1]
    assert len(run(client, f"SCAN LIMIT {SCAN_DISPLAY_LIMIT + 5}").splitlines()) == SCAN_DISPLAY_LIMIT + 5


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("SCAN LIMIT", "LIMIT needs a value"),
        ("SCAN PREFIX", "PREFIX needs a value"),
        ("SCAN LIMIT ten", "LIMIT takes a whole number"),
        ("SCAN LIMIT -1", "LIMIT takes a whole number"),
        ("SCAN a b c", "too many bounds"),
    ],
)
def test_scan_usage_errors(client, line, fragment):
    assert fragment in error(client, line, "(error) INVALID_ARGUMENT: ")


def test_scan_errors_from_the_client_are_shown():
    class Busy:
        def scan(self, **bounds):
            raise BusyError("too many open scan cursors")

    assert execute(Busy(), ["SCAN", "a"]).text == "(error) BUSY: too many open scan cursors"


def test_count(client):
    assert run(client, "COUNT") == "(integer) 0"
    run(client, "MSET a 1 b 2")
    assert run(client, "count") == "(integer) 2"


def test_engine_shows_and_switches(client):
    run(client, "SET k v")
    assert run(client, "ENGINE") == "btree"
    assert run(client, "ENGINE hash") == "OK"
    assert run(client, "ENGINE") == "hash"
    assert run(client, "GET k") == '"v"'
    assert error(client, "ENGINE nosuch").startswith("(error) INVALID_CONFIG: ")


def test_flush_compact_ping(client):
    run(client, "SET k v")
    assert run(client, "FLUSH") == "OK"
    assert run(client, "COMPACT") == "OK"
    assert run(client, "PING") == "PONG"
    assert client.pings == 1


def test_status_renders_the_servers_status(client):
    text = run(client, "STATUS")
    assert "Processes" in text and "Partitions" in text and "I/O optimizer" in text


@pytest.mark.parametrize("line", ["EXPIRE k 10", "TTL k", "expire"])
def test_expire_and_ttl_are_not_faked(client, line):
    assert error(client, line).startswith("(error) UNSUPPORTED: ")


def test_help(client):
    text = run(client, "HELP")
    for name in COMMANDS:
        assert name in text
    assert run(client, "help scan").startswith("SCAN [start [end]] [PREFIX p] [LIMIT n] [REVERSE]")
    assert "no command" in error(client, "HELP NOPE")


@pytest.mark.parametrize("line", ["QUIT", "exit", "Quit now"])
def test_quit(client, line):
    reply = execute_line(client, line)
    assert reply.quit and not reply.is_error


def test_empty_line_prints_nothing(client):
    assert execute_line(client, "   ") == execute(client, [])
    assert execute(client, []).text == ""


@pytest.mark.parametrize(
    "line, usage",
    [
        ("SET k", "SET key value"),
        ("SET k v w", "SET key value"),
        ("GET", "GET key"),
        ("GET a b", "GET key"),
        ("DEL", "DEL key [key ...]"),
        ("MGET", "MGET key [key ...]"),
        ("MSET", "MSET key value"),
        ("COUNT x", "COUNT"),
        ("ENGINE a b", "ENGINE [name]"),
        ("UPDATE k", "UPDATE key value"),
        ("INCR", "INCR key [by]"),
        ("INCR k 1 2", "INCR key [by]"),
    ],
)
def test_wrong_number_of_arguments(client, line, usage):
    assert usage in error(client, line, "(error) INVALID_ARGUMENT: wrong number of arguments; usage: ")


def test_unknown_command(client):
    assert error(client, "FROB k") == "(error) UNKNOWN_COMMAND: unknown command 'FROB'; type HELP for the list"


def test_quoting_errors_are_error_replies(client):
    assert "unbalanced" in error(client, 'SET k "v')


def test_errors_from_the_database_carry_their_code(client):
    assert error(client, "SET " + "k" * 65 + " v").startswith("(error) KEY_TOO_LARGE: ")
    assert error(client, 'GET ""').startswith("(error) EMPTY_KEY: ")
    assert run(client, "PING") == "PONG"  # the shell goes on


def test_timeouts_and_unreachable_servers_are_error_replies():
    class Down:
        def get(self, key):
            raise ServerTimeoutError("no reply within 5.0 s")

        def count(self):
            raise UnavailableError("cannot reach tcp://127.0.0.1:1")

    assert execute(Down(), ["GET", "k"]).text == "(error) TIMEOUT: no reply within 5.0 s"
    assert execute(Down(), ["COUNT"]).text == "(error) UNAVAILABLE: cannot reach tcp://127.0.0.1:1"


def test_execute_takes_str_or_bytes_words(client):
    assert execute(client, [b"SET", "clé", b"\xff"]).text == "OK"
    assert execute(client, ["GET", "clé".encode()]).text == '"\\xff"'


# ---------------------------------------------------------------- the shell around the commands


def test_run_lines_runs_until_quit_and_reports_failure(client):
    out = []
    code = shell.run_lines(client, ["SET a 1\n", "GET a\n", "\n", "BOGUS\n", "QUIT\n", "SET b 2\n"], out=out.append)
    assert code == 1
    assert out == ["OK", '"1"', "(error) UNKNOWN_COMMAND: unknown command 'BOGUS'; type HELP for the list"]
    assert client.get(b"b") is None
    assert shell.run_lines(client, ["GET a"], out=out.append) == 0


def completions(text: str) -> list[str]:
    return [c.text for c in shell.ShellCompleter().get_completions(Document(text), None)]


def test_completion():
    assert completions("") == list(COMMANDS)
    assert completions("S") == ["SET", "SCAN", "STATUS"]
    assert completions("sc") == ["scan"]
    assert completions("ENGINE ") == ["lsm", "btree", "rbtree", "hash", "array"]
    assert completions("engine b") == ["btree"]
    assert completions("ENGINE btree ") == []
    assert completions("HELP mg") == ["mget"]
    assert completions("SCAN a L") == ["LIMIT"]
    assert completions("GET ") == []


def test_interactive_session(client, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CKV_HISTORY_FILE", str(tmp_path / "history"))
    with create_pipe_input() as keys, create_app_session(input=keys, output=DummyOutput()):
        keys.send_text('set k "v 1"\nget k\nnope\n\x03\x04')  # ... Ctrl-C, then Ctrl-D leaves
        assert shell.run_interactive(client, "tcp://127.0.0.1:7379") == 0
    assert (
        capsys.readouterr().out
        == "OK\n\"v 1\"\n(error) UNKNOWN_COMMAND: unknown command 'NOPE'; type HELP for the list\n"
    )
    assert "get k" in (tmp_path / "history").read_text()
    with create_pipe_input() as keys, create_app_session(input=keys, output=DummyOutput()):
        keys.send_text("quit\nget k\n")
        assert shell.run_interactive(client, "tcp://127.0.0.1:7379") == 0
    assert capsys.readouterr().out == ""


def test_history_file(monkeypatch, tmp_path):
    monkeypatch.setenv("CKV_HISTORY_FILE", str(tmp_path / "h"))
    assert shell.history_path() == str(tmp_path / "h")
    monkeypatch.delenv("CKV_HISTORY_FILE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert shell.history_path() == str(tmp_path / ".concordkv_history")


# ---------------------------------------------------------------- STATUS rendering


def test_render_text():
    text = render_text(SAMPLE_STATUS)
    for fragment in (
        "ConcordKV-MP 0.1.0",
        "tcp://127.0.0.1:7379",
        "/srv/[ckv]",  # not taken for rich markup
        "1h 2m",  # uptime 3725 s
        "supervisor",
        "io_optimizer",
        "12.2",  # CPU %
        "100.0 MiB",
        "42.0s",
        "1d 1h",
        "total: CPU 65.8 %, memory 190.0 MiB",
        "0-8191",
        "8192-16383",
        "123,456",
        "L0:2 L1:5",
        "ipc:///tmp/p0",
        "total: 124,456 keys",
        "Server",
        "5.0 GiB",
        "98,765",
        "1.5 KiB",
    ):
        assert fragment in text, fragment
    dead = next(line for line in text.splitlines() if "partition" in line and " no " in line)
    assert "3" in dead


def test_render_text_leaves_out_missing_sections():
    text = render_text({"server": SAMPLE_STATUS["server"], "processes": [], "partitions": []})
    assert "ConcordKV-MP" in text
    assert "Processes" not in text and "Partitions" not in text and "I/O optimizer" not in text


@pytest.fixture
def fake_server(monkeypatch, tmp_path):
    """concordkv_mp.connect() returning a FakeClient over an embedded database; records
    the endpoints and timeouts asked for."""
    calls = []
    db = concordkv_mp.open(str(tmp_path / "served"), engine="btree", fsync="none")

    def connect(endpoint="tcp://127.0.0.1:7379", *, timeout=5.0):
        calls.append((endpoint, timeout))
        return FakeClient(db)

    monkeypatch.setattr(concordkv_mp, "connect", connect, raising=False)
    yield calls
    db.close()


def test_run_status_json(fake_server, capsys):
    assert run_status("tcp://h:1", timeout=2.0, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == SAMPLE_STATUS
    assert fake_server == [("tcp://h:1", 2.0)]


def test_status_command_renders_tables(fake_server, capsys, monkeypatch):
    monkeypatch.delenv("CKV_ENDPOINT", raising=False)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Partitions" in out and "L0:2 L1:5" in out
    assert fake_server == [("tcp://127.0.0.1:7379", 5.0)]


def test_status_of_an_unreachable_server_exits_1(monkeypatch, capsys):
    class Unreachable:
        def status(self):
            raise ServerTimeoutError("no reply from tcp://127.0.0.1:1 within 0.1 s")

        def close(self):
            pass

    monkeypatch.setattr(concordkv_mp, "connect", lambda endpoint, *, timeout: Unreachable(), raising=False)
    assert main(["status", "tcp://127.0.0.1:1", "--timeout", "0.1"]) == 1
    assert "error [TIMEOUT]: no reply" in capsys.readouterr().err


# ---------------------------------------------------------------- `concordkv cli`


def test_cli_one_shot(fake_server, capsys, monkeypatch):
    monkeypatch.setenv("CKV_ENDPOINT", "ipc:///tmp/from-env")
    assert main(["cli", "SET", "k", "a value"]) == 0
    assert main(["cli", "tcp://10.0.0.1:7000", "GET", "k"]) == 0
    assert main(["cli", "--timeout", "1.5", "MGET", "k", "-1"]) == 0
    assert capsys.readouterr().out == 'OK\n"a value"\n1) "a value"\n2) (nil)\n'
    assert fake_server == [("ipc:///tmp/from-env", 5.0), ("tcp://10.0.0.1:7000", 5.0), ("ipc:///tmp/from-env", 1.5)]


def test_cli_one_shot_error_reply_exits_1(fake_server, capsys):
    assert main(["cli", "GET"]) == 1
    assert capsys.readouterr().out.startswith("(error) INVALID_ARGUMENT: wrong number of arguments")
    assert main(["cli", "EXPIRE", "k", "1"]) == 1
    assert capsys.readouterr().out.startswith("(error) UNSUPPORTED: ")


def test_cli_reads_piped_commands(fake_server, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Lines(["SET a 1\n", "GET a\n"]))
    assert main(["cli"]) == 0
    assert capsys.readouterr().out == 'OK\n"1"\n'


class _Lines(list):
    def isatty(self):
        return False


def test_cli_when_connect_fails(monkeypatch, capsys):
    def connect(endpoint, *, timeout):
        raise UnavailableError(f"cannot connect to {endpoint}")

    monkeypatch.setattr(concordkv_mp, "connect", connect, raising=False)
    assert main(["cli", "tcp://127.0.0.1:1", "PING"]) == 1
    assert capsys.readouterr().out == "(error) UNAVAILABLE: cannot connect to tcp://127.0.0.1:1\n"


# ---------------------------------------------------------------- serve, stop, bench


def concordkv(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "concordkv_mp.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_serve_refuses_a_bad_flag_with_exit_2():
    result = concordkv("serve", "--partitions", "0")
    assert result.returncode == 2
    assert result.stderr.startswith("error [INVALID_CONFIG]: invalid option 'partitions': 0 is outside 1..256")
    assert "flag --partitions" in result.stderr


def test_serve_refuses_a_bad_file_and_a_bad_variable_with_exit_2(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"fsync": "sometimes"}))
    result = concordkv("serve", "-c", str(config))
    assert result.returncode == 2
    assert "'fsync'" in result.stderr and str(config) in result.stderr

    env = dict(os.environ, CKV_MEMTABLE_SIZ="4MiB")
    result = concordkv("serve", env=env)
    assert result.returncode == 2
    assert "CKV_MEMTABLE_SIZ" in result.stderr and "did you mean 'memtable_size'" in result.stderr


@pytest.fixture
def supervisor(monkeypatch):
    """A stand-in for concordkv_mp.server.daemon (serve, stop) recording its calls."""
    calls = []
    module = types.SimpleNamespace(
        serve=lambda config, daemon: calls.append(("serve", config, daemon)) or 0,
        stop_server=lambda config, timeout: calls.append(("stop", config, timeout)) or module.running,
        running=True,
    )
    monkeypatch.setitem(sys.modules, "concordkv_mp.server.daemon", module)
    return types.SimpleNamespace(calls=calls, module=module)


def test_serve_passes_the_merged_config(supervisor, tmp_path, monkeypatch):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"partitions": 2, "fsync": "always", "data_dir": str(tmp_path / "file")}))
    monkeypatch.setenv("CKV_FSYNC", "none")
    assert (
        main(["serve", "-c", str(config), "-d", "--data-dir", str(tmp_path / "flag"), "--memtable-size", "8MiB"]) == 0
    )
    ((what, server_config, daemon),) = supervisor.calls
    assert (what, daemon) == ("serve", True)
    assert server_config.partitions == 2
    assert server_config.fsync == "none"
    assert server_config.data_dir == str(tmp_path / "flag")
    assert server_config.memtable_size == 8 * 2**20
    assert server_config.pid_file == str(tmp_path / "flag" / "concordkv.pid")


def test_stop(supervisor, tmp_path, capsys):
    assert main(["stop", "--data-dir", str(tmp_path), "--timeout", "3"]) == 0
    ((what, config, timeout),) = supervisor.calls
    assert (what, config.data_dir, timeout) == ("stop", str(tmp_path), 3.0)
    assert "stopped" in capsys.readouterr().out
    supervisor.module.running = False
    assert main(["stop", "--data-dir", str(tmp_path)]) == 1
    assert "no server stopped" in capsys.readouterr().err


def test_stop_with_a_bad_config_exits_2(supervisor, capsys):
    assert main(["stop", "--pid-file", ""]) == 2
    assert "'pid_file'" in capsys.readouterr().err
    assert supervisor.calls == []


def test_every_config_field_has_a_serve_flag_with_help():
    assert set(FIELD_HELP) == set(FIELD_NAMES)
    help_text = concordkv("serve", "--help").stdout
    for name in FIELD_NAMES:
        assert f"--{name.replace('_', '-')}" in help_text


def test_bench_runs_the_script_with_its_arguments(monkeypatch, tmp_path):
    script = tmp_path / "bench_server.py"
    script.write_text("import sys\nsys.exit(len(sys.argv[1:]))\n")
    monkeypatch.setattr(bench, "SCRIPT", script)
    assert main(["bench", "--quick", "--keys", "10"]) == 3


def test_bench_without_the_script_says_how_to_run_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "SCRIPT", tmp_path / "missing.py")
    assert main(["bench"]) == 1
    assert "python profiles/bench_server.py" in capsys.readouterr().err
