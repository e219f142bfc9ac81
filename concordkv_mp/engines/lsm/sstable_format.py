"""SSTable layout constants and the codecs of its footer, index and properties blocks.

Owns every on-disk constant of the table file except the block trailer and the data
block payload (block.py) and the bloom bit layout (bloom.py). docs/formats.md,
section SSTABLE, documents these bytes; change both together, and only with a new
FORMAT_VERSION. This module does no I/O: it turns records into bytes and a verified
buffer back into records.

File layout: data blocks | bloom block | index block | properties block | footer.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import msgpack
import numpy as np

from concordkv_mp.errors import CorruptionError, UnsupportedFormatError

MAGIC = b"CKVMPSST"  # on-disk: do not change
FORMAT_VERSION = 1  # on-disk: bump for any change to the bytes of the table

# on-disk: do not change for version 1. The last 12 bytes (version, magic) stay at the
# end of the file in every future version, so any release can name the version it
# does not know instead of reporting damage.
FOOTER = struct.Struct("<QIIQIQIII8s")
FOOTER_SIZE = FOOTER.size  # 56
_FOOTER_CRC_AT = 40  # the CRC field; it covers every other footer byte

# on-disk: do not change. Index payload: N u64 offsets, N u32 sizes, msgpack keys.
INDEX_OFFSET_DTYPE = np.dtype("<u8")
INDEX_SIZE_DTYPE = np.dtype("<u4")
_INDEX_FIXED = INDEX_OFFSET_DTYPE.itemsize + INDEX_SIZE_DTYPE.itemsize

# on-disk: do not change. Properties are a msgpack map; these keys are required and
# readers ignore keys they do not know, so later versions may add statistics.
REQUIRED_PROPERTIES = {
    "entries": int,
    "tombstones": int,
    "min_seq": int,
    "max_seq": int,
    "smallest": bytes,
    "largest": bytes,
}


@dataclass(frozen=True, slots=True)
class Footer:
    index_offset: int
    index_size: int
    data_blocks: int
    bloom_offset: int
    bloom_size: int
    properties_offset: int
    properties_size: int


def encode_footer(footer: Footer) -> bytes:
    raw = FOOTER.pack(
        footer.index_offset,
        footer.index_size,
        footer.data_blocks,
        footer.bloom_offset,
        footer.bloom_size,
        footer.properties_offset,
        footer.properties_size,
        0,
        FORMAT_VERSION,
        MAGIC,
    )
    crc = _footer_crc(raw)
    return raw[:_FOOTER_CRC_AT] + struct.pack("<I", crc) + raw[_FOOTER_CRC_AT + 4 :]


def _footer_crc(raw) -> int:
    return zlib.crc32(raw[_FOOTER_CRC_AT + 4 :], zlib.crc32(raw[:_FOOTER_CRC_AT]))


def decode_footer(buf, path: str) -> Footer:
    """Read the footer at the end of `buf`: magic, then version, then CRC, then handles."""
    if len(buf) < FOOTER_SIZE:
        raise CorruptionError(path, f"file is {len(buf)} bytes, shorter than an SSTable footer")
    raw = bytes(buf[len(buf) - FOOTER_SIZE :])
    *fields, crc, version, magic = FOOTER.unpack(raw)
    if magic != MAGIC:
        raise UnsupportedFormatError(path, f"bad magic {magic!r}: truncated, or not a ConcordKV-MP SSTable")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            path, f"SSTable format version {version} is not supported (this release reads {FORMAT_VERSION})"
        )
    if _footer_crc(raw) != crc:
        raise CorruptionError(path, "SSTable footer checksum mismatch")
    return Footer(*fields)


def encode_index(offsets: list[int], sizes: list[int], last_keys: list[bytes]) -> bytes:
    return (
        np.asarray(offsets, dtype=INDEX_OFFSET_DTYPE).tobytes()
        + np.asarray(sizes, dtype=INDEX_SIZE_DTYPE).tobytes()
        + msgpack.packb(last_keys)
    )


def decode_index(buf, offset: int, size: int, count: int, path: str):
    """(offsets, sizes, last_keys) of a verified index block at buf[offset:offset+size].

    offsets and sizes are zero-copy numpy views of `buf`; last_keys is a Python list,
    because `bisect` on a list of bytes is the fastest lookup CPython offers.
    """
    if count * _INDEX_FIXED > size:
        raise CorruptionError(path, f"index block of {size} bytes cannot hold {count} entries")
    offsets = np.frombuffer(buf, dtype=INDEX_OFFSET_DTYPE, count=count, offset=offset)
    sizes = np.frombuffer(buf, dtype=INDEX_SIZE_DTYPE, count=count, offset=offset + 8 * count)
    keys_at = offset + count * _INDEX_FIXED
    try:
        last_keys = msgpack.unpackb(buf[keys_at : offset + size])
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptionError(path, f"undecodable index keys: {exc}") from exc
    if type(last_keys) is not list or len(last_keys) != count or not all(type(k) is bytes for k in last_keys):
        raise CorruptionError(path, "index keys are not a list of one key per data block")
    if any(a > b for a, b in zip(last_keys, last_keys[1:])):
        raise CorruptionError(path, "index keys are not sorted")
    return offsets, sizes, last_keys


def encode_properties(properties: dict) -> bytes:
    return msgpack.packb(properties)


def decode_properties(payload, path: str) -> dict:
    try:
        properties = msgpack.unpackb(payload)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptionError(path, f"undecodable properties block: {exc}") from exc
    if type(properties) is not dict:
        raise CorruptionError(path, "properties block is not a map")
    for name, kind in REQUIRED_PROPERTIES.items():
        if type(properties.get(name)) is not kind:
            raise CorruptionError(path, f"property {name!r} missing or not {kind.__name__}")
    return properties
