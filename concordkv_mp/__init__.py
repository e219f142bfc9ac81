"""ConcordKV-MP: a persistent key-value database for Python.

Public API: `open(path, engine="lsm", **options)` returns an embedded `Database`;
every error raised on purpose is a `concordkv_mp.errors.ConcordKVError`.
"""

from __future__ import annotations

import os

from concordkv_mp import errors
from concordkv_mp.database import Database
from concordkv_mp.engines import open_engine
from concordkv_mp.errors import InvalidTypeError
from concordkv_mp.io.fs import DEFAULT_FS
from concordkv_mp.options import StorageOptions

__version__ = "0.1.0"
__all__ = ["open", "Database", "StorageOptions", "errors", "__version__"]


def open(path, engine: str = "lsm", *, for_testing_fs=None, **options) -> Database:  # noqa: A001 - the public name
    """Open (creating if needed) the database in directory `path`.

    `options` are the storage options of `StorageOptions` (fsync, memtable_size,
    cache_size, max_key_size, ...); an unknown name or a bad value raises
    `ConfigError` naming the field. `for_testing_fs` replaces the file-system seam.
    """
    storage_options = StorageOptions.from_kwargs(engine=engine, **options)
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidTypeError(f"path must be a str or os.PathLike, not {type(path).__name__}") from None
    engine_instance = open_engine(storage_options.engine, path, storage_options, for_testing_fs or DEFAULT_FS)
    return Database(engine_instance, storage_options, path)
