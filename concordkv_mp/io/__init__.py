"""I/O below the engines: the file-system seam (`fs`) and the memory-mapped log file
(`mapped_log`). The server's I/O optimizer (WAL rings, batched writes) joins here."""
