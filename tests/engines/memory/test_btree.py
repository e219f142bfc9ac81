"""BPlusTree specifics: the accepted orders, the height growing and shrinking as splits,
borrows and merges happen at orders 3, 4, 5 and 100, the shape of a bulk-loaded tree,
the shape and memory figures, and validate() catching deliberately broken trees. What
every index must do (random operations against a dict model with validate() after each
one, scans, load_sorted, clear, ...) is in test_index_contract.py, at the same orders."""

from __future__ import annotations

import random

import pytest

from concordkv_mp.engines.memory.btree import BPlusTree, _Internal, _Leaf
from tests.engines.memory.index_model import apply_op, assert_detected, assert_same


def height(tree: BPlusTree) -> int:
    return tree.structure_stats()["height"]


# ------------------------------------------------------------------ construction


@pytest.mark.parametrize("order", [3, 4, 5, 100, 1000])
def test_valid_orders_are_accepted(order):
    tree = BPlusTree(order)
    assert tree.structure_stats()["order"] == order
    tree.validate()


@pytest.mark.parametrize("order", [-1, 0, 1, 2, 1001, 10**6])
def test_orders_outside_3_to_1000_are_rejected(order):
    with pytest.raises(ValueError, match="order"):
        BPlusTree(order)


def test_non_integer_order_is_rejected():
    with pytest.raises(TypeError):
        BPlusTree(4.5)


def test_default_order_is_100():
    assert BPlusTree().structure_stats()["order"] == 100
    assert BPlusTree.name == "btree"


@pytest.mark.parametrize(
    ("order", "count", "ascending", "min_height"),
    [(3, 700, False, 7), (4, 700, False, 5), (5, 700, True, 5), (100, 6000, True, 3)],
)
def test_root_grows_then_shrinks_back_to_an_empty_leaf(order, count, ascending, min_height):
    """Insert until the tree is several levels deep, then delete every key in random
    order. Ascending inserts leave nodes near the minimum fill, so the deletions start
    borrowing and merging (leaves and internal nodes) almost at once."""
    rng = random.Random(count + order)
    key_list = [i.to_bytes(4, "big") for i in range(count)]
    if not ascending:
        rng.shuffle(key_list)
    tree, model = BPlusTree(order), {}
    heights = [height(tree)]
    for key in key_list:
        apply_op(tree, model, ("put", key, key))
        heights.append(height(tree))
    assert heights == sorted(heights), "height only grows under inserts"
    assert heights[-1] >= min_height
    rng.shuffle(key_list)
    for n, key in enumerate(key_list):
        apply_op(tree, model, ("remove", key))
        heights.append(height(tree))
        if n % 97 == 0:
            assert_same(tree, model)
    shrinking = heights[count:]
    assert shrinking == sorted(shrinking, reverse=True), "height only shrinks under deletes"
    assert heights[-1] == 1
    assert_same(tree, {})
    assert tree.structure_stats()["nodes"] == 1


# ---------------------------------------------------------------------- bulk loading


def load_sizes(order: int) -> list[int]:
    m = order - 1
    sizes = {0, 1, 2, m - 1, m, m + 1, 2 * m - 1, 2 * m, 2 * m + 1, m * order, m * order + 1}
    sizes |= {m * order * 2 + 3, 3000}
    return sorted(s for s in sizes if 0 <= s <= 12000)


@pytest.mark.parametrize("order", [3, 4, 5, 7, 100, 1000])
def test_load_sorted_builds_a_valid_full_tree(order):
    for n in load_sizes(order):
        key_list = [i.to_bytes(4, "big") for i in range(0, 3 * n, 3)]
        value_list = [b"v" + key for key in key_list]
        tree = BPlusTree(order)
        tree.load_sorted(key_list, value_list)
        assert_same(tree, dict(zip(key_list, value_list)))
        stats = tree.structure_stats()
        assert stats["leaves"] == max(1, -(-n // (order - 1)))
        if stats["leaves"] > 1:
            assert stats["leaf_fill"] > 0.5
        # Nothing to split at: load packs each level, so height is minimal.
        capacity = order - 1
        levels = 1
        while capacity < n:
            capacity *= order
            levels += 1
        assert stats["height"] == levels


def test_load_sorted_rejects_a_non_empty_tree_and_ragged_input():
    tree = BPlusTree(4)
    with pytest.raises(ValueError):
        tree.load_sorted([b"a", b"b"], [b"1"])
    tree.put(b"a", b"1")
    with pytest.raises(ValueError, match="empty"):
        tree.load_sorted([b"b"], [b"2"])


# ------------------------------------------------------------- shape and memory figures


def test_structure_stats_and_container_bytes():
    empty = BPlusTree(100)
    assert empty.structure_stats() == {
        "order": 100, "height": 1, "nodes": 1, "leaves": 1, "leaf_fill": 0.0,
        "internal_fill": 0.0,
    }
    small_bytes = empty.container_bytes()
    assert small_bytes > 0

    tree = BPlusTree(5)
    for i in random.Random(5).sample(range(1000), 1000):
        tree.put(i.to_bytes(4, "big"), b"")
    stats = tree.structure_stats()
    assert stats["order"] == 5 and stats["height"] >= 4
    assert stats["nodes"] > stats["leaves"] >= 1000 / 4
    # Every non-root leaf is at least half full: ceil(5/2) - 1 = 2 of 4 keys.
    assert 0.5 <= stats["leaf_fill"] <= 1 and 0 < stats["internal_fill"] <= 1
    assert sum(len(leaf.keys) for leaf in leaves_of(tree)) == 1000
    assert len(leaves_of(tree)) == stats["leaves"]

    big = BPlusTree(100)
    key_list = [i.to_bytes(4, "big") for i in range(20000)]
    big.load_sorted(key_list, key_list)
    per_key = big.container_bytes() / len(big)
    # Two list slots per key plus node overhead, plus the point-index dict's slots.
    assert 40 <= per_key < 90
    assert big.container_bytes() > small_bytes


# ---------------------------------------------------------------- validate() catches


def leaves_of(tree: BPlusTree) -> list[_Leaf]:
    node = tree._root
    while isinstance(node, _Internal):
        node = node.children[0]
    out = []
    while node is not None:
        out.append(node)
        node = node.next
    return out


def parents_of_leaves(tree: BPlusTree) -> list[_Internal]:
    level = [tree._root]
    while not isinstance(level[0].children[0], _Leaf):
        level = [child for node in level for child in node.children]
    return level


def subtree_keys(node) -> list:
    if isinstance(node, _Leaf):
        return list(node.keys)
    return [k for child in node.children for k in subtree_keys(child)]


def swap_keys_in_a_leaf(tree):
    leaf = next(leaf for leaf in leaves_of(tree) if len(leaf.keys) >= 2)
    leaf.keys[0], leaf.keys[1] = leaf.keys[1], leaf.keys[0]


def break_a_next_link(tree):
    leaves = leaves_of(tree)
    leaves[2].next = leaves[4]


def break_a_prev_link(tree):
    leaves = leaves_of(tree)
    leaves[5].prev = leaves[3]


def link_the_first_leaf_backwards(tree):
    leaves = leaves_of(tree)
    leaves[0].prev = leaves[-1]


def link_the_last_leaf_forwards(tree):
    leaves = leaves_of(tree)
    leaves[-1].next = leaves[0]


def put_a_foreign_object_in_place_of_a_leaf(tree):
    parents_of_leaves(tree)[0].children[0] = object()


def unequal_depth(tree):
    # Replace a subtree by its first leaf: the keys still fit the separators, but that
    # leaf now sits one level higher than the others.
    grandparent = tree._root
    while not isinstance(grandparent.children[0].children[0], _Leaf):
        grandparent = grandparent.children[0]
    grandparent.children[1] = grandparent.children[1].children[0]


def raise_a_separator(tree):
    # Child 1 of the root then holds its smallest key below the separator.
    root = tree._root
    root.keys[0] = subtree_keys(root.children[1])[1]


def lower_a_separator(tree):
    # Child 0 of the root then holds its greatest key at or above the separator.
    root = tree._root
    root.keys[0] = subtree_keys(root.children[0])[-1]


def miscount_len(tree):
    tree._len += 1


def empty_a_leaf(tree):
    leaf = leaves_of(tree)[2]
    leaf.keys.clear()
    leaf.values.clear()


def overfill_the_last_leaf(tree):
    leaf = leaves_of(tree)[-1]
    for i in range(5):
        leaf.keys.append(b"\xff" * (10 + i))
        leaf.values.append(b"")


def drop_a_value(tree):
    leaves_of(tree)[1].values.pop()


def drop_a_child(tree):
    parents_of_leaves(tree)[0].children.pop()


def give_the_root_a_single_child(tree):
    tree._root = _Internal([], [tree._root])


def unsort_internal_keys(tree):
    level = [tree._root]
    while not any(len(node.keys) >= 2 for node in level):
        level = [child for node in level for child in node.children]
    node = next(node for node in level if len(node.keys) >= 2)
    node.keys[0], node.keys[1] = node.keys[1], node.keys[0]


def share_a_child(tree):
    parent = parents_of_leaves(tree)[0]
    parent.children[1] = parent.children[0]


def drop_a_key_from_the_point_index(tree):
    tree._point.pop(next(iter(tree._point)))


def change_a_value_in_the_point_index(tree):
    key = next(iter(tree._point))
    tree._point[key] = b"not the leaf's value"


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (swap_keys_in_a_leaf, "out of order"),
        (break_a_next_link, "next link"),
        (break_a_prev_link, "prev link"),
        (link_the_first_leaf_backwards, "first leaf"),
        (link_the_last_leaf_forwards, "last leaf"),
        (put_a_foreign_object_in_place_of_a_leaf, "unexpected node type"),
        (unequal_depth, "depth"),
        (raise_a_separator, "below its lower separator"),
        (lower_a_separator, "not below its upper separator"),
        (miscount_len, r"len\(\) is"),
        (empty_a_leaf, "fewer than"),
        (overfill_the_last_leaf, "more than"),
        (drop_a_value, "values"),
        (drop_a_child, "children"),
        (give_the_root_a_single_child, "single child"),
        (unsort_internal_keys, "out of order"),
        (share_a_child, "twice|separator"),
        (drop_a_key_from_the_point_index, "point index holds"),
        (change_a_value_in_the_point_index, "point index does not map"),
    ],
)
@pytest.mark.parametrize("order", [3, 4, 5])
def test_validate_detects_a_broken_tree(corrupt, message, order):
    tree = BPlusTree(order)
    for i in random.Random(7).sample(range(10000), 400):
        tree.put(i.to_bytes(2, "big"), b"v")
    assert_detected(tree, corrupt, message)
