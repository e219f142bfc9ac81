"""The write-ahead log shared by every engine: a header then CRC-framed write batches.

The LSM engine keeps one file per MemTable; the in-memory engines one per journal
segment (see engines/memory/journal.py).

Owns the WAL bytes (file header, record framing, batch payload codec) and the rules that
tell a torn tail (normal after a crash) from corruption (a bad record with good records
after it). It does not decide when to sync, when to roll to a new file or which WAL files
are obsolete: that is the engine's business. All I/O goes through the `FileSystem` seam.
The byte layout is documented in docs/formats.md, section WAL.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass, field

import msgpack

from concordkv_mp.errors import CorruptionError, InvalidArgumentError, UnsupportedFormatError

# On-disk: do not change.
WAL_MAGIC = b"CKVWAL"
WAL_VERSION = 1
_FILE_HEADER = struct.Struct("<6sH")  # magic, format version
FILE_HEADER_SIZE = _FILE_HEADER.size
_LENGTH_TYPE = struct.Struct("<IB")  # the part of the record header under the CRC
_RECORD_HEADER = struct.Struct("<IIB")  # masked CRC32, payload length, record type
_CRC = struct.Struct("<I")
RECORD_HEADER_SIZE = _RECORD_HEADER.size
RECORD_BATCH = 1  # non-zero so that a zero-filled header is never a valid record
# The type byte of a batch record followed by the first byte of its payload (msgpack's
# fixarray of 2): what the scan for a good record after a bad one looks for.
_BATCH_MARKER = bytes([RECORD_BATCH, 0x92])
# Bytes the scan may checksum per byte of file before giving up: values crafted to look
# like record headers must not make recovery quadratic.
_SCAN_BUDGET_PER_BYTE = 8
_UNDECIDED = -1
_CRC_MASK_DELTA = 0xA282EAD8

RECOVERY_MODES = ("strict", "point_in_time")


def _mask(crc: int) -> int:
    # Masked like LevelDB: the CRC of bytes that themselves contain CRCs (a WAL stored
    # as a value) would otherwise be easy to mistake for a record header.
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


# A Packer reused per thread is about twice as fast as msgpack.packb, which builds a
# Packer on every call; one shared Packer is not safe because its buffer is reused.
_local = threading.local()


def encode_batch(first_seq: int, entries: list[tuple[bytes, bytes | None]]) -> bytes:
    """The payload of one WAL record: msgpack `[first_seq, [[key, value_or_nil], ...]]`."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer()
    return packer.pack((first_seq, entries))


def decode_batch(payload) -> tuple[int, list[tuple[bytes, bytes | None]]]:
    """Inverse of `encode_batch`; raises ValueError if the payload is not a batch."""
    try:
        first_seq, raw_entries = msgpack.unpackb(payload)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"payload is not a write batch: {exc}") from exc
    if type(first_seq) is not int or first_seq < 0 or type(raw_entries) is not list:
        raise ValueError("payload is not a write batch: bad header fields")
    entries = []
    for entry in raw_entries:
        if type(entry) is not list or len(entry) != 2:
            raise ValueError("payload is not a write batch: an entry is not a [key, value] pair")
        key, value = entry
        if type(key) is not bytes or (value is not None and type(value) is not bytes):
            raise ValueError("payload is not a write batch: a key or value is not bytes")
        entries.append((key, value))
    return first_seq, entries


class WalWriter:
    """Appends framed records to a new WAL file; the caller serializes calls and syncs."""

    def __init__(self, file, path: str):
        self._file = file
        self.path = path
        self._packer = msgpack.Packer()

    @classmethod
    def create(cls, fs, path: str, capacity: int = 1 << 20) -> "WalWriter":
        """Create `path` (truncating it) and write the file header; nothing is synced.

        The file is a log written through a memory map (`fs.create_log`), preallocated
        to `capacity` bytes: appending a record costs no system call.
        """
        file = fs.create_log(path, capacity)
        try:
            file.append(_FILE_HEADER.pack(WAL_MAGIC, WAL_VERSION))
        except BaseException:
            file.close()
            raise
        return cls(file, path)

    @property
    def size(self) -> int:
        return self._file.size

    def add_batch(self, first_seq: int, entries) -> int:
        """Encode a write batch and append it as one record; returns the payload size.

        The engine's hot path: a Packer of this writer's own (one writer thread at a
        time, the group leader) saves the thread-local lookup of `encode_batch`.
        """
        payload = self._packer.pack((first_seq, entries))
        self.add_record(payload)
        return len(payload)

    def add_record(self, payload: bytes) -> None:
        # One append per record: a crash or failed write can then only tear the last record.
        length_type = _LENGTH_TYPE.pack(len(payload), RECORD_BATCH)
        crc = zlib.crc32(payload, zlib.crc32(length_type))
        # _mask() inlined: this runs once per write.
        crc = (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF
        self._file.append(_CRC.pack(crc) + length_type + payload)

    def sync(self) -> None:
        self._file.sync()

    def close(self) -> None:
        self._file.close()


@dataclass
class WalReadResult:
    batches: list[tuple[int, list[tuple[bytes, bytes | None]]]] = field(default_factory=list)
    valid_length: int = 0  # bytes up to the end of the last good record (or the header)
    torn_tail: bool = False  # the file ended inside a record: normal after a crash
    corruption: CorruptionError | None = None  # point_in_time only: where reading stopped


def _record_at(view: memoryview, pos: int):
    """(payload, next_pos) if a well-framed record with a good CRC starts at `pos`, else None."""
    end = len(view)
    if end - pos < RECORD_HEADER_SIZE:
        return None
    crc, length, rtype = _RECORD_HEADER.unpack_from(view, pos)
    start = pos + RECORD_HEADER_SIZE
    if rtype != RECORD_BATCH or length > end - start:
        return None
    payload = view[start : start + length]
    if _mask(zlib.crc32(payload, zlib.crc32(view[pos + 4 : start]))) != crc:
        return None
    return payload, start + length


def _valid_record_after(data: bytes, view: memoryview, bad_pos: int) -> int | None:
    """Offset of a good record after the bad one at `bad_pos`, None if there is none, or
    _UNDECIDED if the scan ran out of budget.

    Tried first where the bad record's length field points (a damaged payload or CRC), then
    at every later offset (a damaged length field). The scan jumps with `bytes.find`
    between places where a batch record's header ends, so a 4 MB torn record is searched
    in milliseconds. Only records that decode as batches count, which makes a false match
    in user data (a WAL stored as a value, cut by a crash) even less likely. Only user
    data crafted to repeat plausible record headers can exhaust the checksum budget.
    """
    if len(data) - bad_pos >= RECORD_HEADER_SIZE:
        candidate = bad_pos + RECORD_HEADER_SIZE + _RECORD_HEADER.unpack_from(data, bad_pos)[1]
        if _decodes_at(view, candidate):
            return candidate
    budget = _SCAN_BUDGET_PER_BYTE * len(data)
    marker_pos = bad_pos + RECORD_HEADER_SIZE  # where the marker of a record at bad_pos + 1 is
    while True:
        marker_pos = data.find(_BATCH_MARKER, marker_pos)
        if marker_pos < 0:
            return None
        candidate = marker_pos - (RECORD_HEADER_SIZE - 1)
        length = _RECORD_HEADER.unpack_from(data, candidate)[1]
        if length <= len(data) - marker_pos - 1:
            budget -= length
            if budget < 0:
                return _UNDECIDED
            if _decodes_at(view, candidate):
                return candidate
        marker_pos += 1


def _decodes_at(view: memoryview, pos: int) -> bool:
    record = _record_at(view, pos)
    if record is None:
        return False
    try:
        decode_batch(record[0])
    except ValueError:
        return False
    return True


def _check_file_header(data: bytes, path: str) -> bool:
    """True if the file header is complete and ours; False if a crash cut it short."""
    if len(data) >= FILE_HEADER_SIZE:
        magic, version = _FILE_HEADER.unpack_from(data)
        if magic == WAL_MAGIC:
            if version != WAL_VERSION:
                raise UnsupportedFormatError(path, f"WAL format version {version} is not supported")
            return True
    elif WAL_MAGIC.startswith(data[: len(WAL_MAGIC)]):
        return False  # the header was cut short
    # A file extended with zeros whose data never reached the disk, header included.
    if data.count(0) == len(data):
        return False
    raise UnsupportedFormatError(path, f"not a WAL file (starts with {bytes(data[:FILE_HEADER_SIZE])!r})")


def read_wal(fs, path: str, mode: str = "strict") -> WalReadResult:
    """Decode every batch in the WAL at `path`, in file order.

    Zeros from a record boundary to the end of the file are the end of the log (a log
    written through a memory map is preallocated). A torn tail (the file ends inside a
    record, or its last record is bad with nothing valid after it) ends the read quietly
    with `torn_tail=True`. A bad record followed by
    a good one is corruption: mode "strict" raises `CorruptionError`, mode
    "point_in_time" returns the batches before it and sets `corruption`. A record whose
    CRC is good but whose payload is not a batch is corruption in either mode.
    """
    if mode not in RECOVERY_MODES:
        raise InvalidArgumentError(f"unknown WAL recovery mode {mode!r}")
    data = fs.read(path)
    result = WalReadResult()
    if not _check_file_header(data, path):
        result.torn_tail = True
        return result
    # Slices of a memoryview do not copy: the scan for a later good record may try many
    # candidate lengths on the damaged path.
    view = memoryview(data)
    pos = result.valid_length = FILE_HEADER_SIZE
    while pos < len(data):
        record = _record_at(view, pos)
        if record is None:
            if data.count(0, pos) == len(data) - pos:
                # Zeros to the end: the unused, preallocated part of a log written
                # through a memory map (see io/mapped_log.py) — the end of the log.
                return result
            next_good = _valid_record_after(data, view, pos)
            if next_good is None:
                result.torn_tail = True
                return result
            if next_good == _UNDECIDED:
                detail = "the scan for a valid record after it gave up (values that mimic record headers?)"
            else:
                detail = f"a valid record follows at offset {next_good}"
            error = CorruptionError(path, f"bad WAL record at offset {pos}; {detail}")
        else:
            try:
                batch = decode_batch(record[0])
            except ValueError as exc:
                error = CorruptionError(path, f"WAL record at offset {pos} has a good checksum but its {exc}")
            else:
                result.batches.append(batch)
                pos = result.valid_length = record[1]
                continue
        if mode == "strict":
            raise error
        result.corruption = error
        return result
    return result
