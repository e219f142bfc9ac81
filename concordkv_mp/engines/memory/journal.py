"""`Journal`: what makes an in-memory engine durable — WAL segments plus snapshots.

One mechanism for all four in-memory engines. Files in the engine's directory:

    NNNNNN.wal            a WAL segment (engines/wal.py format: records are write batches)
    NNNNNN.snapshot       every pair written to the segments numbered below NNNNNN
    NNNNNN.snapshot.tmp   a snapshot being written; deleted by recovery

Recovery loads the newest snapshot and replays, in number order, every segment numbered
at or above it. A snapshot is renamed into place only after its fsync, and the files it
replaces are deleted only after that rename is durable, so a crash at any point of a
snapshot leaves the previous snapshot and every segment after it. A segment is synced
before a newer one receives writes (as in the LSM engine), so only the newest segment
may end in a torn record; recovery cuts that tail off so that the rule keeps holding
once newer segments exist.

The engine serialises appends and rotation (its write queue); the journal only guards
the current segment against the everysec syncer with `sync_lock`. This module must not
know how the engine indexes its data.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field

from concordkv_mp.engines.memory.snapshot_file import read_snapshot, write_snapshot
from concordkv_mp.engines.wal import WalWriter, read_wal
from concordkv_mp.errors import CorruptionError

_SEGMENT = re.compile(r"^(\d{6,})\.wal$")
_SNAPSHOT = re.compile(r"^(\d{6,})\.snapshot$")
_SNAPSHOT_TMP = re.compile(r"^(\d{6,})\.snapshot\.tmp$")


def segment_name(number: int) -> str:
    return f"{number:06d}.wal"


def snapshot_name(number: int) -> str:
    return f"{number:06d}.snapshot"


@dataclass
class Recovered:
    """What `Journal.open` found: a snapshot's sorted pairs, then batches to replay."""

    keys: list = field(default_factory=list)
    values: list = field(default_factory=list)
    batches: list = field(default_factory=list)  # [(first_seq, [(key, value | None)])]
    last_sequence: int = 0
    snapshot_number: int | None = None
    torn_tail: bool = False
    # point_in_time recovery stopped at damage: the engine must snapshot before writing,
    # or the segments after the damage would be replayed at the next open.
    stopped_at: CorruptionError | None = None


class Journal:
    def __init__(self, fs, directory: str, options, number: int, segments: list[int]):
        self._fs = fs
        self._dir = directory
        self._capacity = options.memtable_size
        self.sync_lock = threading.Lock()
        self.number = number
        self._older_segments = segments  # segments since the last snapshot, all synced
        self._older_bytes = sum(fs.size(self._path(segment_name(n))) for n in segments)
        self._wal = WalWriter.create(fs, self._path(segment_name(number)), self._capacity)
        fs.sync_dir(directory)
        self._synced_size = self._wal.size

    @classmethod
    def open(cls, fs, directory: str, options) -> tuple["Journal", Recovered]:
        """Recover the directory's state and start a new segment after every file in it."""
        names = fs.listdir(directory)
        for name in names:
            if _SNAPSHOT_TMP.match(name):
                fs.remove(os.path.join(directory, name))
        segments = sorted(int(m.group(1)) for m in map(_SEGMENT.match, names) if m)
        snapshots = sorted(int(m.group(1)) for m in map(_SNAPSHOT.match, names) if m)
        recovered = Recovered()
        if snapshots:
            number = recovered.snapshot_number = snapshots[-1]
            path = os.path.join(directory, snapshot_name(number))
            meta, recovered.keys, recovered.values = read_snapshot(fs.read(path), path)
            recovered.last_sequence = int(meta.get("last_sequence", 0))
            segments = [n for n in segments if n >= number]
        replayed = _replay(fs, directory, segments, options.wal_recovery, recovered)
        last_number = max(segments + snapshots, default=0)
        return cls(fs, directory, options, last_number + 1, replayed), recovered

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    # --------------------------------------------------------------- the WAL

    @property
    def wal_bytes(self) -> int:
        """Bytes of WAL written since the last snapshot."""
        return self._older_bytes + self._wal.size

    def append(self, first_seq: int, pairs) -> int:
        return self._wal.add_batch(first_seq, pairs)

    def sync(self) -> None:
        """fsync the current segment if it has unsynced records."""
        with self.sync_lock:
            wal = self._wal
            size = wal.size
            if size != self._synced_size:
                wal.sync()
                self._synced_size = size

    def rotate(self) -> int:
        """Start a new segment (the old one synced first); returns the new number, which
        is also the number of the snapshot of the state at this point."""
        number = self.number + 1
        # The old segment is synced before the new one exists, so that after any crash
        # only the newest segment can be torn.
        with self.sync_lock:
            self._wal.sync()
        new_wal = WalWriter.create(self._fs, self._path(segment_name(number)), self._capacity)
        self._fs.sync_dir(self._dir)
        with self.sync_lock:
            old_wal = self._wal
            old_wal.close()
            self._older_segments.append(self.number)
            self._older_bytes += old_wal.size
            self._wal = new_wal
            self._synced_size = new_wal.size
        self.number = number
        return number

    # ------------------------------------------------------------- snapshots

    def write_snapshot(self, number: int, meta: dict, chunks, should_stop=lambda: False) -> int:
        """Write snapshot `number` from `chunks` (lists of ascending pairs), make it
        durable, then delete the files it replaces. Returns the pairs written, or -1 if
        `should_stop()` turned true (the partial file is removed)."""
        tmp = self._path(snapshot_name(number) + ".tmp")
        final = self._path(snapshot_name(number))
        file = self._fs.create(tmp)
        try:
            count = write_snapshot(file, meta, _until(chunks, should_stop))
            stopped = should_stop()
            if not stopped:
                file.sync()
        finally:
            file.close()
        if stopped:
            self._fs.remove(tmp)
            return -1
        self._fs.rename(tmp, final)
        self._fs.sync_dir(self._dir)
        self._delete_before(number)
        return count

    def _delete_before(self, number: int) -> None:
        """Remove the segments and snapshots that snapshot `number` replaces."""
        for name in self._fs.listdir(self._dir):
            match = _SEGMENT.match(name) or _SNAPSHOT.match(name)
            if match and int(match.group(1)) < number:
                self._fs.remove(self._path(name))
        with self.sync_lock:
            retired = [n for n in self._older_segments if n < number]
            self._older_segments = [n for n in self._older_segments if n >= number]
            if retired:
                self._older_bytes = sum(self._fs.size(self._path(segment_name(n))) for n in self._older_segments)

    def close(self, sync: bool) -> None:
        with self.sync_lock:
            try:
                if sync:
                    self._wal.sync()
            finally:
                self._wal.close()


def _until(chunks, should_stop):
    for chunk in chunks:
        if should_stop():
            return
        yield chunk


def _replay(fs, directory: str, segments: list[int], mode: str, recovered: Recovered) -> list[int]:
    """Append the batches of `segments` to `recovered`; returns the segments kept."""
    for index, number in enumerate(segments):
        path = os.path.join(directory, segment_name(number))
        result = read_wal(fs, path, mode)
        recovered.batches.extend(result.batches)
        if result.corruption is not None:
            recovered.stopped_at = result.corruption
            return segments[: index + 1]
        if result.torn_tail:
            if index != len(segments) - 1:
                # Every segment but the newest was synced before the next one was written.
                error = CorruptionError(path, "torn record in a WAL segment that a newer segment follows")
                if mode == "strict":
                    raise error
                recovered.stopped_at = error
                return segments[: index + 1]
            recovered.torn_tail = True
            if not _cut_torn_tail(fs, path, result.valid_length):
                return segments[:index]
    return segments


def _cut_torn_tail(fs, path: str, valid_length: int) -> bool:
    """Cut the segment after its last whole record; False if nothing was left of it."""
    if valid_length == 0:
        # Killed while the segment was being created: not even its header is whole (an
        # empty file would read as torn again, and then with newer segments after it).
        fs.remove(path)
        fs.sync_dir(os.path.dirname(path))
        return False
    fs.truncate(path, valid_length)
    file = fs.open_append(path)
    try:
        file.sync()
    finally:
        file.close()
    return True

