"""Helpers shared by the in-memory index tests (tests/engines/memory/): the dict model of the
contract in concordkv_mp/engines/memory/__init__.py (expected range_list answers, the engine's chunked
scan, one checked operation, a full comparison) and the key sets the tests draw from.
A plain module, not a conftest: the tests import what they use."""

from __future__ import annotations

import random

import pytest

from concordkv_mp.engines.memory.invariant import InvariantError

# Keys a test may put before its random operations: ascending puts leave B+tree nodes
# near their minimum fill, so even at order 100 a few removes start merging, and 410
# keys take a hash table through several resizes.
PRELOAD = [i.to_bytes(2, "big") for i in range(0, 65536, 160)]

# Short keys make range bounds land between stored keys as well as on them, and the
# second bytes 0x00 and 0xff sit right next to a one-byte key (b"b" < b"b\x00").
SHORT_KEYS = [bytes([a]) for a in b"acegikmoqsuwy"] + [
    bytes([a, b]) for a in b"bdfhj" for b in b"\x00bmx\xff"
]

# Homes 254, 255, 0, 1 modulo 256: at every hash-table capacity up to 256 these keys pile
# into one cluster straddling the end of the table, so probes wrap and deletes shift
# across it. Other indexes see them as ordinary keys.
COLLIDING_LOW_BITS = {254, 255, 0, 1}


def colliding_keys(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct sorted keys whose hash() falls in COLLIDING_LOW_BITS mod 256."""
    rng = random.Random(seed)
    found: set[bytes] = set()
    while len(found) < count:
        key = rng.randbytes(rng.randint(1, 8))
        if hash(key) & 0xFF in COLLIDING_LOW_BITS:
            found.add(key)
    return sorted(found)


COLLIDING = colliding_keys(80)


def model_range(model: dict, start, end, reverse: bool, limit: int) -> list:
    """What range_list(start, end, reverse, limit) must return for the content `model`."""
    keys = sorted(k for k in model if (start is None or k >= start) and (end is None or k < end))
    if reverse:
        keys.reverse()
    return [(k, model[k]) for k in keys[:limit]]


def scan_in_chunks(index, start, end, reverse: bool, size: int, between=None, check=None) -> list:
    """Read a range chunk by chunk the way the engine does, resuming after the last key
    (start = last + b"\\x00" forward, end = last backward); `check(start, end, chunk)`
    sees each chunk as read, and `between(chunk)` may modify the index between calls."""
    out: list = []
    while True:
        chunk = index.range_list(start, end, reverse, size)
        if check is not None:
            check(start, end, chunk)
        out += chunk
        if len(chunk) < size:
            return out
        if reverse:
            end = chunk[-1][0]
        else:
            start = chunk[-1][0] + b"\x00"
        if between is not None:
            between(chunk)


def apply_op(index, model: dict, op: tuple) -> None:
    """Run one operation on the index and the model, compare the answers, then
    validate() and compare len(). Operations: ("put", key, value), ("remove", key),
    ("get", key), ("range", start, end, reverse, limit) and ("chunks", start, end,
    reverse, size), the last a whole chunked scan."""
    kind = op[0]
    if kind == "put":
        _, key, value = op
        assert index.put(key, value) == model.get(key)
        model[key] = value
    elif kind == "remove":
        assert index.remove(op[1]) == model.pop(op[1], None)
    elif kind == "get":
        assert index.get(op[1]) == model.get(op[1])
    elif kind == "range":
        _, start, end, reverse, limit = op
        assert index.range_list(start, end, reverse, limit) == model_range(
            model, start, end, reverse, limit
        )
    elif kind == "chunks":
        _, start, end, reverse, size = op
        assert scan_in_chunks(index, start, end, reverse, size) == model_range(
            model, start, end, reverse, len(model) + 1
        )
    else:
        raise ValueError(f"unknown operation {kind!r}")
    index.validate()
    assert len(index) == len(model)


def put_all(index, model: dict, pairs) -> None:
    """Put every (key, value) into both, unchecked: a quick fill before the test proper."""
    for key, value in pairs:
        index.put(key, value)
        model[key] = value


def assert_same(index, model: dict) -> None:
    """validate(), then the whole content in both directions and every key by get()."""
    index.validate()
    assert len(index) == len(model)
    ordered = sorted(model.items())
    assert index.range_list(None, None, False, len(model) + 1) == ordered
    assert index.range_list(None, None, True, len(model) + 1) == ordered[::-1]
    for key, value in model.items():
        assert index.get(key) == value


def assert_detected(index, corrupt, message: str | None) -> None:
    """The index validates, `corrupt(index)` breaks it, and validate() then raises an
    InvariantError whose message matches the regex `message` (any message if None)."""
    index.validate()
    corrupt(index)
    with pytest.raises(InvariantError, match=message):
        index.validate()
