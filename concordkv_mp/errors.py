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


class NotAnIntegerError(InvalidArgumentError):
    """`incr` met a value that is not a decimal 64-bit integer (Redis's INCR rule)."""

    code = "NOT_AN_INTEGER"


class ConfigError(InvalidArgumentError):
    """A configuration value is invalid; `field` names the offending option."""

    code = "INVALID_CONFIG"
    field: str | None = None  # None on an error a client rebuilt from a reply

    def __init__(self, field: str, message: str):
        super().__init__(f"invalid option {field!r}: {message}")
        self.field = field


class CorruptionError(ConcordKVError):
    """Stored data failed a checksum or structural check; `path` names the file."""

    code = "CORRUPTION"
    path: str | None = None  # None on an error a client rebuilt from a reply

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


# ---------------------------------------------------------------- server and wire protocol
# Codes a server replies with (docs/protocol.md has the table) and the client-side ones.


class ServerTimeoutError(ConcordKVError, TimeoutError):
    """No reply came within the client's timeout; the request may or may not have run."""

    code = "TIMEOUT"


class UnavailableError(ConcordKVError):
    """The server, or the partition owning the key, cannot be reached right now."""

    code = "UNAVAILABLE"


class ProtocolError(ConcordKVError):
    """A message broke the wire protocol (docs/protocol.md)."""

    code = "PROTOCOL"


class BadFrameError(ProtocolError):
    """A frame was not one msgpack array, or exceeded a decoding limit."""

    code = "BAD_FRAME"


class BadRequestError(ProtocolError, InvalidArgumentError):
    """A request had the wrong shape: argument count or types for its operation."""

    code = "BAD_REQUEST"


class UnknownOperationError(ProtocolError):
    """The operation name is not one this server knows."""

    code = "UNKNOWN_OP"


class ProtocolVersionError(ProtocolError):
    """Client and server speak different protocol versions."""

    code = "PROTOCOL_VERSION"


class BatchTooLargeError(InvalidArgumentError):
    """A multi-key request carries more keys than the server's `max_batch_keys`."""

    code = "BATCH_TOO_LARGE"


class WrongPartitionError(ConcordKVError):
    """A request reached a partition that does not own the key's slot."""

    code = "WRONG_PARTITION"


class CursorNotFoundError(ConcordKVError):
    """A scan cursor expired (idle too long), was closed, or its partition restarted."""

    code = "NO_SUCH_CURSOR"


class BusyError(ConcordKVError):
    """A bounded server resource (open scan cursors, ...) is exhausted; retry later."""

    code = "BUSY"


class UnsupportedError(ConcordKVError):
    """The operation exists in the contract but not yet in this release."""

    code = "UNSUPPORTED"


class InternalError(ConcordKVError):
    """The server met a bug while handling the request; it keeps serving others."""

    code = "INTERNAL"


def error_from_code(code: str, message: str) -> ConcordKVError:
    """The exception a client raises for an error reply: the class with that code. The
    wire carries only code and message, so a class's own constructor is bypassed (its
    extra attributes keep their class defaults)."""
    cls = _BY_CODE.get(code, ConcordKVError)
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    if cls is ConcordKVError:
        error.code = code
    return error


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


_BY_CODE = {cls.code: cls for cls in _all_subclasses(ConcordKVError)}
