"""In-memory engines (btree, rbtree, hash, array) made durable by one shared journal."""
