"""FaultInjectionFS: a FileSystem test double that simulates power loss and I/O errors.

Test support only; it owns no production code path and must not be imported by the
package. It works on a real directory (a pytest tmp_path) and passes every call through
to `FileSystem`, recording what a power loss would undo (the idea of LevelDB's
fault_injection_test).

Durability model:
- File data is durable up to the length at the last successful `WritableFile.sync()`
  of that file. A file this instance did not write to is entirely durable.
- A file created through `create()` exists durably only after a later successful
  `sync_dir()` of its directory; so does a `rename()`. Renames must stay within one
  directory (the engine never does otherwise).
- `create()` on an existing file truncates it durably; `remove()` and `truncate()` are
  durable at once (deletions are never undone, as in LevelDB's test env). Directories
  made by `make_dirs()` are durable at once.
- `crash()` applies the power loss: undo renames not followed by a `sync_dir` (newest
  first: the file goes back to its source name and the destination gets its previous
  durable content back, or disappears), delete creations never made durable, cut every
  written file back to its synced length. Files are cut by writing a new file and
  renaming it into place, so memory maps held by the dead database never see a shrunk
  file (which would be a SIGBUS). Then the instance is dead: every call through it, or
  through a WritableFile it handed out, raises StorageIOError(EIO). Locks it took are
  released so a fresh instance (or this one after `revive()`) can reopen the directory.
- A failed call (`fail_nth`) has no effect, except that a partial write first appends
  the first half of its data, and a failed sync leaves the durable length unchanged.
"""

from __future__ import annotations

import errno
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from concordkv_mp.errors import StorageIOError
from concordkv_mp.io.fs import FileSystem

OPS = ("write", "sync", "sync_dir", "rename")


@dataclass
class _Fault:
    op: str
    at: int  # the value of counts[op] on the call that fails
    err: int
    partial: bool

    def error(self, path: str) -> StorageIOError:
        return StorageIOError(self.err, f"{path}: injected {self.op} failure ({os.strerror(self.err)})")


@dataclass
class _Durable:
    synced: int  # bytes of the file that survive a crash


@dataclass
class _Rename:
    src: str
    dst: str
    old_content: bytes | None  # the durable content of dst before the rename, None if absent
    old_durable: _Durable | None
    old_unsynced_creation: bool


class FaultyWritableFile:
    """A WritableFile handed out by FaultInjectionFS: counts, fails, and dies with it."""

    def __init__(self, fs: "FaultInjectionFS", inner, durable: _Durable):
        self._fs = fs
        self._inner = inner
        self._durable = durable
        self._generation = fs._generation
        self.path = inner.path

    @property
    def size(self) -> int:
        return self._inner.size

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def append(self, data) -> None:
        with self._fs._operation("write", self.path, self._generation) as fault:
            if fault is not None:
                if fault.partial:
                    view = memoryview(data)
                    self._inner.append(view[: view.nbytes // 2])
                raise fault.error(self.path)
            self._inner.append(data)

    def sync(self) -> None:
        with self._fs._operation("sync", self.path, self._generation) as fault:
            if fault is not None:
                raise fault.error(self.path)
            self._inner.sync()
            self._durable.synced = self._inner.size

    def close(self) -> None:
        with self._fs._operation(None, self.path, self._generation):
            self._inner.close()
            self._fs._open_files.discard(self)


class FaultInjectionFS(FileSystem):
    """A FileSystem that can lose everything not yet synced and fail chosen calls."""

    def __init__(self):
        self._lock = threading.RLock()
        self._generation = 0
        self._reset()

    def _reset(self) -> None:
        self._dead = False
        self.counts = {op: 0 for op in OPS}
        self._faults: dict[str, _Fault] = {}
        self._forget_unsynced()

    def _forget_unsynced(self) -> None:
        self._durable: dict[str, _Durable] = {}
        self._unsynced_creations: set[str] = set()
        self._pending_renames: list[_Rename] = []
        self._open_files: set[FaultyWritableFile] = set()
        self._locks = []

    # -- test controls -------------------------------------------------------------

    def fail_nth(self, op: str, n: int, err: int = errno.EIO, partial: bool = False) -> None:
        """Make the n-th call of `op` from now on (1-based) raise StorageIOError(err)."""
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, not {op!r}")
        if n < 1:
            raise ValueError("n counts from 1")
        with self._operation(None, op):
            self._faults[op] = _Fault(op, self.counts[op] + n, err, partial)

    def crash(self) -> None:
        """Simulate a power loss now; see the module docstring for what survives."""
        with self._operation(None, "crash"):
            for file in list(self._open_files):
                file._inner.close()
            for lock in self._locks:
                lock.release()
            for rename in reversed(self._pending_renames):
                self._undo_rename(rename)
            for path in self._unsynced_creations:
                super().remove(path)
            for path, durable in self._durable.items():
                if os.path.exists(path) and os.path.getsize(path) > durable.synced:
                    self._replace_content(path, super().read(path)[: durable.synced])
            self._forget_unsynced()  # counts stay readable after the crash
            self._dead = True
            self._generation += 1

    def revive(self) -> None:
        """Bring a crashed instance back with a clean slate: all on-disk data counts as
        durable, counts restart at 0, and files handed out before the crash stay dead."""
        with self._lock:
            self._reset()

    # -- bookkeeping ---------------------------------------------------------------

    @contextmanager
    def _operation(self, op: str | None, path: str, generation: int | None = None):
        """Serialize a call with crash(), refuse it once dead, count it; yields its planned _Fault."""
        with self._lock:
            if self._dead or (generation is not None and generation != self._generation):
                raise StorageIOError(errno.EIO, f"{path}: simulated power loss, the file system is gone")
            fault = None
            if op is not None:
                self.counts[op] += 1
                if op in self._faults and self._faults[op].at == self.counts[op]:
                    fault = self._faults.pop(op)
            yield fault

    def _durable_content(self, path: str) -> bytes:
        data = super().read(path)
        durable = self._durable.get(path)
        return data if durable is None else data[: durable.synced]

    def _replace_content(self, path: str, data: bytes) -> None:
        tmp = path + ".crash"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def _undo_rename(self, rename: _Rename) -> None:
        if os.path.exists(rename.dst):
            os.replace(rename.dst, rename.src)
            moved = self._durable.pop(rename.dst, None)
            if moved is not None:
                self._durable[rename.src] = moved
        if rename.old_content is not None:
            self._replace_content(rename.dst, rename.old_content)
        if rename.old_durable is not None:
            self._durable[rename.dst] = rename.old_durable
        if rename.old_unsynced_creation:
            self._unsynced_creations.add(rename.dst)

    def _track(self, inner, durable: _Durable) -> FaultyWritableFile:
        file = FaultyWritableFile(self, inner, durable)
        self._open_files.add(file)
        return file

    # -- the FileSystem interface --------------------------------------------------

    def create(self, path: str) -> FaultyWritableFile:
        key = os.path.abspath(path)
        with self._operation(None, path):
            existed = os.path.exists(key)
            inner = super().create(path)
            if not existed:
                self._unsynced_creations.add(key)
            durable = self._durable[key] = _Durable(0)
            return self._track(inner, durable)

    def create_log(self, path: str, capacity: int) -> FaultyWritableFile:
        """A plain tracked file: what matters here is what was synced, not the mapping."""
        return self.create(path)

    def open_append(self, path: str) -> FaultyWritableFile:
        key = os.path.abspath(path)
        with self._operation(None, path):
            inner = super().open_append(path)
            durable = self._durable.setdefault(key, _Durable(inner.size))
            return self._track(inner, durable)

    def read(self, path: str) -> bytes:
        with self._operation(None, path):
            return super().read(path)

    def map(self, path: str):
        with self._operation(None, path):
            return super().map(path)

    def rename(self, src: str, dst: str) -> None:
        source, target = os.path.abspath(src), os.path.abspath(dst)
        if os.path.dirname(source) != os.path.dirname(target):
            raise ValueError("FaultInjectionFS models renames within one directory only")
        with self._operation("rename", src) as fault:
            if fault is not None:
                raise fault.error(src)
            exists = os.path.exists(target)
            undo = _Rename(
                source,
                target,
                self._durable_content(target) if exists else None,
                self._durable.pop(target, None),
                target in self._unsynced_creations,
            )
            super().rename(src, dst)
            self._pending_renames.append(undo)
            self._unsynced_creations.discard(target)
            moved = self._durable.pop(source, None)
            if moved is not None:
                self._durable[target] = moved

    def remove(self, path: str) -> None:
        key = os.path.abspath(path)
        with self._operation(None, path):
            super().remove(path)
            self._durable.pop(key, None)
            self._unsynced_creations.discard(key)

    def remove_tree(self, path: str) -> None:
        """As `remove`, for a whole directory: durable at once, and nothing under it is
        tracked any more (a crash must not try to undo a rename inside it)."""
        root = os.path.abspath(path)
        prefix = root + os.sep

        def inside(key: str) -> bool:
            return key == root or key.startswith(prefix)

        with self._operation(None, path):
            super().remove_tree(path)
            self._durable = {key: durable for key, durable in self._durable.items() if not inside(key)}
            self._unsynced_creations = {key for key in self._unsynced_creations if not inside(key)}
            self._pending_renames = [rename for rename in self._pending_renames if not inside(rename.dst)]

    def truncate(self, path: str, size: int) -> None:
        with self._operation(None, path):
            super().truncate(path, size)
            durable = self._durable.get(os.path.abspath(path))
            if durable is not None:
                durable.synced = min(durable.synced, size)

    def listdir(self, path: str) -> list[str]:
        with self._operation(None, path):
            return super().listdir(path)

    def exists(self, path: str) -> bool:
        with self._operation(None, path):
            return super().exists(path)

    def size(self, path: str) -> int:
        with self._operation(None, path):
            return super().size(path)

    def make_dirs(self, path: str) -> None:
        with self._operation(None, path):
            super().make_dirs(path)

    def sync_dir(self, path: str) -> None:
        directory = os.path.abspath(path)
        with self._operation("sync_dir", path) as fault:
            if fault is not None:
                raise fault.error(path)
            super().sync_dir(path)
            self._unsynced_creations = {p for p in self._unsynced_creations if os.path.dirname(p) != directory}
            self._pending_renames = [r for r in self._pending_renames if os.path.dirname(r.dst) != directory]

    def lock(self, path: str):
        with self._operation(None, path):
            lock = super().lock(path)
            self._locks.append(lock)
            return lock
