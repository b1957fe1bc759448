"""Outputs per (table, hour, batch): ``tables/<table>/<partition>/<batch_id>.parquet``.

A re-run of a batch overwrites its own fragment and never another's, so replays and backfills
are idempotent, and a downstream step reads exactly the fragments of the batches it was given.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.objects import ObjectStore, read_parquet, write_parquet
from figstream.streaming import tables as streaming_tables
from figstream.streaming.stores import fragment_key

# --- downstream steps ---------------------------------------------------------------------------


def fragments(
    objects: ObjectStore, table: str, partition: str, batch_ids: Iterable[str] | None
) -> list[str]:
    """Keys of a partition's fragments: the named batches', or all of them (a backfill)."""
    keys = objects.list(f"tables/{table}/{partition}/")
    if batch_ids is None:
        return keys
    wanted = set(batch_ids)
    return [k for k in keys if batch_id_of(k) in wanted]


def read_fragments(
    objects: ObjectStore,
    table: str,
    partitions: Iterable[str],
    batch_ids: Iterable[str] | None,
    schema: pa.Schema,
) -> pa.Table:
    batch_ids = None if batch_ids is None else list(batch_ids)
    tables = [
        read_parquet(objects, key).select(schema.names).cast(schema)
        for partition in partitions
        for key in fragments(objects, table, partition, batch_ids)
    ]
    return pa.concat_tables(tables) if tables else streaming_tables.empty(schema)


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
