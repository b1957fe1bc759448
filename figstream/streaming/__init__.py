"""The streaming path: the vectorised transform and the steps the streaming assets run.

The transform, pure functions over Arrow tables:

- ``tables``: event types and the schema of every table;
- ``parse``: landed JSON lines into valid events and rejected records, exactly as
  ``events.validation`` decides, vectorised;
- ``checks``: the vectorised column checks ``parse`` runs (conservative twins of the event
  models) and the envelope times, through Arrow's timestamp cast;
- ``table_ops``: dedupe, cleaning, cross-board duplicates, job state, search index, stats.

The steps, one module each, over the stores (``stores.Stores``):

- ``landing_index``: which event-time hours of a stream each landed batch touches;
- ``ingest``: ``raw_events``/``board_mergers`` (parse, claim event ids, dead-letter the rest);
- ``cleaning``: ``clean_postings``;
- ``dedupe``: the cross-board dedupe registry and ``deduped_postings``;
- ``jobs``: ``job_state``;
- ``index_export``: the ``search_index`` snapshot;
- ``daily``: ``board_daily_stats`` and end-of-day views of the state;
- ``fragments``, ``bucket_state``, ``stores``: outputs per (hour, batch), the state's buckets,
  hours and the store bundle the steps share.

May import ``ingest``, ``storage``, ``events`` and ``settings``.
"""
