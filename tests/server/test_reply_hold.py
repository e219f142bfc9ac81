"""`ReplyHold` driven turn by turn without sockets, against a fake database whose
durability the test moves by hand: under fsync="always" write replies wait for their
ticket, go in request order as a prefix, and fail together when the WAL does; under
the other policies they go at once and the optimizer is kicked at most once per
interval."""

from __future__ import annotations

import msgpack
import pytest

from concordkv_mp.errors import StorageIOError
from concordkv_mp.server.reply_hold import HELD_POLL_MS, ReplyHold

KICK = 0.02


class FakeDurability:
    def __init__(self):
        self.written = 0  # the ticket of everything written so far
        self.durable = 0
        self.requested: list[int] = []
        self.error: StorageIOError | None = None

    def write(self) -> None:
        self.written += 10

    def durability_ticket(self) -> int:
        return self.written

    def request_durability(self, ticket: int) -> None:
        self.requested.append(ticket)

    def durable_through(self) -> int:
        if self.error is not None:
            raise self.error
        return self.durable


@pytest.fixture
def fake():
    return FakeDurability()


def make(fake, hold_writes: bool):
    kicks = []
    return ReplyHold(fake, hold_writes, lambda: kicks.append(1), KICK), kicks


def answered(hold, fake, name: str, writes: bool, request_id: int) -> bool:
    """Whether the hold keeps the reply, as the partition's loop asks it: writes only."""
    if not writes:
        return False
    fake.write()
    return hold.wrote(name, request_id, b"reply-" + name.encode())


def test_always_holds_writes_until_their_ticket_is_durable(fake):
    hold, kicks = make(fake, True)
    assert answered(hold, fake, "w1", True, 1)
    assert not answered(hold, fake, "r1", False, 2)  # a read goes at once
    assert answered(hold, fake, "w2", True, 3)
    assert list(hold.end_turn(0.0)) == []
    assert fake.requested == [20] and hold.holding
    assert hold.poll_timeout_ms(200) == HELD_POLL_MS
    assert answered(hold, fake, "w3", True, 4)  # the next turn's write: a later ticket
    assert list(hold.end_turn(0.001)) == []
    assert fake.requested == [20, 30]
    fake.durable = 25
    assert hold.end_turn(0.002) == [("w1", b"reply-w1"), ("w2", b"reply-w2")]
    fake.durable = 30
    assert hold.end_turn(0.003) == [("w3", b"reply-w3")]
    assert not hold.holding and hold.failure is None
    assert kicks == []  # request_durability wakes the optimizer itself


def test_a_failed_wal_fails_every_held_write_with_its_request_id(fake):
    hold, _ = make(fake, True)
    answered(hold, fake, "w1", True, 11)
    hold.end_turn(0.0)
    answered(hold, fake, "w2", True, 12)
    fake.durable = 10  # w1 became durable, but the failure is seen first
    fake.error = StorageIOError(5, "the I/O optimizer failed to fdatasync")
    failed = hold.end_turn(0.001)
    assert [envelope for envelope, _ in failed] == ["w1", "w2"]
    replies = [msgpack.unpackb(reply) for _, reply in failed]
    assert [reply[0] for reply in replies] == [11, 12]
    assert all(reply[1] == 1 and reply[2] == "IO_ERROR" for reply in replies)
    assert hold.failure is fake.error and not hold.holding


@pytest.mark.parametrize("hold_writes", [False])
def test_other_policies_reply_at_once_and_kick_once_per_interval(fake, hold_writes):
    hold, kicks = make(fake, hold_writes)
    assert hold.poll_timeout_ms(200) == 200
    assert not answered(hold, fake, "w1", True, 1)
    assert hold.poll_timeout_ms(200) == round(KICK * 1000)
    assert list(hold.end_turn(10.0)) == []
    assert kicks == [1]
    assert not answered(hold, fake, "w2", True, 2)
    hold.end_turn(10.005)  # within the interval: no kick yet
    assert kicks == [1]
    hold.end_turn(10.019)
    assert kicks == [1]
    hold.end_turn(10.021)  # the bytes of w2 still wait: kicked now
    assert kicks == [1, 1]
    hold.end_turn(11.0)  # nothing new written: no kick
    assert kicks == [1, 1] and fake.requested == []
    fake.error = StorageIOError(28, "no space")
    assert list(hold.end_turn(11.1)) == [] and hold.failure is fake.error  # the loop stops even with nothing held
