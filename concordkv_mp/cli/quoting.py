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
            if line[i] == '"':
                i = _read_double_quoted(line, i + 1, word)
            elif line[i] == "'":
                i = _read_single_quoted(line, i + 1, word)
            else:
                word += line[i].encode("utf-8", "surrogateescape")
                i += 1
                continue
            # As in redis-cli: "a"b is a mistake more often than a concatenation.
            if i < n and not line[i].isspace():
                raise QuotingError("a closing quote must be followed by a space")
        words.append(bytes(word))


def _read_double_quoted(line: str, i: int, word: bytearray) -> int:
    """Appends the quoted text from `i` to `word`; returns the index after the quote."""
    n = len(line)
    while i < n:
        char = line[i]
        if char == '"':
            return i + 1
        if char == "\\" and i + 3 < n and line[i + 1] == "x" and line[i + 2] in _HEX and line[i + 3] in _HEX:
            word.append(int(line[i + 2 : i + 4], 16))
            i += 4
        elif char == "\\" and i + 1 < n:
            follower = line[i + 1]
            word += _ESCAPES.get(follower, follower.encode("utf-8", "surrogateescape"))
            i += 2
        else:
            word += char.encode("utf-8", "surrogateescape")
            i += 1
    raise QuotingError('unbalanced double quote (")')


def _read_single_quoted(line: str, i: int, word: bytearray) -> int:
    n = len(line)
    while i < n:
        char = line[i]
        if char == "'":
            return i + 1
        if char == "\\" and i + 1 < n and line[i + 1] == "'":
            word += b"'"
            i += 2
        else:
            word += char.encode("utf-8", "surrogateescape")
            i += 1
    raise QuotingError("unbalanced single quote (')")


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
