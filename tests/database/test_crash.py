"""Crash safety of every engine: SIGKILL at random moments, check an expected state.

The idea of RocksDB's crash test: a child process (tests/support/crash_child.py) does random
set / overwrite / delete / mset operations with fsync="always" and tiny MemTable and level
sizes (so flushes and compactions run all the time), logging "BEGIN op" before each call and
"ACK op" after it returned. The parent kills it with SIGKILL at a random moment (some rounds
while it is still opening and recovering), replays the log it read into a dict model, opens
the database itself and checks:

* every acknowledged operation holds: no lost write, no deleted key come back, and no value
  that was never written (each value encodes its key and a unique counter);
* only the one operation in flight may be applied or not, and an mset all or nothing;
* count() and a full scan agree with the model.

Then the next child continues on the same, growing database; over 40 rounds (LSM) the data
also reaches level 1 or deeper, which the test checks so that compaction was really
exercised. The in-memory engines (20 rounds each) snapshot every 4 KiB of WAL, so kills
land during snapshots too; the test checks that recovery did start from snapshots.
Set CKV_CRASH_SEED to replay a failing run (the seed is in every failure message).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import signal
import sys
import time
from pathlib import Path

import concordkv_mp
from concordkv_mp.errors import DatabaseLockedError
from tests.support.crash_child import KEY_SPACE, value_for
from tests.support.engine_options import tiny_options

ROUNDS = {"lsm": 40, "btree": 20, "rbtree": 20, "hash": 20, "array": 20}
# Acknowledged operations a child does at least before a kill that is not an early one.
MIN_ACKS = 30
CHILD = Path(__file__).parents[1] / "support" / "crash_child.py"
REPO_ROOT = Path(__file__).parents[2]


def read_log(path: Path) -> tuple[list, bool]:
    """The whole lines of the child's log as events, and whether it reported READY."""
    text = path.read_text() if path.exists() else ""
    events, ready = [], False
    for line in text.split("\n")[:-1]:  # the part after the last newline is not a whole line
        if line == "READY":
            ready = True
        elif line.startswith("BEGIN "):
            events.append(("begin", json.loads(line[len("BEGIN ") :])))
        elif line.startswith("ACK "):
            events.append(("ack", int(line[len("ACK ") :])))
        else:
            raise AssertionError(f"unexpected line in {path}: {line!r}")
    return events, ready


def apply(model: dict, op: dict) -> dict:
    after = dict(model)
    for key, counter in op["pairs"]:
        if counter is None:
            after.pop(key, None)
        else:
            after[key] = counter
    return after


def describe(value) -> str:
    """A stored value as "key|counter" for readable failure messages."""
    if value is None:
        return "missing"
    key, counter, _ = value.split(b"|", 2)
    return f"{key.decode()}|{int(counter)}"


def kill_session(pid: int) -> None:
    """SIGKILL whatever is left in the session the child led (processes the engine may
    have started); the child itself is already dead."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_child(db_path, log_path, err_path, seed, first_counter, options, rng, where) -> int:
    """Start a child, SIGKILL it (only it) at a random moment, and return its pid, which
    is also the id of its session."""
    # The child imports concordkv_mp the way this process did (PYTHONPATH first, then the
    # repository root, as for an uninstalled checkout).
    python_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] + [str(REPO_ROOT)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path))
    with open(err_path, "wb") as err:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(db_path), str(log_path), str(seed), str(first_counter), json.dumps(options)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    try:
        if rng.random() < 0.2:
            # Kill early, often while the child is still opening: recovery must be safe to
            # interrupt too.
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            # Kill once the child has done some work (a number of acknowledged operations,
            # not a time: on a loaded machine fsyncs are slower), at a random moment after.
            wanted = rng.randint(MIN_ACKS, 2 * MIN_ACKS)
            deadline = time.monotonic() + 60
            while True:
                events, ready = read_log(log_path)
                if ready and sum(kind == "ack" for kind, _ in events) >= wanted:
                    break
                assert child.poll() is None, f"{where}: child died:\n{err_path.read_text()}"
                assert time.monotonic() < deadline, f"{where}: child did not open and do {wanted} writes in 60 s"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 1.0))
        assert child.poll() is None, f"{where}: child exited by itself:\n{err_path.read_text()}"
    except BaseException:
        kill_session(child.pid)
        raise
    finally:
        child.kill()
        child.wait()
    return child.pid


def check_database(db_path, options, model: dict, in_flight, where) -> tuple[dict, dict]:
    """Open the database after a crash, check it against the model and return the model
    that holds now (with the in-flight operation applied if it was) and the stats."""
    candidates = [model] if in_flight is None else [model, apply(model, in_flight)]
    try:
        db = concordkv_mp.open(str(db_path), **options)
    except DatabaseLockedError as exc:
        raise AssertionError(f"{where}: the killed owner's lock is still held ({exc})") from exc
    with db:
        got = dict(zip(KEY_SPACE, db.mget(KEY_SPACE)))
        touched = set() if in_flight is None else {key for key, _ in in_flight["pairs"]}
        for key in KEY_SPACE:
            if key in touched:
                continue
            want = model.get(key)
            want_value = None if want is None else value_for(key, want)
            assert got[key] == want_value, (
                f"{where}: key {key}: expected {describe(want_value)}, read {describe(got[key])}"
            )
        # The in-flight operation: all of its keys as before, or all as after.
        now = None
        for candidate in candidates:
            if all(got[key] == (None if candidate.get(key) is None else value_for(key, candidate[key])) for key in touched):
                now = candidate
                break
        assert now is not None, (
            f"{where}: in-flight {in_flight['op']} #{in_flight['id']} is half applied: "
            + ", ".join(
                f"{key}: before {describe(None if model.get(key) is None else value_for(key, model[key]))}, "
                f"read {describe(got[key])}"
                for key in sorted(touched)
            )
        )
        assert db.count() == len(now), f"{where}: count() {db.count()} but {len(now)} live keys"
        expected_items = sorted((key.encode(), value_for(key, c)) for key, c in now.items())
        assert list(db.scan()) == expected_items, f"{where}: full scan differs from mget"
        stats = db.stats()
    return now, stats


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path, engine):
    seed = int(os.environ.get("CKV_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    options = tiny_options(engine, "always")
    db_path = tmp_path / "db"
    model: dict[str, int] = {}  # key -> counter of its value
    first_counter = 1
    acknowledged = 0
    snapshots_recovered = 0
    for round_ in range(ROUNDS[engine]):
        where = f"seed {seed}, round {round_}"
        log_path = tmp_path / f"child{round_}.log"
        pid = run_child(db_path, log_path, tmp_path / f"child{round_}.err", rng.randrange(1 << 30),
                        first_counter, options, rng, where)
        events, _ = read_log(log_path)
        in_flight = None
        for kind, event in events:
            if kind == "begin":
                assert in_flight is None, f"{where}: two operations in flight"
                in_flight = event
                first_counter = max(first_counter, event["id"] + len(event["pairs"]))
            else:
                assert in_flight is not None and in_flight["id"] == event, f"{where}: ACK without BEGIN"
                model = apply(model, in_flight)
                in_flight = None
                acknowledged += 1
        try:
            # Only the owner was killed, as a crash would: a process the engine started and
            # that outlived it must not keep the database locked.
            model, stats = check_database(db_path, options, model, in_flight, where)
            snapshots_recovered += engine != "lsm" and stats["recovery"]["snapshot"] is not None
        finally:
            kill_session(pid)

    # The test is only worth something if the children did real work across flushes and
    # compactions, not just a few writes into one MemTable each time.
    assert acknowledged > 20 * ROUNDS[engine], f"seed {seed}: only {acknowledged} acknowledged operations"
    if engine == "lsm":
        levels = stats["files_per_level"]
        assert sum(levels[1:]) > 0, f"seed {seed}: never compacted below L0: {levels}"
    else:
        assert snapshots_recovered > ROUNDS[engine] // 2, f"seed {seed}: recovered from a snapshot only {snapshots_recovered} times"
