"""Processes: the compaction worker and the executors that hand it an LSM engine's
background steps (engines/lsm/executor.py's interface, injected by the engine's caller),
and the server's actors (supervisor, front, partitions, I/O optimizer, compaction pool).
Modules here may import the engines; the engines must never import them."""
