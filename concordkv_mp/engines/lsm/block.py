"""SSTable blocks: the data block payload codec and the trailer every block carries.

Owns two on-disk layouts (docs/formats.md, section SSTABLE): the data block payload
(a msgpack array `[keys, seqs, values]`) and the 5-byte block trailer (compression
type u8, CRC32 u32) that follows every block of a table, data or meta. It must not
know where blocks live in a file or touch files: callers hand it bytes or a buffer.

Why msgpack columns: decoding a 100-entry block is one C call (~4 us) that yields
exactly the three lists the reader bisects and zips; a hand-rolled length-prefixed
row format needs a Python loop per entry, several times slower.
"""

from __future__ import annotations

import struct
import zlib

import lz4.block
import msgpack

from concordkv_mp.errors import CorruptionError

# on-disk: do not change. The trailer follows the stored (maybe compressed) bytes.
TRAILER = struct.Struct("<BI")
TRAILER_SIZE = TRAILER.size

# on-disk: do not change. Compression type byte of the trailer.
COMPRESSION_NONE = 0
COMPRESSION_LZ4 = 1
COMPRESSION_TYPES = {"none": COMPRESSION_NONE, "lz4": COMPRESSION_LZ4}
_TYPE_BYTES = (b"\x00", b"\x01")

# Rough CPython heap cost of one decoded entry beyond its key and value bytes (three
# list slots, two bytes headers, one int); lets the cache charge what a block costs
# in memory rather than on disk.
DECODED_ENTRY_OVERHEAD = 120

_DECODE_ERRORS = (ValueError, TypeError, msgpack.UnpackException)


def encode_entries(keys: list, seqs: list, values: list) -> bytes:
    """Data block payload: msgpack `[keys, seqs, values]`, values nil for tombstones."""
    return msgpack.packb([keys, seqs, values])


def decode_entries(payload, path: str) -> list:
    """The `[keys, seqs, values]` lists of a verified, uncompressed payload."""
    try:
        block = msgpack.unpackb(payload)
    except _DECODE_ERRORS as exc:
        raise CorruptionError(path, f"undecodable data block: {exc}") from exc
    if type(block) is not list or len(block) != 3:
        raise CorruptionError(path, "data block is not a [keys, seqs, values] array")
    keys, seqs, values = block
    if not (type(keys) is list and type(seqs) is list and type(values) is list):
        raise CorruptionError(path, "data block columns are not arrays")
    if not (len(keys) == len(seqs) == len(values)) or not keys:
        raise CorruptionError(path, "data block columns differ in length or are empty")
    return block


def seal(payload: bytes, compression: str = "none") -> bytes:
    """The bytes to write for one block: stored payload (LZ4 if it saves >= 12.5 %) + trailer."""
    ctype = COMPRESSION_NONE
    stored = payload
    if compression == "lz4" and payload:
        compressed = lz4.block.compress(payload, store_size=True)
        if 8 * (len(payload) - len(compressed)) >= len(payload):
            stored, ctype = compressed, COMPRESSION_LZ4
    crc = zlib.crc32(_TYPE_BYTES[ctype], zlib.crc32(stored))
    return stored + TRAILER.pack(ctype, crc)


def _check_bounds(buf, offset: int, size: int, path: str, what: str) -> None:
    if offset < 0 or size < 0 or offset + size + TRAILER_SIZE > len(buf):
        raise CorruptionError(path, f"{what} at {offset}+{size} runs past the end of the file")


def read_block(buf, offset: int, size: int, path: str, what: str) -> bytes:
    """Verify the block whose stored bytes are buf[offset:offset+size] and return its payload."""
    _check_bounds(buf, offset, size, path, what)
    stored = buf[offset : offset + size]
    ctype, crc = TRAILER.unpack_from(buf, offset + size)
    if ctype > COMPRESSION_LZ4 or zlib.crc32(_TYPE_BYTES[ctype], zlib.crc32(stored)) != crc:
        raise CorruptionError(path, f"{what} at offset {offset}: checksum mismatch")
    if ctype == COMPRESSION_NONE:
        return stored
    try:
        return lz4.block.decompress(stored)
    except (lz4.block.LZ4BlockError, ValueError) as exc:
        raise CorruptionError(path, f"{what} at offset {offset}: bad LZ4 data: {exc}") from exc


def verify_raw_block(buf, offset: int, size: int, path: str, what: str) -> None:
    """Verify an uncompressed block in place, so the caller can take zero-copy views of it."""
    _check_bounds(buf, offset, size, path, what)
    ctype, crc = TRAILER.unpack_from(buf, offset + size)
    with memoryview(buf) as whole, whole[offset : offset + size] as stored:
        actual = zlib.crc32(_TYPE_BYTES[0], zlib.crc32(stored)) if ctype == COMPRESSION_NONE else None
    if actual != crc:
        raise CorruptionError(path, f"{what} at offset {offset}: checksum mismatch or compressed")
