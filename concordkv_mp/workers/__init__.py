"""Worker processes and their owners' handles: today the compaction worker; the server's
actors (supervisor, front, partitions, I/O optimizer) join here."""
