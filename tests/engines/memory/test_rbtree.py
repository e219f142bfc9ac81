"""RedBlackTree specifics: the height bound and rotations under sequential keys, the
black height, the perfectly balanced bulk-loaded shape, a fixed node size, walks without
recursion at 100k keys, and validate() catching each kind of corruption. What every
index must do (random operations against a dict model with validate() after each one,
scans, load_sorted, clear, ...) is in test_index_contract.py."""

from __future__ import annotations

import math
import random
import re
import sys

import pytest

from concordkv_mp.engines.memory.rbtree import RedBlackTree, _Node
from tests.engines.memory.index_model import apply_op, assert_detected, assert_same


def filled(count: int, seed: int = 0) -> tuple[RedBlackTree, dict]:
    rng = random.Random(seed)
    tree, model = RedBlackTree(), {}
    for _ in range(count):
        key = rng.randbytes(rng.randint(1, 3))
        tree.put(key, key[::-1])
        model[key] = key[::-1]
    return tree, model


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("delete_order", ["ascending", "descending", "random"])
def test_sequential_keys_then_delete_to_empty(descending, delete_order):
    tree, model = RedBlackTree(), {}
    order = list(range(600))
    if descending:
        order.reverse()
    for i in order:
        apply_op(tree, model, ("put", i.to_bytes(4, "big"), b"v"))
    stats = tree.structure_stats()
    assert stats["height"] <= 2 * math.log2(len(tree) + 1)
    doomed = sorted(model)
    if delete_order == "descending":
        doomed.reverse()
    elif delete_order == "random":
        random.Random(7).shuffle(doomed)
    for key in doomed:
        apply_op(tree, model, ("remove", key))
        apply_op(tree, model, ("remove", key))  # absent now: returns None, no change
    assert_same(tree, {})
    assert tree.structure_stats() == {"height": 0, "black_height": 0, "nodes": 0}


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 100, 1000])
def test_load_sorted_builds_a_perfectly_balanced_tree(size):
    key_list = [i.to_bytes(3, "big") for i in range(size)]
    tree = RedBlackTree()
    tree.load_sorted(key_list, key_list)
    tree.validate()
    stats = tree.structure_stats()
    assert stats["nodes"] == size
    assert stats["height"] == size.bit_length()


def test_load_sorted_refuses_a_non_empty_tree_and_ragged_input():
    tree = RedBlackTree()
    tree.put(b"a", b"1")
    with pytest.raises(ValueError):
        tree.load_sorted([b"b"], [b"2"])
    with pytest.raises(ValueError):
        RedBlackTree().load_sorted([b"b", b"c"], [b"2"])
    assert_same(tree, {b"a": b"1"})


def test_large_trees_stay_shallow_and_validate_without_recursion():
    count = 100_000
    loaded = RedBlackTree()
    loaded.load_sorted([i.to_bytes(4, "big") for i in range(count)], [b"v"] * count)
    grown = RedBlackTree()
    for i in range(count):
        grown.put(i.to_bytes(4, "big"), b"v")
    # Every walk is iterative: a tiny recursion limit must not matter.
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(60)
    try:
        for tree in (loaded, grown):
            tree.validate()
            stats = tree.structure_stats()
            assert stats["nodes"] == count
            assert stats["height"] <= 2 * math.log2(count + 1)
            assert len(tree.range_list(None, None, True, 300)) == 300
    finally:
        sys.setrecursionlimit(saved)


def test_random_tree_height_bound_and_stats():
    tree, model = filled(5000, seed=3)
    tree.validate()
    stats = tree.structure_stats()
    assert stats["nodes"] == len(model)
    assert math.log2(len(model) + 1) <= stats["height"] <= 2 * math.log2(len(model) + 1)
    # A red-black tree has at least 2**bh - 1 nodes, and its height is at least bh.
    assert 2 ** stats["black_height"] - 1 <= len(model)
    assert stats["black_height"] <= stats["height"]


def test_container_bytes_is_a_fixed_size_per_node():
    tree = RedBlackTree()
    empty = tree.container_bytes()
    assert empty > 0
    node_size = sys.getsizeof(tree._nil)
    for i in range(100):
        tree.put(i.to_bytes(2, "big"), b"v" * i)  # value sizes must not matter
    assert tree.container_bytes() == empty + 100 * node_size
    assert node_size <= 100  # modest: below a dict's own cost per key


def make_unequal_black_height(tree):
    # One extra black leaf below the smallest key: only its paths gain a black node.
    node = tree._root
    while node.left is not tree._nil:
        node = node.left
    node.left = _Node(b"\x00", b"v", tree._nil, tree._nil, node, False)
    tree._size += 1


def make_red_root(tree):
    tree._root.red = True


def make_bad_parent(tree):
    node = tree._root.left.right
    node.parent = tree._root


def make_out_of_order(tree):
    tree._root.left.key, tree._root.right.key = (
        tree._root.right.key,
        tree._root.left.key,
    )


def make_duplicate_key(tree):
    tree._root.right.key = tree._root.key


def make_wrong_size(tree):
    tree._size += 1


def make_red_sentinel(tree):
    tree._nil.red = True


def make_dangling_subtree(tree):
    # Detach a subtree without updating the size.
    tree._root.left.left = tree._nil


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (make_unequal_black_height, "black height"),
        (make_red_root, "root"),
        (make_bad_parent, "parent link"),
        (make_out_of_order, "out of order"),
        (make_duplicate_key, "out of order"),
        (make_wrong_size, "len()"),
        (make_red_sentinel, "sentinel"),
        (make_dangling_subtree, None),
    ],
)
def test_validate_detects_corruption(mutate, message):
    tree = RedBlackTree()
    for i in range(1, 32):
        tree.put(bytes([i]), b"v")
    assert_detected(tree, mutate, message and re.escape(message))


def test_validate_detects_a_red_red_pair_with_equal_black_heights():
    # b (black) over a and c (red); a red leaf under a keeps every black height equal,
    # so only the red-red rule is broken.
    tree = RedBlackTree()
    for key in (b"b", b"a", b"c"):
        tree.put(key, b"v")
    red = tree._root.left
    assert red.red and not tree._root.red

    def add_a_red_leaf(tree):
        red.left = _Node(b"0", b"v", tree._nil, tree._nil, red, True)
        tree._size += 1

    assert_detected(tree, add_a_red_leaf, "red child")
