"""The LSM engine's helper processes: `compactor` (the worker process, which runs the
pure flush and compaction steps), `compaction_client` (an engine thread's executor that
hands it those steps: engines/lsm/executor.py's interface, injected by the engine's
caller) and `owner` (a helper dies with its owner). Used by `concordkv_mp.open()` and by
the server's compaction pool. Modules here may import the engines; the engines must
never import them, nor anything of the server."""
