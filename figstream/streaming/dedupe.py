"""The ``deduped_postings`` step: cross-board duplicates, decided by the dedupe registry.

The registry, in the state store, holds each job's first job.posted; per dedupe key the
earliest of them is the original and every other job under the key a duplicate of it. A run
registers its postings' first postings conditionally (an earlier one replaces a later, in any
order), recomputes the originals of exactly the keys that changed (the new keys, and the old
key of a job whose earlier posting moved it) from those keys' members, and keeps the postings
whose job is not a duplicate. It never reads a key its postings do not name.

The jobs whose duplicate status a run recomputed are kept per (hour, batch) in
``touched_by_dedupe`` for the ``search_index`` step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from figstream.streaming import table_ops, tables
from figstream.streaming.chunks import by_hour
from figstream.streaming.convert import convert_old_state
from figstream.streaming.fragments import read_fragments, write_each
from figstream.streaming.registry import recompute_keys
from figstream.streaming.stores import Stores

TOUCHED = "touched_by_dedupe"  # per (hour, batch): job_id, event_time, batch_id


@dataclass
class DedupeReport:
    postings: int = 0
    kept: int = 0
    registered: int = 0  # first postings stored (new jobs, or an earlier posting of a job)
    keys_recomputed: int = 0
    duplicates_changed: int = 0  # registry rows whose original changed

    def add(self, other: DedupeReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def dedupe(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> DedupeReport:
    """Cross-board dedupe of the partitions' clean postings, an hour at a time (:func:`by_hour`)."""
    convert_old_state(stores)
    out = DedupeReport()
    for report in by_hour(_dedupe, stores, partitions, batch_ids, ["clean_postings"]):
        out.add(report)
    return out


def _dedupe(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> DedupeReport:
    state = stores.state
    postings = read_fragments(
        stores.objects, "clean_postings", partitions, batch_ids, tables.POSTINGS_SCHEMA
    )
    if postings.num_rows == 0:
        return DedupeReport()
    posted = postings.filter(pc.equal(postings["event_type"], tables.POSTED))
    report = DedupeReport(postings.num_rows)
    touched = []
    # A slice of jobs at a time (their registry rows pass through Python): a key a later slice
    # changes is recomputed again then, from all its members, so the slices end where one
    # pass would.
    job_ids = pc.unique(posted["job_id"])
    for start in range(0, len(job_ids), JOBS_PER_PASS):
        ids = job_ids.slice(start, JOBS_PER_PASS)
        mine = posted.filter(pc.is_in(posted["job_id"], ids))
        touched += _register(state, mine, report)
    if touched:
        rows = pa.concat_tables(touched).select(tables.TOUCHED_SCHEMA.names)
        write_each(stores.objects, TOUCHED, rows.cast(tables.TOUCHED_SCHEMA))
    every = pc.unique(postings["job_id"]).drop_null()
    duplicates = []
    for start in range(0, len(every), JOBS_PER_PASS):
        now = state.first_postings(every.slice(start, JOBS_PER_PASS).to_pylist())
        duplicates.append(now.filter(pc.is_valid(now["duplicate_of"]))["job_id"].combine_chunks())
    dropped = pa.chunked_array(duplicates, pa.string())
    kept = postings.filter(pc.invert(pc.is_in(postings["job_id"], dropped)))
    report.kept = write_each(stores.objects, "deduped_postings", kept)
    return report


JOBS_PER_PASS = 20_000  # jobs whose registry rows a dedupe pass reads at once


def _register(state, posted: pa.Table, report: DedupeReport) -> list[pa.Table]:
    """Register ``posted``'s first postings and recompute the keys they change; returns who
    the recomputed keys' members are, under the posting that changed each key."""
    known = state.first_postings(pc.unique(posted["job_id"]).to_pylist())
    names = tables.CANONICAL_SCHEMA.names
    first = table_ops.dedupe_postings(posted, known.select(names)).canonical
    new = first.filter(pc.invert(pc.is_in(first["event_id"], known["event_id"])))
    report.registered += state.register(new) if new.num_rows else 0
    moved = known.filter(pc.is_in(known["job_id"], new["job_id"]))  # their old keys change too
    keys = pc.unique(pa.chunked_array([new["dedupe_key"], moved["dedupe_key"]], pa.string()))
    if not len(keys):
        return []
    members, changed = recompute_keys(state, keys.to_pylist())
    report.keys_recomputed += len(keys)
    report.duplicates_changed += changed
    # Whose duplicate status this pass decided, under the posting that named the key.
    cause = _first_cause(new, moved, posted.select(["event_id", "batch_id"]))
    return [members.select(["job_id", "dedupe_key"]).join(cause, "dedupe_key")]


def _first_cause(new: pa.Table, moved: pa.Table, batches: pa.Table) -> pa.Table:
    """dedupe_key -> (event_time, batch_id) of the first posting that changed the key: a new
    first posting under it, or one that moved a job away from it."""
    with_batch = new.select(["job_id", "dedupe_key", "event_time", "event_id"]).join(
        batches, "event_id"
    )
    left = moved.select(["job_id", "dedupe_key"]).join(
        with_batch.select(["job_id", "event_time", "batch_id"]), "job_id"
    )
    causes = pa.concat_tables(
        [
            with_batch.select(["dedupe_key", "event_time", "batch_id"]),
            left.select(["dedupe_key", "event_time", "batch_id"]),
        ]
    ).sort_by([("dedupe_key", "ascending"), ("event_time", "ascending")])
    keys = causes["dedupe_key"].to_pylist()
    firsts = [i for i, key in enumerate(keys) if i == 0 or keys[i - 1] != key]
    return causes.take(pa.array(firsts, pa.int64()))
