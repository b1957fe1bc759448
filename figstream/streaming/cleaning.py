"""The ``clean_postings`` step: each hour's new ``raw_events`` fragments, cleaned, per batch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from figstream.streaming import table_ops, tables
from figstream.streaming.chunks import by_hour
from figstream.streaming.fragments import read_fragments, write_each
from figstream.streaming.stores import Stores


def clean(stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None) -> int:
    """clean_postings fragments from the partitions' raw_events fragments, an hour (or a
    chunk of a busy hour's batches) at a time."""
    return sum(by_hour(_clean, stores, partitions, batch_ids, ["raw_events"]))


def _clean(stores: Stores, partitions: Sequence[str], batch_ids: list[str] | None) -> int:
    events = read_fragments(
        stores.objects, "raw_events", partitions, batch_ids, tables.EVENTS_SCHEMA
    )
    return write_each(stores.objects, "clean_postings", table_ops.clean_postings(events))
