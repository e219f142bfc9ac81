"""`Database`: the public embedded API (SPEC.md's contract) over one storage engine.

Every argument is checked once, before an engine sees it, by the checks it shares with
the network clients (arguments.py: types, str -> UTF-8, empty keys, size limits, scan
prefix/limit -> bounds), so that engines only ever see valid bytes. It owns the database
directory (its `LOCK` and `ENGINE` file, engines/catalog.py) and the engine switch. It
must not know how an engine stores data.

Engine switch: the old engine holds writers back (`retire_after`) while the data is
copied into a new engine in a new directory, flushed, and the `ENGINE` file is replaced
(the commit point); the old engine is then closed and its directory removed. Calls that
meet the retired or closed old engine (`EngineRetiredError`, `ClosedError`) are retried
on the new one, so other threads only ever wait.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from itertools import islice

from concordkv_mp.arguments import ArgumentChecker
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
)


# Pairs per write when an engine switch copies data into the new engine.
_SWITCH_BATCH = 4096
_SWITCHED = (EngineRetiredError, ClosedError)


class Database:
    """An open database. Use as a context manager, or call `close()`."""

    def __init__(self, path: str, options, fs, requested_engine: str | None, executor_factory=None):
        """Open the database at `path`; see `concordkv_mp.open`. `executor_factory` makes
        the LSM engine's background executors (engines/lsm/executor.py: a private worker
        process, the server's shared pool; None runs the steps in the engine's threads),
        and is kept for the engine an engine switch opens."""
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
            self._engine = open_engine(record.engine, os.path.join(path, record.directory), options, fs, executor_factory)
            if not fs.exists(os.path.join(path, "ENGINE")):
                write_engine_record(fs, path, record)
        except BaseException:
            self._lock_file.release()
            raise
        self._fs = fs
        self._executor_factory = executor_factory
        self._record = record
        self._switch_lock = threading.Lock()
        self._max_key = options.max_key_size
        self._max_value = options.max_value_size
        checker = ArgumentChecker(options.max_key_size, options.max_value_size)
        self._key, self._value, self._keys, self._pairs = checker.key, checker.value, checker.keys, checker.pairs
        self._scan_range = checker.scan_range
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
        return self.get(key) is not None

    def update(self, key, value) -> bool:
        """Set `key` only if it exists (atomically); True if it did."""
        return self._call("update_existing", self._key(key), self._value(value))

    def incr(self, key, by: int = 1) -> int:
        """Add `by` (a signed 64-bit int) to the decimal integer at `key`, atomically,
        and return the result; a missing key counts from 0. `NotAnIntegerError` if the
        value is not a decimal 64-bit integer."""
        return self._call("increment", self._key(key), ArgumentChecker.signed(by, "by"))

    def mget(self, keys) -> list:
        keys = self._keys(keys)  # checked once: straight to the engine's get
        engine = self._engine
        try:
            return list(map(engine.get, keys))
        except _SWITCHED:
            if self._engine is engine:
                raise
            return list(map(self._engine.get, keys))

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
        start, end, empty = self._scan_range(start, end, prefix, limit)
        if empty:
            return iter(())
        items = self._call("scan", start, end, bool(reverse))
        return items if limit is None else islice(items, limit)

    def count(self) -> int:
        return self._call("count")

    def stats(self) -> dict:
        return self._call("stats")

    def flush(self) -> None:
        self._call("flush")

    def compact(self) -> None:
        self._call("compact")

    # ------------------------------------------------------- durability tickets

    def durability_ticket(self) -> int:
        """A ticket covering every write that has returned: it is durable, as the fsync
        policy promises, once `durable_through()` reaches it. With a local file system
        that holds when the write returns; in a server partition the WAL goes through a
        shared-memory ring that another process makes durable, and the partition holds
        the replies of writes by these tickets (server/reply_hold.py)."""
        return self._fs.durability_ticket()

    def request_durability(self, ticket: int) -> None:
        """Ask for `ticket` to become durable soon, without waiting."""
        self._fs.request_durability(ticket)

    def durable_through(self) -> int:
        """The highest durable ticket; StorageIOError if the WAL cannot be made durable."""
        return self._fs.durable_through()

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

            commit_unknown = False

            def copy_and_commit():
                nonlocal commit_unknown
                new_engine = open_engine(name, directory, options, self._fs, self._executor_factory)
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
                    commit_unknown = True
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
