"""The benchmarks' data: key and value sizes, and the embedded benchmarks' Workload, every
key, value and operation order of a run made from one seed before any timing. It must
not time or store anything.
"""

from __future__ import annotations

import random
import sys

KEY_SIZE = 16
VALUE_SIZE = 100
# What a store that keeps its own copies holds in key and value objects alone, per key.
KEY_VALUE_OBJECTS = sys.getsizeof(bytes(KEY_SIZE)) + sys.getsizeof(bytes(VALUE_SIZE))
RANGE_LEN = 100
WRITE_FRACTION = 0.10


def sequential_keys(n: int) -> list:
    """Keys 0 .. n-1 in KEY_SIZE bytes of zero-padded decimal: byte order is numeric order."""
    return [b"%016d" % i for i in range(n)]


class Workload:
    """Every key, value and operation order of one run, generated from one seed."""

    def __init__(self, n: int, seed: int):
        rng = random.Random(seed)
        self.n = n
        self.seq_keys = sequential_keys(n)
        filler = bytes(VALUE_SIZE - VALUE_SIZE // 2)
        self.seq_values = [rng.randbytes(VALUE_SIZE // 2) + filler for _ in range(n)]
        order = list(range(n))
        rng.shuffle(order)
        self.rand_keys = [self.seq_keys[i] for i in order]
        self.rand_values = [self.seq_values[i] for i in order]
        self.cold_keys = rng.sample(self.seq_keys, n)
        self.warm_keys = rng.sample(self.seq_keys, n)
        last_start = max(0, n - RANGE_LEN)
        self.range_starts = [self.seq_keys[rng.randint(0, last_start)] for _ in range(max(1, n // RANGE_LEN))]
        self.mix_keys = [self.seq_keys[rng.randrange(n)] for _ in range(n)]
        # None marks a get; a value marks an overwrite with that value.
        self.mix_values = [
            self.seq_values[rng.randrange(n)] if rng.random() < WRITE_FRACTION else None for _ in range(n)
        ]
