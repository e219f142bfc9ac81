"""Smoke tests of the server benchmark and the process profiler: each runs end to end as
a subprocess (servers started and stopped for real) and prints what its readers look for.
They check that the scripts work, not how fast anything is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
# Well above what each takes on a loaded 2-core machine (~15 s), well below pytest's timeout.
SCRIPT_TIMEOUT = 120


def run_script(name: str, *arguments: str) -> str:
    done = subprocess.run([sys.executable, str(PROFILES / name), *arguments], capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT, check=False)
    assert done.returncode == 0, f"{name} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_bench_server_quick_prints_every_target_with_a_verdict(tmp_path):
    out = run_script("bench_server.py", "--quick", "--json", str(tmp_path / "results.json"))
    # Without redis-server its three targets read n/a; the raw ZeroMQ one is always measured.
    assert re.search(r"sync GET \(direct TCP\) / raw pyzmq GET\s+\d+\.\d\d\s+>= 0\.8\s+(MET|MISSED)", out), out
    for label in ("sync GET (direct TCP) / redis-py GET", "mget of 1000 / redis-py mget", "mset of 1000 / redis-py mset",
                  "8 clients / redis-server 8 clients"):
        assert re.search(re.escape(label) + r".*\b(MET|MISSED|n/a)\s*$", out, re.MULTILINE), label
    assert re.search(r"sync GET via front / direct TCP\s+\d+\.\d\d", out), out
    assert re.search(r"sync GET direct Unix / direct TCP\s+\d+\.\d\d", out), out
    assert (tmp_path / "results.json").stat().st_size > 0


@pytest.mark.slow
def test_profile_processes_prints_every_server_process(tmp_path):
    out = run_script("profile_processes.py", "--duration", "2", "--no-py-spy", "--tmpdir", str(tmp_path))
    summary = out.split("== Per process over the load ==")[1]
    for role in ("supervisor", "front", "partition 0", "io_optimizer", "compactor 0", "clients"):
        assert re.search(rf"^{role}\s+\d+\s+\d+\s+\d+\.\d\d\s+\d+$", summary, re.MULTILINE), role
    assert re.search(r"^all\s+[\d,]+\s+[\d,]+$", out, re.MULTILINE), out
