"""Daily views of the streaming tables: ``board_daily_stats`` and the state at a day's end."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import pyarrow as pa

from figstream.storage.objects import ObjectStore, read_parquet, write_parquet
from figstream.streaming import table_ops, tables
from figstream.streaming.fragments import read_fragments
from figstream.streaming.stores import INGEST_TABLES, Stores, day_partitions


def read_snapshot(objects: ObjectStore, key: str, schema: pa.Schema) -> pa.Table:
    """A kept table, or an empty one when there is none."""
    if not objects.exists(key):
        return tables.empty(schema)
    return read_parquet(objects, key).select(schema.names).cast(schema)


def _end_of_day_key(day: str, what: str) -> str:
    return f"tables/board_daily_stats/_end_of_day/{day}/{what}.parquet"


def board_daily_stats(stores: Stores, days: Sequence[str], epoch_day: str) -> dict[str, pa.Table]:
    """Stats of each of ``days``, with active jobs as of the end of that day.

    The as-of state is carried from day to day: each day's end-of-day state (and dedupe
    registry) is kept, so computing days ``a..b`` replays only those days on top of the state
    at the end of ``a - 1`` and rewrites the kept states it passes. A day before the first
    kept state is rebuilt from the epoch. A late event touches an older day; the sensor then
    asks for that day onwards, which refreshes every later day's state too.
    """
    wanted = set(days)
    epoch = date.fromisoformat(epoch_day)
    first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    before = (first - timedelta(days=1)).isoformat()
    state_key, registry_key = (_end_of_day_key(before, w) for w in ("state", "registry"))
    if first > epoch and stores.objects.exists(state_key):
        state = read_snapshot(stores.objects, state_key, tables.STATE_SCHEMA)
        registry = read_snapshot(stores.objects, registry_key, tables.CANONICAL_SCHEMA)
        current_day = first
    else:
        state, registry, current_day = None, None, epoch
    out = {}
    while current_day <= last:
        current = current_day.isoformat()
        events = pa.concat_tables(
            [
                read_fragments(
                    stores.objects, table, day_partitions(current), None, tables.EVENTS_SCHEMA
                )
                for table in INGEST_TABLES.values()
            ]
        )
        state = table_ops.apply_job_state(state, events)
        deduped = table_ops.dedupe_postings(table_ops.clean_postings(events), registry)
        registry = deduped.canonical
        write_parquet(stores.objects, _end_of_day_key(current, "state"), state)
        write_parquet(stores.objects, _end_of_day_key(current, "registry"), registry)
        if current in wanted:
            stats = table_ops.board_daily_stats(events, state, current_day, deduped.duplicates)
            write_parquet(stores.objects, f"tables/board_daily_stats/{current}.parquet", stats)
            out[current] = stats
        current_day += timedelta(days=1)
    return out


def end_of_day_state(stores: Stores, day: str, epoch_day: str) -> tuple[pa.Table, pa.Table]:
    """(job state, dedupe registry) as of the end of ``day``, from the kept end-of-day state
    of ``board_daily_stats``. A day with no kept state yet is computed by it (which also
    writes that day's stats, as the daily rollup would); a day before the epoch is empty."""
    if date.fromisoformat(day) < date.fromisoformat(epoch_day):
        return tables.empty(tables.STATE_SCHEMA), tables.empty(tables.CANONICAL_SCHEMA)
    if not stores.objects.exists(_end_of_day_key(day, "state")):
        board_daily_stats(stores, [day], epoch_day)
    state = read_snapshot(stores.objects, _end_of_day_key(day, "state"), tables.STATE_SCHEMA)
    registry = read_snapshot(
        stores.objects, _end_of_day_key(day, "registry"), tables.CANONICAL_SCHEMA
    )
    return state, registry


def registry_duplicates(registry: pa.Table) -> pa.Table:
    """The duplicates (:data:`tables.DUPLICATES_SCHEMA`) a dedupe registry defines."""
    return table_ops.dedupe_postings(tables.empty(tables.POSTINGS_SCHEMA), registry).duplicates


def end_of_day_index(stores: Stores, day: str, epoch_day: str) -> pa.Table:
    """The search index (:data:`tables.SEARCH_INDEX_COLUMNS`) as of the end of ``day``,
    built from the kept end-of-day state (see :func:`end_of_day_state`)."""
    state, registry = end_of_day_state(stores, day, epoch_day)
    return table_ops.search_index(state, registry_duplicates(registry))
