"""The processes of `concordkv serve`, and what each runs:

- `supervisor` lays out the run, forks every child, restarts the ones that die and
  shuts them down in order; `daemon` runs it in the foreground or detached (pid file,
  log file, `concordkv stop`); `lifecycle` is what every child does first;
  `process_table` records who runs as which pid;
- `front` is the public ZeroMQ endpoint: it routes requests and answers the
  server-wide operations;
- `partition` is one partition's process loop (plain I/O) around `partition_core`
  (the operations over its Database, without sockets) and `reply_hold` (when a write's
  reply may go);
- `io_optimizer` writes and syncs every partition's WAL from its shared-memory ring;
- `compaction_pool` runs the LSM engines' flushes and compactions for all partitions.

The server may import the engines, the database, the wire protocol and the workers;
nothing here may import the clients.
"""
