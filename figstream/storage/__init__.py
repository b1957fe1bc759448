"""The stores, each one interface with a local implementation (an AWS one per interface later).

- ``files``: the one atomic, durable writer of local files (temp file, fsync, rename);
- ``objects``: the object store (landing zone, tables, archive): atomic puts, checked keys;
- ``state``: the state store, the one copy of the state: event-id claims (expiring), job
  rows (conditional writes), board mergers, the dedupe registry, the landing index;
- ``deadletter``: rejected records with their reason, and their replay;
- ``trace`` (``dynamo_trace`` on aws): every delivery of every event by event id, durable
  for 90 days, for ``figstream trace``;
- ``books`` (``dynamo_books`` on aws): per (stream, hour, batch), what ingest did with the
  batch's records, for the ``books`` check and ``figstream books``;
- ``sqlite``: the SQLite plumbing the state and dead-letter stores share (WAL, short
  transactions, Arrow <-> rows);
- ``retention``: which old Dagster runs may be deleted (the rule; ``sensors/run_history`` acts).

May import ``events`` and ``settings``.
"""
