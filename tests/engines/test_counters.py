"""`incr` on every engine: Redis's decimal rule for what a counter is, atomic increments
from many threads, errors that leave the value (and the other writers of a group) alone,
and counters that survive a reopen."""

from __future__ import annotations

import threading

import pytest

import concordkv_mp
from concordkv_mp.arguments import INT64_MAX, INT64_MIN
from concordkv_mp.errors import InvalidArgumentError, InvalidTypeError, NotAnIntegerError
from tests.support.engine_options import tiny_options


@pytest.fixture
def open_db(tmp_path, engine):
    handles = []

    def make(fsync: str = "none"):
        handle = concordkv_mp.open(str(tmp_path / "db"), **tiny_options(engine, fsync))
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.close()


@pytest.mark.parametrize("value", [b"", b"01", b"+1", b"-0", b" 1", b"1 ", b"1.5", b"1e3", b"0x10", b"\xff",
                                   b"%d" % (INT64_MAX + 1), b"%d" % (INT64_MIN - 1), b"1" * 20])
def test_a_value_that_is_not_a_decimal_integer_is_refused_and_kept(open_db, value):
    db = open_db()
    db.set(b"k", value)
    with pytest.raises(NotAnIntegerError) as raised:
        db.incr(b"k")
    assert raised.value.code == "NOT_AN_INTEGER" and isinstance(raised.value, InvalidArgumentError)
    assert db.get(b"k") == value


@pytest.mark.parametrize("start, by, result", [(None, 1, 1), (b"0", -1, -1), (b"-7", 7, 0), (b"41", 1, 42),
                                               (b"%d" % (INT64_MAX - 1), 1, INT64_MAX), (b"%d" % INT64_MIN, 0, INT64_MIN)])
def test_increments_and_decrements_within_64_bits(open_db, start, by, result):
    db = open_db()
    if start is not None:
        db.set(b"k", start)
    assert db.incr(b"k", by) == result
    assert db.get(b"k") == b"%d" % result


def test_overflow_and_bad_steps_are_refused(open_db):
    db = open_db()
    db.set(b"k", b"%d" % INT64_MAX)
    with pytest.raises(InvalidArgumentError) as raised:
        db.incr(b"k")
    assert raised.value.code == "INVALID_ARGUMENT"
    for by in (True, 1.0, "1", None):
        with pytest.raises(InvalidTypeError):
            db.incr(b"k", by)
    with pytest.raises(InvalidArgumentError):
        db.incr(b"k", INT64_MAX + 1)
    assert db.get(b"k") == b"%d" % INT64_MAX
    assert db.incr(b"k", by=-1) == INT64_MAX - 1


def test_increments_from_many_threads_are_atomic_and_durable(open_db):
    db = open_db("always")  # writers queue and form groups
    threads, rounds = 8, 200
    bad_results = []

    def work(index):
        for i in range(rounds):
            db.incr(b"hits")
            db.set(b"t%d" % index, b"%d" % i)
            try:
                db.incr(b"text")  # fails inside a group: the group's other writes must not
            except NotAnIntegerError:
                continue
            bad_results.append(index)

    db.set(b"text", b"not a number")
    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert bad_results == []
    assert db.get(b"hits") == b"%d" % (threads * rounds)
    assert db.mget([b"t%d" % index for index in range(threads)]) == [b"%d" % (rounds - 1)] * threads
    db.close()
    assert open_db().get(b"hits") == b"%d" % (threads * rounds)
