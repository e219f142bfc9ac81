"""`SSTableBuilder`: writes one immutable table file from entries in table order.

Used by MemTable flushes and compaction outputs, possibly in a worker process, so it
holds nothing shared: one builder, one file, written through the `FileSystem` seam
only. The bytes it writes are defined by block.py, bloom.py and sstable_format.py;
this module decides only when to cut a block and in which order pieces are written.
A finished file is fsynced but the directory is not: making the file part of the
database (manifest edit, directory sync) is the caller's job.
"""

from __future__ import annotations

from concordkv_mp.engines.lsm import block as block_codec
from concordkv_mp.engines.lsm.bloom import BloomFilterBuilder
from concordkv_mp.engines.lsm.file_meta import FileMeta
from concordkv_mp.engines.lsm.sstable_format import (
    FOOTER_SIZE,
    Footer,
    encode_footer,
    encode_index,
    encode_properties,
)

MAX_SEQ = 1 << 56

# Approximate msgpack framing of one entry (bin headers of key and value, the seq
# int); only used to decide when a block has reached its target size.
_ENTRY_FRAMING = 12
# The properties block without its two keys (names, counters, msgpack framing).
_PROPERTIES_FRAMING = 256


class SSTableBuilder:
    """Entries arrive sorted by key ascending, then seq descending; `finish` seals the file."""

    def __init__(self, fs, path: str, number: int, *, block_size=4096, compression="lz4", bloom_bits_per_key=10):
        if compression not in block_codec.COMPRESSION_TYPES:
            raise ValueError(f"unknown compression {compression!r}")
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.path = path
        self.number = number
        self._fs = fs
        self._block_size = block_size
        self._compression = compression
        self._bloom_bits_per_key = bloom_bits_per_key
        self._bloom = BloomFilterBuilder(bloom_bits_per_key)
        self._file = fs.create(path)
        self._keys: list[bytes] = []
        self._seqs: list[int] = []
        self._values: list = []
        self._block_bytes = 0
        self._offsets: list[int] = []
        self._sizes: list[int] = []
        self._last_keys: list[bytes] = []
        self._index_key_bytes = 0
        self._raw_data_size = 0
        self._entries = 0
        self._tombstones = 0
        self._smallest = b""
        self._last_key: bytes | None = None
        self._last_seq = 0
        self._min_seq = MAX_SEQ
        self._max_seq = 0
        self._done = False

    def add(self, key: bytes, seq: int, value: bytes | None) -> None:
        if self._done:
            raise ValueError(f"{self.path}: builder already finished or abandoned")
        if not 0 <= seq < MAX_SEQ:
            raise ValueError(f"seq {seq} outside 0..2**56-1")
        last_key = self._last_key
        if last_key is None or key > last_key:
            if type(key) is not bytes:
                raise TypeError(f"keys must be bytes, got {type(key).__name__}")
            self._bloom.add(key)
            if last_key is None:
                self._smallest = key
            self._last_key = key
        elif key != last_key or seq >= self._last_seq:
            raise ValueError(
                f"{self.path}: entry ({key!r}, {seq}) is not after ({last_key!r}, {self._last_seq}) "
                "in key-ascending, seq-descending order"
            )
        self._last_seq = seq
        if seq < self._min_seq:
            self._min_seq = seq
        if seq > self._max_seq:
            self._max_seq = seq
        self._keys.append(key)
        self._seqs.append(seq)
        self._values.append(value)
        if value is None:
            self._tombstones += 1
            self._block_bytes += len(key) + _ENTRY_FRAMING
        else:
            self._block_bytes += len(key) + len(value) + _ENTRY_FRAMING
        self._entries += 1
        if self._block_bytes >= self._block_size:
            self._flush_block()

    @property
    def entries(self) -> int:
        return self._entries

    @property
    def estimated_size(self) -> int:
        """File size if finished now, counting the open block uncompressed (within a few %)."""
        index = 12 * len(self._offsets) + self._index_key_bytes
        properties = _PROPERTIES_FRAMING + len(self._smallest) + len(self._last_key or b"")
        return self._file.size + self._block_bytes + self._bloom.estimated_size + index + properties + FOOTER_SIZE

    def _flush_block(self) -> None:
        if not self._keys:
            return
        payload = block_codec.encode_entries(self._keys, self._seqs, self._values)
        sealed = block_codec.seal(payload, self._compression)
        self._offsets.append(self._file.size)
        self._sizes.append(len(sealed) - block_codec.TRAILER_SIZE)
        self._last_keys.append(self._keys[-1])
        self._index_key_bytes += len(self._keys[-1]) + 3
        self._raw_data_size += len(payload)
        self._file.append(sealed)
        self._keys = []
        self._seqs = []
        self._values = []
        self._block_bytes = 0

    def _append_meta_block(self, payload: bytes) -> tuple[int, int]:
        offset = self._file.size
        self._file.append(block_codec.seal(payload))
        return offset, len(payload)

    def finish(self) -> FileMeta:
        """Write the rest of the file, fsync and close it, and describe it.

        After a failure here the file is unusable: call `abandon`, not `finish` again.
        """
        if self._done:
            raise ValueError(f"{self.path}: builder already finished or abandoned")
        self._done = True
        self._flush_block()
        data_size = self._file.size
        bloom_offset, bloom_size = self._append_meta_block(self._bloom.finish())
        index_offset, index_size = self._append_meta_block(
            encode_index(self._offsets, self._sizes, self._last_keys)
        )
        largest = self._last_key if self._last_key is not None else b""
        min_seq = self._min_seq if self._entries else 0
        properties = {
            "entries": self._entries,
            "tombstones": self._tombstones,
            "min_seq": min_seq,
            "max_seq": self._max_seq,
            "smallest": self._smallest,
            "largest": largest,
            "data_blocks": len(self._offsets),
            "data_size": data_size,
            "raw_data_size": self._raw_data_size,
            "compression": self._compression,
            "block_size": self._block_size,
            "bloom_bits_per_key": self._bloom_bits_per_key,
        }
        properties_offset, properties_size = self._append_meta_block(encode_properties(properties))
        footer = Footer(
            index_offset=index_offset,
            index_size=index_size,
            data_blocks=len(self._offsets),
            bloom_offset=bloom_offset,
            bloom_size=bloom_size,
            properties_offset=properties_offset,
            properties_size=properties_size,
        )
        self._file.append(encode_footer(footer))
        self._file.sync()
        size = self._file.size
        self._file.close()
        return FileMeta(
            number=self.number,
            size=size,
            smallest=self._smallest,
            largest=largest,
            entries=self._entries,
            min_seq=min_seq,
            max_seq=self._max_seq,
        )

    def abandon(self) -> None:
        """Close and delete the file, finished or not.

        Safe after a failed `add` or `finish`, and after a successful `finish`: a
        compaction that fails later discards all its outputs this way.
        """
        self._done = True
        try:
            self._file.close()
        finally:
            self._fs.remove(self.path)
