"""One-time conversion of a home written by an earlier version, whose state lived in Parquet.

Earlier versions kept the job state and the dedupe registry as hash buckets of Parquet (or,
before those, one object each) under ``tables/``, with a manifest beside each table, and a
search-index snapshot rebuilt on every run, and claimed bare event ids (ingest now scopes a
claim by the event's hour). The state store holds them now. The first state
step to run on such a home (:func:`convert_old_state`) loads the old objects into the store
and then deletes them, manifests last. Each write is conditional and idempotent, so a
conversion cut short by a crash is simply done again by the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from figstream.events.postings import FLAT_V2_COLUMNS, V1_SCHEMA, flatten_v2, upcast_v1
from figstream.storage.objects import ObjectStore, read_parquet
from figstream.storage.state import JOB_SCHEMA, MERGER_SCHEMA, VERSIONED_SCHEMA
from figstream.streaming import tables
from figstream.streaming.fragments import evolved
from figstream.streaming.ingest import claim_keys
from figstream.streaming.registry import recompute_keys
from figstream.streaming.stores import INGEST_TABLES, Stores

# What the earlier layouts wrote (the bucket layout, and the single objects before it).
JOB_BUCKETS, ACTIVE_BUCKETS = "tables/job_state/jobs/", "tables/job_state/active/"
MERGERS = "tables/job_state/mergers.parquet"
JOB_STATE_OBJECT = "tables/job_state/state.parquet"
REGISTRY_BY_JOB, REGISTRY_BY_KEY = (
    "tables/postings_registry/by_job/",
    "tables/postings_registry/by_key/",
)
REGISTRY_OBJECT = "tables/postings_registry/registry.parquet"
DUPLICATES = "tables/duplicates/"
INDEX_SNAPSHOT = ["tables/search_index/snapshot.parquet", "tables/search_index/source.json"]
MANIFESTS = ["tables/job_state/manifest.json", "tables/postings_registry/manifest.json"]
MARKERS = [*MANIFESTS, JOB_STATE_OBJECT, REGISTRY_OBJECT]
KEYS_PER_CALL = 5_000


@dataclass
class ConversionReport:
    jobs: int
    mergers: int
    registered: int
    claims_scoped: int
    objects_deleted: int


def _v2_columns(part: pa.Table) -> pa.Table:
    """An earlier version's job rows predate v2's columns, and every event behind them was v1:
    their salary period and place are what the v1 -> v2 upcaster derives from v1's columns, as
    a recompute from those events would give (merger rows get none)."""
    missing = [c for c in FLAT_V2_COLUMNS if c not in part.column_names]
    if not missing or not set(V1_SCHEMA.names) <= set(part.column_names):
        return part
    loose = pa.schema([field.with_nullable(True) for field in V1_SCHEMA])  # merger rows
    flat = flatten_v2(upcast_v1(part.select(loose.names).cast(loose)))
    jobs = pc.equal(part["kind"], "job") if "kind" in part.column_names else None
    for name in missing:
        column = flat[name]
        if jobs is not None:
            column = pc.if_else(jobs, column, pa.nulls(len(column), column.type))
        part = part.append_column(name, column)
    return part


def _read_all(objects: ObjectStore, keys: list[str], schema: pa.Schema) -> pa.Table:
    parts = [evolved(_v2_columns(read_parquet(objects, k)), schema) for k in keys]
    return pa.concat_tables([schema.empty_table(), *parts])


def _parquet(objects: ObjectStore, prefix: str) -> list[str]:
    return [k for k in objects.list(prefix) if k.endswith(".parquet")]


def old_state_present(objects: ObjectStore) -> bool:
    return any(objects.exists(key) for key in MARKERS)


def convert_old_state(stores: Stores) -> ConversionReport | None:
    """Load an earlier version's Parquet state into the store and delete it; None when the
    home holds none (the usual case: a few existence checks)."""
    objects, state = stores.objects, stores.state
    if not old_state_present(objects):
        return None
    # The registry first: first postings (conditional minimum per job), then every key's
    # original from its members.
    registry = _read_all(
        objects,
        _parquet(objects, REGISTRY_BY_JOB) or _existing(objects, REGISTRY_OBJECT),
        tables.CANONICAL_SCHEMA,
    )
    registered = state.register(registry) if registry.num_rows else 0
    keys = pc.unique(registry["dedupe_key"]).to_pylist()
    for start in range(0, len(keys), KEYS_PER_CALL):
        recompute_keys(state, keys[start : start + KEYS_PER_CALL])
    # Then the job rows: the merger rows and every job not stored yet.
    rows = _read_all(
        objects,
        [*_parquet(objects, JOB_BUCKETS), *_existing(objects, MERGERS, JOB_STATE_OBJECT)],
        tables.STATE_SCHEMA,
    )
    is_job = pc.equal(rows["kind"], "job")
    mergers = rows.filter(pc.invert(is_job))
    if mergers.num_rows:
        state.put_mergers(mergers.select(MERGER_SCHEMA.names).cast(MERGER_SCHEMA))
    jobs = rows.filter(is_job).select(JOB_SCHEMA.names)
    for start in range(0, jobs.num_rows, 20_000):
        chunk = jobs.slice(start, 20_000)
        versions = pa.repeat(pa.scalar(0, pa.int64()), chunk.num_rows)
        # Refused: stored by a conversion a crash cut short; the row is the same.
        state.put_jobs(chunk.append_column("version", versions).cast(VERSIONED_SCHEMA))
    claims = _scope_claims(stores)
    deleted = 0
    for prefix in (JOB_BUCKETS, ACTIVE_BUCKETS, REGISTRY_BY_JOB, REGISTRY_BY_KEY, DUPLICATES):
        for key in objects.list(prefix):
            objects.delete(key)
            deleted += 1
    for key in [*INDEX_SNAPSHOT, MERGERS, JOB_STATE_OBJECT, REGISTRY_OBJECT, *MANIFESTS]:
        if objects.exists(key):
            objects.delete(key)
            deleted += 1
    return ConversionReport(jobs.num_rows, mergers.num_rows, registered, claims, deleted)


def _scope_claims(stores: Stores) -> int:
    """Earlier versions claimed a bare event id; ingest now claims ``<hour>/<event id>``
    (:func:`figstream.streaming.ingest.claim_keys`). Every claimed valid event has one row in
    its owner's ingest fragment, under its hour: each is claimed again under its scoped key for
    that owner, and the bare claim dropped. Returns the claims scoped."""
    objects, state = stores.objects, stores.state
    scoped = 0
    for table in INGEST_TABLES.values():
        for key in [k for k in objects.list(f"tables/{table}/") if k.endswith(".parquet")]:
            hour = key.split("/")[2]
            rows = read_parquet(objects, key, columns=["event_id", "batch_id"])
            ids, owners = rows["event_id"].to_pylist(), rows["batch_id"].to_pylist()
            by_owner: dict[str, list[str]] = {}
            for event_id, owner in zip(ids, owners, strict=True):
                by_owner.setdefault(owner, []).append(event_id)
            state.claim_batches(
                [
                    (owner, claim_keys(hour, pa.array(i, pa.string())))
                    for owner, i in by_owner.items()
                ]
            )
            state.drop_claims(ids)
            scoped += len(ids)
    return scoped


def _existing(objects: ObjectStore, *keys: str) -> list[str]:
    return [k for k in keys if objects.exists(k)]
