"""The table operations of the transform: pure, deterministic functions over Arrow tables.

:func:`dedupe_events` (at-least-once delivery) -> :func:`clean_postings` ->
:func:`dedupe_postings` (cross-board duplicates) / :func:`apply_job_state` (current state per
job) -> :func:`search_index` and :func:`board_daily_stats`.

"First"/"last" order by ``(event_time, event_id)``; event ids are unique per event, so that is
a total order. Results that must not depend on arrival order (state, canonical registry,
duplicates) are sorted on their content. State tables are plain Arrow tables that the caller
stores and passes back in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from figstream.events.geo import render_locations, split_locations
from figstream.storage.state import STRUCTURE_FIELDS
from figstream.streaming.checks import string_data, string_offsets, validity
from figstream.streaming.tables import (
    CANONICAL_SCHEMA,
    DUPLICATES_SCHEMA,
    EXPIRED,
    MERGED,
    POSTED,
    POSTING_FIELDS,
    POSTING_TYPES,
    POSTINGS_SCHEMA,
    SEARCH_INDEX_COLUMNS,
    STATE_SCHEMA,
    STATS_SCHEMA,
    UPDATED,
    empty,
)

# --- shared helpers -----------------------------------------------------------------------------


def _true(mask: Any) -> Any:
    return pc.fill_null(mask, False)


def _all(*masks: Any) -> Any:
    out = _true(masks[0])
    for mask in masks[1:]:
        out = pc.and_(out, _true(mask))
    return out


def _first_mask(table: pa.Table, key: str, order: list[tuple[str, str]]) -> np.ndarray | None:
    """Mask of the first row of each ``key`` value by ``order``; None when every row is first.

    A hash pass numbers the ``key`` values and counts them, and only the rows of repeated
    values are sorted, on their number rather than the string: on event streams that is a few
    percent of the rows, and sorting strings is what costs. Null keys form one group.
    """
    if table.num_rows < 2:
        return None
    encoded = pc.dictionary_encode(table[key].combine_chunks())
    groups = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()
    repeated = np.bincount(groups)[groups] > 1
    if not repeated.any():
        return None
    rows = np.flatnonzero(repeated)
    rest = [(name, direction) for name, direction in order if name != key]
    contenders = table.select([name for name, _ in rest]).take(pa.array(rows))
    contenders = contenders.append_column("__group", pa.array(groups[rows]))
    contenders = contenders.append_column("__row", pa.array(rows))
    contenders = contenders.sort_by([("__group", "ascending"), *rest])
    group = contenders["__group"].to_numpy()
    keep = np.ones(table.num_rows, bool)
    keep[contenders["__row"].to_numpy()[1:][group[1:] == group[:-1]]] = False
    return keep


def _first_per(table: pa.Table, key: str, order: list[tuple[str, str]]) -> pa.Table:
    """The first row of each ``key`` value by ``order``; the table's row order is kept."""
    keep = _first_mask(table, key, order)
    return table if keep is None else table.filter(pa.array(keep))


def _chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous ``string`` array (large strings are narrowed: text fields are short)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values.cast(pa.string()) if pa.types.is_large_string(values.type) else values


def _body(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, the bytes of all values) of a string array, as numpy (zero-copy)."""
    offsets = string_offsets(values)
    return offsets, string_data(values)[offsets[0] : offsets[-1]]


def _holding(offsets: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Mask of the values whose bytes include the positions ``hits`` of the body."""
    mask = np.zeros(len(offsets) - 1, bool)
    mask[np.searchsorted(offsets, hits + offsets[0], side="right") - 1] = True
    return mask


def _any_byte(values: pa.Array, wanted: bytes) -> bool:
    """Whether any value holds any of the ``wanted`` bytes (one pass over the buffer)."""
    body = _body(values)[1]
    return any((body == byte).any() for byte in wanted)


def normalise_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Strip and collapse whitespace exactly like Python's ``" ".join(s.split())``; case kept.

    numpy finds the values that need it (non-ASCII ones are always re-checked, since Unicode
    has spaces of its own); only those go through Python, so the definition of whitespace
    is Python's, as in legacy ``squash``.
    """
    values = _chunk(values)
    if len(values) == 0:
        return values
    # Anything but printable ASCII, or a space that is leading, trailing or doubled: found in
    # numpy over the whole buffer, then mapped to the values holding those bytes (a pair of
    # spaces across two values marks the one that ends with a space, suspect anyway).
    offsets, body = _body(values)
    size = np.diff(offsets)
    suspect = np.zeros(len(values), bool)
    if len(body):
        first, last = np.minimum(offsets[:-1] - offsets[0], len(body) - 1), offsets[1:] - 1
        suspect |= (size > 0) & ((body[first] == 32) | (body[last - offsets[0]] == 32))
        space = body == 32
        odd = (body - np.uint8(0x20)) > 0x5E  # uint8 wraps: below 0x20 is large too
        odd[:-1] |= space[:-1] & space[1:]
        suspect |= _holding(offsets, np.flatnonzero(odd))
    suspect &= validity(values)
    if not suspect.any():
        return values
    mask = pa.array(suspect)
    squashed = [" ".join(s.split()) for s in values.filter(mask).to_pylist()]
    return pc.replace_with_mask(values, mask, pa.array(squashed, values.type))


def casefold(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``str.casefold`` of each value: ASCII in Arrow, the (rare) non-ASCII values in Python."""
    values = _chunk(values)
    lowered = pc.ascii_lower(values)
    offsets, body = _body(values)
    other = _holding(offsets, np.flatnonzero(body >= 0x80)) & validity(values)
    if not other.any():
        return lowered
    # No Arrow kernel does full Unicode case folding ("Straße" -> "strasse").
    mask = pa.array(other)
    folded = [s.casefold() for s in values.filter(mask).to_pylist()]
    return pc.replace_with_mask(lowered, mask, pa.array(folded, values.type))


def dedupe_key(company: Any, title: Any, location: Any) -> pa.Array:
    """casefold("company|title|location") of normalised text, with "\\" and "|" escaped in
    the parts, so that ("a|b", "c") and ("a", "b|c") cannot collide."""
    parts = []
    for values in (company, title, location):
        folded = casefold(values)
        if _any_byte(folded, b"|\\"):
            folded = pc.replace_substring(folded, "\\", "\\\\")
            folded = pc.replace_substring(folded, "|", "\\|")
        parts.append(folded)
    return pc.binary_join_element_wise(*parts, "|")


# --- events, postings, duplicates ---------------------------------------------------------------


def dedupe_events(table: pa.Table) -> pa.Table:
    """One row per event_id, the first by (batch_id, line_no); row order is kept."""
    return _first_per(table, "event_id", [("batch_id", "ascending"), ("line_no", "ascending")])


def clean_postings(events: pa.Table) -> pa.Table:
    """job.posted/job.updated rows, text normalised, with ``board`` and ``dedupe_key``."""
    names = [
        n for n in events.column_names if n not in ("reason", "absorbed_board", "surviving_board")
    ]
    rows = events.select(names).filter(pc.is_in(events["event_type"], pa.array(POSTING_TYPES)))
    text = {n: normalise_text(rows[n]) for n in ("title", "company", "location", "city", "region")}
    columns = {name: rows[name] for name in rows.column_names}
    columns.update(text)
    columns["board"] = rows["source"]
    columns["dedupe_key"] = dedupe_key(text["company"], text["title"], text["location"])
    return pa.table([columns[name] for name in POSTINGS_SCHEMA.names], schema=POSTINGS_SCHEMA)


@dataclass(frozen=True)
class DedupeResult:
    """``kept``: the input postings of jobs that are not duplicates (input order).
    ``duplicates``: every duplicate among the jobs in ``canonical`` (job_id,
    duplicate_of_job_id, dedupe_key), by job_id. ``canonical``: the registry to store and pass
    back next time, by (event_time, event_id)."""

    kept: pa.Table
    duplicates: pa.Table
    canonical: pa.Table


_FIRST = [("event_time", "ascending"), ("event_id", "ascending")]


def dedupe_postings(postings: pa.Table, canonical: pa.Table | None = None) -> DedupeResult:
    """Cross-board dedupe: a job is a duplicate when an earlier job was posted with its key.

    ``canonical`` is a registry of every job's *first* job.posted (job_id, dedupe_key, board,
    event_time, event_id); the canonical job of a key is its registry row first by
    (event_time, event_id). Keeping every job, not only the winner of each key, is what makes
    the result independent of arrival order: a late but earlier posting takes a key over, and
    the jobs that pointed at the old winner re-point at it. The registry is a minimum per job
    and the duplicates are derived from it, so both are order-insensitive and idempotent.

    Pass the whole registry, or at least its rows whose job_id or dedupe_key occurs in
    ``postings``; the result covers the rows passed in. As in legacy, only job.posted events
    define keys; updates never move a job to another key.
    """
    canonical = canonical if canonical is not None else empty(CANONICAL_SCHEMA)
    names = CANONICAL_SCHEMA.names
    posted = postings.select([*names, "event_type"])
    posted = posted.filter(pc.equal(posted["event_type"], POSTED)).select(names)
    fresh = pa.table(posted.columns, schema=CANONICAL_SCHEMA)
    known = canonical.select(names).cast(CANONICAL_SCHEMA)
    registry = _first_per(pa.concat_tables([known, fresh]), "job_id", _FIRST).sort_by(_FIRST)
    first = _first_mask(registry, "dedupe_key", _FIRST)
    if first is None:
        duplicates = empty(DUPLICATES_SCHEMA)
    else:
        winners, losers = registry.filter(pa.array(first)), registry.filter(pa.array(~first))
        contested = winners.filter(pc.is_in(winners["dedupe_key"], losers["dedupe_key"]))
        duplicates = losers.select(["job_id", "dedupe_key"]).join(
            contested.select(["dedupe_key", "job_id"]).rename_columns(
                ["dedupe_key", "duplicate_of_job_id"]
            ),
            "dedupe_key",
            join_type="inner",
        )
    duplicates = duplicates.select(DUPLICATES_SCHEMA.names).cast(DUPLICATES_SCHEMA)
    duplicates = duplicates.sort_by("job_id").combine_chunks()
    kept = postings.filter(pc.invert(pc.is_in(postings["job_id"], duplicates["job_id"])))
    return DedupeResult(kept, duplicates, registry.combine_chunks())


# --- job state ----------------------------------------------------------------------------------


def empty_state() -> pa.Table:
    return empty(STATE_SCHEMA)


def _after(t1: Any, id1: Any, t2: Any, id2: Any) -> pa.Array:
    """(t1, id1) > (t2, id2), where a missing left side never wins and a missing right loses."""
    later = pc.or_kleene(pc.greater(t1, t2), pc.and_kleene(pc.equal(t1, t2), pc.greater(id1, id2)))
    return pc.if_else(pc.is_null(t2), pc.is_valid(t1), _true(later))


def _latest_per(table: pa.Table, key: str, time: str, event_id: str) -> pa.Table:
    return _first_per(table, key, [(time, "descending"), (event_id, "descending")])


def _latest_of(
    jobs: pa.Table, columns: list[str], arrays: list[Any], time: str, event_id: str
) -> pa.Table:
    """A last-writer-wins component: per job, the latest by (``time``, ``event_id``) of the
    stored rows' (``jobs``, state rows) and of the new ``arrays`` (in ``columns`` order)."""
    schema = pa.schema([STATE_SCHEMA.field(n) for n in columns])
    held = jobs.filter(pc.is_valid(jobs[event_id])).select(columns)
    new = pa.table(arrays, names=columns).cast(schema)
    return _latest_per(pa.concat_tables([held, new]), "job_id", time, event_id)


def apply_job_state(state: pa.Table | None, events: pa.Table) -> pa.Table:
    """Current state per job after ``events`` (rows of :data:`EVENTS_SCHEMA`).

    Each job keeps three components, each a join in a semilattice (a maximum or minimum by
    (event_time, event_id)), and everything else is derived from them, so applying is
    idempotent and order-insensitive:
    ``apply(apply(s, a), b) == apply(apply(s, b), a) == apply(s, a | b)``.

    * The latest posting (job.posted or job.updated) sets ``board``, the posting fields
      (text normalised as in :func:`clean_postings`), ``salary_period``, ``dedupe_key`` and
      ``updated_at``; ``posted_at`` is the earliest job.posted.
    * The latest posting whose structured location (``city``, ``region``, ``country_code``)
      is not what its location string gives back (``structure_*``): what only a v2 producer
      can say. The job shows it while its location string is that structure's rendering, and
      otherwise the structure the string gives (:func:`_shown_location`).
    * The latest job.expired.
    * The latest board.merged of the job's board. Mergers are kept as ``kind == "merger"``
      rows (job_id ``"@<absorbed board>"``, never a valid job id), so that a posting that
      arrives after its board's merger still meets it.

    Status: the later of the latest posting and the latest expiry gives ``active`` or
    ``expired`` (last writer wins; a re-posting re-opens an expired job). A merger of the
    job's board timed after that turns an ``active`` job into ``merged`` (``merged_into``,
    ``merged_at``): the merger acts as of its event time. An expired job stays expired, and a
    posting on the absorbed board timed after the merger (impossible in practice) is a later
    write, so that job is ``active``. ``expired_*`` and ``merged_*`` are set only while they
    are the status (a component that lost can never win later, so nothing is forgotten).
    ``last_event_time``/``last_event_id`` name the event that decided the status.
    Rows are sorted by (kind, job_id).

    ``state`` may be the whole state or a slice of it, and the result covers what was passed
    in (upsert it by job_id): the rows of the job ids in ``events``, every merger row (a
    handful), and, when ``events`` hold a board.merged, the rows of the absorbed board.
    """
    state = state if state is not None else empty_state()
    state = state.select(STATE_SCHEMA.names).cast(STATE_SCHEMA)
    jobs = state.filter(pc.equal(state["kind"], "job"))
    kind = events["event_type"]

    postings = clean_postings(events)
    new_postings = pa.table(
        {
            "job_id": postings["job_id"],
            "board": postings["board"],
            **{f: postings[f] for f in POSTING_FIELDS},
            "salary_period": postings["salary_period"],
            "dedupe_key": postings["dedupe_key"],
            "updated_at": postings["event_time"],
            "posting_event_id": postings["event_id"],
        }
    )
    posting = _latest_of(
        jobs, new_postings.column_names, new_postings.columns, "updated_at", "posting_event_id"
    )

    structured = postings.filter(_beyond_string(postings))
    structure = _latest_of(
        jobs,
        ["job_id", "structure_at", "structure_event_id", *STRUCTURE_FIELDS],
        [
            structured["job_id"],
            structured["event_time"],
            structured["event_id"],
            *(structured[f] for f in _PLACE),
        ],
        "structure_at",
        "structure_event_id",
    )

    posted = events.filter(pc.equal(kind, POSTED))
    first_posted = (
        pa.concat_tables(
            [
                jobs.select(["job_id", "posted_at"]).filter(pc.is_valid(jobs["posted_at"])),
                pa.table({"job_id": posted["job_id"], "posted_at": posted["event_time"]}),
            ]
        )
        .group_by("job_id")
        .aggregate([("posted_at", "min")])
        .rename_columns(["job_id", "posted_at"])
    )

    expired = events.filter(pc.equal(kind, EXPIRED))
    expiry = _latest_of(
        jobs,
        ["job_id", "expired_at", "expired_reason", "expiry_event_id"],
        [expired["job_id"], expired["event_time"], expired["reason"], expired["event_id"]],
        "expired_at",
        "expiry_event_id",
    )

    merged = events.filter(pc.equal(kind, MERGED))
    merger_columns = ["board", "merged_into", "merged_at", "merger_event_id"]
    old_mergers = state.filter(pc.equal(state["kind"], "merger")).select(merger_columns)
    mergers = _latest_per(
        pa.concat_tables(
            [
                old_mergers,
                pa.table(
                    [
                        merged["absorbed_board"],
                        merged["surviving_board"],
                        merged["event_time"],
                        merged["event_id"],
                    ],
                    names=merger_columns,
                ),
            ]
        ),
        "board",
        "merged_at",
        "merger_event_id",
    )

    job_ids = pc.unique(
        pa.chunked_array(
            [posting["job_id"], expiry["job_id"], first_posted["job_id"]], type=pa.string()
        )
    )
    table = (
        pa.table({"job_id": job_ids})
        .join(posting, "job_id")
        .join(structure, "job_id")
        .join(first_posted, "job_id")
        .join(expiry, "job_id")
        .join(mergers, "board")
    )
    p = (table["updated_at"], table["posting_event_id"])
    x = (table["expired_at"], table["expiry_event_id"])
    m = (table["merged_at"], table["merger_event_id"])
    # The latest posting or expiry says active or expired; a later merger of the board turns
    # an active job into a merged one, and leaves an expired one expired.
    is_expired = _after(*x, *p)
    is_merged = _all(pc.invert(is_expired), _after(*m, *p))
    status = pc.if_else(is_expired, "expired", pc.if_else(is_merged, "merged", "active"))

    def only(mask: pa.Array, column: str) -> pa.Array:
        values = table[column].combine_chunks()
        return pc.if_else(mask, values, pa.nulls(len(values), values.type))

    last_time = pc.if_else(is_expired, x[0], pc.if_else(is_merged, m[0], p[0]))
    last_id = pc.if_else(is_expired, x[1], pc.if_else(is_merged, m[1], p[1]))
    n = table.num_rows
    job_rows = {
        "kind": pa.repeat(pa.scalar("job"), n),
        "job_id": table["job_id"],
        "board": table["board"],
        **{f: table[f] for f in POSTING_FIELDS},
        "salary_period": table["salary_period"],
        **_shown_location(table),
        "dedupe_key": table["dedupe_key"],
        "status": status,
        "posted_at": table["posted_at"],
        "updated_at": table["updated_at"],
        "posting_event_id": table["posting_event_id"],
        "structure_at": table["structure_at"],
        "structure_event_id": table["structure_event_id"],
        **{f: table[f] for f in STRUCTURE_FIELDS},
        "expired_at": only(is_expired, "expired_at"),
        "expired_reason": only(is_expired, "expired_reason"),
        "expiry_event_id": only(is_expired, "expiry_event_id"),
        "merged_into": only(is_merged, "merged_into"),
        "merged_at": only(is_merged, "merged_at"),
        "merger_event_id": only(is_merged, "merger_event_id"),
        "last_event_time": last_time,
        "last_event_id": last_id,
    }
    merger_table = merger_rows(mergers)
    job_table = pa.table({f.name: job_rows[f.name] for f in STATE_SCHEMA}, schema=STATE_SCHEMA)
    out = pa.concat_tables([job_table, merger_table])
    return out.sort_by([("kind", "ascending"), ("job_id", "ascending")]).combine_chunks()


_PLACE = ("city", "region", "country_code")


def _same(a: Any, b: Any) -> pa.Array:
    """Equal, a null equal to a null."""
    return pc.or_(_true(pc.equal(a, b)), pc.and_(pc.is_null(a), pc.is_null(b)))


def _beyond_string(postings: pa.Table) -> pa.Array:
    """Postings whose structured location is not the one their location string gives back
    (:func:`figstream.events.geo.split_locations`, the v1 -> v2 upcaster's rule): a v2
    producer's ``{Austin, Texas, US}`` is, its string ``"Austin, Texas"`` gives a city alone.
    A v1 posting's never is: the upcaster made it from the string."""
    split = split_locations(postings["location"])
    differs = [
        pc.invert(_same(postings[f], pc.struct_field(split, f)).combine_chunks()) for f in _PLACE
    ]
    return pc.or_(pc.or_(*differs[:2]), differs[2])


def _shown_location(table: pa.Table) -> dict[str, pa.Array]:
    """The job's city, region and country code: the structure register's while the latest
    posting's location string is its rendering (the latest posting is it, or names the same
    place), else what the string gives. So a v1 update naming the place a v2 posting
    structured keeps the structure, which the upcaster cannot derive from the string (it reads
    ``"Austin, Texas"`` as a city), and one naming another place shows what the upcaster
    derives, never the old place's structure. Derived from the two components alone, so the
    fold stays order-insensitive."""
    location = table["location"].combine_chunks()
    parts = [table[f].combine_chunks() for f in STRUCTURE_FIELDS]
    rendered = render_locations(pa.StructArray.from_arrays(parts, names=list(_PLACE)))
    keep = pc.and_(
        pc.is_valid(table["structure_event_id"].combine_chunks()),
        pc.or_(
            _true(pc.equal(table["structure_event_id"], table["posting_event_id"])),
            _true(pc.equal(rendered, location)),
        ),
    )
    split = split_locations(location)
    return {
        name: pc.if_else(keep, held, pc.struct_field(split, name))
        for name, held in zip(_PLACE, parts, strict=True)
    }


def merger_rows(mergers: pa.Table) -> pa.Table:
    """State rows (:data:`STATE_SCHEMA`, ``kind == "merger"``) of board mergers given as
    board, merged_into, merged_at and merger_event_id (the state store's merger rows)."""
    k = mergers.num_rows
    columns = {
        "kind": pa.repeat(pa.scalar("merger"), k),
        "job_id": pc.binary_join_element_wise("@", mergers["board"], ""),
        "board": mergers["board"],
        "merged_into": mergers["merged_into"],
        "merged_at": mergers["merged_at"],
        "merger_event_id": mergers["merger_event_id"],
        "last_event_time": mergers["merged_at"],
        "last_event_id": mergers["merger_event_id"],
    }
    return pa.table(
        {f.name: columns.get(f.name, pa.nulls(k, f.type)).cast(f.type) for f in STATE_SCHEMA}
    )


# --- read models --------------------------------------------------------------------------------


def search_index(
    state: pa.Table,
    duplicates: pa.Table | None = None,
    columns: Sequence[str] = SEARCH_INDEX_COLUMNS,
) -> pa.Table:
    """Active jobs, sorted by job_id, in the shape of legacy's active-jobs snapshot (or in
    ``columns``: the store's index rows, v2's fields too, are ``storage.state.INDEX_COLUMNS``).

    With ``duplicates`` (from :func:`dedupe_postings`), a duplicate job is left out while the
    job it duplicates is active; once that one is gone the duplicate shows again, since the
    job is still open on its own board.
    """
    active = state.filter(
        pc.and_(pc.equal(state["kind"], "job"), pc.equal(state["status"], "active"))
    )
    if duplicates is not None and duplicates.num_rows:
        shadowed = duplicates.filter(pc.is_in(duplicates["duplicate_of_job_id"], active["job_id"]))
        active = active.filter(pc.invert(pc.is_in(active["job_id"], shadowed["job_id"])))
    return active.select(list(columns)).sort_by("job_id")


def board_daily_stats(
    events_of_day: pa.Table,
    state: pa.Table,
    day: date | None = None,
    duplicates: pa.Table | None = None,
) -> pa.Table:
    """Per board: the day's postings, updates and expiries (from ``events_of_day``, by
    ``source``), and the active jobs and their mean ``salary_min`` (2 decimals, null without
    salaries) in ``state`` as of the end of the day, read through :func:`search_index`. One
    row per board seen in either, sorted by board: legacy BoardStats' columns.

    ``day`` defaults to the UTC date of the earliest event.
    """
    if day is None:
        if events_of_day.num_rows == 0:
            raise ValueError("board_daily_stats needs a day when there are no events")
        first = pc.min(events_of_day["event_time"]).as_py()
        day = first.astimezone(UTC).date()
    counts = events_of_day.group_by(["source", "event_type"]).aggregate([("event_id", "count")])
    boards = pa.chunked_array([events_of_day["source"]], type=pa.string())
    index = search_index(state, duplicates)
    active = index.group_by("board").aggregate([("job_id", "count"), ("salary_min", "mean")])
    all_boards = pc.unique(pa.chunked_array(boards.chunks + index["board"].chunks)).sort()
    table = pa.table({"board": all_boards})
    for name, event_type in (("postings", POSTED), ("updates", UPDATED), ("expiries", EXPIRED)):
        sub = counts.filter(pc.equal(counts["event_type"], event_type))
        sub = pa.table({"board": sub["source"], name: sub["event_id_count"]})
        table = table.join(sub, "board")
    table = table.join(
        pa.table(
            {
                "board": active["board"],
                "active_jobs": active["job_id_count"],
                "avg_salary_min": pc.round(active["salary_min_mean"], 2),
            }
        ),
        "board",
    )
    n = table.num_rows
    out = pa.table(
        {
            "date": pa.repeat(pa.scalar(day, pa.date32()), n),
            "board": table["board"],
            **{c: pc.fill_null(table[c], 0) for c in ("postings", "updates", "expiries")},
            "active_jobs": pc.fill_null(table["active_jobs"], 0),
            "avg_salary_min": table["avg_salary_min"],
        }
    ).cast(STATS_SCHEMA)
    return out.sort_by("board")
