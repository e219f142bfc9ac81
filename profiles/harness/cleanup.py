"""The removal of everything a script starts or makes: the run's own directory under
--tmpdir, removed however the run ends; for the server scripts an ExitStack that undoes
what is started on it, also on Ctrl-C or SIGTERM, and the exit status of a script so
stopped. It must not start anything itself.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
from pathlib import Path


@contextlib.contextmanager
def run_directory(prefix: str, tmpdir: str):
    """A fresh directory under `tmpdir`, removed with all in it at the end."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=tmpdir))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def interrupted(signum, frame):
    """SIGTERM takes the way out of Ctrl-C, through every cleanup of the ExitStack."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def cleanup_scope(prefix: str, tmpdir: str):
    """(stack, root): an ExitStack that undoes what is started on it and then removes
    `root`, a run_directory, also on Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, interrupted)
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(run_directory(prefix, tmpdir))
        yield stack, root


def run_script(main) -> None:
    """Exit with main()'s status, or with 130 on Ctrl-C or SIGTERM."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # cleanup_scope has stopped and removed everything by now
        print("interrupted", file=sys.stderr)
        sys.exit(130)
