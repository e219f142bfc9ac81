"""Storage engines behind one interface, and the factory that opens them by name.

An engine is single-process and knows nothing of IPC. Each offers:
`get(key)`, `write(pairs)` (atomic; value None deletes), `delete_existing(keys) -> int`,
`update_existing(key, value) -> bool`, `scan(start, end, reverse)` (snapshot iterator of
(key, value) in [start, end)), `count()`, `stats()`, `flush()`, `compact()`, `close()`.
Keys and values reaching an engine are already checked bytes (see `database.py`).
"""

from __future__ import annotations

from concordkv_mp.engines.lsm.engine import LSMEngine
from concordkv_mp.errors import ConfigError

ENGINE_CLASSES = {"lsm": LSMEngine}


def open_engine(name: str, path: str, options, fs):
    try:
        engine_class = ENGINE_CLASSES[name]
    except KeyError:
        raise ConfigError("engine", f"{name!r} is not one of {', '.join(ENGINE_CLASSES)}") from None
    return engine_class(path, options, fs)
