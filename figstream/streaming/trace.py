"""Recording where each delivery of an event went, as the ingest step decides it.

The ingest step claims a group's event ids, then calls :func:`record_group` with each batch's
claim keys and owners: every valid line becomes a ``materialised`` row (the first line to claim
its id) or a ``duplicate`` one (naming the batch whose delivery counted), and every rejected
line with an event id a ``dead_lettered`` row with its reason code (or a ``duplicate`` of an
identical bad line). The rows go to the trace index in one write per group
(:mod:`figstream.storage.trace`), after the claims, so a retried run rewrites the same keys.
What ``figstream trace`` reads back from it is in :mod:`figstream.streaming.trace_lookup`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.sqlite import now_us
from figstream.storage.state import StateStore, beside
from figstream.storage.trace import (
    BATCH_SCHEMA,
    DELIVERY_SCHEMA,
    TS,
    SqliteTraceIndex,
    TraceIndex,
)


def _dynamo_index(config) -> TraceIndex:
    from figstream.storage.dynamo_trace import DynamoTraceIndex

    return DynamoTraceIndex(config)


def index_for(state: StateStore) -> TraceIndex:
    """The trace index beside ``state``: a table in the SQLite state store's file, or the
    ``trace`` table of the DynamoDB store's account and prefix. Opened once per store object."""
    return beside(state, "trace index", SqliteTraceIndex, _dynamo_index)


@dataclass(frozen=True)
class ClaimedBatch:
    """One batch of a claim group: its rows and claim keys (row i's is ``*_ids[i]``), and the
    owner of each key as the claim step returned it."""

    batch_id: str
    batch_key: str
    valid: pa.Table
    valid_ids: Sequence[str]
    valid_owners: dict[str, str]
    rejected: pa.Table
    rejected_ids: Sequence[str]
    rejected_owners: dict[str, str]


def _outcomes(
    batch_id: str, ids: Sequence[str], owners: dict[str, str], first: str
) -> tuple[list[str], list[str | None]]:
    """Per row: ``first`` for the batch's first row of a key it owns (the one ingest keeps),
    else ``duplicate``; and for a duplicate the batch whose delivery counted (else None)."""
    seen: set[str] = set()
    outcome: list[str] = []
    counted: list[str | None] = []
    for key in ids:
        owner = owners[key]
        if owner == batch_id and key not in seen:
            seen.add(key)
            outcome.append(first)
            counted.append(None)
        else:
            outcome.append("duplicate")
            counted.append(owner)
    return outcome, counted


def delivery_rows(batch: ClaimedBatch, partition: str) -> pa.Table:
    """The trace rows (:data:`DELIVERY_SCHEMA`) of one claimed batch."""
    valid, rejected = batch.valid, batch.rejected
    outcome, counted = _outcomes(
        batch.batch_id, batch.valid_ids, batch.valid_owners, "materialised"
    )
    bad_outcome, bad_counted = _outcomes(
        batch.batch_id, batch.rejected_ids, batch.rejected_owners, "dead_lettered"
    )
    # A rejected line that yields no event id cannot be looked up by one (its dead letter can).
    keep = pc.is_valid(rejected["event_id"]).combine_chunks()
    total = valid.num_rows + (pc.sum(keep).as_py() or 0)

    def both(good: Any, bad: Any) -> pa.ChunkedArray:
        """The valid rows' values, then those of the rejected rows kept."""
        good = good if isinstance(good, pa.ChunkedArray) else pa.chunked_array([good])
        bad = bad if isinstance(bad, pa.ChunkedArray) else pa.chunked_array([bad])
        return pa.chunked_array(good.chunks + bad.filter(keep).chunks, good.type)

    columns = {
        "event_id": both(valid["event_id"], rejected["event_id"]),
        "batch_id": pa.array([batch.batch_id] * total, pa.string()),
        "line_no": both(valid["line_no"], rejected["line_no"]),
        "partition_key": pa.array([partition] * total, pa.string()),
        "outcome": both(pa.array(outcome, pa.string()), pa.array(bad_outcome, pa.string())),
        # Null where the delivery counted itself: the common case costs nothing.
        "counted_batch": both(pa.array(counted, pa.string()), pa.array(bad_counted, pa.string())),
        "reason": both(pa.nulls(valid.num_rows, pa.string()), rejected["code"]),
    }
    return pa.table(columns, schema=DELIVERY_SCHEMA)


def record_group(
    state: StateStore,
    stream: str,
    partition: str,
    batches: Sequence[ClaimedBatch],
    run_id: str | None,
) -> int:
    """Write the trace rows of a claim group's batches in one call; returns how many."""
    if not batches:
        return 0
    shared = pa.table(
        {
            "batch_id": [b.batch_id for b in batches],
            "partition_key": [partition] * len(batches),
            "batch_key": [b.batch_key for b in batches],
            "stream": [stream] * len(batches),
            "run_id": pa.array([run_id] * len(batches), pa.string()),
            "recorded_at": pa.array([now_us()] * len(batches), pa.int64()).cast(TS),
        },
        schema=BATCH_SCHEMA,
    )
    rows = pa.concat_tables([delivery_rows(batch, partition) for batch in batches])
    return index_for(state).record(rows, shared)
