"""The wire protocol between clients, the front and the partitions (docs/protocol.md).

Every message is one ZeroMQ frame holding one msgpack array (after the routing frames
ZeroMQ itself adds):

    request  [request_id, op, arg, ...]
    reply    [request_id, 0, result]            success
             [request_id, 1, code, message]     error; code is a stable string

Keys and values are msgpack bin; op names and error codes are str. This module owns the
framing of requests and replies: decoding with strict limits, validation of a request
against the operation table (ipc/operations.py, which says what each operation takes),
and encoding. It must not touch sockets or engines.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import msgpack

from concordkv_mp.arguments import INT64_MAX, INT64_MIN
from concordkv_mp.errors import (
    BadFrameError,
    BadRequestError,
    BatchTooLargeError,
    ConcordKVError,
    ProtocolVersionError,
    UnknownOperationError,
    error_from_code,
)
from concordkv_mp.ipc.operations import OPERATIONS

# Sent in HELLO and checked by both sides; bump on any incompatible change.
PROTOCOL_VERSION = 2
# Where the front listens unless configured otherwise (SPEC.md), and clients connect.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:7379"
SLOT_COUNT = 16384
OK = 0
ERROR = 1


def check_version(version) -> None:
    """Raise ProtocolVersionError unless a client's HELLO names our version."""
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionError(f"server speaks protocol {PROTOCOL_VERSION}, client {version}")


def slot_of(key: bytes) -> int:
    """The key's slot: CRC-32 (zlib, stable across processes and releases) mod 16384."""
    return zlib.crc32(key) & (SLOT_COUNT - 1)


class SlotMap:
    """Contiguous slot ranges, one per partition: partition i owns
    [i * SLOT_COUNT // n, (i + 1) * SLOT_COUNT // n)."""

    def __init__(self, partitions: int):
        self.partitions = partitions
        self.ranges = [(i * SLOT_COUNT // partitions, (i + 1) * SLOT_COUNT // partitions - 1) for i in range(partitions)]
        owner = bytearray(SLOT_COUNT) if partitions <= 256 else None
        if owner is None:
            raise ValueError("at most 256 partitions")
        for index, (first, last) in enumerate(self.ranges):
            owner[first : last + 1] = bytes([index]) * (last - first + 1)
        self.owners = bytes(owner)

    def partition_of(self, key: bytes) -> int:
        return self.owners[zlib.crc32(key) & (SLOT_COUNT - 1)]

    def group(self, keys) -> dict[int, list[int]]:
        """Positions of `keys` grouped by owning partition."""
        owner, crc32 = self.owners, zlib.crc32
        groups: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(owner[crc32(key) & (SLOT_COUNT - 1)], []).append(position)
        return groups


@dataclass(frozen=True)
class Limits:
    """The edge limits a server enforces (server config; announced in HELLO)."""

    max_key_size: int
    max_value_size: int
    max_batch_keys: int
    scan_page_size: int


# Each operation's argument kinds, from the operation table (ipc/operations.py).
_KINDS = {name: op.kinds for name, op in OPERATIONS.items()}


def unpacker_limits(limits: Limits, max_message_size: int) -> dict:
    """Keyword limits for msgpack.unpackb: no hooks, no maps or ext types in requests,
    and no container longer than a valid request's. A bin may be as long as a message
    (ZeroMQ bounds that): an oversized key or value is then refused by the database
    layer with KEY_TOO_LARGE / VALUE_TOO_LARGE and the request's id, not as a bad frame."""
    return {
        "raw": False,
        "use_list": True,
        "strict_map_key": True,
        "max_bin_len": max_message_size,
        "max_str_len": 1024,
        "max_array_len": max(2 * limits.max_batch_keys, 16),
        "max_map_len": 0,
        "max_ext_len": 0,
    }


def decode_request(frame, unpack_kwargs: dict, limits: Limits) -> tuple[int, str, list]:
    """(request_id, op, args) of a frame, validated; raises a ConcordKVError with the code
    to reply with. BadFrameError carries no request id (it could not be read)."""
    try:
        message = msgpack.unpackb(frame, **unpack_kwargs)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise BadFrameError(f"frame is not one msgpack value within limits: {type(exc).__name__}: {exc}") from None
    if type(message) is not list or len(message) < 2 or type(message[0]) is not int or type(message[1]) is not str:
        raise BadFrameError("a request is a msgpack array [request_id:int, op:str, args...]")
    request_id, op = message[0], message[1]
    if not 0 <= request_id < 1 << 64:
        raise BadFrameError("request_id must be an unsigned 64-bit integer")
    args = message[2:]
    try:
        shape = _KINDS[op]
    except KeyError:
        raise _with_id(UnknownOperationError(f"unknown operation {op[:64]!r}"), request_id) from None
    if len(args) != len(shape):
        raise _with_id(BadRequestError(f"{op} takes {len(shape)} arguments, got {len(args)}"), request_id)
    for position, (kind, arg) in enumerate(zip(shape, args)):
        try:
            problem = _check_arg(kind, arg, limits)
        except ConcordKVError as exc:
            raise _with_id(exc, request_id) from None
        if problem:
            raise _with_id(BadRequestError(f"{op}: argument {position + 1} {problem}"), request_id)
    return request_id, op, args


def _with_id(error: ConcordKVError, request_id: int) -> ConcordKVError:
    error.request_id = request_id
    return error


def _check_arg(kind: str, arg, limits: Limits) -> str | None:
    if kind in ("key", "value"):
        return None if type(arg) is bytes else f"must be bytes (msgpack bin), not {type(arg).__name__}"
    if kind == "part" or kind == "int":
        return None if type(arg) is int and arg >= 0 else "must be an integer >= 0"
    if kind == "bound":
        return None if arg is None or type(arg) is bytes else "must be bytes or nil"
    if kind == "signed":
        return None if type(arg) is int and INT64_MIN <= arg <= INT64_MAX else "must be a signed 64-bit integer"
    if kind == "bool":
        return None if type(arg) is bool else "must be a boolean"
    if kind == "count":
        return None if arg is None or (type(arg) is int and arg >= 0) else "must be an integer >= 0 or nil"
    if kind == "str":
        return None if type(arg) is str else "must be a string"
    if kind == "keys":
        if type(arg) is not list:
            return "must be an array of keys"
        if len(arg) > limits.max_batch_keys:
            raise BatchTooLargeError(f"{len(arg)} keys in one request; max_batch_keys is {limits.max_batch_keys}")
        return None
    if kind == "pairs":
        if type(arg) is not list:
            return "must be an array of [key, value] pairs"
        if len(arg) > limits.max_batch_keys:
            raise BatchTooLargeError(f"{len(arg)} pairs in one request; max_batch_keys is {limits.max_batch_keys}")
        for pair in arg:
            if type(pair) is not list or len(pair) != 2:
                return "must be an array of [key, value] pairs"
        return None
    raise AssertionError(kind)


_packer = msgpack.Packer(use_bin_type=True)


def encode_reply(request_id: int, result) -> bytes:
    return _packer.pack((request_id, OK, result))


def encode_error(request_id: int | None, error: ConcordKVError) -> bytes:
    return _packer.pack((request_id, ERROR, error.code, str(error)))


def encode_request(request_id: int, op: str, *args) -> bytes:
    return _packer.pack((request_id, op, *args))


def decode_reply(body) -> tuple:
    """(request_id, result, error) of a reply from our own server: `error` is the
    ConcordKVError of an error reply (then `result` is None), else None."""
    reply = msgpack.unpackb(body, raw=False)
    if reply[1] == OK:
        return reply[0], reply[2], None
    return reply[0], None, error_from_code(reply[2], reply[3])
