"""The stores, each one interface with a local implementation (an AWS one per interface later).

- ``files``: the one atomic, durable writer of local files (temp file, fsync, rename);
- ``objects``: the object store (landing zone, tables, archive): atomic puts, checked keys;
- ``state``: the state store: event-id claims, job state, landing index;
- ``deadletter``: rejected records with their reason, and their replay;
- ``sqlite``: the SQLite plumbing the state and dead-letter stores share (WAL, short
  transactions, Arrow <-> rows);
- ``buckets``: hash buckets of Parquet that hold job state and the registry in the object store.

May import ``events`` and ``settings``.
"""
