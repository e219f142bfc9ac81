"""Snapshot files of the in-memory engines: every key/value pair at one WAL boundary.

Owns the bytes of a snapshot (docs/formats.md, section Snapshot): a file header, then
CRC-framed chunks — one META chunk, DATA chunks of ascending keys, one END chunk that
holds the pair count. A snapshot is written to a temporary name, fsynced, then renamed
(journal.py does that), so a complete file is all-or-nothing: any damage found when
reading it is corruption, never a torn tail. Deciding when to snapshot and which files
are obsolete is the journal's business, not this module's.
"""

from __future__ import annotations

import struct
import zlib

import msgpack

from concordkv_mp.errors import CorruptionError, UnsupportedFormatError

# On-disk: do not change.
SNAPSHOT_MAGIC = b"CKVSNP"
SNAPSHOT_VERSION = 1
_FILE_HEADER = struct.Struct("<6sH")  # magic, format version
_CHUNK_HEADER = struct.Struct("<IIB")  # CRC32 of type + payload, payload length, chunk type
CHUNK_META = 1
CHUNK_DATA = 2
CHUNK_END = 3
# Pairs per DATA chunk: big enough that framing costs nothing, small enough that a
# chunk is cheap to hold in memory while writing.
PAIRS_PER_CHUNK = 4096


def _chunk(chunk_type: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([chunk_type])))
    return _CHUNK_HEADER.pack(crc, len(payload), chunk_type) + payload


def write_snapshot(file, meta: dict, chunks) -> int:
    """Write a snapshot to the open `file`; `chunks` yields lists of (key, value) in
    ascending key order. Returns the number of pairs written. The caller syncs."""
    file.append(_FILE_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION) + _chunk(CHUNK_META, msgpack.packb(meta)))
    packer = msgpack.Packer()
    count = 0
    for pairs in chunks:
        if pairs:
            # Flattened [k1, v1, k2, v2, ...]: half the msgpack array headers of pairs.
            flat = [item for pair in pairs for item in pair]
            file.append(_chunk(CHUNK_DATA, packer.pack(flat)))
            count += len(pairs)
    file.append(_chunk(CHUNK_END, msgpack.packb({"count": count})))
    return count


def read_snapshot(data: bytes, path: str) -> tuple[dict, list[bytes], list[bytes]]:
    """(meta, keys, values) of the snapshot bytes `data`; keys strictly ascending.

    Raises `CorruptionError` for any damage, `UnsupportedFormatError` for a file that is
    not a snapshot of a version this code reads.
    """
    if len(data) < _FILE_HEADER.size:
        raise CorruptionError(path, "snapshot shorter than its header")
    magic, version = _FILE_HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise UnsupportedFormatError(path, f"not a snapshot file (starts with {bytes(data[:8])!r})")
    if version != SNAPSHOT_VERSION:
        raise UnsupportedFormatError(path, f"snapshot format version {version} is not supported")
    view = memoryview(data)
    pos = _FILE_HEADER.size
    meta = None
    keys: list[bytes] = []
    values: list[bytes] = []
    while True:
        if len(data) - pos < _CHUNK_HEADER.size:
            raise CorruptionError(path, f"snapshot ends at offset {pos} without its END chunk")
        crc, length, chunk_type = _CHUNK_HEADER.unpack_from(data, pos)
        start = pos + _CHUNK_HEADER.size
        payload = view[start : start + length]
        if len(payload) != length or zlib.crc32(payload, zlib.crc32(bytes([chunk_type]))) != crc:
            raise CorruptionError(path, f"bad snapshot chunk at offset {pos}")
        pos = start + length
        try:
            body = msgpack.unpackb(payload)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptionError(path, f"snapshot chunk at offset {start - _CHUNK_HEADER.size} does not decode: {exc}") from None
        if meta is None:
            if chunk_type != CHUNK_META or type(body) is not dict:
                raise CorruptionError(path, "snapshot does not start with its META chunk")
            meta = body
        elif chunk_type == CHUNK_DATA:
            _extend(keys, values, body, path)
        elif chunk_type == CHUNK_END:
            if type(body) is not dict or body.get("count") != len(keys):
                raise CorruptionError(path, f"snapshot END chunk does not match the {len(keys)} pairs read")
            if pos != len(data):
                raise CorruptionError(path, f"{len(data) - pos} bytes after the END chunk of the snapshot")
            return meta, keys, values
        else:
            raise CorruptionError(path, f"unknown snapshot chunk type {chunk_type}")


def _extend(keys: list, values: list, flat, path: str) -> None:
    if type(flat) is not list or len(flat) % 2:
        raise CorruptionError(path, "snapshot DATA chunk is not a list of key/value pairs")
    new_keys = flat[0::2]
    new_values = flat[1::2]
    previous = keys[-1] if keys else b""
    for key, value in zip(new_keys, new_values):
        if type(key) is not bytes or type(value) is not bytes or key <= previous:
            raise CorruptionError(path, "snapshot keys are not ascending bytes with bytes values")
        previous = key
    keys.extend(new_keys)
    values.extend(new_values)
