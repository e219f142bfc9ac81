"""Every exception ConcordKV-MP raises on purpose, each with a stable string code.

Codes are part of the public contract (clients and the wire protocol carry them):
never change or reuse one. This module owns the error taxonomy only; it must not
import anything else from the package.
"""

from __future__ import annotations


class ConcordKVError(Exception):
    """Base class of every ConcordKV-MP error; `code` is stable across releases."""

    code = "ERROR"


class InvalidArgumentError(ConcordKVError, ValueError):
    """An argument has the right type but a value the call cannot accept."""

    code = "INVALID_ARGUMENT"


class InvalidTypeError(ConcordKVError, TypeError):
    """A key, value or option has a type the call does not accept."""

    code = "INVALID_TYPE"


class EmptyKeyError(InvalidArgumentError):
    """Keys must be at least one byte long."""

    code = "EMPTY_KEY"


class KeyTooLargeError(InvalidArgumentError):
    """The key is longer than the database's `max_key_size`."""

    code = "KEY_TOO_LARGE"


class ValueTooLargeError(InvalidArgumentError):
    """The value is longer than the database's `max_value_size`."""

    code = "VALUE_TOO_LARGE"


class ConfigError(InvalidArgumentError):
    """A configuration value is invalid; `field` names the offending option."""

    code = "INVALID_CONFIG"

    def __init__(self, field: str, message: str):
        super().__init__(f"invalid option {field!r}: {message}")
        self.field = field


class CorruptionError(ConcordKVError):
    """Stored data failed a checksum or structural check; `path` names the file."""

    code = "CORRUPTION"

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


class UnsupportedFormatError(CorruptionError):
    """A file carries a format version (or magic) this release cannot read."""

    code = "UNSUPPORTED_FORMAT"


class StorageIOError(ConcordKVError, OSError):
    """The operating system refused a read, write, fsync or rename."""

    code = "IO_ERROR"


class ReadOnlyError(ConcordKVError):
    """The database stopped accepting writes after an I/O failure (fail-stop).

    Reads still work. Reopen the database to recover; nothing acknowledged is lost.
    """

    code = "READ_ONLY"


class ClosedError(ConcordKVError):
    """The database (or iterator) was used after `close()`."""

    code = "CLOSED"


class DatabaseLockedError(ConcordKVError):
    """Another process (or another handle in this one) has the database open."""

    code = "LOCKED"
