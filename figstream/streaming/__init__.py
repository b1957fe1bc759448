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
- ``dedupe`` (with ``registry``, the original of each dedupe key): ``deduped_postings``;
- ``jobs``: ``job_state``, an hour's events folded into the jobs they touch in the store;
- ``index_export``: ``search_index`` (the hour's index changes) and ``search_index_snapshot``
  (daily, streamed from the store), and the index a consumer builds from them;
- ``daily``: ``board_daily_stats`` and end-of-day (event-time) views of the state;
- ``compaction``, ``replay``: fragments compacted per hour, landing archived per day; a time
  range re-fed into its partitions;
- ``trace``, ``trace_lookup``: each delivery's outcome recorded in the trace index as ingest
  decides it; ``figstream trace``'s keyed lookup of where one event went;
- ``books``: per (stream, hour), landed = materialised + dead-lettered + duplicates, from
  what ingest booked per batch held against the landing index, fragments and dead letters;
- ``convert``: a home written by an earlier version (state in Parquet) converted once;
- ``fragments``, ``stores``: outputs per (hour, batch), hours and the store bundle the steps
  share.

May import ``ingest``, ``storage``, ``events`` and ``settings``.
"""
