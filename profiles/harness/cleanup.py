"""The removal of what a run makes: its own directory under --tmpdir, removed however the
run ends. It must not start anything itself.
"""

from __future__ import annotations

import contextlib
import shutil
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
