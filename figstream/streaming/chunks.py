"""How a run's steps cut their work: an hour at a time, and a busy hour into chunks of batches.

A step (clean, dedupe, job_state, the index changes) reads the per-(hour, batch) fragments of
the batches it was given. Over a range (a backfill, a catch-up run) it goes one hour after
another, so a run holds one hour's events however long its range. One hour of a busy day is
still too much at once (a 5M-event day puts ~400k events in its busiest hours, and clean then
peaked at 778 MiB), so an hour whose batches hold more than :data:`CHUNK_RECORDS` records, as
the landing index counts them, is cut into groups of whole batches under that bound.

Cutting by whole batches is what makes this safe: each batch's output fragment is written by
one call, and the state steps are order-insensitive (conditional writes that keep the earliest
posting or the latest event, whatever the order), so the result is the one a single pass gives,
and the one the sensor's runs give (they, too, see an hour's batches a few at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from figstream.ingest.landing import parse_batch_key
from figstream.streaming.fragments import batch_ids_in
from figstream.streaming.stores import Stores, release_arrow_memory

R = TypeVar("R")
# Records of one call at most, unless one batch alone holds more. A sensor run (a few batches)
# is one call either way; at 50k a 1M-event day's range run peaked 30 MiB higher in clean.
CHUNK_RECORDS = 25_000
STREAMS = ("postings", "boards")


def by_hour(
    step: Callable[[Stores, Sequence[str], list[str] | None], R],
    stores: Stores,
    partitions: Sequence[str],
    batch_ids: Iterable[str] | None,
    inputs: Sequence[str],
) -> list[R]:
    """Run ``step`` over ``partitions`` one hour at a time, in order, and a busy hour one
    chunk of its batches at a time (:func:`chunks`); returns every call's report (one call with
    no partitions for an empty range). ``inputs`` are the tables the step reads, whose
    fragments say which batches a backfill (``batch_ids`` None) covers."""
    ids = None if batch_ids is None else list(batch_ids)
    if not partitions:
        return [step(stores, [], ids)]
    reports = []
    for partition in sorted(partitions):
        for chunk in chunks(stores, partition, ids, inputs):
            reports.append(step(stores, [partition], chunk))
            release_arrow_memory()
    return reports


def chunks(
    stores: Stores,
    partition: str,
    batch_ids: list[str] | None,
    inputs: Sequence[str],
    chunk_records: int | None = None,
) -> list[list[str] | None]:
    """The batch groups of one hour, in batch order, each under ``chunk_records`` records
    (:data:`CHUNK_RECORDS`) by the landing index's counts; ``[batch_ids]`` as given when the
    hour fits in one."""
    chunk_records = CHUNK_RECORDS if chunk_records is None else chunk_records
    counts = record_counts(stores, partition)
    named = batch_ids
    total = sum(counts.values()) if named is None else sum(counts.get(b, 0) for b in named)
    if total <= chunk_records:
        return [batch_ids]
    if named is None:  # a backfill: every batch with a fragment in the step's inputs
        named = [b for table in inputs for b in batch_ids_in(stores.objects, table, partition)]
    groups: list[list[str]] = [[]]
    size = 0
    for batch in sorted(named):
        n = counts.get(batch, 0)
        if groups[-1] and size + n > chunk_records:
            groups.append([])
            size = 0
        groups[-1].append(batch)
        size += n
    return [group for group in groups if group] or [[]]


def record_counts(stores: Stores, partition: str) -> dict[str, int]:
    """Records per batch id in an hour, over both streams (a batch id names one landed
    batch, so the two streams never share one)."""
    out: dict[str, int] = {}
    for stream in STREAMS:
        for key, n in stores.state.batch_counts(stream, partition).items():
            batch_id = parse_batch_key(key)[1]
            out[batch_id] = out.get(batch_id, 0) + n
    return out
