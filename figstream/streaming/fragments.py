"""Outputs per (table, hour, batch): ``tables/<table>/<partition>/<batch_id>.parquet``.

A re-run of a batch overwrites its own fragment and never another's, so replays and backfills
are idempotent, and a downstream step reads exactly the fragments of the batches it was given.

Once an hour is past the lateness window, :func:`compact_hour` folds its fragments into one
object, ``tables/<table>/<partition>/compacted.parquet``, sorted by batch id (each batch's rows
in their order) and naming in its metadata every batch it holds, empty ones too. Readers give
the same rows either way: a batch's per-batch fragment, when there is one, overrides its rows
in the compacted object, so a batch re-run after compaction (a backfill, a late replay) is
never counted twice, and the next compaction folds it in. Compaction writes the new compacted
object first (atomically) and only then deletes the fragments it holds, each only if its bytes
are still those it read; a crash in between leaves fragments that override identical rows.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from figstream.storage.objects import ObjectStore, read_parquet, write_parquet
from figstream.streaming import tables as streaming_tables
from figstream.streaming.stores import fragment_key

# --- downstream steps ---------------------------------------------------------------------------


COMPACTED = "compacted.parquet"
BATCHES_METADATA = b"figstream.batches"  # the compacted object's batch ids, as JSON


def compacted_key(table: str, partition: str) -> str:
    return f"tables/{table}/{partition}/{COMPACTED}"


def fragments(
    objects: ObjectStore, table: str, partition: str, batch_ids: Iterable[str] | None
) -> list[str]:
    """Keys of a partition's per-batch fragments: the named batches', or all of them (a
    backfill). The compacted object is not one (see :func:`read_fragments`)."""
    keys = [k for k in objects.list(f"tables/{table}/{partition}/") if not _is_compacted(k)]
    if batch_ids is None:
        return keys
    wanted = set(batch_ids)
    return [k for k in keys if batch_id_of(k) in wanted]


def _is_compacted(key: str) -> bool:
    return key.endswith("/" + COMPACTED)


def read_fragments(
    objects: ObjectStore,
    table: str,
    partitions: Iterable[str],
    batch_ids: Iterable[str] | None,
    schema: pa.Schema,
) -> pa.Table:
    """The rows of the named batches (every batch when None) in ``partitions``, in order of
    partition, then batch id, then each batch's own order, whether compacted or not."""
    batch_ids = None if batch_ids is None else list(batch_ids)
    tables = [
        evolved(part, schema)
        for partition in partitions
        for part in _partition_parts(objects, table, partition, batch_ids)
    ]
    return pa.concat_tables(tables) if tables else streaming_tables.empty(schema)


def _partition_parts(
    objects: ObjectStore, table: str, partition: str, batch_ids: list[str] | None
) -> list[pa.Table]:
    if batch_ids is not None:
        return _named_parts(objects, table, partition, batch_ids)
    listed = objects.list(f"tables/{table}/{partition}/")
    loose = {batch_id_of(k): k for k in listed if not _is_compacted(k)}
    parts = [(b, read_parquet(objects, k)) for b, k in sorted(loose.items())]
    if len(listed) == len(loose):
        return [table for _, table in parts]
    # From the compacted object, the batches that no per-batch fragment overrides.
    key = compacted_key(table, partition)
    take = set(compacted_batches(objects, key)) - loose.keys()
    return _with_compacted(objects, key, parts, take)


def _named_parts(
    objects: ObjectStore, table: str, partition: str, batch_ids: list[str]
) -> list[pa.Table]:
    """The named batches' rows by their keys, without listing the hour (a live hour holds
    thousands of fragments by its end, and a streaming run names a dozen): each batch's own
    fragment, or, when it has none, its rows in the compacted object (a compaction writes that
    before it deletes the fragments it folded in, so a fragment deleted meanwhile is there)."""
    parts: list[tuple[str, pa.Table]] = []
    missing: set[str] = set()
    for batch_id in sorted(set(batch_ids)):
        try:
            rows = read_parquet(objects, fragment_key(table, partition, batch_id))
        except FileNotFoundError:
            missing.add(batch_id)
            continue
        parts.append((batch_id, rows))
    key = compacted_key(table, partition)
    if not missing or not objects.exists(key):
        return [table for _, table in parts]
    return _with_compacted(objects, key, parts, set(compacted_batches(objects, key)) & missing)


def _with_compacted(
    objects: ObjectStore, key: str, parts: list[tuple[str, pa.Table]], take: set[str]
) -> list[pa.Table]:
    """``parts`` (per-batch fragments, by batch id) with the rows of the batches ``take`` from
    the compacted object ``key``, interleaved by batch id as the fragments were before."""
    if not take:
        return [table for _, table in parts]
    with objects.open(key) as source:
        rows = pq.read_table(source, filters=pc.is_in(pc.field("batch_id"), pa.array(sorted(take))))
    if not parts:
        return [rows]
    every = [rows, *(t for _, t in parts)]
    widest = _common_schema(every)
    merged = pa.concat_tables([evolved(t, widest) for t in every])
    return [merged.take(pc.sort_indices(merged["batch_id"]))]  # a stable sort


def compacted_batches(objects: ObjectStore, key: str) -> list[str]:
    """The batch ids a compacted object holds (from its metadata; no rows are read)."""
    with objects.open(key) as source:
        metadata = pq.read_schema(source).metadata or {}
    return orjson.loads(metadata.get(BATCHES_METADATA, b"[]"))


def batch_ids_in(objects: ObjectStore, table: str, partition: str) -> list[str]:
    """Every batch id with rows (or an empty fragment) in a partition, compacted or not."""
    listed = objects.list(f"tables/{table}/{partition}/")
    ids = {batch_id_of(k) for k in listed if not _is_compacted(k)}
    if len(ids) < len(listed):
        ids.update(compacted_batches(objects, compacted_key(table, partition)))
    return sorted(ids)


@dataclass
class HourCompaction:
    table: str
    partition: str
    fragments: int = 0  # per-batch fragments folded in (and deleted)
    kept: int = 0  # fragments left because they changed while being compacted
    rows: int = 0  # rows in the compacted object
    bytes_before: int = 0
    bytes_after: int = 0


def compact_hour(objects: ObjectStore, table: str, partition: str) -> HourCompaction:
    """Fold a partition's per-batch fragments into its compacted object (see the module
    docstring); nothing to do when it has none."""
    report = HourCompaction(table, partition)
    key = compacted_key(table, partition)
    listed = objects.list(f"tables/{table}/{partition}/")
    loose = {batch_id_of(k): k for k in listed if not _is_compacted(k)}
    if not loose:
        return report
    read = {b: objects.get(k) for b, k in loose.items()}
    parts = [pq.read_table(pa.BufferReader(data)) for data in read.values()]
    held: set[str] = set()
    if len(listed) > len(loose):
        held = set(compacted_batches(objects, key))
        report.bytes_before += objects.size(key)
        with objects.open(key) as source:
            old = pq.read_table(source)
        kept = pc.invert(pc.is_in(old["batch_id"], pa.array(sorted(loose), pa.string())))
        parts.insert(0, old.filter(kept))
    schema = _common_schema(parts)
    rows = pa.concat_tables([evolved(p, schema) for p in parts])
    rows = rows.take(pc.sort_indices(rows["batch_id"]))  # stable: each batch keeps its order
    batches = sorted(held | loose.keys())
    rows = rows.replace_schema_metadata(
        {**(rows.schema.metadata or {}), BATCHES_METADATA: orjson.dumps(batches)}
    )
    report.rows = rows.num_rows
    report.bytes_before += sum(len(data) for data in read.values())
    report.bytes_after = write_parquet(objects, key, rows, row_group_size=COMPACTED_ROW_GROUP)
    for batch_id, fragment in loose.items():
        # A fragment rewritten since it was read (a re-run racing compaction) overrides the
        # compacted rows until the next compaction folds it in: leave it.
        try:
            same = objects.get(fragment) == read[batch_id]
        except FileNotFoundError:
            same = False
        if same:
            objects.delete(fragment)
            report.fragments += 1
        else:
            report.kept += 1
    return report


COMPACTED_ROW_GROUP = 64_000  # rows per row group: a read of a few batches skips the others


def _common_schema(parts: list[pa.Table]) -> pa.Schema:
    """The widest of the parts' schemas (an empty fragment may have fewer columns)."""
    return max((p.schema for p in parts), key=lambda s: len(s.names))


def evolved(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """``part`` in ``schema``; a column added since it was written (v2's) reads as nulls."""
    n = part.num_rows
    names = set(part.column_names)
    columns = [part[f.name] if f.name in names else pa.nulls(n, f.type) for f in schema]
    return pa.table(columns, names=schema.names).cast(schema)


def batch_id_of(key: str) -> str:
    return key.rsplit("/", 1)[1].removesuffix(".parquet")


def write_each(objects: ObjectStore, table: str, rows: pa.Table) -> int:
    """One fragment per (event-time hour, batch) of ``rows``, each in ``rows``' order: one
    stable sort of the keys, then the groups gathered a window at a time (never a second copy
    of all of ``rows``); returns the rows written."""
    if rows.num_rows == 0:
        return 0
    hours = pc.strftime(rows["event_time"], format="%Y-%m-%d-%H:00", locale="C")
    keys = pa.table({"partition": hours, "batch_id": rows["batch_id"]})
    order = pc.sort_indices(keys, sort_keys=[("partition", "ascending"), ("batch_id", "ascending")])
    keys = keys.take(order)
    starts = [0]
    if rows.num_rows > 1:
        changed = pc.or_(
            *(
                pc.not_equal(keys[name].slice(1), keys[name].slice(0, rows.num_rows - 1))
                for name in ("partition", "batch_id")
            )
        )
        starts += (np.flatnonzero(changed.to_numpy(zero_copy_only=False)) + 1).tolist()
    ends = [*starts[1:], rows.num_rows]
    window_start, window = 0, rows.slice(0, 0)
    for start, end in zip(starts, ends, strict=True):
        if end > window_start + window.num_rows:  # gather the next groups, WRITE_WINDOW rows
            at = bisect.bisect_left(ends, start + WRITE_WINDOW)  # ends are sorted
            last = ends[at] if at < len(ends) else rows.num_rows
            window_start, window = start, rows.take(order.slice(start, max(last, end) - start))
        partition, batch_id = keys["partition"][start].as_py(), keys["batch_id"][start].as_py()
        key = fragment_key(table, partition, batch_id)
        write_parquet(objects, key, window.slice(start - window_start, end - start))
    return rows.num_rows


WRITE_WINDOW = 20_000  # rows write_each gathers at once: few gathers, no copy of every row
