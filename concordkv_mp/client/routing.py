"""What both clients learn at connect and how they split work by partition.

`ServerMap` holds the HELLO reply of the front: protocol version, slot ranges,
partition endpoints and limits. `split_keys` / `split_pairs` group a batch by owning
partition, `scatter` puts an mget's replies back in order, and `combine_stats` sums the
partitions' stats. Pure functions over data: no sockets here, so the sync and asyncio
clients share every rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from concordkv_mp.errors import InvalidArgumentError, ProtocolVersionError
from concordkv_mp.ipc import protocol, stream
from concordkv_mp.ipc.protocol import SlotMap

# The probe of partition endpoints at connect decides between talking to partitions
# directly and going through the front.
PROBE_TIMEOUT = 1.0
# A partition that is restarting refuses connections for a moment: the clients retry
# within the call's timeout, waiting this long first and doubling up to the maximum.
RECONNECT_FIRST, RECONNECT_MAX = 0.005, 0.1
# msgpack bytes around a pair (array and two bin headers) and around an mset request.
_PAIR_OVERHEAD = 16
_MESSAGE_OVERHEAD = 256


def checked_timeout(timeout) -> float:
    """A client's call timeout, in seconds, or InvalidArgumentError."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidArgumentError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


@dataclass(frozen=True)
class ServerMap:
    partitions: int
    partition_endpoints: tuple
    partition_local_endpoints: tuple  # Unix sockets on the server's host; None where absent
    server_id: str
    max_key_size: int
    max_value_size: int
    max_batch_keys: int
    max_message_size: int
    scan_page_size: int
    slot_map: SlotMap

    @classmethod
    def from_hello(cls, hello: dict) -> "ServerMap":
        if hello.get("protocol") != protocol.PROTOCOL_VERSION:
            raise ProtocolVersionError(f"server speaks protocol {hello.get('protocol')}, client {protocol.PROTOCOL_VERSION}")
        limits = hello["limits"]
        slot_map = SlotMap(hello["partitions"])
        if [list(r) for r in slot_map.ranges] != [list(r) for r in hello["slot_ranges"]]:
            raise ProtocolVersionError("the server's slot ranges are not the contiguous split this client knows")
        return cls(
            partitions=hello["partitions"],
            partition_endpoints=tuple(hello["partition_endpoints"]),
            partition_local_endpoints=tuple(hello["partition_local_endpoints"]),
            server_id=hello["server_id"],
            max_key_size=limits["max_key_size"],
            max_value_size=limits["max_value_size"],
            max_batch_keys=limits["max_batch_keys"],
            max_message_size=limits["max_message_size"],
            scan_page_size=limits["scan_page_size"],
            slot_map=slot_map,
        )

    def is_ours(self, hello) -> bool:
        """Whether a partition's HELLO reply comes from this server (not a namesake)."""
        return isinstance(hello, dict) and hello.get("server_id") == self.server_id

    def local_endpoint(self, partition: int) -> str | None:
        """The partition's Unix socket if its file is on this host, else None. The caller
        must still check the server id it answers with: another server could have a run
        directory of the same name."""
        local = self.partition_local_endpoints[partition]
        return local if local is not None and os.path.exists(stream.address_of(local)[1]) else None

    def split_keys(self, keys: list[bytes]) -> list[tuple[int, list[int], list[bytes]]]:
        """[(partition, positions in `keys`, those keys)], each chunk ≤ max_batch_keys."""
        chunks = []
        step = self.max_batch_keys
        for partition, positions in self.slot_map.group(keys).items():
            for first in range(0, len(positions), step):
                part = positions[first : first + step]
                chunks.append((partition, part, [keys[i] for i in part]))
        return chunks

    def split_pairs(self, pairs: list[tuple[bytes, bytes]]) -> list[tuple[int, list]]:
        """[(partition, [[key, value], ...])]: each chunk holds at most max_batch_keys
        pairs and fits in one message (max_message_size), so large values never make
        the server drop the connection.

        An mset is atomic within a partition's chunk, not across partitions or chunks.
        """
        groups = self.slot_map.group([key for key, _ in pairs])
        chunks = []
        step, budget = self.max_batch_keys, self.max_message_size - _MESSAGE_OVERHEAD
        for partition, positions in groups.items():
            chunk: list = []
            size = 0
            for i in positions:
                pair = pairs[i]
                cost = len(pair[0]) + len(pair[1]) + _PAIR_OVERHEAD
                if chunk and (len(chunk) == step or size + cost > budget):
                    chunks.append((partition, chunk))
                    chunk, size = [], 0
                chunk.append(pair)
                size += cost
            chunks.append((partition, chunk))
        return chunks


def scatter(chunks, replies, count: int) -> list:
    """The values of `split_keys` chunks' replies, back in the order of the keys asked."""
    values: list = [None] * count
    for (_, positions, _), chunk_values in zip(chunks, replies):
        for position, value in zip(positions, chunk_values):
            values[position] = value
    return values


def combine_stats(per_partition: list[dict]) -> dict:
    """A client's `stats()`: every partition's engine stats and the total count."""
    return {"partitions": per_partition, "count": sum(stats.get("count", 0) for stats in per_partition)}
