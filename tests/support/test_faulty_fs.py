"""Tests of FaultInjectionFS itself: the power-loss model and the injected I/O errors."""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from concordkv_mp.errors import StorageIOError
from concordkv_mp.io.fs import write_file_atomically
from tests.support.faulty_fs import FaultInjectionFS


def _write(fs, path, data, sync=False):
    f = fs.create(path)
    f.append(data)
    if sync:
        f.sync()
    f.close()


def _content(path):
    with open(path, "rb") as f:
        return f.read()


def test_unsynced_data_dropped_synced_kept(tmp_path):
    fs = FaultInjectionFS()
    path = str(tmp_path / "a")
    f = fs.create(path)
    f.append(b"durable")
    f.sync()
    f.append(b"-lost")
    fs.sync_dir(str(tmp_path))
    assert _content(path) == b"durable-lost"  # the page cache sees everything before the crash
    fs.crash()
    assert _content(path) == b"durable"


def test_failed_sync_does_not_make_data_durable(tmp_path):
    fs = FaultInjectionFS()
    path = str(tmp_path / "a")
    f = fs.create(path)
    fs.sync_dir(str(tmp_path))
    f.append(b"x" * 10)
    f.sync()
    f.append(b"y" * 10)
    fs.fail_nth("sync", 1)
    with pytest.raises(StorageIOError):
        f.sync()
    fs.crash()
    assert _content(path) == b"x" * 10


def test_reopened_file_keeps_its_synced_length(tmp_path):
    fs = FaultInjectionFS()
    path = str(tmp_path / "a")
    _write(fs, path, b"old", sync=True)
    fs.sync_dir(str(tmp_path))
    f = fs.open_append(path)
    assert f.size == 3
    f.append(b"new")
    f.close()
    fs.crash()
    assert _content(path) == b"old"


def test_files_not_written_through_the_fs_are_durable(tmp_path):
    path = tmp_path / "pre"
    path.write_bytes(b"existing")
    fs = FaultInjectionFS()
    f = fs.open_append(str(path))
    f.append(b"+more")
    fs.crash()
    assert path.read_bytes() == b"existing"


def test_creation_without_sync_dir_is_undone(tmp_path):
    fs = FaultInjectionFS()
    _write(fs, str(tmp_path / "kept"), b"k", sync=True)
    fs.sync_dir(str(tmp_path))
    _write(fs, str(tmp_path / "lost"), b"l", sync=True)
    fs.crash()
    assert sorted(os.listdir(tmp_path)) == ["kept"]
    assert _content(tmp_path / "kept") == b"k"


def test_sync_dir_of_another_directory_does_not_help(tmp_path):
    fs = FaultInjectionFS()
    sub = tmp_path / "sub"
    fs.make_dirs(str(sub))
    _write(fs, str(sub / "f"), b"data", sync=True)
    fs.sync_dir(str(tmp_path))
    fs.crash()
    assert os.listdir(sub) == []


def test_rename_without_sync_dir_is_undone(tmp_path):
    fs = FaultInjectionFS()
    dst = str(tmp_path / "dst")
    _write(fs, dst, b"old", sync=True)
    fs.sync_dir(str(tmp_path))
    _write(fs, dst + ".tmp", b"new", sync=True)
    fs.rename(dst + ".tmp", dst)
    assert _content(dst) == b"new"
    fs.crash()
    assert _content(dst) == b"old"
    assert not os.path.exists(dst + ".tmp")  # its creation was never made durable


def test_a_removed_tree_stays_removed_after_a_crash(tmp_path):
    # A failed engine switch removes its new directory with a rename still pending in it.
    fs = FaultInjectionFS()
    directory = tmp_path / "new-engine"
    fs.make_dirs(str(directory))
    dst = str(directory / "MANIFEST")
    _write(fs, dst, b"old", sync=True)
    fs.sync_dir(str(directory))
    _write(fs, dst + ".tmp", b"new", sync=True)
    fs.rename(dst + ".tmp", dst)
    _write(fs, str(tmp_path / "kept"), b"k", sync=True)
    fs.sync_dir(str(tmp_path))
    fs.remove_tree(str(directory))
    fs.crash()
    assert os.listdir(tmp_path) == ["kept"]


def test_rename_of_durable_file_is_moved_back(tmp_path):
    fs = FaultInjectionFS()
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    _write(fs, src, b"payload", sync=True)
    fs.sync_dir(str(tmp_path))
    fs.rename(src, dst)
    fs.crash()
    assert sorted(os.listdir(tmp_path)) == ["src"]
    assert _content(src) == b"payload"


def test_rename_over_missing_destination_is_removed(tmp_path):
    fs = FaultInjectionFS()
    dst = str(tmp_path / "dst")
    _write(fs, dst + ".tmp", b"new", sync=True)
    fs.rename(dst + ".tmp", dst)
    fs.crash()
    assert os.listdir(tmp_path) == []


def test_rename_followed_by_sync_dir_is_kept(tmp_path):
    fs = FaultInjectionFS()
    dst = str(tmp_path / "dst")
    _write(fs, dst, b"old", sync=True)
    fs.sync_dir(str(tmp_path))
    write_file_atomically(fs, dst, b"new")
    fs.crash()
    assert sorted(os.listdir(tmp_path)) == ["dst"]
    assert _content(dst) == b"new"


def test_two_pending_renames_are_undone_newest_first(tmp_path):
    fs = FaultInjectionFS()
    dst = str(tmp_path / "dst")
    _write(fs, dst, b"v1", sync=True)
    fs.sync_dir(str(tmp_path))
    for version in (b"v2", b"v3"):
        _write(fs, dst + ".tmp", version, sync=True)
        fs.rename(dst + ".tmp", dst)
    fs.crash()
    assert sorted(os.listdir(tmp_path)) == ["dst"]
    assert _content(dst) == b"v1"


def test_unsynced_rename_destination_is_cut_to_its_synced_length(tmp_path):
    fs = FaultInjectionFS()
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    f = fs.create(src)
    f.append(b"synced")
    f.sync()
    f.append(b"+unsynced")
    f.close()
    fs.rename(src, dst)
    fs.sync_dir(str(tmp_path))
    fs.crash()
    assert sorted(os.listdir(tmp_path)) == ["dst"]
    assert _content(dst) == b"synced"


def test_map_taken_before_crash_stays_readable(tmp_path):
    fs = FaultInjectionFS()
    path = str(tmp_path / "a")
    _write(fs, path, b"x" * 8192)
    fs.sync_dir(str(tmp_path))
    view = fs.map(path)
    fs.crash()  # cuts the file to 0 bytes; the old mapping must not fault
    assert isinstance(view, mmap.mmap)
    assert view[-1:] == b"x"
    assert _content(path) == b""
    view.close()


@pytest.mark.parametrize("op", ["write", "sync", "sync_dir", "rename"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_fail_nth_fails_exactly_the_nth_call(tmp_path, op, n):
    fs = FaultInjectionFS()
    f = fs.create(str(tmp_path / "f"))
    calls = {
        "write": lambda i: f.append(b"x"),
        "sync": lambda i: f.sync(),
        "sync_dir": lambda i: fs.sync_dir(str(tmp_path)),
        "rename": lambda i: fs.rename(str(tmp_path / "f"), str(tmp_path / f"g{i}"))
        if i == 0
        else fs.rename(str(tmp_path / f"g{i - 1}"), str(tmp_path / f"g{i}")),
    }
    before = fs.counts[op]
    fs.fail_nth(op, n, err=errno.ENOSPC)
    outcomes = []
    for _ in range(5):
        try:
            calls[op](len([o for o in outcomes if o == "ok"]))
            outcomes.append("ok")
        except StorageIOError as exc:
            assert exc.errno == errno.ENOSPC
            outcomes.append("failed")
    assert outcomes == ["ok"] * (n - 1) + ["failed"] + ["ok"] * (5 - n)
    assert fs.counts[op] == before + 5


def test_failed_write_appends_nothing_unless_partial(tmp_path):
    fs = FaultInjectionFS()
    f = fs.create(str(tmp_path / "f"))
    fs.fail_nth("write", 1)
    with pytest.raises(StorageIOError) as info:
        f.append(b"abcdefgh")
    assert info.value.errno == errno.EIO
    assert _content(tmp_path / "f") == b""
    fs.fail_nth("write", 1, partial=True)
    with pytest.raises(StorageIOError):
        f.append(b"abcdefgh")
    assert _content(tmp_path / "f") == b"abcd"
    assert f.size == 4


def test_failed_rename_changes_nothing(tmp_path):
    fs = FaultInjectionFS()
    _write(fs, str(tmp_path / "a"), b"a")
    fs.fail_nth("rename", 1)
    with pytest.raises(StorageIOError):
        fs.rename(str(tmp_path / "a"), str(tmp_path / "b"))
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_counts_loop_until_an_operation_stops_failing(tmp_path):
    # The loop tests use: fail the N-th write for N = 1, 2, ... until a run makes
    # fewer than N writes.
    runs = 0
    for n in range(1, 100):
        fs = FaultInjectionFS()
        fs.fail_nth("write", n)
        f = fs.create(str(tmp_path / f"f{n}"))
        try:
            for _ in range(3):
                f.append(b"x")
        except StorageIOError:
            runs += 1
            continue
        assert fs.counts["write"] == 3
        break
    assert runs == 3


def test_fail_nth_rejects_unknown_ops(tmp_path):
    with pytest.raises(ValueError):
        FaultInjectionFS().fail_nth("read", 1)
    with pytest.raises(ValueError):
        FaultInjectionFS().fail_nth("write", 0)


def test_dead_after_crash(tmp_path):
    fs = FaultInjectionFS()
    path = str(tmp_path / "a")
    f = fs.create(path)
    f.append(b"x")
    fs.sync_dir(str(tmp_path))
    fs.crash()
    for call in (
        lambda: f.append(b"y"),
        lambda: f.sync(),
        lambda: f.close(),
        lambda: fs.create(str(tmp_path / "b")),
        lambda: fs.open_append(path),
        lambda: fs.read(path),
        lambda: fs.map(path),
        lambda: fs.exists(path),
        lambda: fs.listdir(str(tmp_path)),
        lambda: fs.rename(path, path + "2"),
        lambda: fs.remove(path),
        lambda: fs.sync_dir(str(tmp_path)),
        lambda: fs.crash(),
    ):
        with pytest.raises(StorageIOError) as info:
            call()
        assert info.value.errno == errno.EIO
    assert os.path.exists(path)
    assert fs.counts["write"] == 1  # still readable after the crash


def test_revive_does_not_revive_old_files(tmp_path):
    fs = FaultInjectionFS()
    path = str(tmp_path / "a")
    _write(fs, path, b"kept", sync=True)
    fs.sync_dir(str(tmp_path))
    old = fs.open_append(path)
    fs.crash()
    fs.revive()
    with pytest.raises(StorageIOError):
        old.append(b"from the dead database")
    assert fs.read(path) == b"kept"
    assert fs.counts == {"write": 0, "sync": 0, "sync_dir": 0, "rename": 0}


def test_crash_releases_locks(tmp_path):
    fs = FaultInjectionFS()
    lock_path = str(tmp_path / "LOCK")
    fs.lock(lock_path)
    fs.crash()
    FaultInjectionFS().lock(lock_path).release()


def test_remove_is_durable_at_once(tmp_path):
    fs = FaultInjectionFS()
    path = str(tmp_path / "a")
    _write(fs, path, b"a", sync=True)
    fs.sync_dir(str(tmp_path))
    fs.remove(path)
    fs.crash()
    assert not os.path.exists(path)
