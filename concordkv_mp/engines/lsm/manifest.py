"""The MANIFEST: the LSM engine's durable record of its live SSTables and counters.

Owns the MANIFEST bytes (header, checksum, msgpack body) and replacing the file
atomically. It does not decide what the state is (the engine's version code does) and
never touches SSTables or WALs. The whole state is rewritten on each change: it is small
(one short record per SSTable), and a single file replaced by rename needs no log replay.
The byte layout is documented in docs/formats.md, section MANIFEST.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

import msgpack

from concordkv_mp.engines.lsm.file_meta import FileMeta
from concordkv_mp.errors import CorruptionError, InvalidArgumentError, UnsupportedFormatError
from concordkv_mp.io.fs import write_file_atomically

# On-disk: do not change.
MANIFEST_NAME = "MANIFEST"
MANIFEST_MAGIC = b"CKVMAN"
MANIFEST_VERSION = 1
_PREFIX = struct.Struct("<6sHI")  # magic, format version, body length
_CRC = struct.Struct("<I")  # CRC32 of the prefix and the body
HEADER_SIZE = _PREFIX.size + _CRC.size
NUM_LEVELS = 7


@dataclass
class ManifestState:
    next_file_number: int
    last_sequence: int
    log_number: int  # WAL files numbered < log_number are obsolete (their data is in SSTables)
    levels: list[list[FileMeta]]  # exactly NUM_LEVELS lists, L0..L6, order kept as given
    engine: str = "lsm"


def manifest_path(directory: str) -> str:
    return os.path.join(directory, MANIFEST_NAME)


def encode_manifest(state: ManifestState) -> bytes:
    if len(state.levels) != NUM_LEVELS:
        raise InvalidArgumentError(f"a manifest holds {NUM_LEVELS} levels, got {len(state.levels)}")
    body = msgpack.packb(
        {
            "engine": state.engine,
            "next_file_number": state.next_file_number,
            "last_sequence": state.last_sequence,
            "log_number": state.log_number,
            "levels": [[meta.to_record() for meta in level] for level in state.levels],
        }
    )
    prefix = _PREFIX.pack(MANIFEST_MAGIC, MANIFEST_VERSION, len(body))
    return prefix + _CRC.pack(zlib.crc32(body, zlib.crc32(prefix))) + body


def decode_manifest(data: bytes, path: str) -> ManifestState:
    if len(data) < HEADER_SIZE:
        raise CorruptionError(path, f"manifest is {len(data)} bytes, shorter than its header")
    magic, version, length = _PREFIX.unpack_from(data)
    (crc,) = _CRC.unpack_from(data, _PREFIX.size)
    if magic != MANIFEST_MAGIC:
        raise UnsupportedFormatError(path, f"not a manifest (magic {magic!r})")
    if version != MANIFEST_VERSION:
        raise UnsupportedFormatError(path, f"manifest format version {version} is not supported")
    body = data[HEADER_SIZE:]
    if len(body) != length:
        raise CorruptionError(path, f"manifest body is {len(body)} bytes, header says {length}")
    if zlib.crc32(body, zlib.crc32(data[: _PREFIX.size])) != crc:
        raise CorruptionError(path, "manifest checksum mismatch")
    try:
        record = msgpack.unpackb(body)
        levels = [[FileMeta.from_record(meta) for meta in level] for level in record["levels"]]
        state = ManifestState(
            next_file_number=record["next_file_number"],
            last_sequence=record["last_sequence"],
            log_number=record["log_number"],
            levels=levels,
            engine=record["engine"],
        )
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        # The checksum was good, so this is a writer bug rather than bit rot; still refuse it.
        raise CorruptionError(path, f"manifest body is malformed: {exc!r}") from exc
    counters = (state.next_file_number, state.last_sequence, state.log_number)
    if any(type(n) is not int or n < 0 for n in counters) or type(state.engine) is not str:
        raise CorruptionError(path, "manifest counters or engine name are malformed")
    if len(levels) != NUM_LEVELS:
        raise CorruptionError(path, f"manifest has {len(levels)} levels, expected {NUM_LEVELS}")
    return state


def write_manifest(fs, directory: str, state: ManifestState) -> None:
    """Replace <directory>/MANIFEST with `state`; a crash leaves the old or the new file."""
    write_file_atomically(fs, manifest_path(directory), encode_manifest(state))


def read_manifest(fs, directory: str) -> ManifestState | None:
    """The state in <directory>/MANIFEST, or None if there is none.

    A MANIFEST.tmp left by a crash during `write_manifest` is never read: until the rename
    it is not the manifest, and the next write truncates it.
    """
    path = manifest_path(directory)
    if not fs.exists(path):
        return None
    return decode_manifest(fs.read(path), path)
