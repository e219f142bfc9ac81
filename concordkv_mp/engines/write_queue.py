"""`WriteQueue`: leader-based group commit (LevelDB's writer queue), shared by the engines.

Writers queue under their engine's mutex. The writer at the head leads: it runs the
engine's `lead` callback, which calls `gather()` to take the queued writes as one group
(conditional writes evaluated in queue order against the state the group builds up),
logs and applies them, and the queue then wakes every writer of the group. An engine may
release the mutex inside `lead` (to fsync): writers arriving meanwhile queue up behind
the leader and share the next fsync — group commit.

`retire_after(fn)` queues a barrier: once it is at the head, no write runs (engines only
take their uncontended fast path when the queue is empty) while `fn` runs with the mutex
released. If `fn` succeeds the queue is retired: every queued and later writer gets
`EngineRetiredError`, which is how an engine switch hands writers over to the new engine.

This module must not know what an engine stores or how it logs.
"""

from __future__ import annotations

import threading
from collections import deque

from concordkv_mp.engines import counters

# A leader stops adding followers' writes to its group past this many bytes, so one
# huge group cannot hold everyone's acknowledgement hostage.
MAX_GROUP_BYTES = 1 << 20
_MISSING = object()


class EngineRetiredError(Exception):
    """The engine was replaced by an engine switch; retry on the new one."""


class Writer:
    """One caller's write waiting in the queue."""

    __slots__ = ("pairs", "prepare", "flush", "exclusive", "result", "error", "done", "cv")

    def __init__(self, pairs, prepare=None, flush=False, exclusive=None):
        self.pairs = pairs  # [(key, value | None)], or None when `prepare` decides
        self.prepare = prepare  # lookup -> (pairs, result), run by the leader
        self.flush = flush  # a flush request: leads a group of its own
        self.exclusive = exclusive  # retire_after's function
        self.result = None
        self.error = None
        self.done = False
        self.cv = None  # created only if this writer has to wait


class WriteQueue:
    def __init__(self, mutex: threading.Lock):
        self._mutex = mutex
        self._writers: deque[Writer] = deque()
        self._group: list[Writer] = []
        self.retired = False

    def __len__(self) -> int:
        return len(self._writers)

    def commit(self, writer: Writer, lead):
        """Queue `writer`, wait for its turn and return its result. Hold the mutex."""
        if self.retired:
            raise EngineRetiredError("the engine was switched")
        writers = self._writers
        writers.append(writer)
        while not writer.done and writers[0] is not writer:
            if writer.cv is None:
                writer.cv = threading.Condition(self._mutex)
            writer.cv.wait()
        if not writer.done:
            self._lead(writer, lead)
        if writer.error is not None:
            raise writer.error
        return writer.result

    def retire_after(self, fn):
        """Run `fn()` with writes held back; retire the queue if it returns. Hold the mutex."""
        return self.commit(Writer(None, exclusive=fn), None)

    def _lead(self, leader: Writer, lead) -> None:
        self._group = [leader]
        try:
            if self.retired:
                raise EngineRetiredError("the engine was switched")
            if leader.exclusive is not None:
                self._mutex.release()
                try:
                    leader.result = leader.exclusive()
                finally:
                    self._mutex.acquire()
                self.retired = True
            else:
                lead(leader)
        except BaseException as exc:
            for writer in self._group:
                writer.error = exc
        group, self._group = self._group, []
        writers = self._writers
        for writer in group:
            writers.popleft()
            writer.done = True
            if writer.cv is not None and writer is not leader:
                writer.cv.notify()
        if writers and writers[0].cv is not None:
            writers[0].cv.notify()

    def gather(self, lookup, max_bytes: int = MAX_GROUP_BYTES) -> list:
        """The leader's group as one list of pairs; `lookup(key)` reads the applied state.

        Called by `lead`; the writers gathered are the ones woken when it returns.
        """
        writers = self._writers
        leader = writers[0]
        if len(writers) == 1 and leader.prepare is None:
            return leader.pairs  # the common, uncontended case
        group: list[Writer] = []
        pairs: list = []
        overlay: dict = {}

        def lookup_in_group(key):
            value = overlay.get(key, _MISSING)
            return lookup(key) if value is _MISSING else value

        size = 0
        for writer in writers:
            if group and (size > max_bytes or writer.flush or writer.exclusive is not None):
                break
            if writer.prepare is not None:
                writer_pairs, writer.result = writer.prepare(lookup_in_group)
            else:
                writer_pairs = writer.pairs
            overlay.update(writer_pairs)
            for key, value in writer_pairs:
                size += len(key) + (len(value) if value is not None else 0)
            pairs.extend(writer_pairs)
            group.append(writer)
        self._group = group
        return pairs


def update_if_present(key: bytes, value: bytes):
    """A `prepare` for `Writer`: set `key` only if it exists; the result says if it did."""

    def prepare(lookup):
        if lookup(key) is None:
            return [], False
        return [(key, value)], True

    return prepare


def delete_present(keys):
    """A `prepare` for `Writer`: delete those of `keys` that exist; the result counts them."""

    def prepare(lookup):
        present = [key for key in dict.fromkeys(keys) if lookup(key) is not None]
        return [(key, None) for key in present], len(present)

    return prepare


class QueuedWrites:
    """The conditional writes and the switch barrier, for an engine with a `_mutex`, a
    `_queue` (WriteQueue), `_commit(writer)` and `_check_open()`."""

    def update_existing(self, key: bytes, value: bytes) -> bool:
        return self._commit(Writer(None, update_if_present(key, value)))

    def delete_existing(self, keys) -> int:
        """Delete those of `keys` that exist, atomically; return how many did."""
        return self._commit(Writer(None, delete_present(keys)))

    def increment(self, key: bytes, by: int) -> int:
        """Add `by` to the counter at `key` atomically; return its new value."""
        result = self._commit(Writer(None, counters.increment(key, by)))
        if isinstance(result, Exception):
            raise result
        return result

    def retire_after(self, fn):
        """Run `fn()` while writers wait; if it succeeds they get EngineRetiredError."""
        with self._mutex:
            self._check_open()
            return self._queue.retire_after(fn)
