"""Model-based tests of every engine through the public API only.

A hypothesis state machine runs random sequences of set / delete / mset (with duplicate keys)
/ mdelete / update / incr / get / exists / mget / scan (random start, end, prefix, reverse, limit) /
count / flush / compact / close-and-reopen against a plain dict, and checks that every reply
matches the dict. One suite runs against all five engines. Keys come from a small alphabet
(with b"\\x00" and b"\\xff", and keys that are prefixes of others) so that overwrites and
deletes hit existing keys; sizes are the smallest allowed so that LSM flushes and
compactions, in-memory snapshots and B+tree splits and merges (order 3) really happen
during a sequence.
A scan rule writes, flushes and compacts while an iterator is open and checks that the
iterator still shows the state of when it was started.

Deterministic tests check that such a workload really reaches level 1 or deeper (from
stats()["files_per_level"]), that compacting highly compressible values in default-sized
blocks works, scan edge cases, and that a scan's snapshot is taken when scan() is called.
"""

from __future__ import annotations

import itertools
import random
import shutil
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

import concordkv_mp
from concordkv_mp.arguments import INT64_MAX, INT64_MIN
from concordkv_mp.errors import InvalidArgumentError, NotAnIntegerError
from tests.support.engine_options import tiny_options

# Three symbols, words of 1..3 symbols: 39 keys, ordered with 0x00 and 0xff edges, and many
# keys that are prefixes of others (b"a" < b"a\x00" < b"aa" < b"a\xff").
SYMBOLS = [b"\x00", b"a", b"\xff"]
keys = st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3).map(b"".join)
# Scan bounds and prefixes are drawn from the same words so they land on and between keys.
bounds = st.none() | keys
prefixes = st.none() | st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=2).map(b"".join)
# A value is made by the machine from a size: empty values (which must not read as missing),
# short ones, and big ones that fill a 4 KiB MemTable in a handful of writes.
value_sizes = st.sampled_from([0]) | st.integers(1, 16) | st.integers(500, 2500)
# The forms a key may be passed in; str only when the key is valid UTF-8.
key_forms = st.sampled_from(["bytes", "bytearray", "memoryview", "str"])


def as_form(key: bytes, form: str):
    if form == "bytearray":
        return bytearray(key)
    if form == "memoryview":
        return memoryview(key)
    if form == "str":
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            return key
    return key


def model_scan(model: dict, start=None, end=None, prefix=None, reverse=False, limit=None):
    items = sorted(
        (k, v)
        for k, v in model.items()
        if (start is None or k >= start)
        and (end is None or k < end)
        and (prefix is None or k.startswith(prefix))
    )
    if reverse:
        items.reverse()
    return items if limit is None else items[:limit]


class ModelMachine(RuleBasedStateMachine):
    """One database in its own directory, mirrored by `self.model` (bytes -> bytes)."""

    def __init__(self, path, options):
        super().__init__()
        self.path = path
        self.options = options
        self.model: dict[bytes, bytes] = {}
        self.counter = 0
        self.db = self.open_db()

    def open_db(self):
        """The handle under test (tests/server runs the same machine through a client)."""
        return concordkv_mp.open(str(self.path), **self.options)

    def teardown(self):
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def make_value(self, size: int) -> bytes:
        # Unique per write (but for the empty value), so a stale version can never pass for
        # the current one.
        if size == 0:
            return b""
        # Half of the values are incompressible, or LZ4 would shrink every table to a few
        # bytes and the data would never leave L0/L1.
        self.counter += 1
        stamp = b"v%d." % self.counter
        filler = random.Random(self.counter).randbytes(size) if self.counter % 2 else b"x" * size
        return (stamp + filler)[: max(size, len(stamp))]

    # -- writes -----------------------------------------------------------------------

    @rule(key=keys, size=value_sizes, form=key_forms)
    def set(self, key, size, form):
        value = self.make_value(size)
        self.db.set(as_form(key, form), value)
        self.model[key] = value

    @rule(batch=st.lists(st.tuples(keys, st.integers(500, 2500)), min_size=5, max_size=30))
    def set_many(self, batch):
        # Enough bytes for several MemTable flushes in one step, so that compactions into
        # L1 and deeper happen within a short sequence.
        for key, size in batch:
            value = self.make_value(size)
            self.db.set(key, value)
            self.model[key] = value

    @rule(key=keys, form=key_forms)
    def delete(self, key, form):
        assert self.db.delete(as_form(key, form)) == (key in self.model)
        self.model.pop(key, None)

    @rule(key=keys, size=value_sizes)
    def update(self, key, size):
        value = self.make_value(size)
        existed = key in self.model
        assert self.db.update(key, value) == existed
        if existed:
            self.model[key] = value

    @rule(batch=st.lists(st.tuples(keys, value_sizes), min_size=1, max_size=12), as_dict=st.booleans())
    def mset(self, batch, as_dict):
        # A list usually repeats keys (39 possible keys): the last pair of a key must win.
        pairs = [(key, self.make_value(size)) for key, size in batch]
        self.db.mset(dict(pairs) if as_dict else pairs)
        self.model.update(pairs)

    @rule(key=keys, by=st.integers(-3, 3) | st.sampled_from([INT64_MAX, INT64_MIN]), form=key_forms,
          counter=st.none() | st.integers(INT64_MIN, INT64_MAX))
    def incr(self, key, by, form, counter):
        if counter is not None:  # a counter already there, near the edges sometimes
            self.db.set(key, b"%d" % counter)
            self.model[key] = b"%d" % counter
        old = self.model.get(key, b"0")
        # A counter is a value that is its own decimal form (no "+", "-0", "01", " 1").
        try:
            current = int(old) if b"%d" % int(old) == old else None
        except ValueError:
            current = None
        if current is None:
            with pytest.raises(NotAnIntegerError):
                self.db.incr(as_form(key, form), by)
        elif not INT64_MIN <= current + by <= INT64_MAX:
            with pytest.raises(InvalidArgumentError) as raised:
                self.db.incr(as_form(key, form), by)
            assert raised.value.code == "INVALID_ARGUMENT"
        else:
            assert self.db.incr(as_form(key, form), by) == current + by
            self.model[key] = b"%d" % (current + by)

    @rule(batch=st.lists(keys, min_size=1, max_size=8, unique=True))
    def mdelete(self, batch):
        assert self.db.mdelete(batch) == sum(key in self.model for key in batch)
        for key in batch:
            self.model.pop(key, None)

    # -- reads ------------------------------------------------------------------------

    @rule(key=keys, form=key_forms)
    def get(self, key, form):
        assert self.db.get(as_form(key, form)) == self.model.get(key)

    @rule(key=keys, form=key_forms)
    def exists(self, key, form):
        assert self.db.exists(as_form(key, form)) is (key in self.model)

    @rule(batch=st.lists(keys, max_size=10))
    def mget(self, batch):
        assert self.db.mget(batch) == [self.model.get(key) for key in batch]

    @rule(
        start=bounds,
        end=bounds,
        prefix=prefixes,
        reverse=st.booleans(),
        limit=st.none() | st.integers(1, 10),
    )
    def scan(self, start, end, prefix, reverse, limit):
        got = list(self.db.scan(start=start, end=end, prefix=prefix, reverse=reverse, limit=limit))
        assert got == model_scan(self.model, start, end, prefix, reverse, limit)

    @rule()
    def count(self):
        assert self.db.count() == len(self.model)

    @rule(
        consumed=st.integers(1, 5),
        reverse=st.booleans(),
        writes=st.lists(st.tuples(keys, st.none() | value_sizes), min_size=1, max_size=12),
        maintenance=st.sampled_from([None, "flush", "compact"]),
    )
    def scan_while_writing(self, consumed, reverse, writes, maintenance):
        """An iterator shows the state when it was started, whatever happens meanwhile."""
        expected = model_scan(self.model, reverse=reverse)
        iterator = self.db.scan(reverse=reverse)
        got = list(itertools.islice(iterator, consumed))
        for key, size in writes:
            if size is None:
                self.db.delete(key)
                self.model.pop(key, None)
            else:
                value = self.make_value(size)
                self.db.set(key, value)
                self.model[key] = value
        if maintenance == "flush":
            self.db.flush()
        elif maintenance == "compact":
            self.db.compact()
        got.extend(iterator)
        assert got == expected

    # -- maintenance ------------------------------------------------------------------

    @rule()
    def flush(self):
        self.db.flush()

    @rule()
    def compact(self):
        self.db.compact()

    @rule()
    def reopen(self):
        self.db.close()
        self.db = self.open_db()


def run_model(tmp_path, options, max_examples, steps):
    runs = itertools.count()
    run_state_machine_as_test(
        lambda: ModelMachine(tmp_path / f"run{next(runs)}", options),
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


def test_model_fsync_none(tmp_path, engine):
    run_model(tmp_path, tiny_options(engine), max_examples=60 if engine == "lsm" else 30, steps=80)


def test_model_fsync_always(tmp_path, engine):
    run_model(tmp_path, tiny_options(engine, "always"), max_examples=20 if engine == "lsm" else 12, steps=60)


def test_model_lz4_off_and_tiny_cache(tmp_path, tiny_lsm_options):
    # Uncompressed blocks and a block cache too small to hold anything.
    options = dict(tiny_lsm_options, compression="none", cache_size=0)
    run_model(tmp_path, options, max_examples=20, steps=60)


def test_model_default_block_size_lz4(tmp_path, tiny_lsm_options):
    # 4 KiB blocks of LZ4-compressible values in 4 KiB files: a file holds few, highly
    # compressed blocks, so size estimates made before compression are far off.
    run_model(tmp_path, dict(tiny_lsm_options, block_size=4096), max_examples=15, steps=60)


# -- deterministic checks -------------------------------------------------------------


def wait_for(condition, timeout=30.0):
    """Compaction may run in the background: poll until `condition()` or the timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def files_below_l0(db) -> int:
    return sum(db.stats()["files_per_level"][1:])


def test_workload_reaches_level_1_and_survives_reopen(tmp_path, tiny_lsm_options):
    path = str(tmp_path / "db")
    n = 3000
    # Keys in a scrambled order, so compactions merge overlapping files; every key written
    # twice and every third one deleted, so compaction must drop old versions and tombstones.
    order = [(i * 7919) % n for i in range(n)]
    expected = {}
    with concordkv_mp.open(path, **tiny_lsm_options) as db:
        for round_ in (1, 2):
            for i in order:
                key = b"key%05d" % i
                value = b"round%d-%05d-" % (round_, i) + b"p" * (i % 50)
                db.set(key, value)
                expected[key] = value
        for i in range(0, n, 3):
            assert db.delete(b"key%05d" % i)
            del expected[b"key%05d" % i]
        db.flush()
        levels = db.stats()["files_per_level"]
        assert len(levels) == 7
        assert wait_for(lambda: files_below_l0(db) > 0), db.stats()["files_per_level"]
        assert db.count() == len(expected)
        assert list(db.scan()) == sorted(expected.items())
        db.compact()
        assert files_below_l0(db) > 0
        assert list(db.scan(reverse=True)) == sorted(expected.items(), reverse=True)

    with concordkv_mp.open(path, **tiny_lsm_options) as db:
        assert files_below_l0(db) > 0
        assert db.count() == len(expected)
        keys_ = [b"key%05d" % i for i in range(n)]
        assert db.mget(keys_) == [expected.get(k) for k in keys_]


def test_compaction_of_highly_compressible_values(tmp_path, tiny_lsm_options):
    # Default 4 KiB blocks and 4 KiB files, values that LZ4 shrinks ~50x, keys in a
    # scrambled order so that compactions merge rather than move: compaction outputs are
    # cut on an estimate that counts the open block uncompressed, so they come out far
    # smaller than target_file_size and more numerous than input bytes suggest.
    options = dict(tiny_lsm_options, block_size=4096)
    expected = {}
    with concordkv_mp.open(str(tmp_path / "db"), **options) as db:
        for i in range(5000):
            key = b"k%05d" % (i * 7919 % 1000)
            expected[key] = b"%d-" % i + b"x" * 200
            db.set(key, expected[key])
        db.flush()
        db.compact()
        assert files_below_l0(db) > 0
        assert db.stats()["background_error"] is None
        assert list(db.scan()) == sorted(expected.items())
    with concordkv_mp.open(str(tmp_path / "db"), **options) as db:
        assert db.count() == len(expected)
        assert db.mget(sorted(expected)) == [expected[k] for k in sorted(expected)]


def test_scan_sees_state_when_scan_is_called_not_when_first_read(db):
    db.mset([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    iterator = db.scan()  # not advanced yet: the snapshot must already be taken
    db.delete(b"a")
    db.set(b"b", b"changed")
    db.set(b"bb", b"new")
    db.flush()
    db.compact()
    assert list(iterator) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert list(db.scan()) == [(b"b", b"changed"), (b"bb", b"new"), (b"c", b"3")]


def test_scan_bounds_edges(db):
    # Hand-picked edges the random scans may miss: start == end, start > end, a prefix
    # ending in 0xff (no simple "next prefix"), limit with reverse.
    model = {b"a": b"1", b"a\xff": b"2", b"a\xff\xff": b"3", b"b": b"4", b"\xff": b"5"}
    db.mset(model)
    db.flush()
    assert list(db.scan(start=b"b", end=b"b")) == []
    assert list(db.scan(start=b"b", end=b"a")) == []
    assert list(db.scan(prefix=b"a\xff")) == [(b"a\xff", b"2"), (b"a\xff\xff", b"3")]
    assert list(db.scan(prefix=b"\xff")) == [(b"\xff", b"5")]
    assert list(db.scan(prefix=b"a", reverse=True, limit=2)) == [(b"a\xff\xff", b"3"), (b"a\xff", b"2")]
    assert list(db.scan(start=b"a\xff", end=b"b", reverse=True)) == [(b"a\xff\xff", b"3"), (b"a\xff", b"2")]
    assert list(db.scan(start=b"a", prefix=b"a\xff", end=b"a\xff\xff")) == [(b"a\xff", b"2")]
