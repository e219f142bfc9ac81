"""The I/O optimizer process: the only writer of the partitions' WAL files in a server.

Each partition copies its WAL bytes into its shared-memory ring (io/wal_ring.py); this
process drains every ring, writes the bytes with pwritev at the offsets they carry
(contiguous DATA of one file coalesced into one call), fdatasyncs per the fsync policy
and publishes, in each ring's header, how far the ring is written (read_pos) and how far
it is durable (durable_pos). One round's fdatasyncs — run in parallel threads, since
os.fdatasync releases the GIL — cover every partition written in that round: group
commit across partitions. Policies: "always" syncs whatever a round wrote before
publishing it durable; "everysec" once a second; "none" only when a producer asks
(sync_request_pos, which any policy honours in the next round).

Crash safety. The state needed to continue is in the rings, so the process may be
SIGKILLed at any instant and restarted: it resumes at read_pos, and re-writing bytes
is harmless because they carry their offsets. Bytes its predecessor pwrote but did not
fdatasync may belong to files it closed and forgot, so a restart that finds read_pos
past durable_pos runs sync(2) — the only call that covers files no one has open —
once, then publishes them durable. It holds an flock on every ring, so a second
optimizer started too early waits for the first to be gone.

Failures are fail-stop per ring, as in the engines: after an OSError writing or syncing
a ring's file, the ring's error_errno is set (its producer's waits raise
StorageIOError), durable_pos stops short of the failure and none of that producer's
later DATA reaches a file (a hole followed by good records would read as corruption);
records are still consumed so the producer never blocks. The other rings are served as
before. The error is forgotten once a new producer has attached to the ring and the
dead one's records are consumed. A file that no longer exists when its bytes arrive was
removed by its engine: the bytes are dropped, as writes to an unlinked file would be.

Protocol (ZeroMQ): a PULL socket bound on the wake endpoint receives kicks — 2 bytes,
the big-endian ring index; they only cut the wait short, so losing one is harmless —
and a PUB socket bound on the notify endpoint publishes, after a round that moved a
ring's read_pos, durable_pos or error, `NOTIFICATION`: the 2-byte big-endian ring index
(the topic a partition subscribes to), then read_pos, durable_pos and error_errno as
big-endian u64. SIGTERM (or `stop()`): finish the round, fdatasync everything written,
exit 0.

Owns the WAL files' descriptors and the decisions of what to write, when to sync and
what to publish; the consumer's half of each ring header it reads and stores only
through a `RingReader` (io/wal_ring.py), which owns that protocol. It never interprets
WAL contents and never touches any other file.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import zmq

from concordkv_mp.errors import ConfigError, CorruptionError
from concordkv_mp.io.wal_ring import CLOSE, DATA, OPEN, RingReader, WalRing
from concordkv_mp.ipc.sockets import discard_pending
from concordkv_mp.options import FSYNC_POLICIES

NOTIFICATION = struct.Struct(">HQQQ")  # ring index, read_pos, durable_pos, error_errno
EVERYSEC_INTERVAL = 1.0
IDLE_TIMEOUT = 1.0
# With bytes left in a ring after a round (written while it ran), wait this long for
# more before the next: rounds write bigger batches, the delay is far below an fsync.
BUSY_TIMEOUT = 0.001
# CLOSEd files still unsynced keep their descriptor until the ring's next fdatasync, so
# that durable_pos stays true for them; under fsync="none" that may never come, so past
# this many they are synced and closed without publishing anything.
MAX_CLOSING = 16
# Kicks are idempotent: a few queued are as good as many.
KICK_HWM = 64
_NEVER_CLEARED = (1 << 64) - 1
_IOV_MAX = os.sysconf("SC_IOV_MAX")
_SYNC_THREADS = 8


class _Run:
    """Contiguous DATA for one file, written with one pwritev."""

    __slots__ = ("file_id", "fd", "offset", "end", "buffers", "last_record_end")

    def __init__(self, file_id: int, fd: int, offset: int):
        self.file_id = file_id
        self.fd = fd
        self.offset = offset
        self.end = offset
        self.buffers: list = []
        self.last_record_end = 0


class _RingState:
    """What the consumer keeps per ring besides the header (which its reader keeps):
    descriptors by file id (None: the file was removed, its bytes are dropped), the
    files written since the ring's last fdatasync, and the CLOSEd ones among them."""

    def __init__(self, index: int, ring: WalRing, reader: RingReader):
        self.index = index
        self.ring = ring
        self.reader = reader
        self.fds: dict[int, int | None] = {}
        self.dirty: set[int] = set()
        self.closing: set[int] = set()
        self.halted = False  # a record that does not parse: nothing after it can be read


class IoOptimizer:
    """The process's logic without sockets: `round()` drains and syncs every ring once."""

    def __init__(self, ring_paths: list[str], fsync: str):
        if fsync not in FSYNC_POLICIES:
            raise ConfigError("fsync", f"{fsync!r} is not one of {', '.join(FSYNC_POLICIES)}")
        self._fsync = fsync
        self._rings: list[_RingState] = []
        self._pool = None
        try:
            for index, path in enumerate(ring_paths):
                ring = WalRing.attach(path)
                try:
                    reader = RingReader(ring)  # waits for an older optimizer to be gone
                except BaseException:
                    ring.close()
                    raise
                self._rings.append(_RingState(index, ring, reader))
        except BaseException:
            self.close()
            raise
        readers = [s.reader for s in self._rings]
        lagging = [r for r in readers if not r.error_errno and r.durable_pos < r.read_pos]
        if lagging:
            os.sync()
            for reader in lagging:
                reader.publish_durable()
        self._pool = ThreadPoolExecutor(max_workers=_SYNC_THREADS, thread_name_prefix="ckv-fdatasync")
        self._last_everysec = time.monotonic()

    def close(self) -> None:
        """Close every descriptor and ring (not a sync: see `round(force_sync=True)`)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for state in self._rings:
            for fd in state.fds.values():
                if fd is not None:
                    os.close(fd)
            state.fds.clear()
            state.ring.close()
        self._rings = []

    def notification(self, index: int) -> bytes:
        """The NOTIFICATION message of ring `index`, as it stands."""
        read, durable, code = self._rings[index].reader.published()
        return NOTIFICATION.pack(index, read, durable, code)

    def pending(self) -> bool:
        """True if a ring holds records not consumed yet."""
        return any(s.reader.write_pos > s.reader.read_pos for s in self._rings if not s.halted)

    def next_timeout(self) -> float:
        """Seconds the loop may wait for a kick before the next round."""
        if self.pending():
            return BUSY_TIMEOUT
        if self._fsync == "everysec" and any(
            s.reader.read_pos > s.reader.durable_pos and not s.reader.error_errno for s in self._rings
        ):
            return max(0.0, self._last_everysec + EVERYSEC_INTERVAL - time.monotonic())
        return IDLE_TIMEOUT

    def round(self, force_sync: bool = False) -> list[int]:
        """Drain every ring, then fdatasync per policy (everything if `force_sync`);
        returns the indexes of the rings whose read_pos, durable_pos or error moved."""
        now = time.monotonic()
        everysec_due = self._fsync == "everysec" and now - self._last_everysec >= EVERYSEC_INTERVAL
        if everysec_due:
            self._last_everysec = now
        before = {}
        jobs = []
        for state in self._rings:
            if state.halted:
                continue
            reader = state.reader
            before[state.index] = reader.published()
            reader.forget_dead_producer_error(reader.read_pos, reader.producer_start_pos)
            # sync_request_pos before write_pos: a request is never past the bytes read.
            request = reader.sync_request_pos
            end = reader.write_pos
            if end > reader.read_pos:
                self._drain(state, end)
            read, durable = reader.read_pos, reader.durable_pos
            if reader.error_errno or state.halted:
                continue
            if read > durable and (force_sync or self._fsync == "always" or request > durable or everysec_due):
                jobs.append((state, set(state.dirty), True))
            elif len(state.closing) > MAX_CLOSING:
                jobs.append((state, set(state.closing), False))
        self._sync(jobs)
        return [i for i, published in before.items() if self._rings[i].reader.published() != published]

    # ------------------------------------------------------------ draining

    def _drain(self, state: _RingState, end: int) -> None:
        reader = state.reader
        start_pos = reader.producer_start_pos
        runs: dict[int, _Run] = {}
        records = written = 0
        try:
            for pos, record_end, kind, file_id, offset, payload in reader.records(end):
                records += 1
                if kind == DATA:
                    if reader.error_errno and reader.forget_dead_producer_error(pos, start_pos):
                        continue  # fail-stop: see the module docstring
                    if not payload:
                        continue
                    run = runs.get(file_id)
                    if run is None or run.end != offset:
                        if run is not None:
                            written += self._write(state, run)
                        fd = state.fds[file_id] if file_id in state.fds else self._open(state, file_id, None, record_end)
                        if fd is None:  # removed, or failed to open (then the ring has failed)
                            continue
                        run = runs[file_id] = _Run(file_id, fd, offset)
                    run.buffers.append(payload)
                    run.end += len(payload)
                    run.last_record_end = record_end
                elif kind == OPEN:
                    self._open(state, file_id, os.fsdecode(bytes(payload)), record_end)
                elif kind == CLOSE:
                    run = runs.pop(file_id, None)
                    if run is not None:
                        written += self._write(state, run)
                    self._close(state, file_id)
            for run in runs.values():
                written += self._write(state, run)
        except CorruptionError as exc:
            print(f"io_optimizer: {exc}; ring {state.index} halted", file=sys.stderr, flush=True)
            state.halted = True
            reader.record_failure(errno.EBADMSG, 0, _NEVER_CLEARED)
            return
        finally:
            runs.clear()  # views into the ring: released before it may be unmapped
        reader.publish_read(end)
        reader.count_drained(records, written)

    def _open(self, state: _RingState, file_id: int, path: str | None, error_pos: int) -> int | None:
        """Open a file for pwrite (path from the file table if None: a restart after its
        OPEN was consumed)."""
        if path is None:
            path = state.reader.file_path(file_id)
            if path is None:
                raise CorruptionError(state.ring.path, f"DATA for file id {file_id}, which no file-table slot holds")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None  # removed by its engine: see the module docstring
        except OSError as exc:
            state.reader.record_failure(exc.errno, file_id, error_pos)
            fd = None
        state.fds[file_id] = fd
        return fd

    def _close(self, state: _RingState, file_id: int) -> None:
        if file_id in state.dirty:
            state.closing.add(file_id)
            return
        fd = state.fds.pop(file_id, None)
        if fd is not None:
            os.close(fd)

    def _write(self, state: _RingState, run: _Run) -> int:
        """pwritev a run unless the ring has failed; returns the bytes written."""
        if state.reader.error_errno:
            return 0
        try:
            _pwritev_all(run.fd, run.buffers, run.offset)
        except OSError as exc:
            state.reader.record_failure(exc.errno, run.file_id, run.last_record_end)
            return 0
        state.dirty.add(run.file_id)
        return run.end - run.offset

    # ------------------------------------------------------------ syncing

    def _sync(self, jobs: list) -> None:
        """fdatasync the files of every job at once; then per job, on success, forget
        them as dirty, close the CLOSEd ones and (if asked) publish durable_pos."""
        calls = [(state, fid, state.fds[fid]) for state, fids, _ in jobs for fid in fids]
        codes = self._fdatasync_all([fd for _, _, fd in calls])
        failed = {}
        for (state, file_id, _), code in zip(calls, codes):
            state.reader.count_fsync()
            if code and state not in failed:
                failed[state] = (code, file_id)
        for state, fids, publish in jobs:
            reader = state.reader
            if state in failed:
                reader.record_failure(*failed[state], reader.read_pos)
                fids = set(state.dirty)  # nothing more will be synced honestly: let them go
            state.dirty -= fids
            for file_id in fids & state.closing:
                state.closing.discard(file_id)
                os.close(state.fds.pop(file_id))
            if publish and state not in failed:
                reader.publish_durable()

    def _fdatasync_all(self, fds: list[int]) -> list[int]:
        """errno (0 = success) per descriptor; all but one in the pool, one here."""
        if not fds:
            return []
        futures = [self._pool.submit(_fdatasync, fd) for fd in fds[1:]]
        return [_fdatasync(fds[0])] + [future.result() for future in futures]


def _fdatasync(fd: int) -> int:
    try:
        os.fdatasync(fd)
    except OSError as exc:
        return exc.errno or errno.EIO
    return 0


def _pwritev_all(fd: int, buffers: list, offset: int) -> None:
    """pwritev until everything is written (a regular file may take less per call)."""
    i = 0
    while i < len(buffers):
        n = os.pwritev(fd, buffers[i : i + _IOV_MAX], offset)
        if n <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        offset += n
        while n:
            size = len(buffers[i])
            if n < size:
                buffers[i] = buffers[i][n:]
                break
            n -= size
            i += 1


def run(
    ring_paths: list[str],
    fsync: str,
    wake_endpoint: str,
    notify_endpoint: str,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Serve the rings until SIGTERM (or `stop()` turns true); returns 0.

    Without `stop`, installs its own SIGTERM handler. Either way a signal wakes the
    wait at once (signal.set_wakeup_fd on a socket pair the poller watches)."""
    stopping = []
    if stop is None:
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))

        def stop():
            return bool(stopping)

    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.setsockopt(zmq.RCVHWM, KICK_HWM)
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    signal_reader, signal_writer = socket.socketpair()
    signal_reader.setblocking(False)
    signal_writer.setblocking(False)
    old_wakeup_fd = signal.set_wakeup_fd(signal_writer.fileno())
    core = None
    try:
        pull.bind(wake_endpoint)
        pub.bind(notify_endpoint)
        core = IoOptimizer(ring_paths, fsync)
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(signal_reader, zmq.POLLIN)
        while True:
            stopping_now = stop()
            for index in core.round(force_sync=stopping_now):
                pub.send(core.notification(index), zmq.NOBLOCK)
            if stopping_now:
                return 0
            poller.poll(core.next_timeout() * 1000)
            discard_pending(pull)
            try:
                while signal_reader.recv(4096):
                    pass
            except BlockingIOError:
                pass
    finally:
        signal.set_wakeup_fd(old_wakeup_fd)
        if core is not None:
            core.close()
        pull.close(linger=0)
        pub.close(linger=0)
        context.term()
        signal_reader.close()
        signal_writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m concordkv_mp.server.io_optimizer")
    parser.add_argument("--fsync", choices=FSYNC_POLICIES, required=True)
    parser.add_argument("--wake", required=True, help="endpoint of the PULL socket for kicks")
    parser.add_argument("--notify", required=True, help="endpoint of the PUB socket for notifications")
    parser.add_argument("rings", nargs="+", help="ring files, in ring-index order")
    args = parser.parse_args(argv)
    return run(args.rings, args.fsync, args.wake, args.notify)


if __name__ == "__main__":
    sys.exit(main())
