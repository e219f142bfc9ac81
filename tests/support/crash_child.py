"""Child process of tests/database/test_crash.py: random writes until it is SIGKILLed.

    python crash_child.py DB_PATH LOG_PATH SEED FIRST_COUNTER OPTIONS_JSON

Opens the database with the given options, appends "READY" to LOG_PATH, then loops forever
over random set / delete / mset operations on KEY_SPACE. Around each operation it appends
one line to LOG_PATH, each with a single os.write so that a line is either whole or absent:

    BEGIN {"id": N, "op": "set" | "delete" | "mset", "pairs": [[key, counter or null], ...]}
    ACK N

written just before the call and just after it returned. A pair's counter makes its value
(`value_for`) unique over the whole test; null means "delete". Counters start at
FIRST_COUNTER so that a new child never reuses one from an earlier child. The parent trusts
only the ACK lines it reads.
"""

from __future__ import annotations

import json
import os
import random
import sys

KEY_SPACE = [f"k{i:04d}" for i in range(300)]


def value_for(key: str, counter: int) -> bytes:
    """The only value ever written under (key, counter); 0..299 bytes of padding so that a
    small MemTable fills after a few dozen writes."""
    return f"{key}|{counter}|".encode() + b"#" * ((counter * 37) % 300)


def main(argv) -> None:
    db_path, log_path, seed, counter, options = argv
    rng = random.Random(int(seed))
    counter = int(counter)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(line: str) -> None:
        os.write(log_fd, (line + "\n").encode())

    import concordkv_mp

    db = concordkv_mp.open(db_path, **json.loads(options))
    log("READY")
    while True:
        # The op's id is the first counter it uses; a delete uses one counter and no value.
        op_id = counter
        roll = rng.random()
        if roll < 0.45:
            op, pairs = "set", [[rng.choice(KEY_SPACE), counter]]
        elif roll < 0.65:
            op, pairs = "delete", [[rng.choice(KEY_SPACE), None]]
        else:
            # Drawn from a window of the key space, so a batch often repeats a key.
            low = rng.randrange(len(KEY_SPACE))
            window = KEY_SPACE[low : low + rng.randint(5, 60)]
            op = "mset"
            pairs = [[rng.choice(window), counter + i] for i in range(rng.randint(2, 30))]
        counter += len(pairs)
        log("BEGIN " + json.dumps({"id": op_id, "op": op, "pairs": pairs}))
        if op == "set":
            key, c = pairs[0]
            db.set(key, value_for(key, c))
        elif op == "delete":
            db.delete(pairs[0][0])
        else:
            db.mset([(key, value_for(key, c)) for key, c in pairs])
        log(f"ACK {op_id}")


if __name__ == "__main__":
    main(sys.argv[1:])
