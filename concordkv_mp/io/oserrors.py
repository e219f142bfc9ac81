"""Turning an OSError from the file system into a `StorageIOError` that says what failed.

Shared by `fs.py` and `mapped_log.py`; it knows nothing of files beyond the words.
`storage_error` is for hot paths (a plain `except OSError`); `as_storage_error` is the
shorter form everywhere else.
"""

from __future__ import annotations

from contextlib import contextmanager

from concordkv_mp.errors import StorageIOError


def storage_error(exc: OSError, what: str, path: str) -> StorageIOError:
    return StorageIOError(exc.errno, f"{what} {path}: {exc.strerror or exc}")


@contextmanager
def as_storage_error(what: str, path: str):
    try:
        yield
    except StorageIOError:
        raise
    except OSError as exc:
        raise storage_error(exc, what, path) from exc
