"""The I/O optimizer with real files: its logic in-process (IoOptimizer.round() as the
producer's wake), and the real process — group commit across rings, SIGKILLed again and
again under load, a producer SIGKILLed mid-append, write failures reported to the
producer that owns them, SIGTERM, and the fsync policies."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import zmq

from concordkv_mp.errors import StorageIOError
from concordkv_mp.io.ring_fs import RingFileSystem
from concordkv_mp.io.wal_ring import WalRing
from concordkv_mp.server.io_optimizer import NOTIFICATION, IoOptimizer

REPO = str(Path(__file__).resolve().parents[2])
pytestmark = pytest.mark.timeout(120)


class Kicker:
    """A producer's wake(): the 2-byte ring index on a PUSH socket, never blocking (the
    RingWriter serializes its calls)."""

    def __init__(self, context: zmq.Context, endpoint: str, index: int):
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 16)
        self._socket.setsockopt(zmq.RECONNECT_IVL, 10)  # the optimizer restarts often here
        self._socket.connect(endpoint)
        self._kick = index.to_bytes(2, "big")

    def __call__(self) -> None:
        try:
            self._socket.send(self._kick, zmq.NOBLOCK)
        except zmq.Again:
            pass  # kicks already queued will wake it

    def close(self) -> None:
        self._socket.close(0)


class Setup:
    """Rings in /dev/shm, sockets in a short /tmp directory (ipc paths are limited to
    107 bytes), WAL files in tmp_path, and the optimizer as a child process."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.shm = tempfile.mkdtemp(prefix="ckv-test-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.sockets = tempfile.mkdtemp(prefix="ckv-")
        self.wake = f"ipc://{self.sockets}/wake"
        self.notify = f"ipc://{self.sockets}/notify"
        self.context = zmq.Context()
        self.ring_paths: list[str] = []
        self.process: subprocess.Popen | None = None
        self._closeables: list = []

    def make_rings(self, count: int, capacity: int) -> list[str]:
        for index in range(count):
            path = os.path.join(self.shm, f"ring-{index}")
            WalRing.create(path, capacity).close()
            self.ring_paths.append(path)
        return self.ring_paths

    def start(self, fsync: str, file_size_limit: int | None = None) -> None:
        args = ["--fsync", fsync, "--wake", self.wake, "--notify", self.notify, *self.ring_paths]
        if file_size_limit is None:
            command = [sys.executable, "-m", "concordkv_mp.server.io_optimizer", *args]
        else:
            # RLIMIT_FSIZE makes a pwrite past the limit fail with EFBIG (SIGXFSZ ignored):
            # a deterministic write error.
            code = (
                "import resource, runpy, signal, sys; "
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({file_size_limit}, {file_size_limit})); "
                "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                f"sys.argv = ['io_optimizer'] + {args!r}; "
                "runpy.run_module('concordkv_mp.server.io_optimizer', run_name='__main__')"
            )
            command = [sys.executable, "-c", code]
        self.process = subprocess.Popen(command, cwd=REPO)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def producer(self, index: int) -> tuple[RingFileSystem, WalRing]:
        """A new producer on ring `index` (its own ring mapping and kick socket)."""
        kicker = Kicker(self.context, self.wake, index)
        ring = WalRing.attach(self.ring_paths[index])
        self._closeables += [kicker, ring]
        return RingFileSystem(ring, kicker), ring

    def close(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.kill()
            for item in reversed(self._closeables):
                item.close()
        finally:
            # destroy(), not term(): a socket a failed test left open would make term()
            # wait forever, hiding the failure behind a hang.
            self.context.destroy(linger=0)
            shutil.rmtree(self.shm, ignore_errors=True)
            shutil.rmtree(self.sockets, ignore_errors=True)


@pytest.fixture
def setup(tmp_path):
    s = Setup(tmp_path)
    yield s
    s.close()


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- in-process


@pytest.fixture
def in_process(tmp_path):
    """A ring and an IoOptimizer in this process; the producer's wake() runs a round."""
    path = str(tmp_path / "ring")
    WalRing.create(path, 1 << 16).close()
    core = IoOptimizer([path], "always")
    ring = WalRing.attach(path)
    fs = RingFileSystem(ring, core.round)
    yield fs, ring, core
    ring.close()
    core.close()


def test_contiguous_appends_are_one_pwritev_and_one_fdatasync(in_process, tmp_path):
    fs, ring, core = in_process
    log = fs.create_log(str(tmp_path / "a.wal"), 0)
    chunks = [os.urandom(100) for _ in range(200)]  # under half the ring: no kick before sync()
    for chunk in chunks:
        log.append(chunk)
    log.sync()
    assert _read(log.path) == b"".join(chunks)
    assert (ring.write_batches, ring.fsyncs, ring.bytes_written, ring.records_consumed) == (1, 1, 20_000, 201)
    assert ring.durable_pos == ring.read_pos == ring.write_pos == fs.durability_ticket()
    log.close()


def test_an_open_failure_is_raised_by_sync_with_its_errno(in_process, tmp_path):
    fs, ring, core = in_process
    path = str(tmp_path / "a.wal")
    log = fs.create_log(path, 0)
    os.remove(path)
    os.mkdir(path)  # the optimizer's open(O_WRONLY) now fails with EISDIR
    log.append(b"x" * 100)
    with pytest.raises(StorageIOError) as info:
        log.sync()
    assert info.value.errno == errno.EISDIR
    assert path in str(info.value)
    assert ring.durable_pos < fs.durability_ticket()
    with pytest.raises(StorageIOError):
        fs.durable_through()


def test_bytes_of_a_removed_file_are_dropped(in_process, tmp_path):
    fs, ring, core = in_process
    path = str(tmp_path / "a.wal")
    log = fs.create_log(path, 0)
    log.append(b"x" * 100)
    os.remove(path)  # the engine removed it before the optimizer opened it
    log.sync()
    assert not os.path.exists(path)
    assert ring.durable_pos == fs.durability_ticket()


# ---------------------------------------------------------------- the process


def test_group_commit_across_rings_under_fsync_always(setup, tmp_path):
    setup.make_rings(2, 1 << 20)
    setup.start("always")
    subscriber = setup.context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.LINGER, 0)
    subscriber.setsockopt(zmq.SUBSCRIBE, (1).to_bytes(2, "big"))
    subscriber.connect(setup.notify)
    rng = random.Random(7)
    producers = [setup.producer(i) for i in range(2)]
    logs = []
    for i, (fs, _) in enumerate(producers):
        for j in range(2):
            logs.append((fs.create_log(str(tmp_path / f"r{i}-{j}.wal"), 0), bytearray()))
    for step in range(400):
        log, expected = rng.choice(logs)
        # Mostly small records; some larger than a quarter of the ring (split).
        data = rng.randbytes(rng.randint(0, 300) if rng.random() < 0.9 else rng.randint(0, 700_000))
        log.append(data)
        expected += data
        if step % 10 == 9:
            log.sync()
            assert _read(log.path) == expected
    for log, _ in logs:
        log.sync()
        log.close()
    for log, expected in logs:
        assert _read(log.path) == expected
    for _, ring in producers:
        assert ring.durable_pos >= ring.read_pos > 0
        assert ring.fsyncs > 0 and ring.write_batches > 0
    assert sum(ring.bytes_written for _, ring in producers) == sum(len(e) for _, e in logs)
    assert subscriber.poll(5000)
    index, read_pos, durable_pos, code = NOTIFICATION.unpack(subscriber.recv())
    assert index == 1 and read_pos > 0 and code == 0
    subscriber.close(0)


def test_sigkilled_again_and_again_loses_nothing_durable(setup, tmp_path):
    setup.make_rings(2, 1 << 18)
    setup.start("always")
    logs = {}
    stop = threading.Event()
    failures = []

    def produce(index: int) -> None:
        try:
            rng = random.Random(index)
            fs, _ = setup.producer(index)
            mine = [(fs.create_log(str(tmp_path / f"r{index}-{j}.wal"), 0), bytearray()) for j in range(2)]
            logs[index] = mine
            step = 0
            while not stop.is_set():
                log, expected = rng.choice(mine)
                data = rng.randbytes(rng.randint(0, 5000))
                log.append(data)
                expected += data
                step += 1
                if step % 8 == 0:
                    log.sync()
                    # Everything the producer was told is durable is in the file.
                    assert _read(log.path)[: len(expected)] == expected
            for log, _ in mine:
                log.sync()
                log.close()
        except BaseException as exc:  # re-raised by the test
            failures.append(exc)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    observers = [WalRing.attach(path) for path in setup.ring_paths]
    kills = 0
    rng = random.Random(1)
    try:
        while kills < 12 and not failures:
            # Killed while it works: after it has consumed records, at a random moment.
            consumed = sum(ring.records_consumed for ring in observers)
            deadline = time.monotonic() + 10
            while sum(ring.records_consumed for ring in observers) == consumed and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.1))
            setup.kill()
            kills += 1
            setup.start("always")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        for ring in observers:
            ring.close()
    if failures:
        raise failures[0]
    assert kills == 12
    for mine in logs.values():
        for log, expected in mine:
            assert _read(log.path) == expected


CHILD = """
import os, sys, zmq
from concordkv_mp.io.ring_fs import RingFileSystem
from concordkv_mp.io.wal_ring import WalRing
from tests.server.test_io_optimizer import Kicker, record
ring_path, wake, log_path = sys.argv[1:4]
context = zmq.Context()
fs = RingFileSystem(WalRing.attach(ring_path), Kicker(context, wake, 0))
log = fs.create_log(log_path, 0)
i = 0
while True:
    log.append(record(i))
    i += 1
    if i == 50:
        log.sync()
        print("READY", flush=True)
"""


def record(i: int) -> bytes:
    """Record i of the killed producer: self-delimiting, 11..510 bytes."""
    return b"<%07d:" % i + b"x" * (i * 37 % 500) + b">"


def test_a_producer_killed_mid_append_leaves_whole_records(setup, tmp_path):
    setup.make_rings(1, 1 << 16)
    setup.start("none")
    rng = random.Random(3)
    for attempt in range(3):
        path = str(tmp_path / f"killed-{attempt}.wal")
        child = subprocess.Popen([sys.executable, "-c", CHILD, setup.ring_paths[0], setup.wake, path],
                                 cwd=REPO, stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"READY\n"
            time.sleep(rng.uniform(0.01, 0.2))
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        fs, _ = setup.producer(0)  # the next incarnation
        fs.wait_drained(10)
        data = _read(path)
        count = pos = 0
        while pos < len(data):
            expected = record(count)
            assert data[pos : pos + len(expected)] == expected, f"record {count} is torn or wrong"
            pos += len(expected)
            count += 1
        assert count >= 50
        log = fs.create_log(str(tmp_path / f"after-{attempt}.wal"), 0)
        log.append(b"the next incarnation writes on")
        log.sync()
        log.close()
        assert _read(log.path) == b"the next incarnation writes on"


def test_a_write_failure_stops_its_ring_only_until_a_new_producer(setup, tmp_path):
    setup.make_rings(2, 1 << 18)
    setup.start("always", file_size_limit=1 << 20)
    failing, _ = setup.producer(0)
    healthy, _ = setup.producer(1)
    big = failing.create_log(str(tmp_path / "big.wal"), 0)
    small = healthy.create_log(str(tmp_path / "small.wal"), 0)
    chunks = [os.urandom(100_000) for _ in range(15)]  # 1.5 MB: past the 1 MiB limit
    with pytest.raises(StorageIOError) as info:
        for chunk in chunks:
            big.append(chunk)
            big.sync()
    assert info.value.errno == errno.EFBIG
    assert "big.wal" in str(info.value)
    written = _read(big.path)
    assert len(written) <= 1 << 20 and written == b"".join(chunks)[: len(written)]
    with pytest.raises(StorageIOError):
        big.sync()  # fail-stop: it stays failed

    small.append(b"the other ring is served")
    small.sync()
    assert _read(small.path) == b"the other ring is served"

    restarted, _ = setup.producer(0)  # a new incarnation of the failed partition
    restarted.wait_drained(10)
    assert len(_read(big.path)) == len(written)  # nothing after the failure reached the file
    again = restarted.create_log(str(tmp_path / "again.wal"), 0)
    again.append(b"ok")
    again.sync()
    assert _read(again.path) == b"ok"


def _one_drained_log(setup, tmp_path, fsync: str):
    """One ring served under `fsync`, its producer, and a log whose 1,000 bytes the
    optimizer has written."""
    setup.make_rings(1, 1 << 16)
    setup.start(fsync)
    fs, ring = setup.producer(0)
    log = fs.create_log(str(tmp_path / "a.wal"), 0)
    log.append(b"x" * 1000)
    fs.wait_drained(10)
    return fs, ring, log


def _wait_until_durable(fs, ring, interval: float) -> None:
    deadline = time.monotonic() + 3
    while ring.durable_pos < fs.durability_ticket():
        assert time.monotonic() < deadline
        time.sleep(interval)


def test_sigterm_syncs_what_was_written_and_exits_0(setup, tmp_path):
    fs, ring, log = _one_drained_log(setup, tmp_path, "none")
    time.sleep(0.3)
    assert ring.read_pos == fs.durability_ticket() and ring.durable_pos < fs.durability_ticket()  # "none": no sync unasked
    setup.process.send_signal(signal.SIGTERM)
    assert setup.process.wait(10) == 0
    assert ring.durable_pos == fs.durability_ticket()
    assert _read(log.path) == b"x" * 1000


def test_everysec_syncs_within_a_second_and_none_only_on_request(setup, tmp_path):
    fs, ring, log = _one_drained_log(setup, tmp_path, "everysec")
    _wait_until_durable(fs, ring, 0.05)  # no request: the policy's timer syncs

    setup.kill()
    setup.start("none")
    log.append(b"y" * 1000)
    fs.wait_drained(10)
    time.sleep(1.2)
    assert ring.durable_pos < fs.durability_ticket()
    fs.request_durability(fs.durability_ticket())
    _wait_until_durable(fs, ring, 0.01)
