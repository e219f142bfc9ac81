"""SSTable builder and reader: round trips against a sorted-list model, damage, the seam.

The model of a table is its entry list sorted by key ascending, seq descending; every
read of the reader is compared with the same read computed from that list.
"""

from __future__ import annotations

import os
import random
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concordkv_mp.engines.lsm.block_cache import BlockCache
from concordkv_mp.engines.lsm.file_meta import FileMeta
from concordkv_mp.engines.lsm.sstable_builder import SSTableBuilder
from concordkv_mp.engines.lsm.sstable_format import FOOTER_SIZE, FORMAT_VERSION, MAGIC
from concordkv_mp.engines.lsm.sstable_reader import SSTableReader
from concordkv_mp.errors import ClosedError, CorruptionError, StorageIOError, UnsupportedFormatError
from concordkv_mp.io.fs import FileSystem, WritableFile

FS = FileSystem()


# ---------------------------------------------------------------- model

def table_order(entries):
    return sorted(entries, key=lambda e: (e[0], -e[1]))


def model_forward(entries, start=None):
    return [e for e in entries if start is None or e[0] >= start]


def model_reverse(entries, start=None):
    chosen = [e for e in entries if start is None or e[0] <= start]
    return sorted(chosen, key=lambda e: (e[0], e[1]), reverse=True)


def model_get(entries, key, snapshot=None):
    for k, seq, value in entries:
        if k == key and (snapshot is None or seq <= snapshot):
            return seq, value
    return None


def write_table(path, entries, **options) -> FileMeta:
    builder = SSTableBuilder(FS, path, 7, **options)
    for entry in entries:
        builder.add(*entry)
    return builder.finish()


def probe_keys(entries):
    keys = sorted({e[0] for e in entries})
    probes = {b"", b"\xff" * 8}
    for key in keys:
        probes |= {key, key + b"\x00", key[:-1]}
    return sorted(probes)


def check_against_model(reader: SSTableReader, entries) -> None:
    assert list(reader.iter_from()) == entries
    assert list(reader.iter_from(reverse=True)) == model_reverse(entries)
    for start in probe_keys(entries):
        assert list(reader.iter_from(start)) == model_forward(entries, start), start
        assert list(reader.iter_from(start, reverse=True)) == model_reverse(entries, start), start
    seqs = sorted({e[1] for e in entries})
    snapshots = [None, 0] + seqs + [s - 1 for s in seqs if s] + [s + 1 for s in seqs]
    for key in probe_keys(entries):
        for snapshot in snapshots:
            assert reader.get(key, snapshot) == model_get(entries, key, snapshot), (key, snapshot)
    for key in {e[0] for e in entries}:
        assert reader.may_contain(key)


# ---------------------------------------------------------------- round trips

@st.composite
def tables(draw):
    keys = draw(st.lists(st.binary(min_size=1, max_size=5), max_size=30, unique=True))
    entries = []
    for key in keys:
        seqs = draw(st.lists(st.integers(0, 2**56 - 1), min_size=1, max_size=6, unique=True))
        for seq in seqs:
            value = draw(st.one_of(st.none(), st.binary(max_size=20), st.just(b""), st.just(b"x" * 700)))
            entries.append((key, seq, value))
    return table_order(entries)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=tables(),
    block_size=st.sampled_from([1, 40, 256, 4096]),
    compression=st.sampled_from(["lz4", "none"]),
    bloom_bits_per_key=st.sampled_from([0, 10]),
    cached=st.booleans(),
)
def test_round_trip_matches_sorted_list_model(tmp_path, entries, block_size, compression, bloom_bits_per_key, cached):
    path = str(tmp_path / "000007.sst")
    meta = write_table(
        path, entries, block_size=block_size, compression=compression, bloom_bits_per_key=bloom_bits_per_key
    )
    assert meta.size == os.path.getsize(path)
    assert meta.entries == len(entries)
    if entries:
        assert (meta.smallest, meta.largest) == (entries[0][0], entries[-1][0])
        assert (meta.min_seq, meta.max_seq) == (min(e[1] for e in entries), max(e[1] for e in entries))
    reader = SSTableReader.open(FS, path, 7, BlockCache(1 << 20) if cached else None)
    try:
        assert reader.meta == meta
        check_against_model(reader, entries)
    finally:
        reader.close()


def many_versions_table():
    """Keys with long version chains that straddle block boundaries, tombstones, empty values."""
    entries = []
    seq = 1
    for i in range(3000):
        key = b"key-%05d" % i
        versions = 1 if i % 7 else 40
        for v in range(versions):
            value = None if (i + v) % 11 == 0 else (b"" if (i + v) % 13 == 0 else b"v%d.%d" % (i, v) * 3)
            entries.append((key, seq, value))
            seq += 1
    return table_order(entries)


@pytest.mark.parametrize("compression", ["lz4", "none"])
@pytest.mark.parametrize("block_size", [64, 4096])
def test_large_table_with_version_chains(tmp_path, compression, block_size):
    entries = many_versions_table()
    path = str(tmp_path / "000007.sst")
    write_table(path, entries, block_size=block_size, compression=compression)
    reader = SSTableReader.open(FS, path, 7, BlockCache(1 << 20))
    assert list(reader.iter_from()) == entries
    assert list(reader.iter_from(reverse=True)) == model_reverse(entries)
    for key in [b"key-00000", b"key-00007", b"key-01400", b"key-02999", b"key-01401x"]:
        assert list(reader.iter_from(key)) == model_forward(entries, key)
        assert list(reader.iter_from(key, reverse=True)) == model_reverse(entries, key)
        for snapshot in (None, 0, 5000, 9000, 20000):
            assert reader.get(key, snapshot) == model_get(entries, key, snapshot)
    reader.close()


def test_value_larger_than_block_and_compression_choice(tmp_path):
    path = str(tmp_path / "000007.sst")
    incompressible = os.urandom(50_000)
    entries = [(b"a", 3, b"z" * 50_000), (b"b", 2, incompressible), (b"c", 1, None)]
    write_table(path, entries, block_size=4096, compression="lz4")
    reader = SSTableReader.open(FS, path, 7, None)
    assert reader.properties["data_blocks"] == 3
    # The compressible block shrank, the random one was stored raw (still verified).
    assert os.path.getsize(path) < 50_000 + 5_000 + 1_000
    check_against_model(reader, entries)
    reader.close()


def test_empty_table(tmp_path):
    path = str(tmp_path / "000007.sst")
    meta = write_table(path, [])
    assert (meta.entries, meta.smallest, meta.largest, meta.min_seq, meta.max_seq) == (0, b"", b"", 0, 0)
    reader = SSTableReader.open(FS, path, 7, BlockCache(1000))
    assert reader.meta == meta
    assert list(reader.iter_from()) == [] and list(reader.iter_from(reverse=True)) == []
    assert reader.get(b"a") is None
    reader.close()


def test_generators_stopped_early_leave_reader_usable(tmp_path):
    entries = many_versions_table()
    path = str(tmp_path / "000007.sst")
    write_table(path, entries, block_size=128)
    reader = SSTableReader.open(FS, path, 7, BlockCache(1 << 20))
    forward = reader.iter_from(b"key-00100")
    backward = reader.iter_from(b"key-00100", reverse=True)
    head = [next(forward) for _ in range(5)]
    tail = [next(backward) for _ in range(5)]
    forward.close()
    del backward
    assert head == model_forward(entries, b"key-00100")[:5]
    assert tail == model_reverse(entries, b"key-00100")[:5]
    assert list(reader.iter_from()) == entries
    reader.close()


# ---------------------------------------------------------------- cache use

def test_cache_hits_fill_and_erase_on_close(tmp_path):
    entries = [(b"k%04d" % i, i, b"v" * 50) for i in range(400)]
    path = str(tmp_path / "000007.sst")
    write_table(path, entries, block_size=512)
    cache = BlockCache(1 << 20)
    reader = SSTableReader.open(FS, path, 7, cache)
    blocks = reader.properties["data_blocks"]
    assert list(reader.iter_from(fill_cache=False)) == entries
    assert cache.stats()["entries"] == 0
    assert reader.get(b"k0100") == (100, b"v" * 50)
    assert reader.get(b"k0100") == (100, b"v" * 50)
    stats = cache.stats()
    assert (stats["entries"], stats["hits"]) == (1, 1)
    assert list(reader.iter_from()) == entries
    assert cache.stats()["entries"] == blocks
    reader.close()
    assert cache.stats()["entries"] == 0 and cache.stats()["size_bytes"] == 0


def test_reads_after_close_raise_closed(tmp_path):
    path = str(tmp_path / "000007.sst")
    write_table(path, [(b"a", 1, b"x")])
    reader = SSTableReader.open(FS, path, 7, None)
    reader.close()
    reader.close()
    with pytest.raises(ClosedError):
        reader.get(b"a")


def test_map_outlives_unlink(tmp_path):
    entries = [(b"k%04d" % i, i, b"v") for i in range(100)]
    path = str(tmp_path / "000007.sst")
    write_table(path, entries, block_size=100)
    reader = SSTableReader.open(FS, path, 7, None)
    os.remove(path)
    assert list(reader.iter_from()) == entries
    reader.close()


def test_may_contain_many_has_no_false_negatives(tmp_path):
    entries = [(b"k%05d" % i, 1, b"v") for i in range(2000)]
    path = str(tmp_path / "000007.sst")
    write_table(path, entries)
    reader = SSTableReader.open(FS, path, 7, None)
    probes = [e[0] for e in entries] + [b"x%05d" % i for i in range(2000)]
    many = reader.may_contain_many(probes)
    assert many[:2000].all()
    assert many[2000:].mean() < 0.05
    assert many.tolist() == [reader.may_contain(k) for k in probes]
    reader.close()


# ---------------------------------------------------------------- builder contract

def test_builder_rejects_out_of_order_and_stays_usable(tmp_path):
    path = str(tmp_path / "000007.sst")
    builder = SSTableBuilder(FS, path, 7)
    builder.add(b"b", 5, b"x")
    for bad in [(b"a", 9, b"x"), (b"b", 5, b"x"), (b"b", 6, b"x"), (b"c", -1, b"x"), (b"c", 2**56, b"x")]:
        with pytest.raises(ValueError):
            builder.add(*bad)
    builder.add(b"b", 4, None)
    builder.add(b"c", 9, b"y")
    assert builder.entries == 3
    meta = builder.finish()
    assert (meta.smallest, meta.largest, meta.min_seq, meta.max_seq) == (b"b", b"c", 4, 9)
    with pytest.raises(ValueError):
        builder.add(b"d", 1, b"z")
    reader = SSTableReader.open(FS, path, 7, None)
    assert list(reader.iter_from()) == [(b"b", 5, b"x"), (b"b", 4, None), (b"c", 9, b"y")]
    reader.close()


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_estimated_size_tracks_the_final_size(tmp_path, compression):
    path = str(tmp_path / "000007.sst")
    builder = SSTableBuilder(FS, path, 7, compression=compression)
    for i in range(20_000):
        builder.add(b"key%08d" % i, 2**40 + i, os.urandom(20))
    estimate = builder.estimated_size
    meta = builder.finish()
    assert abs(estimate - meta.size) < 0.05 * meta.size


def test_abandon_removes_the_partial_file(tmp_path):
    path = str(tmp_path / "000007.sst")
    builder = SSTableBuilder(FS, path, 7, block_size=64)
    for i in range(100):
        builder.add(b"%04d" % i, 1, b"v" * 10)
    assert os.path.exists(path)
    builder.abandon()
    assert not os.path.exists(path)
    with pytest.raises(ValueError):
        builder.finish()


def test_abandon_after_finish_removes_the_finished_file(tmp_path):
    path = str(tmp_path / "000007.sst")
    builder = SSTableBuilder(FS, path, 7)
    builder.add(b"a", 1, b"v")
    builder.finish()
    assert os.path.exists(path)
    builder.abandon()
    assert not os.path.exists(path)


class RecordingFS(FileSystem):
    """Records file calls and can fail the Nth append, like LevelDB's fault-injection Env."""

    def __init__(self, fail_append_at=None):
        self.calls = []
        self.appends = 0
        self.fail_append_at = fail_append_at

    def create(self, path):
        self.calls.append(("create", path))
        fs = self

        class File(WritableFile):
            def append(self, data):
                fs.appends += 1
                if fs.appends == fs.fail_append_at:
                    raise StorageIOError(5, "injected write failure")
                fs.calls.append(("append", len(data)))
                super().append(data)

            def sync(self):
                fs.calls.append(("sync",))
                super().sync()

            def close(self):
                fs.calls.append(("close",))
                super().close()

        inner = super().create(path)
        return File(inner._fd, path)

    def map(self, path):
        self.calls.append(("map", path))
        return super().map(path)

    def remove(self, path):
        self.calls.append(("remove", path))
        super().remove(path)


def test_all_io_goes_through_the_seam_and_syncs_before_close(tmp_path):
    fs = RecordingFS()
    path = str(tmp_path / "000007.sst")
    builder = SSTableBuilder(fs, path, 7, block_size=64)
    for i in range(50):
        builder.add(b"%04d" % i, 1, b"v" * 10)
    meta = builder.finish()
    kinds = [call[0] for call in fs.calls]
    assert kinds[0] == "create" and kinds[-2:] == ["sync", "close"]
    assert sum(call[1] for call in fs.calls if call[0] == "append") == meta.size
    reader = SSTableReader.open(fs, path, 7, None)
    assert fs.calls[-1] == ("map", path)
    reader.close()


@pytest.mark.parametrize("fail_at", [1, 3, 8])
def test_write_failure_then_abandon(tmp_path, fail_at):
    fs = RecordingFS(fail_append_at=fail_at)
    path = str(tmp_path / "000007.sst")
    builder = SSTableBuilder(fs, path, 7, block_size=64)
    with pytest.raises(StorageIOError):
        for i in range(50):
            builder.add(b"%04d" % i, 1, b"v" * 10)
        builder.finish()
    builder.abandon()
    assert not os.path.exists(path)
    assert fs.calls[-1] == ("remove", path)


# ---------------------------------------------------------------- damage

def small_table_entries():
    """A few blocks mixing compressible values, incompressible ones, tombstones, versions."""
    rng = random.Random(42)
    entries = []
    for i in range(40):
        key = b"key%03d" % i
        entries.append((key, 100 + i, None if i % 9 == 0 else (b"compressible-" * 3 if i % 2 else rng.randbytes(12))))
        if i % 5 == 0:
            entries.append((key, 10 + i, b"older"))
    return entries


def read_everything(path, fs=FS):
    reader = SSTableReader.open(fs, path, 7, None)
    try:
        keys = sorted({e[0] for e in reader.iter_from()}) or [b"key000"]
        return (
            reader.meta,
            list(reader.iter_from()),
            list(reader.iter_from(reverse=True)),
            [reader.get(k) for k in keys],
            [reader.get(k, 50) for k in keys],
            [reader.may_contain(k) for k in keys],
        )
    finally:
        reader.close()


@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_every_single_byte_flip_is_detected_or_harmless(tmp_path, compression):
    path = str(tmp_path / "000007.sst")
    write_table(path, small_table_entries(), block_size=256, compression=compression)
    original = open(path, "rb").read()
    expected = read_everything(path)
    assert expected[1] == small_table_entries()
    assert SSTableReader.open(FS, path, 7, None).properties["data_blocks"] >= 4
    damaged_path = str(tmp_path / "000008.sst")
    detected = 0
    for position in range(len(original)):
        for mask in (0xFF, 0x01):
            damaged = bytearray(original)
            damaged[position] ^= mask
            with open(damaged_path, "wb") as f:
                f.write(damaged)
            try:
                got = read_everything(damaged_path)
            except CorruptionError as exc:
                assert exc.path == damaged_path
                detected += 1
                continue
            assert got == expected, f"wrong data after flipping byte {position} with {mask:#x}"
    # No unused bytes in the format: every flip must have been caught.
    assert detected == 2 * len(original)


def test_truncated_files_are_corrupt(tmp_path):
    path = str(tmp_path / "000007.sst")
    write_table(path, small_table_entries(), block_size=256)
    original = open(path, "rb").read()
    for size in list(range(0, len(original), 7)) + [len(original) - 1]:
        with open(path, "wb") as f:
            f.write(original[:size])
        with pytest.raises(CorruptionError) as info:
            read_everything(path)
        assert info.value.path == path


def rewrite_footer(path, *, version=None, magic=None):
    data = bytearray(open(path, "rb").read())
    footer = data[-FOOTER_SIZE:]
    if version is not None:
        footer[44:48] = struct.pack("<I", version)
    if magic is not None:
        footer[48:56] = magic
    crc = zlib.crc32(bytes(footer[44:]), zlib.crc32(bytes(footer[:40])))
    footer[40:44] = struct.pack("<I", crc)
    data[-FOOTER_SIZE:] = footer
    with open(path, "wb") as f:
        f.write(data)


def test_unknown_version_and_magic_are_unsupported(tmp_path):
    path = str(tmp_path / "000007.sst")
    write_table(path, small_table_entries())
    rewrite_footer(path, version=FORMAT_VERSION)
    assert read_everything(path)[1] == small_table_entries()
    rewrite_footer(path, version=FORMAT_VERSION + 1)
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        SSTableReader.open(FS, path, 7, None)
    rewrite_footer(path, version=FORMAT_VERSION, magic=b"LEVELDB!")
    with pytest.raises(UnsupportedFormatError, match="magic"):
        SSTableReader.open(FS, path, 7, None)


def test_bad_data_block_surfaces_on_read_not_open(tmp_path):
    path = str(tmp_path / "000007.sst")
    write_table(path, small_table_entries(), block_size=256, compression="none")
    data = bytearray(open(path, "rb").read())
    data[3] ^= 0x10  # inside data block 0; the index, bloom and footer are intact
    with open(path, "wb") as f:
        f.write(data)
    reader = SSTableReader.open(FS, path, 7, BlockCache(1 << 20))
    assert reader.get(b"key039") is not None
    with pytest.raises(CorruptionError, match="data block 0"):
        reader.get(b"key001")
    with pytest.raises(CorruptionError):
        list(reader.iter_from())
    reader.close()


# ---------------------------------------------------------------- frozen format

def test_format_is_frozen(tmp_path):
    # on-disk format v1: if this fails, the bytes changed and FORMAT_VERSION must be bumped
    # (and docs/formats.md updated).
    entries = [(b"key%03d" % i, 1000 - i, None if i % 4 == 0 else b"value%d" % i * 4) for i in range(60)]
    # Uncompressed only: LZ4 output may differ between lz4 library releases while
    # staying readable, so it cannot be pinned byte for byte.
    path = str(tmp_path / "000007.sst")
    write_table(path, entries, block_size=256, compression="none")
    data = open(path, "rb").read()
    assert data.endswith(struct.pack("<I", FORMAT_VERSION) + MAGIC)
    assert zlib.crc32(data) == 0x8F8D0E8C, hex(zlib.crc32(data))
