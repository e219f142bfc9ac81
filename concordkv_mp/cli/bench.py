"""`concordkv bench`: runs the server benchmark script, profiles/bench_server.py.

The script lives in the source tree, not in the installed package, so this only finds
and starts it (passing the arguments on) or says how to run it; it must not benchmark
anything itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import concordkv_mp

SCRIPT = Path(concordkv_mp.__file__).resolve().parent.parent / "profiles" / "bench_server.py"


def run_bench(arguments: list[str]) -> int:
    if not SCRIPT.is_file():
        print(
            f"{SCRIPT} not found: the benchmark is part of a source checkout of ConcordKV-MP,\n"
            "not of the installed package; in a checkout, run: python profiles/bench_server.py --help",
            file=sys.stderr,
        )
        return 1
    return subprocess.run([sys.executable, str(SCRIPT), *arguments]).returncode
