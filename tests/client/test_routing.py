"""The clients' batch splitting (client/routing.py) against its rules: every pair kept,
in order within its partition, each chunk within the key count and the message size."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from concordkv_mp.client.routing import ServerMap
from concordkv_mp.ipc.protocol import SlotMap


def server_map(partitions: int, max_batch_keys: int, max_message_size: int) -> ServerMap:
    return ServerMap(
        partitions=partitions,
        partition_endpoints=(),
        partition_local_endpoints=(),
        server_id="test",
        max_key_size=64,
        max_value_size=4096,
        max_batch_keys=max_batch_keys,
        max_message_size=max_message_size,
        scan_page_size=100,
        slot_map=SlotMap(partitions),
    )


pair_lists = st.lists(st.tuples(st.binary(min_size=1, max_size=64), st.binary(max_size=4096)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(pairs=pair_lists, partitions=st.integers(1, 4), step=st.integers(1, 50), size=st.integers(4096 + 512, 40_000))
def test_split_pairs_keeps_every_pair_in_bounded_chunks(pairs, partitions, step, size):
    routing = server_map(partitions, step, size)
    chunks = routing.split_pairs(pairs)
    by_partition: dict[int, list] = {}
    for partition, chunk in chunks:
        assert 1 <= len(chunk) <= step
        request = msgpack.packb([2**63, "mset", partition, chunk], use_bin_type=True)
        assert len(request) <= size
        assert all(routing.slot_map.partition_of(key) == partition for key, _ in chunk)
        by_partition.setdefault(partition, []).extend(chunk)
    expected: dict[int, list] = {}
    for pair in pairs:
        expected.setdefault(routing.slot_map.partition_of(pair[0]), []).append(pair)
    assert by_partition == expected
