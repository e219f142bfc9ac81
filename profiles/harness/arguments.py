"""The command-line flags that the two embedded benchmarks, bench_engine.py and
engine_matrix.py, share, with one default each. It must not parse: each script owns its
parser and its own flags.
"""

from __future__ import annotations

import argparse
import tempfile


def add_run_arguments(ap: argparse.ArgumentParser, quick_help: str, profile_help: str) -> None:
    """Sizes, store settings, timing, output and profiling, in the order --help shows them."""
    ap.add_argument("--keys", type=int, default=1_000_000, help="number of keys (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--cache-mb", type=int, default=256, help="block/page cache of every store (MiB)")
    ap.add_argument("--memtable-mb", type=int, default=4, help="memtable / write buffer of the LSMs (MiB)")
    ap.add_argument("--phase-seconds", type=float, default=120.0, help="time budget of each phase")
    ap.add_argument("--repeat", type=int, default=1, help="runs per store; each phase reports its fastest")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tmpdir", default=tempfile.gettempdir(), help="where the stores' directories go")
    ap.add_argument("--json", metavar="FILE", help="write all results to FILE")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--profile", action="store_true", help=profile_help)
    ap.add_argument("--profile-top", type=int, default=15)
