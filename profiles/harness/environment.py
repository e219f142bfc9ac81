"""What a run runs on, for its record: the machine, the filesystem of its data and the
revision of the checkout under test. It must not measure the stores or the servers.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import psutil

from harness import REPO


def machine() -> dict:
    """The CPU, cores, memory, Python and OS of this machine."""
    cpu = platform.processor()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
    }


def checkout_revision() -> str:
    """The commit of the code under test, and whether concordkv_mp/ differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "concordkv_mp"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes in concordkv_mp/" if dirty else "")


def filesystem_of(path: Path) -> str:
    mounts = [p for p in psutil.disk_partitions(all=True) if str(path).startswith(p.mountpoint)]
    best = max(mounts, key=lambda p: len(p.mountpoint), default=None)
    return f"{best.fstype} ({best.device})" if best else "unknown"


def new_run(root: Path, settings: dict) -> dict:
    """A run's record, before any results: where and what it runs on, and its settings."""
    return {"machine": machine(), "filesystem": filesystem_of(root), "revision": checkout_revision(),
            "settings": settings, "results": {}}
