"""`ReplyHold`: when the replies of a partition's writes may go, as the server's fsync
policy says. It owns that bookkeeping and no socket, so tests drive it a turn at a time.

Under fsync="always" a write's reply waits until its WAL bytes are durable. The writes
answered in one turn of the partition's loop take one durability ticket from the
database (covering everything written so far), ask for it without waiting, and their
replies go, in arrival order, once the database is durable through that ticket. The
loop keeps taking requests meanwhile, so every write that arrives during one fsync
shares the next.

Under "everysec" and "none" replies go at once (the WAL bytes are in the shared-memory
ring, which outlives the partition). The I/O optimizer is then woken at most every
`kick_interval` seconds while WAL bytes wait for it: it would otherwise only write them
at its idle timeout, and one wake-up per write would cost a wake-up per write.

If the database reports that its WAL cannot be made durable, every held write is
answered with that error, and the loop must stop: the partition is restarted and
recovers what reached the files.

The loop's part, per turn:

    for each request: reply = ...; unless it writes and hold.wrote(envelope, request_id, reply): send it
    for envelope, reply in hold.end_turn(now): send it
    if hold.failure: raise hold.failure
"""

from __future__ import annotations

from concordkv_mp.errors import StorageIOError
from concordkv_mp.ipc.protocol import encode_error

# How long the loop may wait for input while replies are held: the optimizer's news
# (a notification) usually ends the wait sooner.
HELD_POLL_MS = 5
_NONE = ()


class ReplyHold:
    def __init__(self, durability, hold_writes: bool, wake, kick_interval: float):
        """`durability`: the partition's Database (`durability_ticket()`,
        `request_durability(ticket)`, `durable_through()`); `wake()` kicks the I/O
        optimizer without blocking."""
        self._durability = durability
        self._durable_through = durability.durable_through  # asked every turn
        self._hold_writes = hold_writes
        self._wake = wake
        self._kick_interval = kick_interval
        self._turn: list = []  # (envelope, request id, reply) of this turn's writes
        self._held: list = []  # (ticket, envelope, request id, reply), tickets in order
        self._unkicked = False  # WAL bytes that the optimizer was not told about
        self._last_kick = float("-inf")
        self.failure: StorageIOError | None = None

    @property
    def holding(self) -> bool:
        """Whether replies wait: the loop must not stop before they went."""
        return bool(self._held)

    def poll_timeout_ms(self, idle_ms: int) -> int:
        """How long the loop may wait for input before it must look at the hold again."""
        if self._held:
            return HELD_POLL_MS
        if self._unkicked:
            return max(1, round(self._kick_interval * 1000))
        return idle_ms

    def wrote(self, envelope, request_id, reply: bytes) -> bool:
        """Note an answered write (the only requests the hold cares about); True if it
        keeps the reply for now."""
        self._unkicked = True
        if not self._hold_writes:
            return False
        self._turn.append((envelope, request_id, reply))
        return True

    def end_turn(self, now: float) -> list:
        """The (envelope, reply) pairs that may go now, in the order of their requests."""
        durability = self._durability
        if self._turn:
            ticket = durability.durability_ticket()
            durability.request_durability(ticket)  # wakes the optimizer
            self._unkicked = False
            self._last_kick = now
            self._held.extend((ticket, envelope, request_id, reply) for envelope, request_id, reply in self._turn)
            self._turn.clear()
        if self._unkicked and now - self._last_kick >= self._kick_interval:
            self._wake()
            self._last_kick = now
            self._unkicked = False
        try:
            durable = self._durable_through()
        except StorageIOError as exc:
            self.failure = exc
            failed = [(envelope, encode_error(request_id, exc)) for _, envelope, request_id, _ in self._held]
            self._held.clear()
            return failed
        held = self._held
        if not held:
            return _NONE
        released = 0
        # Tickets only grow along `held`: the durable entries are a prefix.
        while released < len(held) and held[released][0] <= durable:
            released += 1
        if not released:
            return _NONE
        ready = [(envelope, reply) for _, envelope, _, reply in held[:released]]
        del held[:released]
        return ready
