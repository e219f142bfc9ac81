"""`ScanMerge` against a model: partitions holding disjoint sorted keys serve pages from
cursors; the merge, driven as the clients drive it, gives every pair once, in key order,
within the limit, fetching each page at most once and closing exactly the cursors left
open."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from concordkv_mp.client.scan_merge import ScanMerge


class FakePartitions:
    """Partition p's keys, served in pages as a partition's scan cursors serve them."""

    def __init__(self, shares: list[list[bytes]], reverse: bool, page: int):
        self.pages = []
        for keys in shares:
            ordered = sorted(keys, reverse=reverse)
            self.pages.append([[[key, b"v" + key] for key in ordered[i : i + page]] for i in range(0, len(ordered), page)])
        self.fetched = 0

    def reply(self, p: int, number: int) -> list:
        """[cursor or None, page]: the cursor names the next page, as the server's do."""
        pages = self.pages[p]
        self.fetched += 1
        page = pages[number] if number < len(pages) else []
        return [number + 1 if number + 1 < len(pages) else None, page]

    def answer(self, requests: list) -> list:
        replies = []
        for channel, (op, p, cursor, _page) in requests:
            assert channel == ("channel", p)
            assert op == "scan_next"
            replies.append(self.reply(p, cursor))
        return replies


@settings(max_examples=300, deadline=None)
@given(
    keys=st.sets(st.binary(min_size=1, max_size=3), max_size=60),
    partitions=st.integers(1, 5),
    page=st.integers(1, 7),
    reverse=st.booleans(),
    limit=st.none() | st.integers(1, 70),
    data=st.data(),
)
def test_merge_gives_every_pair_once_in_order(keys, partitions, page, reverse, limit, data):
    owner = {key: data.draw(st.integers(0, partitions - 1)) for key in sorted(keys)}
    shares = [[key for key, p in owner.items() if p == index] for index in range(partitions)]
    server = FakePartitions(shares, reverse, page)
    merge = ScanMerge(lambda p: ("channel", p), [server.reply(p, 0) for p in range(partitions)], reverse, page, limit)
    out = []
    while True:
        out += merge.take()
        requests = merge.next_pages()
        if not requests:
            break
        merge.feed(server.answer(requests))
    expected = [(key, b"v" + key) for key in sorted(keys, reverse=reverse)]
    assert out == expected[:limit]
    assert server.fetched <= sum(max(1, len(pages)) for pages in server.pages)
    closes = merge.close_requests()
    if limit is None:
        assert closes == []  # every cursor ran out by itself
    for channel, (op, p, cursor) in closes:
        assert op == "scan_close" and channel == ("channel", p)
        assert cursor is not None and cursor < len(server.pages[p])


def test_a_partition_with_an_open_cursor_and_no_page_is_fetched_first():
    merge = ScanMerge(lambda p: p, [[5, []], [None, [[b"a", b"1"]]]], False, 1, None)
    assert merge.take() == []
    assert merge.next_pages() == [(0, ("scan_next", 0, 5, 1))]
    merge.feed([[None, [[b"0", b"0"]]]])
    assert merge.take() == [(b"0", b"0"), (b"a", b"1")]
    assert merge.next_pages() == []
