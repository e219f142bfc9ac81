"""Counters: `incr`'s read-modify-write, as a `prepare` for the write queue.

A counter is an ordinary value holding a decimal 64-bit integer, as in Redis: `-?[1-9]`
digits or `0`, no sign on zero, no leading zeros, no spaces, within the signed 64-bit
range; a missing key counts from 0. The new value is written back in the same form.
This module owns that form and the arithmetic; the write queue (write_queue.py) runs the
`prepare` under the engine's write order, which is what makes `incr` atomic.
"""

from __future__ import annotations

import re

from concordkv_mp.arguments import INT64_MAX, INT64_MIN
from concordkv_mp.errors import InvalidArgumentError, NotAnIntegerError

_DECIMAL = re.compile(rb"0|-?[1-9][0-9]{0,18}")


def increment(key: bytes, by: int):
    """A `prepare` for `Writer`: add `by` to the counter at `key`. The result is the new
    value, or the error to raise: a prepare must not raise, or it would fail the other
    writes of its group."""

    def prepare(lookup):
        old = lookup(key)
        if old is None:
            value = 0
        elif _DECIMAL.fullmatch(old) and INT64_MIN <= (value := int(old)) <= INT64_MAX:
            pass
        else:
            return [], NotAnIntegerError(f"the value of {key[:64]!r} is not a decimal 64-bit integer")
        value += by
        if not INT64_MIN <= value <= INT64_MAX:
            return [], InvalidArgumentError(f"incrementing {key[:64]!r} by {by} would overflow 64 bits")
        return [(key, b"%d" % value)], value

    return prepare
