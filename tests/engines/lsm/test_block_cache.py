"""BlockCache: which entry each policy evicts, the byte bound, stats, and thread safety."""

from __future__ import annotations

import random
import threading

import pytest

from concordkv_mp.engines.lsm.block_cache import POLICIES, BlockCache
from concordkv_mp.errors import ConfigError


def fill(cache: BlockCache, keys, charge=10) -> None:
    for key in keys:
        cache.put(key, f"block-{key}", charge)
        cache.for_testing_check()


def test_lru_evicts_least_recently_used():
    cache = BlockCache(30, "lru")
    fill(cache, "abc")
    assert cache.get("a") == "block-a"
    fill(cache, "d")
    assert cache.get("b") is None
    assert {cache.get(k) for k in "acd"} == {"block-a", "block-c", "block-d"}
    fill(cache, "e")  # recency now a, c, d (oldest first)
    assert cache.get("a") is None


def test_fifo_evicts_oldest_insert_even_if_used():
    cache = BlockCache(30, "fifo")
    fill(cache, "abc")
    assert cache.get("a") == "block-a"
    fill(cache, "d")
    assert cache.get("a") is None
    assert cache.get("b") == "block-b"
    fill(cache, "e")
    assert cache.get("b") is None


def test_lfu_evicts_least_frequently_used_then_least_recent():
    cache = BlockCache(30, "lfu")
    fill(cache, "abc")
    for key in "aab":
        cache.get(key)
    fill(cache, "d")  # counts a=3 b=2 c=1
    assert cache.get("c") is None
    fill(cache, "e")  # d and e start at 1; d is the older of the count-1 entries
    assert cache.get("d") is None
    assert cache.get("a") and cache.get("b") and cache.get("e")
    cache.for_testing_check()


def test_lfu_newcomer_is_not_its_own_victim():
    cache = BlockCache(20, "lfu")
    fill(cache, "ab")
    for _ in range(5):
        cache.get("a")
        cache.get("b")
    fill(cache, "c")
    assert cache.get("c") == "block-c"
    assert (cache.get("a") is None) != (cache.get("b") is None)


def test_lfu_after_erasing_the_least_used_bucket():
    cache = BlockCache(30, "lfu")
    fill(cache, "abc")
    cache.get("b")
    cache.get("c")
    cache.get("c")
    cache.erase(["a"])  # the count-1 bucket is gone; next victim is b (count 2)
    fill(cache, "d", charge=20)
    assert cache.get("b") is None
    assert cache.get("c") and cache.get("d")
    cache.for_testing_check()


def test_random_evicts_varied_victims_and_keeps_the_bound():
    victims = set()
    for _ in range(60):
        cache = BlockCache(30, "random")
        fill(cache, "abc")
        fill(cache, "d")
        missing = {k for k in "abc" if cache.get(k) is None}
        assert len(missing) == 1
        assert cache.get("d") == "block-d"
        victims |= missing
    assert victims == {"a", "b", "c"}


@pytest.mark.parametrize("policy", POLICIES)
def test_capacity_bound_holds_under_random_operations(policy):
    rng = random.Random(policy)
    cache = BlockCache(1000, policy)
    model = {}
    for _ in range(3000):
        key = rng.randrange(200)
        if rng.random() < 0.5:
            charge = rng.randrange(1, 120)
            cache.put(key, ("v", key, charge), charge)
            model[key] = ("v", key, charge)
        elif rng.random() < 0.05:
            cache.erase([key])
        else:
            value = cache.get(key)
            assert value is None or value == model[key], "cache returned another key's value"
        cache.for_testing_check()
    stats = cache.stats()
    assert 0 < stats["size_bytes"] <= 1000
    assert stats["evictions"] > 0
    assert stats["policy"] == policy


@pytest.mark.parametrize("policy", POLICIES)
def test_stats_count_hits_misses_evictions(policy):
    cache = BlockCache(25, policy)
    cache.put(1, "one", 10)
    cache.put(2, "two", 10)
    assert cache.get(1) == "one"
    assert cache.get(3) is None
    cache.put(3, "three", 10)  # 30 > 25: one eviction
    stats = cache.stats()
    assert stats == {
        "hits": 1,
        "misses": 1,
        "evictions": 1,
        "size_bytes": 20,
        "capacity_bytes": 25,
        "entries": 2,
        "policy": policy,
    }


@pytest.mark.parametrize("policy", POLICIES)
def test_replacing_a_key_recharges_it(policy):
    cache = BlockCache(100, policy)
    cache.put("k", "old", 40)
    cache.put("k", "new", 70)
    assert cache.get("k") == "new"
    assert cache.stats()["size_bytes"] == 70 and cache.stats()["entries"] == 1
    cache.put("k", "huge", 101)  # larger than the cache: dropped, and the old value with it
    assert cache.get("k") is None
    assert cache.stats()["size_bytes"] == 0
    cache.for_testing_check()


def test_object_larger_than_capacity_is_not_cached_and_evicts_nothing():
    cache = BlockCache(100, "lru")
    cache.put("a", "A", 60)
    cache.put("big", "B", 101)
    assert cache.get("a") == "A" and cache.get("big") is None
    assert cache.stats()["evictions"] == 0


def test_zero_capacity_disables_caching():
    cache = BlockCache(0, "lru")
    cache.put("a", "A", 0)
    cache.put("b", "B", 1)
    assert cache.get("a") is None and cache.get("b") is None
    assert cache.stats()["misses"] == 2 and cache.stats()["entries"] == 0


def test_invalid_arguments():
    with pytest.raises(ConfigError):
        BlockCache(10, "arc")
    with pytest.raises(ConfigError):
        BlockCache(-1)


@pytest.mark.parametrize("policy", POLICIES)
def test_two_threads_hammering_keep_invariants(policy):
    cache = BlockCache(5000, policy)
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(20_000):
                key = rng.randrange(300)
                value = cache.get(key)
                if value is None:
                    cache.put(key, key * 2, 10 + key % 50)
                elif value != key * 2:
                    errors.append((key, value))
        except Exception as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    cache.for_testing_check()
    stats = cache.stats()
    assert stats["hits"] + stats["misses"] == 40_000
