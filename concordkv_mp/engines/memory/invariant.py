"""`InvariantError`: what an index's `validate()` raises when its structure is broken.

Raised only by the structural checks that tests run after random operations; a user
never sees it unless the in-memory structure itself is corrupt (a bug).
"""

from __future__ import annotations


class InvariantError(AssertionError):
    """A structural invariant of an in-memory index does not hold."""
