"""`ScanMerge`: a client scan over every partition, merged in key order, without I/O.

Each partition serves its share of the range from a cursor of its own, a page at a time,
in key order (descending for a reverse scan), and partitions own disjoint keys. A pair
can be given out once no page still to come can hold a key before it: up to the
nearest of the last keys of the current pages whose cursors are still open. So the
merge goes in rounds, which the sync and asyncio clients drive alike:

    merge = ScanMerge(channel_of, first_replies, reverse, page, limit)
    while True:
        pairs = merge.take()             # give them out
        requests = merge.next_pages()    # [] when the scan is over
        if not requests: break
        merge.feed(send_all(requests))   # the replies, in the order of the requests
    send_all(merge.close_requests())     # cursors left open by a limit or an early stop

Each round fetches every page it needs at once. Owns the merge and the cursors' state;
the clients own the sending.
"""

from __future__ import annotations

import heapq
from operator import itemgetter

_KEY = itemgetter(0)


class ScanMerge:
    def __init__(self, channel_of, firsts: list, reverse: bool, page: int, limit: int | None):
        """`channel_of(p)` reaches partition p now (a closed client's channels refuse);
        `firsts[p]` is its reply to `scan`."""
        self._channel_of = channel_of
        self._reverse = reverse
        self._page = page
        self._left = limit
        self.cursors = [reply[0] for reply in firsts]
        self._pages = [reply[1] for reply in firsts]
        self._asked: list[int] = []

    def take(self) -> list:
        """The (key, value) pairs that can be given out now, in key order (within the
        limit)."""
        pages, cursors, reverse = self._pages, self.cursors, self._reverse
        bound = None
        for p, cursor in enumerate(cursors):
            if cursor is None:
                continue
            if not pages[p]:
                return []  # its next page first
            last = pages[p][-1][0]
            if bound is None or (last > bound if reverse else last < bound):
                bound = last
        runs = []
        for p, page in enumerate(pages):
            within = len(page) if bound is None else _prefix_within(page, bound, reverse)
            if within:
                runs.append(page[:within])
                pages[p] = page[within:]
        merged = runs[0] if len(runs) == 1 else heapq.merge(*runs, key=_KEY, reverse=reverse)
        pairs = list(map(tuple, merged))  # msgpack gives [key, value] lists
        if self._left is not None:
            pairs = pairs[: self._left]
            self._left -= len(pairs)
        return pairs

    def next_pages(self) -> list:
        """The `scan_next` requests the next round needs, as (channel, request); [] once
        the scan is over (every cursor done, or the limit reached)."""
        if self._left == 0:
            self._asked = []
        else:
            self._asked = [p for p, cursor in enumerate(self.cursors) if cursor is not None and not self._pages[p]]
        return [(self._channel_of(p), ("scan_next", p, self.cursors[p], self._page)) for p in self._asked]

    def feed(self, replies: list) -> None:
        """The replies to the last `next_pages()`, in its order."""
        for p, (cursor, items) in zip(self._asked, replies):
            self.cursors[p] = cursor
            self._pages[p] = items

    def close_requests(self) -> list:
        """`scan_close` for every cursor still open, as (channel, request): the server
        frees its snapshot now instead of when the cursor expires."""
        channel_of = self._channel_of
        return [(channel_of(p), ("scan_close", p, cursor)) for p, cursor in enumerate(self.cursors) if cursor is not None]


def _prefix_within(page: list, bound: bytes, reverse: bool) -> int:
    """How many of `page`'s pairs, from its start, come no later than `bound`."""
    low, high = 0, len(page)
    while low < high:
        middle = (low + high) // 2
        key = page[middle][0]
        if (key >= bound) if reverse else (key <= bound):
            low = middle + 1
        else:
            high = middle
    return low
