"""The search index: hourly changes (``search_index``) and a daily snapshot
(``search_index_snapshot``), both from the state store, never from a full scan on a run.

* ``search_index`` (hourly): for every job the hour's events touched (``job_state``), whose
  duplicate status they changed (``dedupe``), or that duplicates one of those, the row the
  site now shows (``op = "upsert"``) or its removal (``op = "delete"``): what a search engine
  ingests. One fragment per (hour, batch), like every streaming table, so a re-run overwrites
  its own. Each row carries ``changed_at``, the instant its verdict was read from the store.
* ``search_index_snapshot`` (daily): every row the site shows, streamed from the store in job
  id order into one Parquet object a bounded page at a time; ``as_of`` (in the file's
  metadata) is the instant the export began.

A consumer that needs the whole index reads the latest snapshot and then, per job, the latest
change read at or after the snapshot's ``as_of``: :func:`current_index`. Every change is a
verdict read from the store, so the latest one per job is the store's.

Rows carry v2's ``salary_period``, ``city``, ``region`` and ``country_code`` beside v1's
columns (:data:`figstream.storage.state.INDEX_COLUMNS`); changes and snapshots written before
them read back with those columns null.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from figstream.storage.objects import ObjectStore, read_parquet
from figstream.storage.sqlite import now_us
from figstream.storage.state import INDEX_COLUMNS, JOB_SCHEMA
from figstream.streaming import dedupe, jobs, tables, trace
from figstream.streaming.chunks import by_hour
from figstream.streaming.fragments import evolved, read_fragments, write_each
from figstream.streaming.stores import Stores, release_arrow_memory

CHANGES = "search_index"  # tables/search_index/<hour>/<batch_id>.parquet
SNAPSHOTS = "tables/search_index_snapshot/"  # <day>.parquet
INDEX_SCHEMA = pa.schema([JOB_SCHEMA.field(n).with_nullable(True) for n in INDEX_COLUMNS])
CHANGE_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string()),
        pa.field("op", pa.string()),  # upsert | delete
        *(f for f in INDEX_SCHEMA if f.name != "job_id"),
        pa.field("changed_at", tables.TS),
        pa.field("event_time", tables.TS),  # of the event that touched the job: its hour
        pa.field("batch_id", pa.string()),
    ]
)


@dataclass
class ChangesReport:
    upserts: int = 0
    deletes: int = 0
    preview: list[dict] = field(default_factory=list)  # job_id, board, title, location

    def add(self, other: ChangesReport) -> None:
        self.upserts += other.upserts
        self.deletes += other.deletes
        self.preview = (self.preview + other.preview)[:5]


def export_changes(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> ChangesReport:
    """The partitions' index changes, an hour at a time (:func:`by_hour`)."""
    out = ChangesReport()
    for report in by_hour(
        _export_changes, stores, partitions, batch_ids, [jobs.TOUCHED, dedupe.TOUCHED]
    ):
        out.add(report)
    return out


def _export_changes(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> ChangesReport:
    ids = None if batch_ids is None else list(batch_ids)
    touched = pa.concat_tables(
        [
            read_fragments(stores.objects, name, partitions, ids, tables.TOUCHED_SCHEMA)
            for name in (jobs.TOUCHED, dedupe.TOUCHED)
        ]
    )
    if touched.num_rows == 0:
        return ChangesReport()
    # One row a job, under the first event that touched it; then the duplicates of those
    # jobs, under the same event (they show or hide as their original changes).
    touched = touched.sort_by([("job_id", "ascending"), ("event_time", "ascending")])
    touched = _first_per_job(touched)
    shadows = stores.state.duplicates_of(touched["job_id"].to_pylist())
    shadows = shadows.filter(pc.invert(pc.is_in(shadows["job_id"], touched["job_id"])))
    if shadows.num_rows:
        cause = touched.rename_columns(["duplicate_of", "event_time", "batch_id"])
        more = shadows.select(["job_id", "duplicate_of"]).join(cause, "duplicate_of")
        touched = pa.concat_tables([touched, more.select(touched.column_names)])
    changed_at = now_us()  # before the read: a verdict is at least this fresh
    # The store's rows a slice of jobs at a time (they pass through Python), the changes
    # gathered as Arrow and written at once (a batch's fragment is written whole).
    parts = [
        _changes(stores, touched.slice(start, JOBS_PER_READ), changed_at)
        for start in range(0, touched.num_rows, JOBS_PER_READ)
    ]
    changes = pa.concat_tables(parts)
    write_each(stores.objects, CHANGES, changes)
    visible = pc.equal(changes["op"], "upsert")
    upserts = pc.sum(visible).as_py() or 0
    shown = changes.filter(visible).slice(0, 5).select(["job_id", "board", "title", "location"])
    return ChangesReport(upserts, changes.num_rows - upserts, shown.to_pylist())


JOBS_PER_READ = 5_000  # jobs whose index rows are read at once (20k: 664 MiB on a 5M-event day)


def _changes(stores: Stores, touched: pa.Table, changed_at: int) -> pa.Table:
    """The index changes (:data:`CHANGE_SCHEMA`) of ``touched`` jobs, read from the store."""
    rows = stores.state.index_rows(touched["job_id"].to_pylist())
    table = touched.join(rows, "job_id", join_type="left outer")
    visible = pc.fill_null(table["visible"], False)
    n = table.num_rows
    return pa.table(
        {
            "job_id": table["job_id"],
            "op": pc.if_else(visible, "upsert", "delete"),
            **{
                f.name: pc.if_else(visible, table[f.name], pa.nulls(n, f.type))
                for f in INDEX_SCHEMA
                if f.name != "job_id"
            },
            "changed_at": pa.repeat(pa.scalar(changed_at, pa.int64()), n).cast(tables.TS),
            "event_time": table["event_time"],
            "batch_id": table["batch_id"],
        }
    ).cast(CHANGE_SCHEMA)


def _first_per_job(table: pa.Table) -> pa.Table:
    """The first row of each job_id of a table sorted by it."""
    job_ids = table["job_id"]
    if table.num_rows < 2:
        return table
    differs = pc.not_equal(job_ids.slice(1), job_ids.slice(0, len(job_ids) - 1))
    keep = pa.concat_arrays([pa.array([True]), differs.combine_chunks()])
    return table.filter(keep)


# --- the daily snapshot -------------------------------------------------------------------------


@dataclass
class SnapshotReport:
    key: str
    rows: int
    as_of: datetime
    preview: list[dict]
    claims_purged: int = 0
    snapshots_deleted: int = 0
    trace_purged: int = 0  # trace-index deliveries past their horizon


def snapshot_key(day: str) -> str:
    return f"{SNAPSHOTS}{day}.parquet"


def export_snapshot(stores: Stores, day: str, keep: int = 7) -> SnapshotReport:
    """Every row the site shows, streamed from the store in job_id order into the day's
    snapshot (one page of the store in memory at a time), ``as_of`` in its metadata; then the
    store's expired event claims and trace deliveries are purged (the TTL reaper), and
    snapshots beyond the ``keep`` latest days deleted."""
    as_of = now_us()
    key = snapshot_key(day)
    rows, preview = 0, []
    metadata = {b"figstream.as_of_us": str(as_of).encode()}
    schema = INDEX_SCHEMA.with_metadata(metadata)
    with stores.objects.writer(key) as sink, pq.ParquetWriter(sink, schema) as writer:
        for page in stores.state.iter_index(batch_rows=SNAPSHOT_PAGE_ROWS):
            page = page.cast(INDEX_SCHEMA).replace_schema_metadata(metadata)
            if len(preview) < 5:
                head = page.slice(0, 5 - len(preview))
                preview += head.select(["job_id", "board", "title", "location"]).to_pylist()
            rows += page.num_rows
            writer.write_table(page)
    release_arrow_memory()
    purged = stores.state.purge_claims()
    traced = trace.index_for(stores.state).purge()
    kept = sorted(stores.objects.list(SNAPSHOTS))
    old = kept[:-keep] if keep > 0 else []
    for stale in old:
        stores.objects.delete(stale)
    when = datetime.fromtimestamp(as_of / 1e6, UTC)
    return SnapshotReport(key, rows, when, preview, purged, len(old), traced)


# Rows of the store read at once: a page passes through Python (the SQLite store's rows are
# tuples first); at 50k rows a page the snapshot of a 1M-event day peaked 100 MiB higher.
SNAPSHOT_PAGE_ROWS = 10_000


def snapshot_as_of(objects: ObjectStore, key: str) -> int:
    """A snapshot's ``as_of``, µs since the epoch."""
    with objects.open(key) as source:
        metadata = pq.read_schema(source).metadata or {}
    return int(metadata[b"figstream.as_of_us"])


def current_index(objects: ObjectStore) -> pa.Table:
    """The whole search index (:data:`INDEX_SCHEMA`, by job_id) as a consumer builds it: the
    latest snapshot, then per job the latest change read at or after its ``as_of``. Without
    a snapshot, every change."""
    snapshots = sorted(objects.list(SNAPSHOTS))
    if snapshots:
        base = evolved(read_parquet(objects, snapshots[-1]), INDEX_SCHEMA)
        as_of = snapshot_as_of(objects, snapshots[-1])
    else:
        base, as_of = INDEX_SCHEMA.empty_table(), 0
    parts = [read_parquet(objects, k) for k in objects.list(f"tables/{CHANGES}/")]
    changes = pa.concat_tables(
        [CHANGE_SCHEMA.empty_table(), *(evolved(p, CHANGE_SCHEMA) for p in parts)]
    )
    at = pc.cast(changes["changed_at"], pa.int64())
    changes = changes.filter(pc.greater_equal(at, as_of))
    changes = changes.sort_by([("job_id", "ascending"), ("changed_at", "descending")])
    latest = _first_per_job(changes)
    base = base.filter(pc.invert(pc.is_in(base["job_id"], latest["job_id"])))
    upserts = latest.filter(pc.equal(latest["op"], "upsert")).select(INDEX_SCHEMA.names)
    out = pa.concat_tables([base, upserts.cast(INDEX_SCHEMA)])
    return out.sort_by("job_id").combine_chunks()


def read_changes(
    objects: ObjectStore, partitions: Sequence[str], batch_ids: Iterable[str] | None = None
) -> pa.Table:
    """The index changes written for ``partitions`` (:data:`CHANGE_SCHEMA`)."""
    return read_fragments(objects, CHANGES, partitions, batch_ids, CHANGE_SCHEMA)
