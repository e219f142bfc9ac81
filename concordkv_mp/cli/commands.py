"""The shell's commands: from a list of argument words to the text a user sees.

`execute(client, words)` runs one command (SET k v, GET k, SCAN ..., see COMMANDS)
against a client of `concordkv_mp.connect()` — or anything with its methods — and
returns a `Reply` in redis-cli's style: `OK`, `"value"`, `(nil)`, `(integer) 3`,
numbered lists, `(error) CODE: message`. It is pure apart from the client calls, so the
interactive loop and the one-shot mode (cli/shell.py) are thin wrappers and tests can
drive it with a fake client. It must not read a terminal, print, or know sockets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from concordkv_mp.cli.quoting import QuotingError, quote_bytes, split_line
from concordkv_mp.cli.status_view import render_text
from concordkv_mp.errors import ConcordKVError, InvalidArgumentError, UnsupportedError

# A SCAN without LIMIT shows at most this many pairs (and says when there are more):
# an unbounded scan of a large database would flood the terminal.
SCAN_DISPLAY_LIMIT = 100


@dataclass(frozen=True)
class Reply:
    """What a command prints; `is_error` makes a one-shot run exit with status 1 and
    `quit` ends the interactive loop."""

    text: str
    is_error: bool = False
    quit: bool = False


@dataclass(frozen=True)
class Command:
    usage: str
    summary: str
    run: Callable[[object, list[bytes]], str] | None  # None: the command leaves the shell
    min_args: int = 0
    max_args: int | None = 0  # None: any number


def execute(client, words: Sequence[str | bytes]) -> Reply:
    """Run the command `words[0]` (any case) with arguments `words[1:]`. Text arguments
    are encoded as UTF-8. A ConcordKVError from the client becomes an error reply;
    anything else is a bug and propagates."""
    if not words:
        return Reply("")
    name = _text(words[0]).upper()
    args = [word.encode("utf-8", "surrogateescape") if isinstance(word, str) else bytes(word) for word in words[1:]]
    command = COMMANDS.get(name)
    if command is None:
        return error_reply("UNKNOWN_COMMAND", f"unknown command {name!r}; type HELP for the list")
    if command.run is None:
        return Reply("", quit=True)
    if len(args) < command.min_args or (command.max_args is not None and len(args) > command.max_args):
        return error_reply(InvalidArgumentError.code, f"wrong number of arguments; usage: {command.usage}")
    try:
        return Reply(command.run(client, args))
    except ConcordKVError as exc:
        return error_reply(exc.code, str(exc))


def execute_line(client, line: str) -> Reply:
    """Run one typed line, split by the shell's quoting rules (cli/quoting.py)."""
    try:
        words = split_line(line)
    except QuotingError as exc:
        return error_reply(InvalidArgumentError.code, str(exc))
    return execute(client, words)


def error_reply(code: str, message: str) -> Reply:
    """`(error) CODE: message`, the shell's form of every error."""
    return Reply(f"(error) {code}: {message}", is_error=True)


def _text(word: str | bytes) -> str:
    return word if isinstance(word, str) else bytes(word).decode("utf-8", "replace")


def _integer(value: int) -> str:
    return f"(integer) {int(value)}"


def _numbered(lines: list[str]) -> str:
    if not lines:
        return "(empty)"
    width = len(str(len(lines)))
    return "\n".join(f"{number:>{width}}) {line}" for number, line in enumerate(lines, 1))


def _value(value: bytes | None) -> str:
    return "(nil)" if value is None else quote_bytes(value)


def _set(client, args):
    client.set(args[0], args[1])
    return "OK"


def _get(client, args):
    return _value(client.get(args[0]))


def _del(client, args):
    return _integer(client.mdelete(args))


def _exists(client, args):
    return _integer(client.exists(args[0]))


def _update(client, args):
    return _integer(client.update(args[0], args[1]))


def _incr(client, args):
    by = 1 if len(args) == 1 else _signed_number("by", args[1])
    return _integer(client.incr(args[0], by))


def _mget(client, args):
    return _numbered([_value(value) for value in client.mget(args)])


def _mset(client, args):
    if len(args) % 2:
        raise InvalidArgumentError("MSET takes key value pairs; the last key has no value")
    client.mset(list(zip(args[::2], args[1::2])))
    return "OK"


def _scan(client, args):
    positional: list[bytes] = []
    prefix, limit, reverse = None, None, False
    words = iter(args)
    for word in words:
        keyword = word.upper()
        if keyword == b"REVERSE":
            reverse = True
        elif keyword in (b"PREFIX", b"LIMIT"):
            operand = next(words, None)
            if operand is None:
                raise InvalidArgumentError(f"{keyword.decode()} needs a value; usage: {COMMANDS['SCAN'].usage}")
            if keyword == b"PREFIX":
                prefix = operand
            else:
                limit = _whole_number("LIMIT", operand)
        elif len(positional) < 2:
            positional.append(word)
        else:
            raise InvalidArgumentError(f"too many bounds; usage: {COMMANDS['SCAN'].usage}")
    start, end = (positional + [None, None])[:2]
    asked = SCAN_DISPLAY_LIMIT + 1 if limit is None else limit
    pairs = list(client.scan(start=start, end=end, prefix=prefix, reverse=reverse, limit=asked))
    shown = pairs[:SCAN_DISPLAY_LIMIT] if limit is None else pairs
    text = _numbered([f"{quote_bytes(key)} -> {quote_bytes(value)}" for key, value in shown])
    if len(shown) < len(pairs):
        text += f"\n(first {SCAN_DISPLAY_LIMIT} shown; more follow: add LIMIT n, or start after the last key)"
    return text


def _whole_number(name: str, word: bytes) -> int:
    if not word.isdigit():
        raise InvalidArgumentError(f"{name} takes a whole number (0, 1, 2, ...), got {quote_bytes(word)}")
    return int(word)


def _signed_number(name: str, word: bytes) -> int:
    if not re.fullmatch(rb"-?[0-9]+", word):
        raise InvalidArgumentError(f"{name} takes an integer (-1, 0, 1, ...), got {quote_bytes(word)}")
    return int(word)


def _count(client, args):
    return _integer(client.count())


def _status(client, args):
    return render_text(client.status())


def _engine(client, args):
    if not args:
        return client.engine
    client.switch_engine(_text(args[0]))
    return "OK"


def _flush(client, args):
    client.flush()
    return "OK"


def _compact(client, args):
    client.compact()
    return "OK"


def _ping(client, args):
    client.ping()
    return "PONG"


def _unsupported(client, args):
    raise UnsupportedError("keys do not expire yet: EXPIRE and TTL come with a later release")


def _help(client, args):
    if args:
        command = COMMANDS.get(_text(args[0]).upper())
        if command is None:
            raise InvalidArgumentError(f"no command {_text(args[0])!r}; type HELP for the list")
        return f"{command.usage}\n  {command.summary}"
    width = max(len(command.usage) for command in COMMANDS.values())
    return "\n".join(f"{command.usage:<{width}}  {command.summary}" for command in COMMANDS.values())


COMMANDS: dict[str, Command] = {
    "SET": Command("SET key value", "store value under key", _set, 2, 2),
    "GET": Command("GET key", "the value of key, or (nil)", _get, 1, 1),
    "DEL": Command("DEL key [key ...]", "delete keys; prints how many existed", _del, 1, None),
    "EXISTS": Command("EXISTS key", "1 if key exists, else 0", _exists, 1, 1),
    "UPDATE": Command("UPDATE key value", "set key only if it exists; 1 if it did", _update, 2, 2),
    "INCR": Command("INCR key [by]", "add by (default 1) to the integer at key; its new value", _incr, 1, 2),
    "MSET": Command("MSET key value [key value ...]", "set several keys atomically", _mset, 2, None),
    "MGET": Command("MGET key [key ...]", "the values of several keys", _mget, 1, None),
    "SCAN": Command(
        "SCAN [start [end]] [PREFIX p] [LIMIT n] [REVERSE]",
        f"pairs in key order, end exclusive (at most {SCAN_DISPLAY_LIMIT} without LIMIT)",
        _scan,
        0,
        None,
    ),
    "COUNT": Command("COUNT", "the number of keys", _count),
    "STATUS": Command("STATUS", "processes, partitions and I/O of the server", _status),
    "ENGINE": Command("ENGINE [name]", "show the engine, or switch every partition to name", _engine, 0, 1),
    "FLUSH": Command("FLUSH", "write MemTables to disk", _flush),
    "COMPACT": Command("COMPACT", "compact every partition", _compact),
    "EXPIRE": Command("EXPIRE key seconds", "not yet supported", _unsupported, 0, None),
    "TTL": Command("TTL key", "not yet supported", _unsupported, 0, None),
    "PING": Command("PING", "check that the server answers", _ping),
    "HELP": Command("HELP [command]", "this list, or one command's usage", _help, 0, 1),
    "QUIT": Command("QUIT", "leave the shell (also EXIT, Ctrl-D)", None),
    "EXIT": Command("EXIT", "leave the shell", None),
}
