"""`Database`: the public embedded API (SPEC.md's contract) over one storage engine.

It owns argument checking — types, str -> UTF-8, empty keys, size limits, scan
bounds — so that engines only ever see valid bytes, and it turns prefix/limit into
what the engines' range scan understands. It must not know how an engine stores data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice

from concordkv_mp.errors import (
    EmptyKeyError,
    InvalidArgumentError,
    InvalidTypeError,
    KeyTooLargeError,
    ValueTooLargeError,
)


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _as_bytes(obj, what: str) -> bytes:
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


class Database:
    """An open database. Use as a context manager, or call `close()`."""

    def __init__(self, engine, options, path: str):
        self._engine = engine
        self._max_key = options.max_key_size
        self._max_value = options.max_value_size
        self.path = path
        self.options = options

    # ------------------------------------------------------------- checking

    def _key(self, key) -> bytes:
        key = _as_bytes(key, "key")
        if not key:
            raise EmptyKeyError("key must not be empty")
        if len(key) > self._max_key:
            raise KeyTooLargeError(f"key of {len(key)} bytes exceeds max_key_size={self._max_key}")
        return key

    def _value(self, value) -> bytes:
        value = _as_bytes(value, "value")
        if len(value) > self._max_value:
            raise ValueTooLargeError(f"value of {len(value)} bytes exceeds max_value_size={self._max_value}")
        return value

    def _bound(self, bound, what: str) -> bytes | None:
        return None if bound is None else _as_bytes(bound, what)

    def _pairs(self, mapping_or_pairs) -> list:
        if isinstance(mapping_or_pairs, Mapping):
            items = mapping_or_pairs.items()
        elif isinstance(mapping_or_pairs, Iterable) and not isinstance(mapping_or_pairs, (bytes, str)):
            items = mapping_or_pairs
        else:
            raise InvalidTypeError(f"mset takes a mapping or (key, value) pairs, not {type(mapping_or_pairs).__name__}")
        checked = {}
        for item in items:
            try:
                key, value = item
            except (TypeError, ValueError):
                raise InvalidTypeError(f"mset items must be (key, value) pairs, got {item!r:.80}") from None
            # A dict de-duplicates keys: the last value given for a key wins.
            checked[self._key(key)] = self._value(value)
        return list(checked.items())

    def _keys(self, keys) -> list[bytes]:
        if isinstance(keys, (bytes, str)) or not isinstance(keys, Iterable):
            raise InvalidTypeError(f"expected an iterable of keys, not {type(keys).__name__}")
        return [self._key(key) for key in keys]

    # ----------------------------------------------------------- operations

    def get(self, key) -> bytes | None:
        if type(key) is not bytes or not 0 < len(key) <= self._max_key:
            key = self._key(key)
        return self._engine.get(key)

    def set(self, key, value) -> None:
        # The checks inline for the common case (bytes of valid sizes): set() is the
        # hottest call there is.
        if type(key) is not bytes or not 0 < len(key) <= self._max_key:
            key = self._key(key)
        if type(value) is not bytes or len(value) > self._max_value:
            value = self._value(value)
        self._engine.write([(key, value)])

    def delete(self, key) -> bool:
        """Delete `key`; True if it existed."""
        return self._engine.delete_existing([self._key(key)]) == 1

    def exists(self, key) -> bool:
        return self._engine.get(self._key(key)) is not None

    def update(self, key, value) -> bool:
        """Set `key` only if it exists (atomically); True if it did."""
        return self._engine.update_existing(self._key(key), self._value(value))

    def mget(self, keys) -> list:
        get = self._engine.get
        return [get(key) for key in self._keys(keys)]

    def mset(self, mapping_or_pairs) -> None:
        """Set many keys atomically: all are visible after a crash, or none."""
        pairs = self._pairs(mapping_or_pairs)
        if pairs:
            self._engine.write(pairs)

    def mdelete(self, keys) -> int:
        """Delete many keys atomically; return how many existed."""
        keys = self._keys(keys)
        return self._engine.delete_existing(keys) if keys else 0

    def scan(self, start=None, end=None, prefix=None, reverse: bool = False, limit: int | None = None):
        """(key, value) pairs with start <= key < end (and the prefix), in key order.

        The iterator sees the database as it was when `scan` was called, whatever is
        written meanwhile.
        """
        start = self._bound(start, "start")
        end = self._bound(end, "end")
        prefix = self._bound(prefix, "prefix")
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
        if (start is not None and end is not None and start >= end) or limit == 0:
            return iter(())
        items = self._engine.scan(start or None, end, bool(reverse))
        return items if limit is None else islice(items, limit)

    def count(self) -> int:
        return self._engine.count()

    def stats(self) -> dict:
        return self._engine.stats()

    def flush(self) -> None:
        self._engine.flush()

    def compact(self) -> None:
        self._engine.compact()

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<concordkv_mp.Database {self.path!r} engine={self.options.engine}>"
