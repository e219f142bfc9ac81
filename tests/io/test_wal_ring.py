"""WalRing, RingWriter and RingReader without the I/O optimizer: a model consumer
(records applied to bytearrays) checks that any interleaving of opens, appends of any
size (larger than the ring included), closes, producer restarts and drains delivers
exactly the bytes appended; plus the header checks at attach, the producer's refusals,
and what the consumer publishes as the producer sees it."""

from __future__ import annotations

import errno
import os
import random
import struct
import tempfile
import threading

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from concordkv_mp.errors import CorruptionError, InvalidArgumentError, StorageIOError, UnsupportedFormatError
from concordkv_mp.io.wal_ring import (
    CLOSE,
    DATA,
    DATA_OFFSET,
    MIN_CAPACITY,
    OPEN,
    SLOTS,
    RingReader,
    RingWriter,
    WalRing,
)


class ModelConsumer:
    """What the I/O optimizer does, minus the files: contents by path."""

    def __init__(self, ring: WalRing):
        self.ring = ring
        self.reader = RingReader(ring)
        self.paths: dict[int, str] = {}
        self.open: set[int] = set()
        self.contents: dict[str, bytearray] = {}
        self.drains = 0

    def drain(self) -> None:
        ring = self.ring
        assert 0 <= ring.write_pos - ring.read_pos <= ring.capacity
        end = ring.write_pos
        for _, _, kind, file_id, offset, payload in self.reader.records(end):
            if kind == OPEN:
                path = os.fsdecode(bytes(payload))
                assert file_id not in self.paths, "file ids are never reused"
                assert self.reader.file_path(file_id) == path
                self.paths[file_id] = path
                self.open.add(file_id)
                self.contents[path] = bytearray()
            elif kind == DATA:
                assert file_id in self.open
                buf = self.contents[self.paths[file_id]]
                assert offset == len(buf), "a log's DATA arrives in order, without gaps"
                buf += payload
            else:
                assert kind == CLOSE
                self.open.discard(file_id)
            payload.release()
        self.reader.publish_read(end)
        self.drains += 1


@pytest.fixture
def ring(tmp_path):
    ring = WalRing.create(str(tmp_path / "ring"), MIN_CAPACITY)
    yield ring
    ring.close()


# Small records, and ones from a quarter of the ring (where splitting starts) to three rings.
_SIZES = st.one_of(st.integers(0, 300), st.integers(MIN_CAPACITY // 4 - 40, 3 * MIN_CAPACITY))
_APPEND = st.tuples(st.just("append"), st.integers(0, 3), _SIZES)
_OPS = st.lists(
    st.one_of(
        st.just(("open",)),
        _APPEND,
        _APPEND,
        _APPEND,
        st.tuples(st.just("close"), st.integers(0, 3)),
        st.just(("drain",)),
        st.just(("restart",)),
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS, seed=st.integers(0, 2**32 - 1), start=st.integers(0, 3 * MIN_CAPACITY // 8).map(lambda n: 8 * n))
def test_ring_delivers_exactly_what_was_appended(ops, seed, start):
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "ring")
        WalRing.create(path, MIN_CAPACITY).close()
        # Positions need not start at 0 (a ring in use for a while): small records meet
        # the end of the ring too. Header words 8 and 16 (docs/formats.md): write_pos
        # and read_pos, set here as no producer or consumer would.
        with open(path, "r+b") as f:
            for word in (8, 16):
                f.seek(8 * word)
                f.write(struct.pack("<Q", start))
        ring = WalRing.attach(path)
        try:
            consumer = ModelConsumer(ring)
            # The producer's wake() drains synchronously: a full ring empties while the
            # producer waits, as with a real consumer.
            writer = RingWriter(ring, consumer.drain)
            expected: dict[str, bytearray] = {}
            open_files: list[tuple[int, str]] = []  # (file id, path) of this writer
            highest_id = 0
            last_write_pos = 0
            for n, op in enumerate(ops):
                if op[0] == "open" or (op[0] == "append" and not open_files):
                    if len(open_files) == SLOTS:
                        continue
                    path = os.path.join(directory, f"log-{n}")
                    file_id = writer.open_file(path)
                    assert file_id > highest_id
                    highest_id = file_id
                    open_files.append((file_id, path))
                    expected[path] = bytearray()
                if op[0] == "append":
                    file_id, path = open_files[op[1] % len(open_files)]
                    data = rng.randbytes(op[2])
                    writer.append(file_id, len(expected[path]), data)
                    expected[path] += data
                elif op[0] == "close" and open_files:
                    file_id, _ = open_files.pop(op[1] % len(open_files))
                    writer.close_file(file_id)
                elif op[0] == "drain":
                    consumer.drain()
                elif op[0] == "restart":
                    # A new incarnation: the old one's open files are closed for it.
                    writer = RingWriter(ring, consumer.drain)
                    open_files.clear()
                assert ring.write_pos >= last_write_pos
                assert ring.write_pos - ring.read_pos <= ring.capacity
                last_write_pos = ring.write_pos
            event(f"ends of the ring crossed: {min(ring.write_pos // ring.capacity - start // ring.capacity, 3)}")
            consumer.drain()
            assert consumer.contents == expected
            assert consumer.open == {file_id for file_id, _ in open_files}
        finally:
            ring.close()


def test_big_append_waits_for_the_consumer_and_is_split(ring):
    consumer = ModelConsumer(ring)
    writer = RingWriter(ring, consumer.drain)
    file_id = writer.open_file("/nowhere/log")
    data = os.urandom(10 * ring.capacity)
    writer.append(file_id, 0, data)
    consumer.drain()
    assert consumer.contents["/nowhere/log"] == data
    assert consumer.drains > 10  # the producer waited for the consumer, many times


def test_producer_restart_continues_and_never_reuses_file_ids(ring):
    consumer = ModelConsumer(ring)
    first = RingWriter(ring, consumer.drain)
    old_id = first.open_file("/nowhere/old")
    first.append(old_id, 0, b"before the crash")
    # The first producer dies here: its file is open, its records unconsumed.
    second = RingWriter(ring, consumer.drain)
    assert second.start_pos > 0
    new_id = second.open_file("/nowhere/new")
    assert new_id > old_id
    second.append(new_id, 0, b"after")
    consumer.drain()
    assert consumer.contents == {"/nowhere/old": b"before the crash", "/nowhere/new": b"after"}
    assert consumer.open == {new_id}  # the new producer closed the dead one's file


def test_slots_free_once_consumed_and_run_out_only_for_open_files(ring):
    consumer = ModelConsumer(ring)
    writer = RingWriter(ring, consumer.drain)
    for round_ in range(3):  # three times the table: closed slots are reused
        ids = [writer.open_file(f"/nowhere/{round_}-{i}") for i in range(SLOTS)]
        with pytest.raises(StorageIOError) as info:
            writer.open_file("/nowhere/one-too-many")
        assert info.value.errno == errno.EMFILE
        for file_id in ids:
            writer.close_file(file_id)
    consumer.drain()
    assert len(consumer.contents) == 3 * SLOTS


def test_a_path_longer_than_a_slot_is_refused(ring):
    writer = RingWriter(ring, lambda: None)
    with pytest.raises(StorageIOError) as info:
        writer.open_file("/" + "x" * 2000)
    assert info.value.errno == errno.ENAMETOOLONG


def test_wait_drained_times_out_without_a_consumer(ring):
    writer = RingWriter(ring, lambda: None)
    writer.append(writer.open_file("/nowhere/log"), 0, b"x")
    with pytest.raises(StorageIOError) as info:
        writer.wait_drained(0.05)
    assert info.value.errno == errno.ETIMEDOUT


def test_consumer_reports_bytes_that_are_not_records(ring):
    writer = RingWriter(ring, lambda: None)
    writer.append(writer.open_file("/nowhere/log"), 0, b"x")
    ring.data[0:2] = b"\x09\x00"  # an unknown record kind
    with pytest.raises(CorruptionError):
        list(RingReader(ring).records(ring.write_pos))


def test_reader_publishes_positions_and_counters_the_producer_sees(ring):
    writer = RingWriter(ring, lambda: None)
    file_id = writer.open_file("/nowhere/log")
    writer.append(file_id, 0, b"x" * 100)
    writer.request_durable(writer.position)
    reader = RingReader(ring)
    published = (reader.write_pos, reader.sync_request_pos, reader.producer_start_pos)
    assert published == (writer.position, writer.position, 0)
    assert [kind for _, _, kind, _, _, _ in reader.records(reader.write_pos)] == [OPEN, DATA]
    assert reader.file_path(file_id) == "/nowhere/log" and reader.file_path(file_id + 1) is None

    reader.publish_read(reader.write_pos)
    writer.wait_drained(0)  # returns at once: nothing left to wait for
    assert ring.read_pos == writer.position and ring.durable_pos == 0
    reader.publish_durable()
    writer.wait_durable(writer.position)
    assert ring.durable_pos == writer.position
    assert reader.published() == (writer.position, writer.position, 0)

    reader.count_drained(2, 0)  # a drain that wrote nothing is no write batch
    reader.count_drained(3, 100)
    reader.count_fsync()
    assert (ring.records_consumed, ring.bytes_written, ring.write_batches, ring.fsyncs) == (5, 100, 1, 1)


def test_a_failure_stands_for_its_producer_until_a_new_ones_records_are_read(ring):
    dead = RingWriter(ring, lambda: None)
    file_id = dead.open_file("/nowhere/log")
    dead.append(file_id, 0, b"fails")
    dead.append(file_id, 5, b"dropped")
    reader = RingReader(ring)
    _, (_, failed_end), (dropped_pos, _) = [(pos, end) for pos, end, *_ in reader.records(ring.write_pos)]
    reader.record_failure(errno.ENOSPC, file_id, failed_end)
    assert reader.error_errno == ring.error_errno == errno.ENOSPC
    with pytest.raises(StorageIOError) as info:
        dead.raise_if_failed()
    assert info.value.errno == errno.ENOSPC and "/nowhere/log" in str(info.value)

    restarted = RingWriter(ring, lambda: None)
    restarted.raise_if_failed()  # the failure concerns bytes before its start
    # The dead producer's later DATA is still dropped; the new one's records are not.
    assert reader.forget_dead_producer_error(dropped_pos, restarted.start_pos) == errno.ENOSPC
    assert reader.forget_dead_producer_error(restarted.start_pos, restarted.start_pos) == 0
    assert reader.error_errno == ring.error_errno == 0

    reader.record_failure(None, file_id, restarted.position)  # no errno: reported as EIO
    with pytest.raises(StorageIOError) as info:
        restarted.raise_if_failed()
    assert info.value.errno == errno.EIO


def test_a_restarted_reader_sees_the_standing_failure_and_waits_for_the_old_one(ring):
    reader = RingReader(ring)
    reader.record_failure(errno.EFBIG, 1, 8)
    other = WalRing.attach(ring.path)
    took_over = []
    thread = threading.Thread(target=lambda: took_over.append(RingReader(other)))
    thread.start()
    try:
        thread.join(0.2)
        assert not took_over  # the lock: two consumers would race on read_pos
        ring.close()
        thread.join(10)
        assert took_over[0].error_errno == errno.EFBIG
    finally:
        ring.close()
        thread.join()
        other.close()


def test_attach_checks_the_header(tmp_path):
    path = str(tmp_path / "ring")
    WalRing.create(path, MIN_CAPACITY).close()
    ring = WalRing.attach(path)
    assert ring.capacity == MIN_CAPACITY
    ring.close()
    with pytest.raises(StorageIOError):
        WalRing.create(path, MIN_CAPACITY)  # never over an existing ring

    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<Q", 2))
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        WalRing.attach(path)

    with open(path, "r+b") as f:
        f.write(b"NOTARING")
    with pytest.raises(UnsupportedFormatError, match="not a WAL ring"):
        WalRing.attach(path)

    other = str(tmp_path / "short")
    WalRing.create(other, MIN_CAPACITY).close()
    os.truncate(other, DATA_OFFSET + 100)
    with pytest.raises(CorruptionError, match="geometry"):
        WalRing.attach(other)
    os.truncate(other, 100)
    with pytest.raises(CorruptionError, match="shorter than its header"):
        WalRing.attach(other)


@pytest.mark.parametrize("capacity", [MIN_CAPACITY // 2, MIN_CAPACITY + 8, 3 << 20])
def test_capacity_must_be_a_power_of_two(tmp_path, capacity):
    with pytest.raises(InvalidArgumentError):
        WalRing.create(str(tmp_path / "ring"), capacity)
    assert not os.path.exists(tmp_path / "ring")
