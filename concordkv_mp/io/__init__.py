"""I/O below the engines: the file-system seam (`fs`), the memory-mapped log file
(`mapped_log`), OSError translation (`oserrors`) and, for the server, the shared-memory
WAL ring with its producer's and consumer's sides (`wal_ring`) and the FileSystem that
sends a partition's logs through it (`ring_fs`). The process that drains the rings is
server/io_optimizer.py; nothing here knows the engines' file formats."""
