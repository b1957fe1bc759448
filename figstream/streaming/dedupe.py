"""The ``deduped_postings`` step: cross-board duplicates, decided by the dedupe registry.

Per dedupe key the earliest posting wins. The registry lives in buckets by job and by dedupe key;
a run recomputes the duplicates only for the keys its postings name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.buckets import Manifest, split, write_bucket
from figstream.storage.objects import ObjectStore
from figstream.streaming import table_ops
from figstream.streaming import tables as streaming_tables
from figstream.streaming.bucket_state import (
    BY_FIRST_POSTING,
    DUPLICATES_BUCKETS,
    OLD_DUPLICATES_KEY,
    OLD_REGISTRY_KEY,
    REGISTRY_BY_JOB,
    REGISTRY_BY_KEY,
    REGISTRY_MANIFEST,
    concat_or_empty,
    load_manifest,
    read_buckets,
    read_snapshot,
    split_if_growing,
)
from figstream.streaming.fragments import read_fragments, write_each
from figstream.streaming.stores import Stores, by_hour


def _key_bucket(registry: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(duplicates, registry rows sorted) of a key bucket's registry rows (one a job)."""
    result = table_ops.dedupe_postings(
        streaming_tables.empty(streaming_tables.POSTINGS_SCHEMA), registry
    )
    return result.duplicates, result.canonical


def _write_key_bucket(
    objects: ObjectStore, manifest: Manifest, bucket: int, tables: tuple[pa.Table, pa.Table]
) -> pa.Table:
    """Store a key bucket's (duplicates, registry rows); returns the duplicates."""
    duplicates, registry = tables
    manifest.changing(objects)
    write_bucket(objects, manifest.bucket_key(DUPLICATES_BUCKETS, bucket), duplicates)
    write_bucket(objects, manifest.bucket_key(REGISTRY_BY_KEY, bucket), registry)
    manifest.count("duplicates")[bucket] = duplicates.num_rows
    return duplicates


def _changed_key_bucket(
    objects: ObjectStore, manifest: Manifest, bucket: int, changes: pa.Table, added: pa.Table
) -> tuple[pa.Table, pa.Table]:
    """(duplicates, registry rows) of a key bucket after ``changes``: the old and new registry
    rows of the jobs that moved to or within it (the new ones are in ``added``). A key's
    duplicates depend on its rows alone, so only the keys the changes name are recomputed; the
    others' are kept.

    Idempotent even after a crash between the passes (or between the two objects): a job's
    rows go, its new row comes, and the keys it names are recomputed from the rows."""
    schema = streaming_tables.CANONICAL_SCHEMA
    rows = read_snapshot(objects, manifest.bucket_key(REGISTRY_BY_KEY, bucket), schema)
    gone = pc.is_in(rows["job_id"], changes["job_id"])
    new = changes.filter(pc.is_in(changes["event_id"], added["event_id"]))
    rows = pa.concat_tables([rows.filter(pc.invert(gone)), new])
    keys = pc.unique(changes["dedupe_key"])
    key = manifest.bucket_key(DUPLICATES_BUCKETS, bucket)
    kept = read_snapshot(objects, key, streaming_tables.DUPLICATES_SCHEMA)
    kept = kept.filter(pc.invert(pc.is_in(kept["dedupe_key"], keys)))
    named, _ = _key_bucket(rows.filter(pc.is_in(rows["dedupe_key"], keys)))
    duplicates = pa.concat_tables([kept, named]).sort_by("job_id").combine_chunks()
    return duplicates, rows.sort_by(BY_FIRST_POSTING).combine_chunks()


def _convert_registry(objects: ObjectStore, manifest: Manifest, registry: pa.Table) -> None:
    for bucket, rows in split(registry, manifest.of(registry["job_id"])).items():
        write_bucket(objects, manifest.bucket_key(REGISTRY_BY_JOB, bucket), rows)
        manifest.count("registered")[bucket] = rows.num_rows
    for bucket, rows in split(registry, manifest.of(registry["dedupe_key"])).items():
        _write_key_bucket(objects, manifest, bucket, _key_bucket(rows))


def registry_manifest(objects: ObjectStore, incoming: int = 0) -> Manifest:
    """The registry's manifest, split first if ``incoming`` postings could outgrow one bucket."""
    old = [OLD_REGISTRY_KEY, OLD_DUPLICATES_KEY]
    schema = streaming_tables.CANONICAL_SCHEMA
    manifest = load_manifest(objects, REGISTRY_MANIFEST, old, schema, _convert_registry)
    prefixes = [REGISTRY_BY_JOB, REGISTRY_BY_KEY, DUPLICATES_BUCKETS]

    def whole(layout: Manifest) -> pa.Table:
        return read_buckets(objects, layout, REGISTRY_BY_JOB, schema)

    return split_if_growing(
        objects, manifest, incoming, "registered", prefixes, whole, _convert_registry
    )


REGISTRY_ROWS_KEPT = 250_000  # registry rows (~120 bytes each) a dedupe keeps between passes


@dataclass
class DedupeReport:
    postings: int
    kept: int
    duplicates_total: int


def dedupe(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> DedupeReport:
    """Cross-board dedupe of the partitions' clean postings, an hour at a time (:func:`by_hour`)."""
    reports = by_hour(_dedupe, stores, partitions, batch_ids)
    postings, kept = sum(r.postings for r in reports), sum(r.kept for r in reports)
    return DedupeReport(postings, kept, reports[-1].duplicates_total)


def _dedupe(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> DedupeReport:
    """Cross-board dedupe of the partitions' clean postings against the global registry.

    Three passes over the buckets the postings touch, one bucket at a time: the registry
    buckets of their jobs say which first postings are new and which they replace; the key
    buckets of those (and of the postings' jobs) get the new rows and their duplicates
    recomputed; then the job buckets take the new rows. Runs hold the ``figstream_state``
    pool, so two runs never interleave their read-modify-write.
    """
    objects = stores.objects
    postings = read_fragments(
        objects, "clean_postings", partitions, batch_ids, streaming_tables.POSTINGS_SCHEMA
    )
    manifest = registry_manifest(objects, postings.num_rows)
    if postings.num_rows == 0:
        return DedupeReport(0, 0, manifest.total("duplicates"))
    count, order = postings.num_rows, pa.array(np.arange(postings.num_rows))
    # One copy of the postings, by bucket; "_row" gives the kept ones their order back.
    by_job = split(postings.append_column("_row", order), manifest.of(postings["job_id"]))
    del postings
    added, replaced, registered = [], [], []
    kept_known, held = {}, 0  # job buckets kept for the third pass while they fit
    new_by_bucket = {}
    for bucket, rows in by_job.items():
        key = manifest.bucket_key(REGISTRY_BY_JOB, bucket)
        known = read_snapshot(objects, key, streaming_tables.CANONICAL_SCHEMA)
        if held + known.num_rows <= REGISTRY_ROWS_KEPT:
            kept_known[bucket], held = known, held + known.num_rows
        # The first posting of each of the postings' jobs: only their registry rows matter.
        mine = known.filter(pc.is_in(known["job_id"], rows["job_id"]))
        registry = table_ops.dedupe_postings(rows, mine).canonical
        new = registry.filter(pc.invert(pc.is_in(registry["event_id"], mine["event_id"])))
        new_by_bucket[bucket] = new
        added.append(new)
        replaced.append(mine.filter(pc.is_in(mine["job_id"], new["job_id"])))
        registered.append(registry)
    schema = streaming_tables.CANONICAL_SCHEMA
    added, replaced = concat_or_empty(added, schema), concat_or_empty(replaced, schema)
    registered = concat_or_empty(registered, schema)
    moved = pa.concat_tables([added, replaced])
    changes = split(moved, manifest.of(moved["dedupe_key"]))
    duplicate_ids = []
    for bucket in sorted(set(changes) | set(manifest.of(registered["dedupe_key"]).tolist())):
        if bucket in changes:
            tables = _changed_key_bucket(objects, manifest, bucket, changes[bucket], added)
            duplicates = _write_key_bucket(objects, manifest, bucket, tables)
        else:
            key = manifest.bucket_key(DUPLICATES_BUCKETS, bucket)
            duplicates = read_snapshot(objects, key, streaming_tables.DUPLICATES_SCHEMA)
            manifest.count("duplicates")[bucket] = duplicates.num_rows
        duplicate_ids.append(
            duplicates["job_id"].filter(pc.is_in(duplicates["job_id"], registered["job_id"]))
        )
    for bucket, new in new_by_bucket.items():
        if new.num_rows:  # the bucket's rows of those jobs give way to their new first postings
            key = manifest.bucket_key(REGISTRY_BY_JOB, bucket)
            known = kept_known.pop(bucket, None)
            if known is None:
                known = read_snapshot(objects, key, schema)
            manifest.changing(objects)
            known = known.filter(pc.invert(pc.is_in(known["job_id"], new["job_id"])))
            registry = pa.concat_tables([known, new]).sort_by(BY_FIRST_POSTING).combine_chunks()
            write_bucket(objects, key, registry)
            manifest.count("registered")[bucket] = registry.num_rows
    manifest.save(objects)
    dropped = pa.chunked_array(duplicate_ids, pa.string())
    kept = [rows.filter(pc.invert(pc.is_in(rows["job_id"], dropped))) for rows in by_job.values()]
    del by_job
    kept = pa.concat_tables(kept).sort_by("_row").drop_columns(["_row"])
    kept_rows = write_each(objects, "deduped_postings", kept)
    return DedupeReport(count, kept_rows, manifest.total("duplicates"))
