"""In-memory engines (btree, rbtree, hash, array) made durable by one shared journal.

`engine.MemoryEngine` wraps one index and supplies locking, the WAL and snapshots
(`journal`, `snapshot_file`), snapshot-consistent scans (`scan_views`) and stats. An index
(`btree.BPlusTree`, `rbtree.RedBlackTree`, `hash_table.HashTable`,
`sorted_array.SortedArray`) is a pure single-threaded map from bytes keys to bytes values
that must not touch files, threads or locks. Its contract:

    name                         class attribute: the engine name
    len(index)                   number of keys, O(1)
    get(key)                     value or None
    put(key, value)              insert or replace; returns the previous value or None
    remove(key)                  returns the removed value, or None (and no change)
    range_list(start, end, reverse, limit)
                                 up to `limit` pairs with start <= key < end (None:
                                 unbounded), ascending or descending; the engine calls it
                                 in chunks, resuming at last_key + b"\\x00" (forward) or
                                 end = last_key (reverse), with changes in between
    load_sorted(keys, values)    fill an empty index from ascending keys, ideally O(n)
    clear()                      drop everything
    structure_stats()            JSON-able engine-specific figures (height, fill, load...)
    container_bytes()            sys.getsizeof of the structure's own objects, not
                                 counting the key and value bytes objects
    validate()                   check every invariant; raise invariant.InvariantError
    lock_free_get                optional class attribute: True if get() is safe to call
                                 while another thread changes the index
"""
