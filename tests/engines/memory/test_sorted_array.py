"""SortedArray specifics: the stats (entries, allocated slots, fill) and the memory of
its two lists, and validate() catching deliberately broken arrays. What every index must
do (random operations against a dict model with validate() after each one, scans,
load_sorted, clear, ...) is in test_index_contract.py."""

from __future__ import annotations

import re

import pytest

from concordkv_mp.engines.memory.sorted_array import SortedArray
from tests.engines.memory.index_model import SHORT_KEYS, assert_detected


def test_structure_stats_and_container_bytes():
    array = SortedArray()
    assert array.structure_stats() == {"entries": 0, "slots": 0, "fill": 1.0}
    for i in range(5000):
        array.put(b"key%d" % i, b"v")
    stats = array.structure_stats()
    assert stats["entries"] == 5000
    assert 5000 <= stats["slots"] < 5000 * 1.5
    assert stats["fill"] == 5000 / stats["slots"]
    # Two lists of pointers: 16 bytes per allocated slot plus two headers.
    assert 16 * 5000 < array.container_bytes() < 16 * stats["slots"] + 200


# --- validate() catches broken arrays ----------------------------------------------------


def filled_array() -> SortedArray:
    array = SortedArray()
    for key in SHORT_KEYS:
        array.put(key, b"v")
    return array


def break_order(array):
    keys = array._keys
    keys[3], keys[4] = keys[4], keys[3]


def break_duplicate(array):
    array._keys[5] = array._keys[4]


def break_lengths(array):
    array._values.append(b"extra")


def break_key_type(array):
    array._keys[0] = "a"


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (break_order, "not strictly ascending at 4"),
        (break_duplicate, "not strictly ascending at 5"),
        (break_lengths, "keys but"),
        (break_key_type, "a str key"),
    ],
)
def test_validate_detects_corruption(corrupt, message):
    assert_detected(filled_array(), corrupt, re.escape(message))
