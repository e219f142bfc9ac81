"""What every server child process does first: die with the supervisor, and turn
SIGTERM into a stop flag its loop polls; and how it tells the supervisor it is ready
(a byte on a pipe the supervisor made for this incarnation: a child that dies before
it is ready is in a crash loop and restarted with backoff, one that dies later at once).

SIGINT is ignored in children: Ctrl-C reaches the whole foreground process group, and
the shutdown order (front, partitions, I/O optimizer, pool) is the supervisor's to run.
This module owns process-level setup only; it must not know what a child does.
"""

from __future__ import annotations

import os
import signal

from concordkv_mp.workers.owner import die_with_owner


_ready_fd: int | None = None


def run_child(ready_fd: int, target, args) -> None:
    """Entry of every forked child: remember the readiness pipe, run `target(*args)`."""
    global _ready_fd
    _ready_fd = ready_fd
    target(*args)


def announce_ready() -> None:
    """Tell the supervisor this child finished starting (once; later calls do nothing)."""
    global _ready_fd
    if _ready_fd is not None:
        fd, _ready_fd = _ready_fd, None
        os.write(fd, b"r")
        os.close(fd)


def become_child(supervisor_pid: int):
    """Set up a freshly forked child; returns `stop()`, true once SIGTERM arrived."""
    # The kernel SIGKILLs the child if the supervisor dies: nothing acknowledged lives
    # only in a child (WAL bytes are in the shared ring or the files), and a restarted
    # server drains what the rings still hold.
    die_with_owner(supervisor_pid)
    stopping = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    return lambda: bool(stopping)


def exit_child(code: int = 0) -> None:
    """Leave without running the parent's atexit handlers or flushing its stdio copies."""
    os._exit(code)
