"""Where a database keeps its engine's files, for tests that damage or count them."""

from __future__ import annotations

import json
import os


def engine_directory(path) -> str:
    """The directory of the engine the database at `path` uses (its ENGINE file says)."""
    with open(os.path.join(path, "ENGINE"), "rb") as f:
        return os.path.join(path, json.load(f)["directory"])
