"""The benchmark harness that the scripts in profiles/ share: stores, workloads, timing,
servers and reports. It must not import a script, nor measure anything on import.

Importing any part of it puts this checkout first on sys.path, so that a script measures
the concordkv_mp beside it, not an installed copy: a script imports the harness before
concordkv_mp.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
