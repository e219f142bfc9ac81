"""Argument checks shared by the embedded `Database` and the network clients, so both
refuse the same input with the same error codes before any work is done.

Owns: str -> UTF-8, type checks, empty keys, the key/value size limits, mset's
de-duplication (the last value given for a key wins), the range of an `incr` step, and
turning scan's prefix/limit into bounds. It must not know where the data goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from concordkv_mp.errors import (
    EmptyKeyError,
    InvalidArgumentError,
    InvalidTypeError,
    KeyTooLargeError,
    ValueTooLargeError,
)


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def as_bytes(obj, what: str) -> bytes:
    if type(obj) is bytes:
        return obj
    if isinstance(obj, str):
        try:
            return obj.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgumentError(f"{what} is a str that UTF-8 cannot encode: {exc.reason}") from None
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    raise InvalidTypeError(f"{what} must be bytes or str, not {type(obj).__name__}")


class ArgumentChecker:
    def __init__(self, max_key_size: int, max_value_size: int):
        self.max_key = max_key_size
        self.max_value = max_value_size

    def key(self, key) -> bytes:
        key = as_bytes(key, "key")
        if not key:
            raise EmptyKeyError("key must not be empty")
        if len(key) > self.max_key:
            raise KeyTooLargeError(f"key of {len(key)} bytes exceeds max_key_size={self.max_key}")
        return key

    def value(self, value) -> bytes:
        value = as_bytes(value, "value")
        if len(value) > self.max_value:
            raise ValueTooLargeError(f"value of {len(value)} bytes exceeds max_value_size={self.max_value}")
        return value

    @staticmethod
    def signed(number, what: str) -> int:
        """A signed 64-bit integer (an `incr` step), as Redis's INCRBY takes."""
        if type(number) is not int:
            raise InvalidTypeError(f"{what} must be an int, not {type(number).__name__}")
        if not INT64_MIN <= number <= INT64_MAX:
            raise InvalidArgumentError(f"{what}={number} is outside the signed 64-bit range")
        return number

    def bound(self, bound, what: str) -> bytes | None:
        return None if bound is None else as_bytes(bound, what)

    def pairs(self, mapping_or_pairs) -> list:
        if isinstance(mapping_or_pairs, Mapping):
            items = mapping_or_pairs.items()
        elif isinstance(mapping_or_pairs, Iterable) and not isinstance(mapping_or_pairs, (bytes, str)):
            items = mapping_or_pairs
        else:
            raise InvalidTypeError(f"mset takes a mapping or (key, value) pairs, not {type(mapping_or_pairs).__name__}")
        max_key, max_value, check_key, check_value = self.max_key, self.max_value, self.key, self.value
        checked = {}
        for item in items:
            try:
                key, value = item
            except (TypeError, ValueError):
                raise InvalidTypeError(f"mset items must be (key, value) pairs, got {item!r:.80}") from None
            # A dict de-duplicates keys: the last value given for a key wins. The value is
            # checked first (as an assignment evaluates it first); valid bytes skip the call.
            checked[key if type(key) is bytes and 0 < len(key) <= max_key else check_key(key)] = (
                value if type(value) is bytes and len(value) <= max_value else check_value(value)
            )
        return list(checked.items())

    def keys(self, keys) -> list[bytes]:
        if isinstance(keys, (bytes, str)) or not isinstance(keys, Iterable):
            raise InvalidTypeError(f"expected an iterable of keys, not {type(keys).__name__}")
        # Keys that are already valid bytes skip the call to key(), which returns them as is.
        max_key, check_key = self.max_key, self.key
        return [key if type(key) is bytes and 0 < len(key) <= max_key else check_key(key) for key in keys]

    def scan_range(self, start, end, prefix, limit) -> tuple[bytes | None, bytes | None, bool]:
        """(start, end, empty): the bounds a scan reads, and whether it reads nothing."""
        start = self.bound(start, "start")
        end = self.bound(end, "end")
        prefix = self.bound(prefix, "prefix")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise InvalidTypeError(f"limit must be an int or None, not {type(limit).__name__}")
        if limit is not None and limit < 0:
            raise InvalidArgumentError(f"limit must be >= 0, got {limit}")
        if prefix:
            if start is None or start < prefix:
                start = prefix
            upper = prefix_successor(prefix)
            if upper is not None and (end is None or end > upper):
                end = upper
        empty = (start is not None and end is not None and start >= end) or limit == 0
        return start or None, end, empty
