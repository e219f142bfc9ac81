"""The file-system seam: every byte the storage engines read or write goes through here.

`FileSystem` is deliberately small so that tests can replace it with a fault-injecting
version (drop what was not fsynced, fail the Nth write/fsync/rename), the way LevelDB's
`Env` is replaced in its fault-injection test. Engines must never call `open`, `os.*`
or `mmap` on data files directly. This module knows nothing of file formats.

OS errors are re-raised as `StorageIOError` so callers can tell an I/O failure from a
bug; the original `errno` is kept.
"""

from __future__ import annotations

import errno as errno_module
import fcntl
import mmap
import os
import shutil

from concordkv_mp.errors import DatabaseLockedError
from concordkv_mp.io.mapped_log import MappedLogFile
from concordkv_mp.io.oserrors import as_storage_error, storage_error


class WritableFile:
    """An append-only file opened for writing; `size` is the number of bytes appended."""

    def __init__(self, fd: int, path: str, size: int = 0):
        self._fd = fd
        self.path = path
        self.size = size

    # append() and sync() are on every write's path: plain try/except, because a
    # generator-based context manager would cost more than the write(2) itself.

    def append(self, data) -> None:
        try:
            written = os.write(self._fd, data)
            self.size += written
            if written != len(data):
                view = memoryview(data)[written:]
                while view:
                    written = os.write(self._fd, view)
                    self.size += written
                    view = view[written:]
        except OSError as exc:
            raise storage_error(exc, "write", self.path) from exc

    def sync(self) -> None:
        # fdatasync is enough: it also flushes the size change of an append.
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise storage_error(exc, "fsync", self.path) from exc

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with as_storage_error("close", self.path):
                os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0


class FileLock:
    """An exclusive advisory lock on a file, released on `release()` or process death."""

    def __init__(self, fd: int, path: str):
        self._fd = fd
        self.path = path

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class FileSystem:
    """The real file system. Subclass and override to inject faults in tests."""

    def create(self, path: str) -> WritableFile:
        """Create (or truncate) `path` for appending."""
        with as_storage_error("create", path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        return WritableFile(fd, path)

    def create_log(self, path: str, capacity: int):
        """Create (or truncate) an append-only log, written through a memory map.

        Same interface as `create()`'s WritableFile; `capacity` is preallocated (the log
        grows past it if needed). See `mapped_log.py` for why.
        """
        return MappedLogFile(path, capacity)

    def open_append(self, path: str) -> WritableFile:
        """Open an existing file to append at its end."""
        with as_storage_error("open", path):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            size = os.fstat(fd).st_size
        return WritableFile(fd, path, size)

    def read(self, path: str) -> bytes:
        with as_storage_error("read", path):
            with open(path, "rb") as f:
                return f.read()

    def map(self, path: str):
        """Map `path` read-only; returns an `mmap` (or `b""` for an empty file).

        The mapping stays valid after the file is unlinked, which is what lets a
        reader finish with a file that compaction has made obsolete.
        """
        with as_storage_error("mmap", path):
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    return b""
                return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace `dst` with `src` (durable once the directory is synced)."""
        with as_storage_error("rename", src):
            os.replace(src, dst)

    def remove(self, path: str) -> None:
        with as_storage_error("remove", path):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass

    def remove_tree(self, path: str) -> None:
        """Remove a directory and everything in it; nothing if it does not exist."""
        with as_storage_error("remove", path):
            if os.path.isdir(path):
                shutil.rmtree(path)

    def truncate(self, path: str, size: int) -> None:
        with as_storage_error("truncate", path):
            os.truncate(path, size)

    def listdir(self, path: str) -> list[str]:
        with as_storage_error("list", path):
            return sorted(os.listdir(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def size(self, path: str) -> int:
        with as_storage_error("stat", path):
            return os.path.getsize(path)

    def make_dirs(self, path: str) -> None:
        with as_storage_error("mkdir", path):
            os.makedirs(path, exist_ok=True)

    def sync_dir(self, path: str) -> None:
        """fsync a directory so that creations, renames and removals in it are durable."""
        with as_storage_error("fsync", path):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # Durability tickets. Here a write's log bytes are as durable as the engine's fsync
    # policy promises by the time the write returns, so every ticket is durable at once;
    # a file system whose logs another process makes durable (io/ring_fs.py) overrides
    # these three, and a server partition holds replies by them.

    def durability_ticket(self) -> int:
        """A ticket covering every log byte appended so far."""
        return 0

    def request_durability(self, ticket: int) -> None:
        """Ask for `ticket` to become durable soon, without waiting."""

    def durable_through(self) -> int:
        """The highest durable ticket; StorageIOError if the logs cannot be made durable."""
        return 0

    def lock(self, path: str) -> FileLock:
        """Take an exclusive lock on `path` or raise `DatabaseLockedError`."""
        with as_storage_error("lock", path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno_module.EWOULDBLOCK, errno_module.EAGAIN):
                raise DatabaseLockedError(f"{path} is locked: the database is already open") from exc
            raise storage_error(exc, "lock", path) from exc
        return FileLock(fd, path)


def write_file_atomically(fs: FileSystem, path: str, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file.

    Write a temporary sibling, fsync it, rename it over `path`, fsync the directory.
    """
    tmp = path + ".tmp"
    f = fs.create(tmp)
    try:
        f.append(data)
        f.sync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync_dir(os.path.dirname(path) or ".")


DEFAULT_FS = FileSystem()
