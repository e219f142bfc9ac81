"""`FileMeta`: what the LSM engine knows about one SSTable without opening it.

It is produced by the SSTable builder, stored in the manifest, carried in compaction
tasks and results (so it must stay a plain, msgpack-able record), and read by the
version and compaction-picking code. It holds no file handle.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileMeta:
    number: int  # file number; the file is named f"{number:06d}.sst"
    size: int  # bytes on disk
    smallest: bytes  # smallest user key in the file
    largest: bytes  # largest user key in the file
    entries: int  # number of entries (all versions, tombstones included)
    min_seq: int
    max_seq: int

    def to_record(self) -> list:
        return [self.number, self.size, self.smallest, self.largest, self.entries, self.min_seq, self.max_seq]

    @classmethod
    def from_record(cls, record) -> "FileMeta":
        number, size, smallest, largest, entries, min_seq, max_seq = record
        return cls(int(number), int(size), bytes(smallest), bytes(largest), int(entries), int(min_seq), int(max_seq))

    def overlaps(self, start: bytes | None, end: bytes | None) -> bool:
        """True if [smallest, largest] meets [start, end] (both inclusive, None = open)."""
        if start is not None and self.largest < start:
            return False
        if end is not None and self.smallest > end:
            return False
        return True


def sstable_name(number: int) -> str:
    return f"{number:06d}.sst"


def wal_name(number: int) -> str:
    return f"{number:06d}.wal"
