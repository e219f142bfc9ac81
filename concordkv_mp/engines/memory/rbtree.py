"""`RedBlackTree`: the "rbtree" in-memory index, an ordered map of bytes keys to bytes values.

Owns only its nodes: a classic red-black tree (CLRS insert and delete, with one black
sentinel node `NIL` per tree standing for every empty child and the root's parent), so
that get, put and remove are O(log n) and ordered scans are a descent plus in-order steps.
It must not touch files, threads or locks (the MemoryEngine wrapping it does all of
that and checks arguments); keys and values arrive as non-empty `bytes` / `bytes`.

Layout: one `_Node` per key with six slots (key, value, left, right, parent, red); the
colour is a bool (`red`), so a node is one fixed-size object (80 bytes on CPython 3.11)
and no per-key tuple or dict exists. Parent pointers make successor / predecessor steps
O(1) amortised without a stack, which is what `range_list` needs to resume cheaply.
Every hot path is a loop; nothing here recurses, so a tree of any size is safe.
"""

from __future__ import annotations

import sys

from concordkv_mp.engines.memory.invariant import InvariantError


class _Node:
    """One key of the tree; `red` False means black."""

    __slots__ = ("key", "left", "parent", "red", "right", "value")

    def __init__(self, key, value, left, right, parent, red):
        self.key = key
        self.value = value
        self.left = left
        self.right = right
        self.parent = parent
        self.red = red


class RedBlackTree:
    """Ordered bytes -> bytes map as a red-black tree with a shared black sentinel."""

    name = "rbtree"
    __slots__ = ("_nil", "_root", "_size")

    def __init__(self):
        # One sentinel per tree, not per module: delete's fix-up writes NIL.parent, and
        # two trees driven by two threads (each under its own engine lock) must not share it.
        nil = _Node(None, None, None, None, None, False)
        self._nil = nil
        self._root = nil
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def get(self, key: bytes) -> bytes | None:
        nil = self._nil
        node = self._root
        while node is not nil:
            node_key = node.key
            if key < node_key:
                node = node.left
            elif node_key < key:
                node = node.right
            else:
                return node.value
        return None

    def put(self, key: bytes, value: bytes) -> bytes | None:
        nil = self._nil
        parent = nil
        node = self._root
        go_left = False
        while node is not nil:
            parent = node
            node_key = node.key
            if key < node_key:
                node = node.left
                go_left = True
            elif node_key < key:
                node = node.right
                go_left = False
            else:
                old = node.value
                node.value = value
                return old
        node = _Node(key, value, nil, nil, parent, True)
        self._size += 1
        if parent is nil:
            node.red = False
            self._root = node
            return None
        if go_left:
            parent.left = node
        else:
            parent.right = node
        # A black parent keeps every invariant: the common case skips the fix-up call.
        if parent.red:
            self._insert_fixup(node)
        return None

    def remove(self, key: bytes) -> bytes | None:
        nil = self._nil
        z = self._root
        while z is not nil:
            node_key = z.key
            if key < node_key:
                z = z.left
            elif node_key < key:
                z = z.right
            else:
                break
        else:
            return None
        # CLRS RB-DELETE: y is the node physically unlinked (z itself, or z's successor
        # moved into z's place); x takes y's position and may be NIL, whose parent field
        # then records where the fix-up has to start.
        removed_black = not z.red
        if z.left is nil:
            x = z.right
            self._transplant(z, x)
        elif z.right is nil:
            x = z.left
            self._transplant(z, x)
        else:
            y = z.right
            while y.left is not nil:
                y = y.left
            removed_black = not y.red
            x = y.right
            if y.parent is z:
                x.parent = y
            else:
                self._transplant(y, x)
                y.right = z.right
                y.right.parent = y
            self._transplant(z, y)
            y.left = z.left
            y.left.parent = y
            y.red = z.red
        if removed_black:
            self._delete_fixup(x)
        # Do not leave the sentinel pointing at a live (or soon removed) node.
        nil.parent = None
        self._size -= 1
        return z.value

    def range_list(
        self, start: bytes | None, end: bytes | None, reverse: bool, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` pairs with start <= key < end, ascending (or descending if
        reverse): one descent to the first (last) node in range, then in-order steps,
        each O(1) amortised, so O(log n + limit)."""
        nil = self._nil
        node = self._root
        out: list[tuple[bytes, bytes]] = []
        if node is nil:
            return out
        append = out.append
        remaining = limit
        if not reverse:
            if start is None:
                while node.left is not nil:
                    node = node.left
            else:
                found = nil
                while node is not nil:
                    if node.key < start:
                        node = node.right
                    else:
                        found = node
                        node = node.left
                node = found
            while node is not nil:
                key = node.key
                if end is not None and key >= end:
                    break
                append((key, node.value))
                remaining -= 1
                if not remaining:
                    break
                step = node.right
                if step is not nil:
                    while step.left is not nil:
                        step = step.left
                    node = step
                else:
                    step = node.parent
                    while step is not nil and node is step.right:
                        node = step
                        step = step.parent
                    node = step
        else:
            if end is None:
                while node.right is not nil:
                    node = node.right
            else:
                found = nil
                while node is not nil:
                    if node.key < end:
                        found = node
                        node = node.right
                    else:
                        node = node.left
                node = found
            while node is not nil:
                key = node.key
                if start is not None and key < start:
                    break
                append((key, node.value))
                remaining -= 1
                if not remaining:
                    break
                step = node.left
                if step is not nil:
                    while step.right is not nil:
                        step = step.right
                    node = step
                else:
                    step = node.parent
                    while step is not nil and node is step.left:
                        node = step
                        step = step.parent
                    node = step
        return out

    def load_sorted(self, keys: list[bytes], values: list[bytes]) -> None:
        """Fill the empty tree from strictly ascending keys in O(n), without rotations.

        The tree is the perfectly balanced one (each node the middle of its range), whose
        empty children all sit on two adjacent levels. If the deepest level is full every
        node is black; otherwise the deepest level is red and the rest black, so a path
        ending one level higher meets the same number of black nodes as one ending at
        the bottom, and a red node's children are all NIL.
        """
        if self._size:
            raise ValueError("load_sorted needs an empty tree")
        if len(keys) != len(values):
            raise ValueError("load_sorted needs as many values as keys")
        count = len(keys)
        if not count:
            return
        nil = self._nil
        deepest = count.bit_length() - 1
        red_depth = -1 if (count + 1) & count == 0 else deepest
        # Explicit stack of pending ranges [lo, hi) with their parent and side: depth
        # ~log2(n), no recursion and no per-level lists.
        mid = count >> 1
        root = _Node(keys[mid], values[mid], nil, nil, nil, red_depth == 0)
        stack = [(0, mid, root, True, 1), (mid + 1, count, root, False, 1)]
        pop = stack.pop
        push = stack.append
        while stack:
            lo, hi, parent, is_left, depth = pop()
            if lo >= hi:
                continue
            mid = (lo + hi) >> 1
            node = _Node(keys[mid], values[mid], nil, nil, parent, depth == red_depth)
            if is_left:
                parent.left = node
            else:
                parent.right = node
            if hi - lo > 1:
                push((lo, mid, node, True, depth + 1))
                push((mid + 1, hi, node, False, depth + 1))
        self._root = root
        self._size = count

    def clear(self) -> None:
        # The dropped nodes form reference cycles (child.parent); the cyclic GC frees them.
        self._root = self._nil
        self._nil.parent = None
        self._size = 0

    def structure_stats(self) -> dict:
        """{"height", "black_height", "nodes"}.

        height: nodes on the longest root-to-leaf path, measured level by level, so O(n)
        (a tree has no cheaper exact way); black_height: black nodes on any root-to-NIL
        path, NIL not counted, read down the left spine in O(log n); nodes: len().
        """
        nil = self._nil
        height = 0
        level = [self._root] if self._root is not nil else []
        while level:
            height += 1
            level = [
                child
                for node in level
                for child in (node.left, node.right)
                if child is not nil
            ]
        black_height = 0
        node = self._root
        while node is not nil:
            if not node.red:
                black_height += 1
            node = node.left
        return {"height": height, "black_height": black_height, "nodes": self._size}

    def container_bytes(self) -> int:
        """sys.getsizeof of the tree object plus every node, the sentinel included. O(1)
        and exact: a `__slots__` node has no dict and a fixed size whatever it holds
        (colours are the shared bool singletons), so it is count * size of one node."""
        return sys.getsizeof(self) + (self._size + 1) * sys.getsizeof(self._nil)

    def validate(self) -> None:
        """Check the sentinel, the root, parent links, strict key order, no red node with
        a red child, one black height on every path, and the size; raise InvariantError
        on the first violation. Iterative in-order walk (stack depth = tree height)."""
        nil = self._nil
        if nil.red:
            raise InvariantError("the NIL sentinel is red")
        if nil.parent is not None:
            raise InvariantError(
                f"the NIL sentinel's parent is left set to {nil.parent.key!r}"
            )
        root = self._root
        if root is nil:
            if self._size:
                raise InvariantError(f"empty tree but len() is {self._size}")
            return
        if root.red:
            raise InvariantError(f"the root {root.key!r} is red")
        if root.parent is not nil:
            raise InvariantError(f"the root {root.key!r} has a parent")
        size = self._size
        expected_black = None
        count = 0
        previous = None
        stack: list[tuple[_Node, int]] = []
        node = root
        blacks = 0
        while True:
            while node is not nil:
                blacks += not node.red
                for child in (node.left, node.right):
                    if child is nil:
                        if expected_black is None:
                            expected_black = blacks
                        elif blacks != expected_black:
                            raise InvariantError(
                                f"black height {blacks} on a path ending at {node.key!r}, "
                                f"{expected_black} elsewhere"
                            )
                    else:
                        # Checked before descending, so a cycle cannot make the walk loop.
                        if child.parent is not node:
                            raise InvariantError(
                                f"{child.key!r} is a child of {node.key!r} but its parent "
                                f"link points elsewhere"
                            )
                        if node.red and child.red:
                            raise InvariantError(
                                f"red node {node.key!r} has a red child {child.key!r}"
                            )
                stack.append((node, blacks))
                node = node.left
            if not stack:
                break
            node, blacks = stack.pop()
            key = node.key
            if previous is not None and not previous < key:
                raise InvariantError(f"keys out of order: {previous!r} then {key!r}")
            previous = key
            count += 1
            if count > size:
                raise InvariantError(f"more nodes than len() = {size}")
            node = node.right
        if count != size:
            raise InvariantError(f"{count} nodes but len() is {size}")

    def _insert_fixup(self, node: _Node) -> None:
        """CLRS RB-INSERT-FIXUP: `node` is red with a red parent; recolour upward while
        the uncle is red, then at most two rotations end it."""
        parent = node.parent
        while parent.red:
            grand = parent.parent
            if parent is grand.left:
                uncle = grand.right
                if uncle.red:
                    parent.red = False
                    uncle.red = False
                    grand.red = True
                    node = grand
                else:
                    if node is parent.right:
                        node = parent
                        self._rotate_left(node)
                        parent = node.parent
                    parent.red = False
                    grand.red = True
                    self._rotate_right(grand)
            else:
                uncle = grand.left
                if uncle.red:
                    parent.red = False
                    uncle.red = False
                    grand.red = True
                    node = grand
                else:
                    if node is parent.left:
                        node = parent
                        self._rotate_right(node)
                        parent = node.parent
                    parent.red = False
                    grand.red = True
                    self._rotate_left(grand)
            parent = node.parent
        self._root.red = False

    def _delete_fixup(self, x: _Node) -> None:
        """CLRS RB-DELETE-FIXUP: `x` (possibly NIL) carries an extra black; push it up
        while the sibling's side is all black, else end with at most three rotations."""
        while x is not self._root and not x.red:
            parent = x.parent
            if x is parent.left:
                sibling = parent.right
                if sibling.red:
                    sibling.red = False
                    parent.red = True
                    self._rotate_left(parent)
                    sibling = parent.right
                if not sibling.left.red and not sibling.right.red:
                    sibling.red = True
                    x = parent
                else:
                    if not sibling.right.red:
                        sibling.left.red = False
                        sibling.red = True
                        self._rotate_right(sibling)
                        sibling = parent.right
                    sibling.red = parent.red
                    parent.red = False
                    sibling.right.red = False
                    self._rotate_left(parent)
                    x = self._root
            else:
                sibling = parent.left
                if sibling.red:
                    sibling.red = False
                    parent.red = True
                    self._rotate_right(parent)
                    sibling = parent.left
                if not sibling.right.red and not sibling.left.red:
                    sibling.red = True
                    x = parent
                else:
                    if not sibling.left.red:
                        sibling.right.red = False
                        sibling.red = True
                        self._rotate_left(sibling)
                        sibling = parent.left
                    sibling.red = parent.red
                    parent.red = False
                    sibling.left.red = False
                    self._rotate_right(parent)
                    x = self._root
        x.red = False

    def _transplant(self, old: _Node, new: _Node) -> None:
        """Put `new` (possibly NIL) where `old` hangs; sets new.parent even on NIL."""
        parent = old.parent
        if parent is self._nil:
            self._root = new
        elif old is parent.left:
            parent.left = new
        else:
            parent.right = new
        new.parent = parent

    def _rotate_left(self, x: _Node) -> None:
        y = x.right
        inner = y.left
        x.right = inner
        if inner is not self._nil:
            inner.parent = x
        self._transplant(x, y)
        y.left = x
        x.parent = y

    def _rotate_right(self, x: _Node) -> None:
        y = x.left
        inner = y.right
        x.left = inner
        if inner is not self._nil:
            inner.parent = x
        self._transplant(x, y)
        y.right = x
        x.parent = y
