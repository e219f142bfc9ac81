"""`Database`: the public embedded API (SPEC.md's contract) over one storage engine.

It owns argument checking — types, str -> UTF-8, empty keys, size limits, scan
bounds — so that engines only ever see valid bytes, and it turns prefix/limit into
what the engines' range scan understands. It owns the database directory (its `LOCK`
and `ENGINE` file, engines/catalog.py) and the engine switch. It must not know how an
engine stores data.

Engine switch: the old engine holds writers back (`retire_after`) while the data is
copied into a new engine in a new directory, flushed, and the `ENGINE` file is replaced
(the commit point); the old engine is then closed and its directory removed. Calls that
meet the retired or closed old engine (`EngineRetiredError`, `ClosedError`) are retried
on the new one, so other threads only ever wait.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from itertools import islice

from concordkv_mp.engines import open_engine
from concordkv_mp.engines.catalog import (
    EngineRecord,
    read_engine_record,
    remove_other_engine_directories,
    write_engine_record,
)
from concordkv_mp.engines.write_queue import EngineRetiredError
from concordkv_mp.errors import (
    ClosedError,
    ConfigError,
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


# Pairs per write when an engine switch copies data into the new engine.
_SWITCH_BATCH = 4096
_SWITCHED = (EngineRetiredError, ClosedError)


class Database:
    """An open database. Use as a context manager, or call `close()`."""

    def __init__(self, path: str, options, fs, requested_engine: str | None):
        """Open the database at `path`; see `concordkv_mp.open`."""
        fs.make_dirs(path)
        self._lock_file = fs.lock(os.path.join(path, "LOCK"))
        try:
            record = read_engine_record(fs, path)
            if record is None:
                record = EngineRecord(options.engine, 1)
            elif requested_engine is not None and requested_engine != record.engine:
                raise ConfigError(
                    "engine",
                    f"the database at {path} uses engine {record.engine!r}, not {requested_engine!r}: open it "
                    f"with engine={record.engine!r} (or no engine=), then call db.switch_engine({requested_engine!r})",
                )
            options = replace(options, engine=record.engine)
            remove_other_engine_directories(fs, path, record)
            self._engine = open_engine(record.engine, os.path.join(path, record.directory), options, fs)
            if not fs.exists(os.path.join(path, "ENGINE")):
                write_engine_record(fs, path, record)
        except BaseException:
            self._lock_file.release()
            raise
        self._fs = fs
        self._record = record
        self._switch_lock = threading.Lock()
        self._max_key = options.max_key_size
        self._max_value = options.max_value_size
        self.path = path
        self.options = options

    def _call(self, method: str, *args):
        """`engine.method(*args)`, retried on the new engine if a switch replaced it."""
        engine = self._engine
        try:
            return getattr(engine, method)(*args)
        except _SWITCHED:
            if self._engine is engine:
                raise
            return getattr(self._engine, method)(*args)

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
        engine = self._engine
        try:
            return engine.get(key)
        except _SWITCHED:
            if self._engine is engine:
                raise
            return self._engine.get(key)

    def set(self, key, value) -> None:
        # The checks inline for the common case (bytes of valid sizes): set() is the
        # hottest call there is.
        if type(key) is not bytes or not 0 < len(key) <= self._max_key:
            key = self._key(key)
        if type(value) is not bytes or len(value) > self._max_value:
            value = self._value(value)
        engine = self._engine
        try:
            engine.write([(key, value)])
        except _SWITCHED:
            if self._engine is engine:
                raise
            self._engine.write([(key, value)])

    def delete(self, key) -> bool:
        """Delete `key`; True if it existed."""
        return self._call("delete_existing", [self._key(key)]) == 1

    def exists(self, key) -> bool:
        return self.get(self._key(key)) is not None

    def update(self, key, value) -> bool:
        """Set `key` only if it exists (atomically); True if it did."""
        return self._call("update_existing", self._key(key), self._value(value))

    def mget(self, keys) -> list:
        get = self.get
        return [get(key) for key in self._keys(keys)]

    def mset(self, mapping_or_pairs) -> None:
        """Set many keys atomically: all are visible after a crash, or none."""
        pairs = self._pairs(mapping_or_pairs)
        if pairs:
            self._call("write", pairs)

    def mdelete(self, keys) -> int:
        """Delete many keys atomically; return how many existed."""
        keys = self._keys(keys)
        return self._call("delete_existing", keys) if keys else 0

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
        items = self._call("scan", start or None, end, bool(reverse))
        return items if limit is None else islice(items, limit)

    def count(self) -> int:
        return self._call("count")

    def stats(self) -> dict:
        return self._call("stats")

    def flush(self) -> None:
        self._call("flush")

    def compact(self) -> None:
        self._call("compact")

    @property
    def engine(self) -> str:
        """The name of the engine the database uses now."""
        return self._record.engine

    def switch_engine(self, name: str) -> None:
        """Move every key into a new engine of kind `name`; remembered across reopen.

        Writes from other threads wait until the switch is over and then go to the new
        engine; reads continue meanwhile. A crash at any point leaves the database whole
        in either the old or the new engine. While both exist, both hold the data (in
        memory, for the in-memory engines). A scan still open when the switch completes
        raises `ClosedError` when advanced.
        """
        options = replace(self.options, engine=name)  # validates the name
        with self._switch_lock:
            old_engine, old_record = self._engine, self._record
            if name == old_record.engine:
                return
            record = old_record.successor(name)
            directory = os.path.join(self.path, record.directory)
            self._fs.remove_tree(directory)

            commit_unknown = []

            def copy_and_commit():
                new_engine = open_engine(name, directory, options, self._fs)
                try:
                    _copy(old_engine, new_engine)
                    new_engine.flush()
                except BaseException:
                    new_engine.close()
                    self._fs.remove_tree(directory)
                    raise
                try:
                    write_engine_record(self._fs, self.path, record)
                except BaseException:
                    new_engine.close()
                    commit_unknown.append(True)
                    raise
                self._engine, self._record, self.options = new_engine, record, options

            try:
                old_engine.retire_after(copy_and_commit)
            except BaseException:
                if commit_unknown:
                    # Whether the new ENGINE file reached the disk is unknown: writing on
                    # to either engine could lose data at the next open, so stop here.
                    # (Closed only now: its background threads may be queued behind the
                    # switch, which must end before they can.)
                    old_engine.close()
                raise
            old_engine.close()
            self._fs.remove_tree(os.path.join(self.path, old_record.directory))

    def close(self) -> None:
        with self._switch_lock:
            try:
                self._engine.close()
            finally:
                self._lock_file.release()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<concordkv_mp.Database {self.path!r} engine={self.engine}>"


def _copy(source, target) -> None:
    batch = []
    for pair in source.scan(None, None, False):
        batch.append(pair)
        if len(batch) == _SWITCH_BATCH:
            target.write(batch)
            batch = []
    if batch:
        target.write(batch)
