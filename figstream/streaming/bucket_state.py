"""Job state and the dedupe registry as hash buckets of Parquet in the object store.

Paths, manifests and whole-table reads shared by the ``dedupe``, ``jobs``, ``index_export`` and
``daily`` steps. The buckets themselves are ``figstream.storage.buckets``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa

from figstream.storage import buckets
from figstream.storage.buckets import Manifest
from figstream.storage.objects import ObjectStore, read_parquet
from figstream.streaming import tables as streaming_tables

# --- the global state, kept in hash buckets (storage.buckets) ---
#
# A run reads, updates and rewrites only the buckets its events touch, one at a time, so its
# memory is its events (and the rows they touch) plus one bucket. Within a run, what is derived
# is written before what it derives from, and the manifest (a new token) last, so a retried run
# redoes what a crash left undone.

# Job rows by job_id; the merger rows (a handful, which every bucket needs: a merger acts on
# the jobs of its absorbed board in every bucket) in one object of their own.
JOB_STATE_BUCKETS = "tables/job_state/jobs/"
MERGERS_KEY = "tables/job_state/mergers.parquet"
JOB_STATE_MANIFEST = "tables/job_state/manifest.json"
# Each job bucket's active jobs as search-index rows by job_id, before duplicates are shadowed.
ACTIVE_BUCKETS = "tables/job_state/active/"
INDEX_ROW_GROUP = 4096  # rows a row group of those holds: what the index merge reads at a time
# The dedupe registry (a job's first job.posted) by job_id, to find a job's row when it is
# posted again, and by dedupe_key, since a key's duplicates are decided among all its jobs.
# Keys alone would not do: a job re-posted with another key earlier than its first posting
# moves from one key to the other. The duplicates are kept by key bucket, like the latter.
REGISTRY_BY_JOB = "tables/postings_registry/by_job/"
REGISTRY_BY_KEY = "tables/postings_registry/by_key/"
REGISTRY_MANIFEST = "tables/postings_registry/manifest.json"
DUPLICATES_BUCKETS = "tables/duplicates/"
# The single-object layout of earlier versions: a state step's first run converts it (that
# run holds the whole table once); readers read it until then.
OLD_JOB_STATE_KEY = "tables/job_state/state.parquet"
OLD_REGISTRY_KEY = "tables/postings_registry/registry.parquet"
OLD_DUPLICATES_KEY = "tables/duplicates/current.parquet"
_BY_JOB_ID = [("kind", "ascending"), ("job_id", "ascending")]
BY_FIRST_POSTING = [("event_time", "ascending"), ("event_id", "ascending")]


def read_snapshot(objects: ObjectStore, key: str, schema: pa.Schema) -> pa.Table:
    if not objects.exists(key):
        return streaming_tables.empty(schema)
    return read_parquet(objects, key).select(schema.names).cast(schema)


def concat_or_empty(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else streaming_tables.empty(schema)


def read_buckets(
    objects: ObjectStore, manifest: Manifest, prefix: str, schema: pa.Schema
) -> pa.Table:
    keys = manifest.keys(prefix)
    return concat_or_empty(
        [read_snapshot(objects, k, schema) for k in keys if objects.exists(k)], schema
    )


def _read_all(
    objects: ObjectStore, manifest: str, prefix: str, old_key: str, schema: pa.Schema
) -> pa.Table:
    """Every bucket of a table as one table (for views and checks: it holds the whole table),
    or the earlier single object while it has not been converted."""
    layout = Manifest.read(objects, manifest)
    if layout is None:
        return read_snapshot(objects, old_key, schema)  # empty when there is none either
    return read_buckets(objects, layout, prefix, schema)


def read_job_state(objects: ObjectStore) -> pa.Table:
    """The whole job state (:data:`tables.STATE_SCHEMA`, by kind and job_id)."""
    jobs = _read_all(
        objects,
        JOB_STATE_MANIFEST,
        JOB_STATE_BUCKETS,
        OLD_JOB_STATE_KEY,
        streaming_tables.STATE_SCHEMA,
    )
    if not objects.exists(JOB_STATE_MANIFEST) and objects.exists(OLD_JOB_STATE_KEY):
        return jobs  # the old object holds the merger rows too
    mergers = read_snapshot(objects, MERGERS_KEY, streaming_tables.STATE_SCHEMA)
    return pa.concat_tables([jobs, mergers]).sort_by(_BY_JOB_ID).combine_chunks()


def read_registry(objects: ObjectStore) -> pa.Table:
    """The whole dedupe registry (:data:`tables.CANONICAL_SCHEMA`, by event time and id)."""
    registry = _read_all(
        objects,
        REGISTRY_MANIFEST,
        REGISTRY_BY_JOB,
        OLD_REGISTRY_KEY,
        streaming_tables.CANONICAL_SCHEMA,
    )
    return registry.sort_by(BY_FIRST_POSTING).combine_chunks()


def read_duplicates(objects: ObjectStore) -> pa.Table:
    """Every duplicate (:data:`tables.DUPLICATES_SCHEMA`, by job_id)."""
    duplicates = _read_all(
        objects,
        REGISTRY_MANIFEST,
        DUPLICATES_BUCKETS,
        OLD_DUPLICATES_KEY,
        streaming_tables.DUPLICATES_SCHEMA,
    )
    return duplicates.sort_by("job_id").combine_chunks()


def load_manifest(
    objects: ObjectStore, key: str, old_keys: Sequence[str], schema: pa.Schema, convert: Callable
) -> Manifest:
    """A bucketed table's manifest. A table still in the single-object layout (``old_keys``,
    the first its own) is converted first: that one run holds the whole table."""
    manifest = Manifest.read(objects, key)
    if manifest is not None:
        return manifest
    manifest = Manifest(key)
    if objects.exists(old_keys[0]):
        table = read_snapshot(objects, old_keys[0], schema)
        if table.num_rows > buckets.SPLIT_ROWS:
            manifest = Manifest(key, buckets.BUCKETS)
        convert(objects, manifest, table)
        manifest.write(objects)
        for old in old_keys:
            objects.delete(old)
    return manifest


def split_if_growing(
    objects: ObjectStore,
    manifest: Manifest,
    incoming: int,
    total: str,
    prefixes: Sequence[str],
    whole: Callable[[Manifest], pa.Table],
    convert: Callable[[ObjectStore, Manifest, pa.Table], None],
) -> Manifest:
    """``manifest``, or the manifest of its table split into :data:`buckets.BUCKETS` when
    ``incoming`` rows could take a one-bucket table past :data:`buckets.SPLIT_ROWS` (so one
    bucket never holds more). ``total`` names the count of the table's rows; ``whole`` reads
    it (the table, at most SPLIT_ROWS rows) and ``convert`` writes it in a layout.

    The split writes the new layout beside the old, then the manifest that names it, and only
    then deletes the old: a crash before the manifest leaves the old layout whole, and the
    split is redone (over whatever it had written, which is deleted first).
    """
    if manifest.buckets != 1 or manifest.total(total) + incoming <= buckets.SPLIT_ROWS:
        return manifest
    grown = Manifest(manifest.key, buckets.BUCKETS)
    for prefix in prefixes:
        left = set(grown.keys(prefix))
        for key in objects.list(prefix):
            if key in left:
                objects.delete(key)
    convert(objects, grown, whole(manifest))
    grown.write(objects)
    for prefix in prefixes:
        for key in manifest.keys(prefix):
            objects.delete(key)
    return grown
