"""The ``job_state`` step: an hour's events applied to the jobs they touch in the state store.

A run reads the rows of the jobs its events name (one keyed read), folds the events into them
with :func:`table_ops.apply_job_state` (each component last writer wins by event time, event
id the tiebreak) and writes back the rows that changed, each conditionally on the version it
read. A refused write (another writer changed the job in between) is read and merged again:
the fold is idempotent and order-insensitive, so nothing is lost and a re-run of an hour
changes nothing. A board.merged also re-derives the jobs of the board it absorbs.

What a run costs is what its events cost: it never reads a job its events do not name (but
for the jobs of a board a merger absorbs), whatever the size of the state.

The jobs each hour's events touched are kept per (hour, batch) in ``touched_by_job_state``, so
that the ``search_index`` step writes exactly their changes.

Each event is also folded into its job's *day row* (:func:`apply_to_days`): the join of that
job's events of that UTC day of event time alone, written the same way (conditionally on the
version read), and each merger into its board's day. A late event touches only its own day's
row. The state as of the end of a day is the join of the rows of that day and before, which is
what the daily rollups and the parity views read (:mod:`figstream.streaming.daily`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.state import (
    DAY_VERSIONED_SCHEMA,
    JOB_SCHEMA,
    MERGER_DAY_SCHEMA,
    VERSIONED_SCHEMA,
    StateStore,
)
from figstream.streaming import table_ops, tables
from figstream.streaming.chunks import by_hour
from figstream.streaming.convert import convert_old_state
from figstream.streaming.fragments import read_fragments, write_each
from figstream.streaming.ingest import lag_seconds
from figstream.streaming.stores import INGEST_TABLES, Stores, release_arrow_memory

TOUCHED = "touched_by_job_state"  # per (hour, batch): job_id, event_time, batch_id
TOUCHED_SCHEMA = tables.TOUCHED_SCHEMA
MAX_ATTEMPTS = 20  # conditional-write rounds before a run gives up on a job (then it fails)
# Jobs folded at once: their rows are read into Python and Arrow, so a busy hour (a 5M-event
# day's hours hold 200k-400k events) is folded a slice of jobs at a time, the heap trimmed
# after each. Each job's events stay together, and the fold is order-insensitive, so the
# slices give the same state. At 20k jobs a slice, job_state peaked at 645 MiB on a 5M-event
# day (the rows as Python objects); at 5k, 512.4 MiB (587b8f8); a 1M-event day's 360 at 5k
# was 351 at 2.5k (its job_state 208 s against 230, both runs under load).
JOBS_PER_APPLY = 2_500


class ConflictError(RuntimeError):
    """Jobs whose conditional writes kept being refused: other writers never stopped."""


@dataclass
class StateReport:
    events: int = 0
    inserted: int = 0  # jobs new to the store
    updated: int = 0  # jobs whose row changed
    unchanged: int = 0  # jobs named by the events whose row stayed as it was
    stale: int = 0  # events that lost to a newer event of their job (and component)
    retried: int = 0  # conditional writes refused and redone
    event_times: list[pa.Array] = field(default_factory=list)

    def add(self, other: StateReport) -> None:
        for name in ("events", "inserted", "updated", "unchanged", "stale", "retried"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.event_times.extend(other.event_times)

    def metadata(self, now_us: int | None = None) -> dict[str, float]:
        counts = ("events", "inserted", "updated", "unchanged", "stale", "retried")
        lag = lag_seconds(self.event_times, now_us)
        return {**{name: getattr(self, name) for name in counts}, **lag}


def job_rows(jobs: pa.Table) -> pa.Table:
    """Store job rows (:data:`JOB_SCHEMA`, a version column allowed) as state rows."""
    jobs = jobs.select(JOB_SCHEMA.names)
    kind = pa.repeat(pa.scalar("job"), jobs.num_rows)
    return pa.table([kind, *jobs.columns], schema=tables.STATE_SCHEMA)


def read_state(state: StateStore) -> pa.Table:
    """The whole job state (:data:`tables.STATE_SCHEMA`, by kind and job_id): for checks and
    views. A run never reads it whole."""
    jobs = [job_rows(chunk) for chunk in state.iter_jobs()]
    parts = [*jobs, table_ops.merger_rows(state.mergers())]
    out = pa.concat_tables([tables.empty(tables.STATE_SCHEMA), *parts])
    return out.sort_by([("kind", "ascending"), ("job_id", "ascending")]).combine_chunks()


def _fingerprint(state: pa.Table) -> pa.Array:
    """What makes a job's row: its components' events, first posting, status (the rest is
    derived from those and the board's merger)."""
    names = (
        "job_id",
        "posting_event_id",
        "structure_event_id",
        "expiry_event_id",
        "merger_event_id",
        "status",
    )
    parts = [pc.fill_null(state[name], "") for name in names]
    parts.append(pc.fill_null(pc.cast(pc.cast(state["posted_at"], pa.int64()), pa.string()), ""))
    return pc.binary_join_element_wise(*parts, "|")


def _stale(events: pa.Table, after: pa.Table) -> int:
    """Postings and expiries that are not their job's latest of their kind."""
    if events.num_rows == 0:
        return 0
    won = pa.chunked_array(
        [after["posting_event_id"].drop_null(), after["expiry_event_id"].drop_null()],
        type=pa.string(),
    )
    counted = pc.is_in(events["event_type"], pa.array([*tables.POSTING_TYPES, tables.EXPIRED]))
    lost = pc.and_(counted, pc.invert(pc.is_in(events["event_id"], won)))
    return pc.sum(lost).as_py() or 0


def apply_to_jobs(
    state: StateStore, job_ids: pa.Array | list[str], events: pa.Table, mergers: pa.Table
) -> StateReport:
    """Fold ``events`` into the stored rows of ``job_ids`` and write back what changed, each
    job conditionally on the version read; refused jobs are read and folded again."""
    report = StateReport()
    pending = pc.unique(pa.array(job_ids, pa.string())).drop_null() if len(job_ids) else None
    first = True
    for _ in range(MAX_ATTEMPTS):
        if pending is None or len(pending) == 0:
            return report
        before = state.get_jobs(pending.to_pylist())
        mine = events.filter(pc.is_in(events["job_id"], pending)) if events.num_rows else events
        after = table_ops.apply_job_state(pa.concat_tables([job_rows(before), mergers]), mine)
        after = after.filter(pc.equal(after["kind"], "job"))
        changed = after.filter(pc.invert(pc.is_in(_fingerprint(after), _fingerprint(before))))
        versions = dict(
            zip(before["job_id"].to_pylist(), before["version"].to_pylist(), strict=True)
        )
        version = pa.array([versions.get(j, 0) for j in changed["job_id"].to_pylist()], pa.int64())
        rows = changed.drop_columns(["kind"]).append_column("version", version)
        refused = state.put_jobs(rows.cast(VERSIONED_SCHEMA))
        if first:  # the first round's verdict is the run's (a retry re-reads what others wrote)
            known = pc.is_in(changed["job_id"], before["job_id"])
            report.updated = pc.sum(known).as_py() or 0
            report.inserted = changed.num_rows - report.updated
            report.unchanged = after.num_rows - changed.num_rows
            report.stale = _stale(mine, after)
            first = False
        report.retried += len(refused)
        pending = pa.array(refused, pa.string()) if refused else None
    raise ConflictError(f"{len(pending)} jobs kept changing under this run, e.g. {pending[0]}")


DAY_SEP = "\x1f"  # joins job_id and day into one fold key (a day is the last 10 characters)


def day_of(times: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The UTC day (``YYYY-MM-DD``) of each time."""
    return pc.strftime(times, format="%Y-%m-%d", locale="C")


def _day_keyed(job_ids: pa.Array, days: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(job_ids, days, DAY_SEP)


def apply_to_days(state: StateStore, events: pa.Table) -> int:
    """Fold job events (no board.merged) into the day rows of their (job, event day), each
    written conditionally on the version read, refused ones read and folded again, as
    :func:`apply_to_jobs` does for the job rows. Returns the writes refused and redone."""
    events = events.filter(pc.is_valid(events["job_id"]))
    if events.num_rows == 0:
        return 0
    keyed = events.set_column(
        events.schema.get_field_index("job_id"),
        "job_id",
        _day_keyed(events["job_id"], day_of(events["event_time"])),
    )
    pending = pc.unique(keyed["job_id"])
    retried = 0
    for _ in range(MAX_ATTEMPTS):
        if len(pending) == 0:
            return retried
        keys = [(k[:-11], k[-10:]) for k in pending.to_pylist()]
        before = state.get_job_days(keys)
        folded = before.set_column(0, "job_id", _day_keyed(before["job_id"], before["day"]))
        before_rows = job_rows(folded)
        mine = keyed.filter(pc.is_in(keyed["job_id"], pending))
        after = table_ops.apply_job_state(before_rows, mine)
        after = after.filter(pc.equal(after["kind"], "job"))
        changed = after.filter(pc.invert(pc.is_in(_fingerprint(after), _fingerprint(before_rows))))
        versions = dict(
            zip(folded["job_id"].to_pylist(), folded["version"].to_pylist(), strict=True)
        )
        keys_changed = changed["job_id"]
        version = pa.array([versions.get(k, 0) for k in keys_changed.to_pylist()], pa.int64())
        rows = changed.drop_columns(["kind"])
        rows = rows.set_column(0, "job_id", pc.utf8_slice_codeunits(keys_changed, 0, -11))
        rows = rows.add_column(1, "day", pc.utf8_slice_codeunits(keys_changed, -10))
        rows = rows.append_column("version", version)
        refused = state.put_job_days(rows.cast(DAY_VERSIONED_SCHEMA))
        retried += len(refused)
        pending = pa.array([job + DAY_SEP + day for job, day in refused], pa.string())
    raise ConflictError(f"{len(pending)} job days kept changing under this run")


def merger_day_rows(merged: pa.Table) -> pa.Table:
    """board.merged events as :data:`MERGER_DAY_SCHEMA` rows (the day of the merger)."""
    return pa.table(
        {
            "board": merged["absorbed_board"],
            "day": day_of(merged["event_time"]),
            "merged_into": merged["surviving_board"],
            "merged_at": merged["event_time"],
            "merger_event_id": merged["event_id"],
        }
    ).cast(MERGER_DAY_SCHEMA)


END_OF_DAY_COPIES = "tables/board_daily_stats/_end_of_day/"  # an earlier version's copies


def convert_day_rows(stores: Stores) -> int:
    """Once, on a store an earlier version wrote (:meth:`StateStore.day_rows_pending`): build
    the day rows from the kept ingest fragments, hour by hour, then delete the daily full
    copies of the state and registry that version kept. Idempotent, so a conversion cut short
    is done again. Returns the events replayed (0: nothing to convert, a flag read)."""
    state = stores.state
    if not state.day_rows_pending():
        return 0
    replayed = 0
    hours = sorted(
        {
            key.split("/")[2]
            for table in INGEST_TABLES.values()
            for key in stores.objects.list(f"tables/{table}/")
            if key.count("/") >= 3
        }
    )
    for hour in hours:
        events = pa.concat_tables(
            [
                read_fragments(stores.objects, table, [hour], None, tables.EVENTS_SCHEMA)
                for table in INGEST_TABLES.values()
            ]
        )
        is_merger = pc.equal(events["event_type"], tables.MERGED)
        if pc.any(is_merger).as_py():
            state.put_merger_days(merger_day_rows(events.filter(is_merger)))
        others = events.filter(pc.invert(is_merger))
        job_ids = pc.unique(others["job_id"]).drop_null()
        for start in range(0, len(job_ids), JOBS_PER_APPLY):
            ids = job_ids.slice(start, JOBS_PER_APPLY)
            apply_to_days(state, others.filter(pc.is_in(others["job_id"], ids)))
        replayed += events.num_rows
    for key in stores.objects.list(END_OF_DAY_COPIES):
        stores.objects.delete(key)
    state.day_rows_done()
    return replayed


def update_job_state(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> StateReport:
    """Apply the partitions' new events to the job state, an hour at a time (:func:`by_hour`)."""
    convert_old_state(stores)
    convert_day_rows(stores)
    out = StateReport()
    for report in by_hour(
        _update_job_state, stores, partitions, batch_ids, list(INGEST_TABLES.values())
    ):
        out.add(report)
    return out


def _update_job_state(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> StateReport:
    batch_ids = None if batch_ids is None else list(batch_ids)
    events = pa.concat_tables(
        [
            read_fragments(stores.objects, table, partitions, batch_ids, tables.EVENTS_SCHEMA)
            for table in INGEST_TABLES.values()
        ]
    )
    if events.num_rows == 0:
        return StateReport()
    state = stores.state
    is_merger = pc.equal(events["event_type"], tables.MERGED)
    merged = events.filter(is_merger)
    # Without a merger (nearly every chunk) the events are the others: no copy of them all.
    whole = merged.num_rows == 0 and is_merger.null_count == 0
    others = events if whole else events.filter(pc.invert(is_merger))
    if merged.num_rows:  # the board's merger first, so the jobs below meet it
        state.put_merger_days(merger_day_rows(merged))
        state.put_mergers(
            pa.table(
                {
                    "board": merged["absorbed_board"],
                    "merged_into": merged["surviving_board"],
                    "merged_at": merged["event_time"],
                    "merger_event_id": merged["event_id"],
                }
            )
        )
    mergers = table_ops.merger_rows(state.mergers())
    report = StateReport()
    job_ids = pc.unique(others["job_id"]).drop_null()
    job_ids = job_ids.take(pc.sort_indices(job_ids))  # slices of key ranges: no page shared
    for start in range(0, len(job_ids), JOBS_PER_APPLY):
        ids = job_ids.slice(start, JOBS_PER_APPLY)
        mine = others.filter(pc.is_in(others["job_id"], ids))
        report.add(apply_to_jobs(state, ids, mine, mergers))
        report.retried += apply_to_days(state, mine)
        del mine
        release_arrow_memory()  # the slice's rows, freed, no longer under the next one's peak
    touched = [others.select(TOUCHED_SCHEMA.names)]
    # The jobs of each absorbed board turn merged as of the merger (every time the hour runs:
    # a crash after the merger was stored must not leave them behind).
    boards = {}
    for board, when, batch in zip(
        *(merged[c].to_pylist() for c in ("absorbed_board", "event_time", "batch_id")),
        strict=True,
    ):
        boards.setdefault(board, (when, batch))
    for board, (when, batch) in boards.items():
        for chunk in state.board_jobs(board, batch_rows=JOBS_PER_APPLY):
            done = apply_to_jobs(
                state, chunk["job_id"], tables.empty(tables.EVENTS_SCHEMA), mergers
            )
            report.updated += done.updated
            report.retried += done.retried
            n = chunk.num_rows
            touched.append(
                pa.table(
                    [chunk["job_id"], pa.repeat(pa.scalar(when, tables.TS), n), [batch] * n],
                    schema=TOUCHED_SCHEMA,
                )
            )
    write_each(stores.objects, TOUCHED, pa.concat_tables(touched).cast(TOUCHED_SCHEMA))
    report.events = events.num_rows
    report.event_times.append(events["event_time"].combine_chunks())
    return report
