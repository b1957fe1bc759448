"""The shapes of the streaming tables: event types, and the Arrow schema of every table.

Times are ``timestamp[us, tz=UTC]``. Events of every schema version materialise as rows of one
shape: ``data`` is upcast to the latest version and flattened (``figstream.events.postings``).
v2 postings add ``salary_period``, ``city``, ``region`` and ``country_code``; v1's columns stay,
derived for v2 rows (``location`` is the v1 rendering of the structured location). Fragments
written before the v2 columns existed read back with those columns null (``fragments``).
"""

from __future__ import annotations

import pyarrow as pa

from figstream.storage.state import JOB_SCHEMA, POSTING_FIELDS

POSTED, UPDATED, EXPIRED, MERGED = "job.posted", "job.updated", "job.expired", "board.merged"
POSTING_TYPES = (POSTED, UPDATED)
TS = pa.timestamp("us", tz="UTC")

DATA_COLUMNS = [
    pa.field("job_id", pa.string()),
    pa.field("title", pa.string()),
    pa.field("company", pa.string()),
    pa.field("location", pa.string()),
    pa.field("employment_type", pa.string()),
    pa.field("remote", pa.bool_()),
    pa.field("salary_min", pa.int64()),
    pa.field("salary_max", pa.int64()),
    pa.field("currency", pa.string()),
    pa.field("url", pa.string()),
    pa.field("salary_period", pa.string()),
    pa.field("city", pa.string()),
    pa.field("region", pa.string()),
    pa.field("country_code", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("absorbed_board", pa.string()),
    pa.field("surviving_board", pa.string()),
]
EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("event_type", pa.string()),
        pa.field("source", pa.string()),
        pa.field("version", pa.int64()),
        pa.field("event_time", TS),
        *DATA_COLUMNS,
        pa.field("batch_id", pa.string()),
        pa.field("line_no", pa.int64()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.string()),
        pa.field("line_no", pa.int64()),
        pa.field("event_id", pa.string()),
        pa.field("event_time", TS),
        pa.field("code", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("payload", pa.binary()),
    ]
)
POSTINGS_SCHEMA = pa.schema(
    [
        *(EVENTS_SCHEMA.field(n) for n in ("event_id", "event_type", "source", "version")),
        EVENTS_SCHEMA.field("event_time"),
        pa.field("board", pa.string()),
        *DATA_COLUMNS[:-3],  # the posting fields: all but the expiry's and the merger's
        pa.field("dedupe_key", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("line_no", pa.int64()),
    ]
)
CANONICAL_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string()),
        pa.field("dedupe_key", pa.string()),
        pa.field("board", pa.string()),
        pa.field("event_time", TS),
        pa.field("event_id", pa.string()),
    ]
)
DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string()),
        pa.field("duplicate_of_job_id", pa.string()),
        pa.field("dedupe_key", pa.string()),
    ]
)
# The job state: the state store's job rows (storage.state.JOB_SCHEMA) and, as "merger" rows,
# the board mergers, so that one table can be folded by table_ops.apply_job_state.
STATE_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),  # "job", or "merger" for a remembered board.merged
        # job_id is "@<absorbed board>" on a merger row, whose status is null
        *(f.with_nullable(True) for f in JOB_SCHEMA),
    ]
)
# The jobs a step's events touched, kept per (hour, batch) for the search-index changes.
TOUCHED_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string()),
        pa.field("event_time", TS),
        pa.field("batch_id", pa.string()),
    ]
)
SEARCH_INDEX_COLUMNS = ["job_id", "board", *POSTING_FIELDS, "posted_at", "updated_at"]
STATS_SCHEMA = pa.schema(
    [
        pa.field("date", pa.date32()),
        pa.field("board", pa.string()),
        pa.field("postings", pa.int64()),
        pa.field("updates", pa.int64()),
        pa.field("expiries", pa.int64()),
        pa.field("active_jobs", pa.int64()),
        pa.field("avg_salary_min", pa.float64()),
    ]
)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
