"""Engine switching: `db.switch_engine(name)` through the public API.

* Property test: random data, random writes between switches, a switch through every
  engine in a random order; after each switch and after reopening, the content equals a
  dict model and the database says which engine it uses.
* Writers in other threads during a switch lose nothing: they wait and go to the new engine.
* SIGKILL during switches (a child switching round and round over 20k keys), and a
  simulated power loss after the Nth write, fsync, directory fsync or rename of a switch
  failed: the database is whole in the old or the new engine, never empty or mixed, and
  no directory of the interrupted switch is left behind.
* Opening with another engine= names switch_engine; a bad name changes nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import concordkv_mp
from concordkv_mp.errors import ClosedError, ConcordKVError, ConfigError
from concordkv_mp.options import ENGINES
from tests.support.engine_options import tiny_options
from tests.support.faulty_fs import FaultInjectionFS

REPO_ROOT = Path(__file__).parents[2]
SMALL_OPTIONS = {"memtable_size": 4096, "snapshot_wal_size": 4096, "btree_order": 4, "l0_compaction_trigger": 2,
                 "target_file_size": 4096, "level_base_size": 8192, "block_size": 256}

keys = st.binary(min_size=1, max_size=6)
values = st.binary(max_size=40)
writes = st.lists(st.tuples(keys, st.none() | values), max_size=30)


def engine_directories(path) -> list[str]:
    return sorted(name for name in os.listdir(path) if name not in ("LOCK", "ENGINE"))


def only_directory_of(path, engine: str) -> bool:
    """True if the only engine directory is one of `engine` (nothing else is left)."""
    directories = engine_directories(path)
    return len(directories) == 1 and directories[0].startswith(engine + "-")


def apply(model: dict, batch) -> None:
    for key, value in batch:
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.dictionaries(keys, values, max_size=300), order=st.permutations(ENGINES),
       between=st.lists(writes, min_size=len(ENGINES), max_size=len(ENGINES)), fsync=st.sampled_from(["none", "always"]))
def test_switching_through_every_engine_never_changes_the_content(tmp_path_factory, initial, order, between, fsync):
    path = str(tmp_path_factory.mktemp("switch"))
    model = dict(initial)
    options = dict(SMALL_OPTIONS, fsync=fsync)
    db = concordkv_mp.open(path, engine=order[-1], **options)
    try:
        db.mset(initial) if initial else None
        for name, batch in zip(order, between):
            db.switch_engine(name)
            assert db.engine == name
            assert list(db.scan()) == sorted(model.items())
            for key, value in batch:
                if value is None:
                    db.delete(key)
                else:
                    db.set(key, value)
            apply(model, batch)
            assert db.count() == len(model)
            assert only_directory_of(path, name)
        db.close()
        db = concordkv_mp.open(path, **options)
        assert db.engine == order[-1]
        assert list(db.scan(reverse=True)) == sorted(model.items(), reverse=True)
    finally:
        db.close()


def test_writers_in_other_threads_wait_for_a_switch_and_lose_nothing(tmp_path):
    with concordkv_mp.open(tmp_path, engine="lsm", fsync="none") as db:
        db.mset({b"base%05d" % i: b"x" * 50 for i in range(20000)})
        acknowledged: list[list[bytes]] = [[] for _ in range(3)]
        stop = threading.Event()

        def writer(n):
            i = 0
            while not stop.is_set():
                key = b"w%d-%06d" % (n, i)
                db.set(key, key)
                acknowledged[n].append(key)
                i += 1

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for name in ("btree", "hash", "rbtree", "array", "lsm"):
            time.sleep(0.05)
            db.switch_engine(name)
        stop.set()
        for thread in threads:
            thread.join()
        written = [key for keys_ in acknowledged for key in keys_]
        assert len(written) > 100
        assert db.mget(written) == written
        assert db.count() == 20000 + len(written)


def test_opening_with_another_engine_names_switch_engine(tmp_path, engine):
    other = "hash" if engine != "hash" else "btree"
    with concordkv_mp.open(tmp_path, **tiny_options(engine)) as db:
        db.set(b"k", b"v")
    with pytest.raises(ConfigError) as caught:
        concordkv_mp.open(tmp_path, engine=other)
    assert caught.value.field == "engine"
    assert "switch_engine" in str(caught.value) and repr(engine) in str(caught.value)
    with concordkv_mp.open(tmp_path) as db:  # no engine=: whatever the database has
        assert db.engine == engine and db.get(b"k") == b"v"


def test_a_bad_engine_name_changes_nothing(tmp_path):
    with concordkv_mp.open(tmp_path, engine="btree") as db:
        db.set(b"k", b"v")
        with pytest.raises(ConfigError) as caught:
            db.switch_engine("skiplist")
        assert caught.value.field == "engine"
        assert db.engine == "btree" and db.get(b"k") == b"v"
        db.switch_engine("btree")  # the engine it has: nothing to do
        assert engine_directories(tmp_path) == ["btree-000001"]


def test_a_scan_open_across_a_switch_fails_clearly(tmp_path):
    with concordkv_mp.open(tmp_path, engine="hash") as db:
        db.mset({b"k%04d" % i: b"v" for i in range(1000)})
        scan = db.scan()
        assert next(scan) == (b"k0000", b"v")
        db.switch_engine("btree")
        with pytest.raises(ClosedError):
            list(scan)
        assert db.count() == 1000


# -- SIGKILL during switches -------------------------------------------------------------

SWITCH_CHILD = """
import json, sys
import concordkv_mp
path, options, order = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
db = concordkv_mp.open(path, **options)
print("READY", db.engine, flush=True)
while True:
    for name in order:
        if name != db.engine:
            print("BEGIN", name, flush=True)
            db.switch_engine(name)
            print("DONE", name, flush=True)
"""


def test_sigkill_during_switches_leaves_one_whole_engine(tmp_path):
    seed = int(os.environ.get("CKV_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    path = str(tmp_path / "db")
    options = {"fsync": "always", "compaction_workers": 0}
    model = {b"key%06d" % i: b"value %d " % i + b"#" * (i % 64) for i in range(20000)}
    with concordkv_mp.open(path, engine="lsm", **options) as db:
        db.mset(model)
    engine = "lsm"
    landed_mid_switch = 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    for round_ in range(10):
        where = f"seed {seed}, round {round_}"
        order = list(ENGINES)
        rng.shuffle(order)
        log = tmp_path / f"child{round_}.log"
        with open(log, "wb") as out:
            child = subprocess.Popen([sys.executable, "-c", SWITCH_CHILD, path, json.dumps(options), json.dumps(order)],
                                     stdout=out, stderr=subprocess.STDOUT, env=env)
            deadline = time.monotonic() + 30
            while b"READY" not in log.read_bytes():
                assert child.poll() is None and time.monotonic() < deadline, f"{where}: {log.read_text()}"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 2.0))
            child.kill()
            child.wait()
        lines = log.read_text().split("\n")[:-1]
        done = [line.split()[1] for line in lines if line.startswith("DONE")]
        begun = [line.split()[1] for line in lines if line.startswith("BEGIN")]
        in_flight = begun[-1] if begun and (not done or len(begun) > len(done)) else None
        expected = {done[-1] if done else engine} | ({in_flight} if in_flight else set())
        with concordkv_mp.open(path, **options) as db:
            assert db.engine in expected, f"{where}: engine {db.engine}, expected one of {expected}"
            assert db.count() == len(model), f"{where}: {db.count()} keys in {db.engine}"
            assert list(db.scan()) == sorted(model.items()), f"{where}: content differs in {db.engine}"
            assert only_directory_of(path, db.engine), f"{where}: {engine_directories(path)}"
            landed_mid_switch += in_flight is not None
            engine = db.engine
    assert landed_mid_switch >= 5, f"seed {seed}: only {landed_mid_switch} kills landed during a switch"


@pytest.mark.parametrize("op", ["write", "sync", "sync_dir", "rename"])
@pytest.mark.parametrize(("source", "target"), [("hash", "lsm"), ("lsm", "btree")])
def test_power_loss_during_a_switch_leaves_one_whole_engine(tmp_path, op, source, target):
    model = {b"key%04d" % i: b"value %d" % i for i in range(3000)}
    outcomes = set()
    # The Nth `op` from the moment the fault is armed: the switch's own, or one of the
    # engines' background threads' (snapshots, flushes), whose share depends on timing.
    # So go on past the switch's own count until a run got through untouched.
    for n in itertools.count(1, 3):
        if n >= 40 and "switched" in outcomes:
            break
        assert n < 400, f"{op}: no switch got through with up to {n} {op}s failing"
        fs = FaultInjectionFS()
        path = str(tmp_path / f"{op}{n}")
        options = {"fsync": "always", "compaction_workers": 0, "memtable_size": 16384, "snapshot_wal_size": 16384}
        db = concordkv_mp.open(path, engine=source, for_testing_fs=fs, **options)
        db.mset(model)
        fs.fail_nth(op, n)
        try:
            db.switch_engine(target)
            outcomes.add("switched")
        except ConcordKVError:
            outcomes.add("failed")
        fs.crash()
        with contextlib.suppress(ConcordKVError):
            db.close()
        fs.revive()
        with concordkv_mp.open(path, **options) as db:
            assert db.engine in (source, target), f"{op} #{n}"
            assert dict(db.scan()) == model, f"{op} #{n}: content differs in {db.engine}"
            assert only_directory_of(path, db.engine), f"{op} #{n}: {engine_directories(path)}"
            outcomes.add(db.engine)
    # Failures before and after the commit point, and switches that completed.
    assert {"failed", "switched", source, target} <= outcomes, outcomes
