"""Shared fixtures of the end-to-end suites: each engine's name in turn, the tiny LSM
option set (tests/support/engine_options.py), and a small opened database in a fresh
directory."""

from __future__ import annotations

import pytest

import concordkv_mp
from concordkv_mp.errors import ClosedError
from concordkv_mp.options import ENGINES
from tests.support.engine_options import TINY_LSM_OPTIONS


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    """Each engine's name in turn."""
    return request.param


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
