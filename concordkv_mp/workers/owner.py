"""Tying a child process's life to its owner's: the kernel kills the child the moment
its owner dies. Used by the compaction worker and by every server child; it owns that
one system call and must not know what the child does."""

from __future__ import annotations

import ctypes
import os
import signal


def die_with_owner(owner_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the thread that started it exits."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != owner_pid:  # the owner died before prctl took effect
        os._exit(1)
