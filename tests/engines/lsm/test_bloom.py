"""Bloom filter: no false negatives, the false-positive budget, and a frozen on-disk layout."""

from __future__ import annotations

import random
import zlib

import numpy as np
import pytest

from concordkv_mp.engines.lsm.bloom import BloomFilter, BloomFilterBuilder, probe_count


def build(keys, bits_per_key=10) -> BloomFilter:
    builder = BloomFilterBuilder(bits_per_key)
    for key in keys:
        builder.add(key)
    return BloomFilter(builder.finish())


@pytest.mark.parametrize(
    "make_key",
    [
        lambda i: b"key%012d" % i,
        lambda i: str(i).encode(),
        lambda i: i.to_bytes(8, "big"),
    ],
    ids=["padded-decimal", "short-decimal", "big-endian-int"],
)
def test_false_positive_rate_below_two_percent_at_10_bits_per_key(make_key):
    keys = [make_key(i) for i in range(100_000)]
    bloom = build(keys)
    assert all(map(bloom.may_contain, keys)), "false negative"
    absent = [make_key(i) for i in range(100_000, 300_000)]
    rate = sum(map(bloom.may_contain, absent)) / len(absent)
    assert rate < 0.02, rate
    # Also not suspiciously low, which would mean the probes are not being tested.
    assert rate > 0.002, rate


def test_random_binary_keys_have_no_false_negatives():
    rng = random.Random(7)
    keys = [rng.randbytes(rng.randrange(1, 40)) for _ in range(20_000)]
    bloom = build(keys)
    assert all(map(bloom.may_contain, keys))


def test_vectorised_check_agrees_with_single_key_check():
    keys = [b"k%d" % i for i in range(5_000)]
    bloom = build(keys)
    probes = keys[::7] + [b"absent%d" % i for i in range(5_000)]
    many = bloom.may_contain_many(probes)
    assert many.dtype == np.bool_
    assert many.tolist() == [bloom.may_contain(k) for k in probes]
    assert many[: len(keys[::7])].all()


def test_probe_count_and_size():
    assert probe_count(10) == 7
    assert probe_count(1) == 1
    assert probe_count(64) == 30
    builder = BloomFilterBuilder(10)
    for i in range(1000):
        builder.add(b"%d" % i)
    assert builder.estimated_size == 1000 * 10 // 8 + 1
    data = builder.finish()
    assert len(data) == 1000 * 10 // 8 + 1 and data[-1] == 7


def test_disabled_or_empty_filter_is_an_empty_payload():
    builder = BloomFilterBuilder(0)
    builder.add(b"a")
    assert builder.finish() == b""
    assert BloomFilterBuilder(10).finish() == b""


def test_tiny_filter_still_gets_minimum_bits():
    builder = BloomFilterBuilder(10)
    builder.add(b"only")
    data = builder.finish()
    assert len(data) == 64 // 8 + 1
    assert BloomFilter(data).may_contain(b"only")


def test_layout_is_frozen():
    # on-disk format v1: if this fails, the bytes changed and FORMAT_VERSION must be bumped.
    builder = BloomFilterBuilder(10)
    for i in range(100):
        builder.add(b"user:%d" % i)
    data = builder.finish()
    assert len(data) == 126
    assert zlib.crc32(data) == 0x2E51377E


def test_rejects_malformed_payloads():
    with pytest.raises(ValueError):
        BloomFilter(b"\x00")
    with pytest.raises(ValueError):
        BloomFilter(b"\x00" * 8 + b"\x00")  # zero probes
    with pytest.raises(ValueError):
        BloomFilter(b"\x00" * 8 + bytes([31]))
