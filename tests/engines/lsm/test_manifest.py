"""Manifest tests: round trip, every flipped byte refused, stale .tmp ignored, and a crash
at each step of write_manifest leaving the old or the new state."""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from concordkv_mp.engines.lsm.file_meta import FileMeta
from concordkv_mp.engines.lsm.manifest import (
    HEADER_SIZE,
    MANIFEST_MAGIC,
    NUM_LEVELS,
    ManifestState,
    decode_manifest,
    encode_manifest,
    manifest_path,
    read_manifest,
    write_manifest,
)
from concordkv_mp.errors import CorruptionError, InvalidArgumentError, StorageIOError, UnsupportedFormatError
from concordkv_mp.io.fs import DEFAULT_FS as fs
from tests.support.faulty_fs import FaultInjectionFS


def _meta(number: int, smallest: bytes, largest: bytes) -> FileMeta:
    return FileMeta(number, 1000 + number, smallest, largest, 10 * number, number * 100, number * 100 + 9)


def _state(generation: int) -> ManifestState:
    levels = [[] for _ in range(NUM_LEVELS)]
    levels[0] = [_meta(generation + 3, b"a", b"m"), _meta(generation + 2, b"b", b"z")]  # newest first
    levels[1] = [_meta(generation + 1, b"\x00", b"\xff" * 20)]
    levels[6] = [_meta(generation, b"k%d" % generation, b"k%d~" % generation)]
    return ManifestState(
        next_file_number=generation + 10, last_sequence=generation * 1000, log_number=generation + 4, levels=levels
    )


def test_round_trip(tmp_path):
    state = _state(7)
    write_manifest(fs, str(tmp_path), state)
    assert read_manifest(fs, str(tmp_path)) == state
    assert os.listdir(tmp_path) == ["MANIFEST"]


def test_round_trip_keeps_level_order_and_empty_levels(tmp_path):
    state = ManifestState(1, 0, 0, [[] for _ in range(NUM_LEVELS)], engine="lsm")
    write_manifest(fs, str(tmp_path), state)
    assert read_manifest(fs, str(tmp_path)) == state
    state = _state(1)
    state.levels[0].reverse()
    write_manifest(fs, str(tmp_path), state)
    assert read_manifest(fs, str(tmp_path)).levels[0] == state.levels[0]


def test_missing_manifest_reads_as_none(tmp_path):
    assert read_manifest(fs, str(tmp_path)) is None


def test_header_bytes():
    data = encode_manifest(_state(1))
    magic, version, length, crc = struct.unpack_from("<6sHII", data)
    assert (magic, version, length) == (MANIFEST_MAGIC, 1, len(data) - HEADER_SIZE)


def test_every_flipped_byte_is_refused(tmp_path):
    data = encode_manifest(_state(3))
    path = manifest_path(str(tmp_path))
    for offset in range(len(data)):
        for bit in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[offset] ^= bit
            with pytest.raises(CorruptionError):
                decode_manifest(bytes(damaged), path)
    with open(path, "wb") as f:
        f.write(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CorruptionError) as info:
        read_manifest(fs, str(tmp_path))
    assert info.value.path == path


def test_truncated_or_extended_manifest_is_refused():
    data = encode_manifest(_state(3))
    for damaged in (data[:cut] for cut in range(len(data))):
        with pytest.raises(CorruptionError):
            decode_manifest(damaged, "MANIFEST")
    with pytest.raises(CorruptionError):
        decode_manifest(data + b"\0", "MANIFEST")


def test_unknown_version_and_magic():
    data = encode_manifest(_state(3))
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        decode_manifest(MANIFEST_MAGIC + struct.pack("<H", 2) + data[8:], "MANIFEST")
    with pytest.raises(UnsupportedFormatError):
        decode_manifest(b"LEVELD" + data[6:], "MANIFEST")


def test_good_checksum_over_a_malformed_body_is_corruption():
    body = b"\x93\x01\x02\x03"  # a msgpack array, not the expected map
    prefix = struct.pack("<6sHI", MANIFEST_MAGIC, 1, len(body))
    data = prefix + struct.pack("<I", zlib.crc32(body, zlib.crc32(prefix))) + body
    with pytest.raises(CorruptionError, match="malformed"):
        decode_manifest(data, "MANIFEST")


def test_wrong_number_of_levels_is_rejected():
    with pytest.raises(InvalidArgumentError):
        encode_manifest(ManifestState(1, 0, 0, [[]] * 6))


def test_stale_tmp_is_ignored(tmp_path):
    write_manifest(fs, str(tmp_path), _state(1))
    with open(manifest_path(str(tmp_path)) + ".tmp", "wb") as f:
        f.write(encode_manifest(_state(2))[:20])
    assert read_manifest(fs, str(tmp_path)) == _state(1)
    write_manifest(fs, str(tmp_path), _state(2))  # the next write replaces the leftover
    assert read_manifest(fs, str(tmp_path)) == _state(2)
    assert os.listdir(tmp_path) == ["MANIFEST"]


@pytest.mark.parametrize("old", [None, _state(1)], ids=["first", "replace"])
@pytest.mark.parametrize(
    "op, partial",
    [("write", False), ("write", True), ("sync", False), ("rename", False), ("sync_dir", False)],
)
def test_crash_at_each_step_leaves_the_old_state(tmp_path, old, op, partial):
    directory = str(tmp_path)
    if old is not None:
        write_manifest(fs, directory, old)
    faulty = FaultInjectionFS()
    faulty.fail_nth(op, 1, partial=partial)
    with pytest.raises(StorageIOError):
        write_manifest(faulty, directory, _state(2))
    faulty.crash()
    assert read_manifest(FaultInjectionFS(), directory) == old


@pytest.mark.parametrize("old", [None, _state(1)], ids=["first", "replace"])
def test_crash_after_write_manifest_returns_leaves_the_new_state(tmp_path, old):
    directory = str(tmp_path)
    if old is not None:
        write_manifest(fs, directory, old)
    faulty = FaultInjectionFS()
    write_manifest(faulty, directory, _state(2))
    faulty.crash()
    assert read_manifest(FaultInjectionFS(), directory) == _state(2)
    assert os.listdir(directory) == ["MANIFEST"]


def test_crash_after_any_number_of_successful_steps(tmp_path):
    # Stop the power at every I/O call of two successive updates: each crash must
    # leave one of the states that was whole at the time.
    directory = str(tmp_path)
    states = [_state(1), _state(2), _state(3)]
    write_manifest(fs, directory, states[0])
    for op in ("write", "sync", "rename", "sync_dir"):
        for n in (1, 2):
            faulty = FaultInjectionFS()
            faulty.fail_nth(op, n)
            written = 0
            try:
                for state in states[1:]:
                    write_manifest(faulty, directory, state)
                    written += 1
            except StorageIOError:
                pass
            assert written == n - 1
            faulty.crash()
            assert read_manifest(FaultInjectionFS(), directory) == states[written]
            write_manifest(fs, directory, states[0])
