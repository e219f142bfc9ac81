"""WAL tests: round trips, torn tails at every cut, zero-filled tails, corruption in the
middle in both recovery modes, and unknown formats."""

from __future__ import annotations

import os
import struct
import tempfile
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concordkv_mp.engines.wal import (
    FILE_HEADER_SIZE,
    RECORD_HEADER_SIZE,
    WAL_MAGIC,
    WalWriter,
    decode_batch,
    encode_batch,
    read_wal,
)
from concordkv_mp.errors import CorruptionError, InvalidArgumentError, UnsupportedFormatError
from concordkv_mp.io.fs import DEFAULT_FS as fs
from tests.support.faulty_fs import FaultInjectionFS

entries_strategy = st.lists(
    st.tuples(st.binary(min_size=1, max_size=40), st.one_of(st.none(), st.binary(max_size=300))),
    max_size=8,
)


def _sample_batches(count: int, value_size: int = 50) -> list:
    batches, seq = [], 1
    for i in range(count):
        entries = [
            (b"key-%d-%d" % (i, j), None if j % 3 == 2 else bytes([i % 251]) * (value_size + j))
            for j in range(i % 4 + 1)
        ]
        batches.append((seq, entries))
        seq += len(entries)
    return batches


def _write_wal(path: str, batches: list) -> list[int]:
    """Write `batches`; returns the file offset at the end of each record."""
    writer = WalWriter.create(fs, path)
    ends = []
    for first_seq, entries in batches:
        writer.add_record(encode_batch(first_seq, entries))
        ends.append(writer.size)
    writer.sync()
    writer.close()
    return ends


def _rewrite(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class _BytesFS:
    """Serves one file's bytes to read_wal, so that loops over thousands of damaged
    variants do not go through the disk."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, path: str) -> bytes:
        return self.data


def _flipped(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x40]) + data[offset + 1 :]


@given(st.lists(st.tuples(st.integers(0, 2**63 - 1), entries_strategy), max_size=20))
@settings(max_examples=60, deadline=None)
def test_round_trip(batches):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "000001.wal")
        ends = _write_wal(path, batches)
        result = read_wal(fs, path)
    assert result.batches == batches
    assert result.valid_length == (ends[-1] if ends else FILE_HEADER_SIZE)
    assert not result.torn_tail and result.corruption is None


@given(st.integers(0, 2**64 - 1), entries_strategy)
def test_batch_codec_round_trip(first_seq, entries):
    assert decode_batch(encode_batch(first_seq, entries)) == (first_seq, entries)


@given(st.binary(max_size=200))
def test_decode_batch_rejects_garbage_with_value_error(payload):
    try:
        first_seq, entries = decode_batch(payload)
    except ValueError:
        return
    assert isinstance(first_seq, int)
    assert all(isinstance(k, bytes) and (v is None or isinstance(v, bytes)) for k, v in entries)


def test_batch_bytes_are_the_documented_msgpack_layout():
    # docs/formats.md: [first_seq, [[key, value], [key, nil]]]
    expected = bytes.fromhex("92 05 92 92 c4 01 6b c4 01 76 92 c4 01 64 c0")
    assert encode_batch(5, [(b"k", b"v"), (b"d", None)]) == expected


def test_file_and_record_header_bytes(tmp_path):
    path = str(tmp_path / "w")
    _write_wal(path, [(1, [(b"k", b"v")])])
    data = open(path, "rb").read()
    assert data[:FILE_HEADER_SIZE] == b"CKVWAL\x01\x00"
    crc, length, rtype = struct.unpack_from("<IIB", data, FILE_HEADER_SIZE)
    assert (length, rtype) == (len(data) - FILE_HEADER_SIZE - RECORD_HEADER_SIZE, 1)


def test_add_record_is_one_write(tmp_path):
    faulty = FaultInjectionFS()
    writer = WalWriter.create(faulty, str(tmp_path / "w"))
    before = faulty.counts["write"]
    for first_seq, entries in _sample_batches(10, value_size=5000):
        writer.add_record(encode_batch(first_seq, entries))
    assert faulty.counts["write"] == before + 10
    writer.close()


def test_truncation_at_every_offset_of_the_last_records(tmp_path):
    path = str(tmp_path / "w")
    batches = _sample_batches(8)
    batches[-2] = (batches[-2][0], [(b"big", b"\x01" * 3000)])  # a long record, full of type bytes
    ends = _write_wal(path, batches)
    data = open(path, "rb").read()
    for cut in range(ends[-4], len(data)):
        result = read_wal(_BytesFS(data[:cut]), path)
        complete = sum(1 for end in ends if end <= cut)
        assert result.batches == batches[:complete], cut
        assert result.valid_length == ends[complete - 1]
        assert result.torn_tail == (cut != ends[complete - 1])
        assert result.corruption is None


@pytest.mark.parametrize("zeros", [1, RECORD_HEADER_SIZE - 1, RECORD_HEADER_SIZE, 100, 32768])
def test_zero_filled_tail_ends_the_log(tmp_path, zeros):
    """Zeros after a whole record are a preallocated log's unused space; after a cut one,
    a torn tail."""
    path = str(tmp_path / "w")
    batches = _sample_batches(5)
    ends = _write_wal(path, batches)
    data = open(path, "rb").read()
    for cut in (ends[-1], ends[-1] - 7, ends[-2] + 3):  # zeros after a whole record or a cut one
        _rewrite(path, data[:cut] + bytes(zeros))
        result = read_wal(fs, path, mode="strict")
        complete = sum(1 for end in ends if end <= cut)
        assert result.batches == batches[:complete]
        assert result.torn_tail == (cut not in ends)
        assert result.valid_length == ends[complete - 1]


@pytest.mark.parametrize("size", [0, 1, 5, FILE_HEADER_SIZE - 1])
def test_partial_header_is_a_torn_tail(tmp_path, size):
    path = str(tmp_path / "w")
    _rewrite(path, (WAL_MAGIC + b"\x01\x00")[:size])
    result = read_wal(fs, path)
    assert (result.batches, result.valid_length, result.torn_tail) == ([], 0, True)


@pytest.mark.parametrize("size", [1, FILE_HEADER_SIZE, 4096])
def test_all_zero_file_is_a_torn_tail(tmp_path, size):
    path = str(tmp_path / "w")
    _rewrite(path, bytes(size))
    result = read_wal(fs, path)
    assert (result.batches, result.valid_length, result.torn_tail) == ([], 0, True)


def test_header_only_file_has_no_records(tmp_path):
    path = str(tmp_path / "w")
    WalWriter.create(fs, path).close()
    result = read_wal(fs, path)
    assert (result.batches, result.valid_length, result.torn_tail) == ([], FILE_HEADER_SIZE, False)


def test_every_flipped_byte_in_a_middle_record_is_corruption(tmp_path):
    path = str(tmp_path / "w")
    batches = _sample_batches(6)
    ends = _write_wal(path, batches)
    original = open(path, "rb").read()
    bad = 2  # records 3..5 are good and follow the damaged one
    for offset in range(ends[bad - 1], ends[bad]):
        damaged = _BytesFS(_flipped(original, offset))
        with pytest.raises(CorruptionError) as info:
            read_wal(damaged, path, mode="strict")
        assert info.value.path == path
        assert f"offset {ends[bad - 1]}" in str(info.value)

        result = read_wal(damaged, path, mode="point_in_time")
        assert result.batches == batches[:bad], offset
        assert result.valid_length == ends[bad - 1]
        assert isinstance(result.corruption, CorruptionError)
        assert not result.torn_tail


def test_corrupt_length_pointing_past_the_end_is_still_corruption(tmp_path):
    path = str(tmp_path / "w")
    batches = _sample_batches(4)
    ends = _write_wal(path, batches)
    data = bytearray(open(path, "rb").read())
    struct.pack_into("<I", data, ends[0] + 4, 10**6)
    _rewrite(path, bytes(data))
    with pytest.raises(CorruptionError):
        read_wal(fs, path)
    assert read_wal(fs, path, mode="point_in_time").batches == batches[:1]


def test_every_flipped_byte_in_the_last_record_is_a_torn_tail(tmp_path):
    path = str(tmp_path / "w")
    batches = _sample_batches(4)
    ends = _write_wal(path, batches)
    original = open(path, "rb").read()
    for offset in range(ends[-2], ends[-1]):
        result = read_wal(_BytesFS(_flipped(original, offset)), path, mode="strict")
        assert result.batches == batches[:-1]
        assert result.torn_tail and result.valid_length == ends[-2]


def test_good_checksum_but_not_a_batch_is_corruption(tmp_path):
    path = str(tmp_path / "w")
    writer = WalWriter.create(fs, path)
    writer.add_record(encode_batch(1, [(b"a", b"1")]))
    writer.add_record(b"\xc1 not msgpack")
    writer.close()
    with pytest.raises(CorruptionError, match="not a write batch"):
        read_wal(fs, path)
    result = read_wal(fs, path, mode="point_in_time")
    assert result.batches == [(1, [(b"a", b"1")])]
    assert result.corruption is not None


def test_unknown_version_and_magic(tmp_path):
    path = str(tmp_path / "w")
    _write_wal(path, _sample_batches(2))
    data = open(path, "rb").read()
    _rewrite(path, WAL_MAGIC + b"\x02\x00" + data[FILE_HEADER_SIZE:])
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        read_wal(fs, path, mode="point_in_time")
    _rewrite(path, b"NOTWAL\x01\x00" + data[FILE_HEADER_SIZE:])
    with pytest.raises(UnsupportedFormatError):
        read_wal(fs, path)
    _rewrite(path, b"XY")
    with pytest.raises(UnsupportedFormatError):
        read_wal(fs, path)


def test_unknown_mode_is_rejected(tmp_path):
    path = str(tmp_path / "w")
    _write_wal(path, [])
    with pytest.raises(InvalidArgumentError):
        read_wal(fs, path, mode="skip_any_corrupted")


@pytest.mark.parametrize("value", ["random", "type_bytes"])
def test_torn_4mb_record_is_scanned_quickly(tmp_path, value):
    path = str(tmp_path / "w")
    big = os.urandom(4 << 20) if value == "random" else b"\x01" * (4 << 20)
    batches = [(1, [(b"small", b"v")]), (2, [(b"big", big)])]
    ends = _write_wal(path, batches)
    _rewrite(path, open(path, "rb").read()[: ends[-1] - 1])
    start = time.perf_counter()
    result = read_wal(fs, path)
    assert time.perf_counter() - start < 2  # tens of milliseconds; generous for slow machines
    assert result.batches == batches[:1] and result.torn_tail


def test_corruption_early_in_a_4mb_file(tmp_path):
    path = str(tmp_path / "w")
    batches = [(i, [(b"k%08d" % i, os.urandom(1000))]) for i in range(4000)]
    _write_wal(path, batches)
    data = bytearray(open(path, "rb").read())
    struct.pack_into("<I", data, FILE_HEADER_SIZE + 4, len(data))  # first length: past the end
    _rewrite(path, bytes(data))
    result = read_wal(fs, path, mode="point_in_time")
    assert result.batches == [] and result.corruption is not None
    assert result.valid_length == FILE_HEADER_SIZE


def test_values_mimicking_record_headers_cannot_make_the_scan_quadratic(tmp_path):
    # Every 6 bytes a plausible header of a 1 MiB record: without the checksum budget the
    # scan of this torn record would checksum hundreds of gigabytes.
    path = str(tmp_path / "w")
    batches = [(1, [(b"a", b"b")]), (2, [(b"big", b"\x00\x00\x10\x00\x01\x92" * 700_000)])]
    ends = _write_wal(path, batches)
    data = open(path, "rb").read()[: ends[-1] - 1]
    start = time.perf_counter()
    result = read_wal(_BytesFS(data), path, mode="point_in_time")
    assert time.perf_counter() - start < 2
    assert result.batches == batches[:1]
    assert "gave up" in str(result.corruption)


def test_crash_keeps_exactly_the_synced_records(tmp_path):
    faulty = FaultInjectionFS()
    path = str(tmp_path / "000001.wal")
    batches = _sample_batches(6)
    writer = WalWriter.create(faulty, path)
    faulty.sync_dir(str(tmp_path))
    for i, (first_seq, entries) in enumerate(batches):
        writer.add_record(encode_batch(first_seq, entries))
        if i == 3:
            writer.sync()
    faulty.crash()
    result = read_wal(FaultInjectionFS(), path)
    assert result.batches == batches[:4] and not result.torn_tail


def test_partial_write_leaves_a_torn_tail(tmp_path):
    faulty = FaultInjectionFS()
    path = str(tmp_path / "000001.wal")
    batches = _sample_batches(3)
    writer = WalWriter.create(faulty, path)
    for first_seq, entries in batches[:2]:
        writer.add_record(encode_batch(first_seq, entries))
    faulty.fail_nth("write", 1, partial=True)
    with pytest.raises(OSError):
        writer.add_record(encode_batch(*batches[2]))
    result = read_wal(faulty, path)
    assert result.batches == batches[:2] and result.torn_tail
