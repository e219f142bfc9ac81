"""Shared fixtures of the end-to-end suites: option sets that make the LSM engine flush and
compact after a few KiB, and a small opened database in a fresh directory."""

from __future__ import annotations

import pytest

import concordkv_mp
from concordkv_mp.errors import ClosedError

# The smallest sizes the options allow, so that a few hundred writes already fill the
# MemTable, flush several L0 files, and push compactions into L1, L2 and below.
TINY_LSM_OPTIONS = {
    "engine": "lsm",
    "memtable_size": 4096,
    "l0_compaction_trigger": 2,
    "level_base_size": 8192,
    "level_size_ratio": 2,
    "target_file_size": 4096,
    "block_size": 256,
}


@pytest.fixture
def tiny_lsm_options() -> dict:
    """A fresh copy of TINY_LSM_OPTIONS with fsync="none" (tests may change it)."""
    return dict(TINY_LSM_OPTIONS, fsync="none")


@pytest.fixture
def db(tmp_path, tiny_lsm_options):
    """An open database in tmp_path/"db" with tiny LSM sizes; closed after the test
    unless the test closed it already."""
    handle = concordkv_mp.open(str(tmp_path / "db"), **tiny_lsm_options)
    yield handle
    try:
        handle.close()
    except ClosedError:
        pass
