"""The ``job_state`` step: last writer wins per job, by event time with the event id as tiebreak.

A run applies its hour's new events to the buckets they touch, then upserts the changed rows
into the state store, which serves them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.buckets import Manifest, split, write_bucket
from figstream.storage.objects import ObjectStore
from figstream.storage.state import job_state_rows
from figstream.streaming import table_ops, tables
from figstream.streaming.bucket_state import (
    ACTIVE_BUCKETS,
    INDEX_ROW_GROUP,
    JOB_STATE_BUCKETS,
    JOB_STATE_MANIFEST,
    MERGERS_KEY,
    OLD_JOB_STATE_KEY,
    load_manifest,
    read_buckets,
    read_snapshot,
    split_if_growing,
)
from figstream.streaming.fragments import read_fragments
from figstream.streaming.stores import INGEST_TABLES, Stores, by_hour


@dataclass
class StateReport:
    events: int
    changed: int
    jobs: int
    active: int


def _fingerprint(state: pa.Table) -> pa.Array:
    parts = [
        pc.fill_null(state[name], "")
        for name in ("job_id", "posting_event_id", "expiry_event_id", "merger_event_id")
    ]
    return pc.binary_join_element_wise(*parts, "|")


def _touched(state: pa.Table, events: pa.Table) -> pa.Array:
    """The state rows ``events`` can change: their jobs, every merger row, and the jobs of a
    board a merger in ``events`` absorbs (see :func:`table_ops.apply_job_state`)."""
    mask = pc.or_(
        pc.is_in(state["job_id"], pc.unique(events["job_id"].drop_null())),
        pc.equal(state["kind"], "merger"),
    )
    merged = events.filter(pc.equal(events["event_type"], tables.MERGED))
    if merged.num_rows:
        mask = pc.or_(mask, pc.is_in(state["board"], merged["absorbed_board"]))
    return pc.fill_null(mask, False)


def _write_job_bucket(objects: ObjectStore, manifest: Manifest, bucket: int, jobs: pa.Table):
    """Store a bucket's job rows and, first, the search-index rows of its active jobs."""
    active = table_ops.search_index(jobs)
    key = manifest.bucket_key(ACTIVE_BUCKETS, bucket)
    manifest.changing(objects)
    write_bucket(objects, key, active, row_group_size=INDEX_ROW_GROUP)
    write_bucket(objects, manifest.bucket_key(JOB_STATE_BUCKETS, bucket), jobs)
    _count_jobs(manifest, bucket, jobs)


def _count_jobs(manifest: Manifest, bucket: int, jobs: pa.Table) -> None:
    manifest.count("jobs")[bucket] = jobs.num_rows
    manifest.count("active")[bucket] = pc.sum(pc.equal(jobs["status"], "active")).as_py() or 0


def _convert_job_state(objects: ObjectStore, manifest: Manifest, state: pa.Table) -> None:
    is_job = pc.equal(state["kind"], "job")
    write_bucket(objects, MERGERS_KEY, state.filter(pc.invert(is_job)))
    jobs = state.filter(is_job)
    for bucket, rows in split(jobs, manifest.of(jobs["job_id"])).items():
        _write_job_bucket(objects, manifest, bucket, rows)


def job_state_manifest(objects: ObjectStore, incoming: int = 0) -> Manifest:
    """The job state's manifest, split first if ``incoming`` events could outgrow one bucket."""
    old, schema = [OLD_JOB_STATE_KEY], tables.STATE_SCHEMA
    manifest = load_manifest(objects, JOB_STATE_MANIFEST, old, schema, _convert_job_state)

    def whole(layout: Manifest) -> pa.Table:  # with the merger rows, which the split rewrites
        jobs = read_buckets(objects, layout, JOB_STATE_BUCKETS, schema)
        return pa.concat_tables([jobs, read_snapshot(objects, MERGERS_KEY, schema)])

    prefixes = [JOB_STATE_BUCKETS, ACTIVE_BUCKETS]
    return split_if_growing(
        objects, manifest, incoming, "jobs", prefixes, whole, _convert_job_state
    )


# Touched job rows one apply_job_state call recomputes at most (a bucket is never split): a
# sensor run's events usually make one call; a busy hour or a merger (which touches every
# bucket) several. At 100k the 5M-event day's busiest hours peaked at +678 MiB in this call.
TOUCHED_ROWS_PER_APPLY = 20_000
# Rows of whole job buckets a group keeps between reading them and writing them back (else
# each is read twice): a few buckets of a big state, every bucket a sensor run touches of a
# small one.
WHOLE_ROWS_KEPT = 100_000
UPSERT_ROWS = 25_000  # rows per state-store upsert: its rows become Python tuples


def update_job_state(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> StateReport:
    """Apply the partitions' new events to the job state, an hour at a time (:func:`by_hour`)."""
    reports = by_hour(_update_job_state, stores, partitions, batch_ids)
    events, changed = sum(r.events for r in reports), sum(r.changed for r in reports)
    return StateReport(events, changed, reports[-1].jobs, reports[-1].active)


def _update_job_state(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> StateReport:
    """Apply the partitions' new events (postings and mergers) to the current job state.

    From each bucket the events touch (every bucket when they hold a merger) only the rows
    they can change are kept, and a group of buckets' rows is recomputed at once with the
    merger rows; the serving rows that changed are upserted into the state store (last writer
    wins), then each bucket whose jobs changed is read again and written back. The merger
    rows come out the same from every group and are written once, after the buckets.
    """
    batch_ids = None if batch_ids is None else list(batch_ids)
    objects = stores.objects
    events = pa.concat_tables(
        [
            read_fragments(objects, table, partitions, batch_ids, tables.EVENTS_SCHEMA)
            for table in INGEST_TABLES.values()
        ]
    )
    manifest = job_state_manifest(objects, events.num_rows)
    if events.num_rows == 0:
        return StateReport(0, 0, manifest.total("jobs"), manifest.total("active"))
    is_merger = pc.equal(events["event_type"], tables.MERGED)
    merged, others, count = (
        events.filter(is_merger),
        events.filter(pc.invert(is_merger)),
        len(events),
    )
    del events  # a backfill's range can hold many events: keep one copy of them, by bucket
    by_bucket = split(others, manifest.of(others["job_id"]))
    del others
    mergers = read_snapshot(objects, MERGERS_KEY, tables.STATE_SCHEMA)
    after = {"mergers": mergers, "changed": 0}

    def apply(group: dict[int, pa.Table]) -> None:
        was = pa.concat_tables([*group.values(), mergers])
        batch = pa.concat_tables([*(by_bucket[b] for b in group if b in by_bucket), merged])
        now = table_ops.apply_job_state(was, batch)
        is_job = pc.equal(now["kind"], "job")
        after["mergers"], now = now.filter(pc.invert(is_job)), now.filter(is_job)
        changed = now.filter(pc.invert(pc.is_in(_fingerprint(now), _fingerprint(was))))
        for start in range(0, changed.num_rows, UPSERT_ROWS):
            stores.state.upsert_jobs(job_state_rows(changed.slice(start, UPSERT_ROWS)))
        after["changed"] += changed.num_rows
        for bucket, rows in split(now, manifest.of(now["job_id"])).items():
            if rows.equals(group[bucket]):
                continue
            jobs = whole.get(bucket)
            if jobs is None:  # not kept: read again
                key = manifest.bucket_key(JOB_STATE_BUCKETS, bucket)
                jobs = read_snapshot(objects, key, tables.STATE_SCHEMA)
            jobs = jobs.filter(pc.invert(pc.is_in(jobs["job_id"], group[bucket]["job_id"])))
            jobs = pa.concat_tables([jobs, rows]).sort_by("job_id").combine_chunks()
            _write_job_bucket(objects, manifest, bucket, jobs)

    # The group's whole buckets are kept for the write-back while they fit WHOLE_ROWS_KEPT.
    group, held, whole = {}, 0, {}
    for bucket in range(manifest.buckets) if merged.num_rows else sorted(by_bucket):
        key = manifest.bucket_key(JOB_STATE_BUCKETS, bucket)
        jobs = read_snapshot(objects, key, tables.STATE_SCHEMA)
        batch = pa.concat_tables([by_bucket.get(bucket, merged.slice(0, 0)), merged])
        group[bucket] = jobs.filter(_touched(jobs, batch))
        _count_jobs(manifest, bucket, jobs)
        if sum(t.num_rows for t in whole.values()) + jobs.num_rows <= WHOLE_ROWS_KEPT:
            whole[bucket] = jobs
        del jobs
        held += group[bucket].num_rows
        if held >= TOUCHED_ROWS_PER_APPLY:
            apply(group)
            group, held, whole = {}, 0, {}
    if group:
        apply(group)
    if not after["mergers"].equals(mergers):
        manifest.changing(objects)
        write_bucket(objects, MERGERS_KEY, after["mergers"])
    manifest.save(objects)
    return StateReport(count, after["changed"], manifest.total("jobs"), manifest.total("active"))
