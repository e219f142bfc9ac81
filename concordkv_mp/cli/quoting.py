"""Quoting in the interactive shell: splitting a typed line into byte arguments, and
showing bytes so that what is shown can be typed back.

The rules are redis-cli's: words are separated by spaces; inside "double quotes" the
escapes \\xNN \\n \\r \\t \\a \\b \\\\ \\" are decoded, so any byte can be typed; inside
'single quotes' everything is literal except \\'. `shlex` was the first choice but
cannot tell a double-quoted word from a single-quoted one, which binary values need.
`quote_bytes` shows values in the same double-quoted form.

This module owns the syntax only; it must not know commands or clients.
"""

from __future__ import annotations

_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b", "\\": b"\\", '"': b'"'}
_HEX = "0123456789abcdefABCDEF"
_QUOTE_NAMES = {'"': "double", "'": "single"}


class QuotingError(ValueError):
    """The line has an unbalanced quote, or a closing quote not followed by a space."""


def split_line(line: str) -> list[bytes]:
    """The arguments of one typed line, each as bytes (text is encoded as UTF-8)."""
    words: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i == n:
            return words
        word = bytearray()
        while i < n and not line[i].isspace():
            if line[i] not in _QUOTE_NAMES:
                word += line[i].encode("utf-8", "surrogateescape")
                i += 1
                continue
            i = _read_quoted(line, i, word)
            # As in redis-cli: "a"b is a mistake more often than a concatenation.
            if i < n and not line[i].isspace():
                raise QuotingError("a closing quote must be followed by a space")
        words.append(bytes(word))


def _read_quoted(line: str, i: int, word: bytearray) -> int:
    """Appends the text quoted by the quote at `line[i]` to `word`; returns the index
    after the closing quote. Inside double quotes every backslash escape is decoded
    (an unknown one stands for the character itself); inside single quotes only \\'."""
    quote, n = line[i], len(line)
    i += 1
    while i < n:
        char = line[i]
        if char == quote:
            return i + 1
        follower = line[i + 1] if i + 1 < n else ""
        if char != "\\" or not follower or (quote == "'" and follower != "'"):
            word += char.encode("utf-8", "surrogateescape")
            i += 1
        elif follower == "x" and i + 3 < n and line[i + 2] in _HEX and line[i + 3] in _HEX:
            word.append(int(line[i + 2 : i + 4], 16))
            i += 4
        else:
            word += _ESCAPES.get(follower, follower.encode("utf-8", "surrogateescape"))
            i += 2
    raise QuotingError(f"unbalanced {_QUOTE_NAMES[quote]} quote ({quote})")


_SHOWN_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\a": "\\a", "\b": "\\b"}


def quote_bytes(data: bytes) -> str:
    """`data` in double quotes: UTF-8 text as itself, every other byte as \\xNN, so that
    `split_line` reads the result back to `data`."""
    shown = ['"']
    for char in data.decode("utf-8", "surrogateescape"):
        if char in _SHOWN_ESCAPES:
            shown.append(_SHOWN_ESCAPES[char])
        elif "\udc80" <= char <= "\udcff":  # a byte that is not part of valid UTF-8
            shown.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char.isprintable():
            shown.append(char)
        else:  # valid UTF-8 but invisible (controls, zero-width characters)
            shown.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    shown.append('"')
    return "".join(shown)
