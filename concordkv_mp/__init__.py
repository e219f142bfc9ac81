"""ConcordKV-MP: a persistent key-value database for Python.

Public API: `open(path, engine=None, **options)` returns an embedded `Database`;
`connect(endpoint)` a `Client` of a running server (`concordkv serve`), with the same
methods; `concordkv_mp.aio.connect(endpoint)` its asyncio twin. Every error raised on
purpose is a `concordkv_mp.errors.ConcordKVError`.
"""

from __future__ import annotations

import os

from concordkv_mp import aio, errors
from concordkv_mp.client.sync_client import Client, connect
from concordkv_mp.database import Database
from concordkv_mp.errors import ConfigError, InvalidTypeError
from concordkv_mp.io.fs import DEFAULT_FS
from concordkv_mp.options import StorageOptions
from concordkv_mp.version import __version__
from concordkv_mp.workers.compaction_client import CompactionWorkerClient

__all__ = ["open", "connect", "aio", "Database", "Client", "StorageOptions", "errors", "__version__"]


def open(path, engine: str | None = None, *, for_testing_fs=None, **options) -> Database:  # noqa: A001 - the public name
    """Open (creating if needed) the database in directory `path`.

    `engine` is one of lsm, btree, rbtree, hash, array. A new database uses it (default
    "lsm"); an existing one keeps the engine it has, and naming another raises
    `ConfigError` (change engines with `db.switch_engine(name)`).

    `options` are the storage options of `StorageOptions` (fsync, memtable_size,
    cache_size, max_key_size, ...); an unknown name or a bad value raises
    `ConfigError` naming the field. `for_testing_fs` replaces the file-system seam.
    """
    if engine is not None:
        options["engine"] = engine
    storage_options = StorageOptions.from_kwargs(**options)
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidTypeError(f"path must be a str or os.PathLike, not {type(path).__name__}") from None
    # compaction_workers >= 1: the LSM engine's flush and compaction threads each get a
    # worker process; 0: no factory, so the steps run in those threads.
    executor_factory = _private_worker if storage_options.compaction_workers else None
    return Database(path, storage_options, for_testing_fs or DEFAULT_FS, engine, executor_factory)


def _private_worker(fs) -> CompactionWorkerClient:
    """A worker process of its own for one LSM engine thread, started at its first job."""
    if fs is not DEFAULT_FS:
        raise ConfigError("compaction_workers", "a test file system cannot reach a worker process; use 0")
    return CompactionWorkerClient()
