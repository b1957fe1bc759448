"""Each legacy task's output, and the new implementation's rendered in its format, for one day.

Two uses share the rendering. The parity check compares :func:`read_legacy` (the CSV as the
legacy task wrote it) with :func:`render_new` (the new side's tables, as strings in the legacy
columns and formats). The bridge, :func:`write_legacy_outputs`, writes a retired task's legacy
files from the new side, where Luigi's ``output()`` looks, so the legacy tasks downstream of it
that still run find their input and Luigi does not run the retired task. So the rendering
follows what legacy code parses: ISO times ``datetime.fromisoformat`` reads, integer
salaries, ``"true"``/``"false"``, ``""`` for a missing value.

Where the new side differs on purpose it is not faked: titles keep their case (legacy
Title-cases them; the ledger casefolds both sides) and the new side dedupes across days.
:data:`KNOWN_FLAWS` names the rules that explain the differences legacy's flaws cause, each
from the new side's own data (the view's ``context``), row by row.

A task is supported by one entry in :data:`TASKS`; :data:`LEGACY_OUTPUTS` follows from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from figstream.migration.parity import View
from figstream.redirects import graph
from figstream.redirects.graph import LEGACY_COLUMNS, REDIRECT_ORDER
from figstream.redirects.steps import (
    day_events,
    day_key,
    map_key,
    refused_key,
    seo_redirects,
    shift_day,
)
from figstream.storage.objects import read_parquet
from figstream.streaming import daily, fragments, table_ops, tables
from figstream.streaming import stores as streaming_stores
from figstream.streaming.stores import Stores

# The legacy output formats (legacy/pipeline.py); a test keeps them equal to legacy's own.
EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "source",
    "version",
    "event_time",
    "job_id",
    *tables.POSTING_FIELDS,
    "reason",
    "absorbed_board",
    "surviving_board",
)
SNAPSHOT_COLUMNS = ("job_id", "board", *tables.POSTING_FIELDS, "posted_at", "updated_at")
DUPLICATE_COLUMNS = ("job_id", "duplicate_of_job_id")
STATS_COLUMNS = (
    "date",
    "board",
    "postings",
    "updates",
    "expiries",
    "active_jobs",
    "avg_salary_min",
)

LEGACY_VERSION = 1  # the schema version of every event legacy receives
Renderer = Callable[[str, Stores, str], View]


@dataclass(frozen=True)
class TaskView:
    """A legacy task's outputs (file name -> columns, the compared one first) and how the
    new side renders them."""

    outputs: tuple[tuple[str, tuple[str, ...]], ...]
    render: Renderer


# --- formatting as legacy writes ------------------------------------------------------------------


def _text(values) -> pa.ChunkedArray | pa.Array:
    return pc.fill_null(pc.cast(values, pa.string()), "")


def _flags(values) -> pa.Array:
    return pc.fill_null(pc.if_else(values, "true", "false"), "")


def _times(values) -> pa.Array:
    """The canonical wire form (``events.format_time``): UTC, ``Z``, microseconds if any."""
    text = pc.strftime(values, format="%Y-%m-%dT%H:%M:%S", locale="C")
    text = pc.replace_substring_regex(text, r"\.0{6}$", "")
    return pc.fill_null(pc.binary_join_element_wise(text, "Z", ""), "")


def _cents(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _legacy_version(values):
    """Legacy reads v1 only: the platform hands it every later version downcast (the feed
    mirror, ``events.postings.legacy_line``), so its rows say v1 where the new side's say v2."""
    return pc.if_else(pc.greater(values, LEGACY_VERSION), LEGACY_VERSION, values)


def _column(table: pa.Table, name: str, n: int) -> pa.ChunkedArray | pa.Array:
    return table[name] if name in table.column_names else pa.nulls(n, pa.string())


def render_events(events: pa.Table) -> pa.Table:
    """Rows of :data:`tables.EVENTS_SCHEMA` (or postings) in legacy's flattened event columns."""
    n = events.num_rows
    out = {}
    for name in EVENT_COLUMNS:
        values = _column(events, name, n)
        if name == "event_time":
            out[name] = _times(values)
        elif name == "version":
            out[name] = _text(_legacy_version(values))
        elif name == "remote":
            out[name] = _flags(values)
        else:
            out[name] = _text(values)
    return pa.table(out)


def _strings(columns: tuple[str, ...]) -> pa.Schema:
    return pa.schema([(c, pa.string()) for c in columns])


# --- the new side's tables for a day --------------------------------------------------------------


def _day_events(stores: Stores, day: str, table: str) -> pa.Table:
    return fragments.read_fragments(
        stores.objects, table, streaming_stores.day_partitions(day), None, tables.EVENTS_SCHEMA
    )


def _all_events(stores: Stores, day: str) -> pa.Table:
    return pa.concat_tables(
        [_day_events(stores, day, t) for t in streaming_stores.INGEST_TABLES.values()]
    )


def _of_type(events: pa.Table, *types: str) -> pa.Table:
    return events.filter(pc.is_in(events["event_type"], pa.array(types)))


def _day_postings(stores: Stores, day: str, table: str) -> pa.Table:
    return fragments.read_fragments(
        stores.objects, table, streaming_stores.day_partitions(day), None, tables.POSTINGS_SCHEMA
    )


def _snapshot(stores: Stores, key: str, schema: pa.Schema) -> pa.Table:
    if not stores.objects.exists(key):
        return tables.empty(schema)
    table = read_parquet(stores.objects, key)
    return table.select(schema.names).cast(schema)


def _dead_letters(stores: Stores, day: str) -> pa.Table:
    """Event ids (where the record still yields one) the new side dead-lettered in the day."""
    ids, codes = [], []
    for stream in streaming_stores.INGEST_TABLES:
        for partition in streaming_stores.day_partitions(day):
            for letter in stores.dead_letters.list(
                stream=stream, partition_key=partition, include_replayed=True, limit=None
            ):
                if letter.event_id is not None:
                    ids.append(letter.event_id)
                    codes.append(letter.code)
    return pa.table({"event_id": pa.array(ids, pa.string()), "code": pa.array(codes, pa.string())})


def _day_end(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time(), UTC)


def day_local_duplicates(registry: pa.Table, until: str) -> pa.Table:
    """What legacy's day-local dedupe finds among the same postings, on each day up to
    ``until``: a job is a duplicate when another job was first posted with its key earlier
    on the same (UTC) day. Columns job_id, duplicate_of_job_id, day."""
    registry = registry.filter(pc.less(registry["event_time"], pa.scalar(_day_end(until))))
    days = pc.strftime(registry["event_time"], format="%Y-%m-%d", locale="C")
    scoped = registry.set_column(
        registry.schema.get_field_index("dedupe_key"),
        "dedupe_key",
        pc.binary_join_element_wise(days, registry["dedupe_key"], "|"),
    )
    found = daily.registry_duplicates(scoped)
    return pa.table(
        {
            "job_id": found["job_id"],
            "duplicate_of_job_id": found["duplicate_of_job_id"],
            "day": pc.utf8_slice_codeunits(found["dedupe_key"], 0, 10),
        }
    )


# --- renderers ------------------------------------------------------------------------------------

_BY_FEED = [("source", "ascending"), ("event_time", "ascending"), ("event_id", "ascending")]
_BY_TIME = [("event_time", "ascending"), ("event_id", "ascending")]


def _events_view(rows: list[pa.Table], order, context: dict[str, pa.Table]) -> View:
    table = render_events(pa.concat_tables(rows).sort_by(order))
    return View(table.cast(_strings(EVENT_COLUMNS)), context=context)


def render_extract_feeds(day: str, stores: Stores, epoch_day: str) -> View:
    """``extracted.csv``: every event of the day, from raw_events and board_mergers, in feed
    order (board, then time) like legacy's per-board files."""
    events = _all_events(stores, day)
    return _events_view([events], _BY_FEED, {"dead_letters": _dead_letters(stores, day)})


def _as_events(postings: pa.Table) -> pa.Table:
    """clean/deduped postings rows as event rows (the event-only columns null)."""
    n = postings.num_rows
    return pa.table(
        {
            f.name: postings[f.name] if f.name in postings.column_names else pa.nulls(n, f.type)
            for f in tables.EVENTS_SCHEMA
        },
        schema=tables.EVENTS_SCHEMA,
    )


def _non_posting(events: pa.Table) -> pa.Table:
    """Expiries and mergers: legacy's clean step passes them through (they carry no text)."""
    return _of_type(events, tables.EXPIRED, tables.MERGED)


def render_clean_postings(day: str, stores: Stores, epoch_day: str) -> View:
    """``cleaned.csv``: clean_postings (text squashed, case kept) plus the day's expiries
    and mergers, which legacy keeps in the same file."""
    postings = _as_events(_day_postings(stores, day, "clean_postings"))
    others = _non_posting(_all_events(stores, day))
    context = {"dead_letters": _dead_letters(stores, day)}
    return _events_view([postings, others], _BY_FEED, context)


def render_dedupe_postings(day: str, stores: Stores, epoch_day: str) -> View:
    """``deduped.csv``: deduped_postings plus the expiries of jobs that are not duplicates
    and the mergers, in event order; ``duplicates.csv``: the new side's duplicates first
    posted that day."""
    stored = stores.state.registry()
    registry = stored.select(tables.CANONICAL_SCHEMA.names).cast(tables.CANONICAL_SCHEMA)
    duplicates = stored.filter(pc.is_valid(stored["duplicate_of"]))
    duplicates = (
        pa.table(
            {
                "job_id": duplicates["job_id"],
                "duplicate_of_job_id": duplicates["duplicate_of"],
                "dedupe_key": duplicates["dedupe_key"],
            }
        )
        .cast(tables.DUPLICATES_SCHEMA)
        .sort_by("job_id")
    )
    kept = _as_events(_day_postings(stores, day, "deduped_postings"))
    others = _non_posting(_all_events(stores, day))
    others = others.filter(
        pc.invert(pc.fill_null(pc.is_in(others["job_id"], duplicates["job_id"]), False))
    )
    local = day_local_duplicates(registry, day)
    context = {
        "duplicates": duplicates.select(list(DUPLICATE_COLUMNS)),
        "day_local_duplicates": local.filter(pc.equal(local["day"], day)),
        "dead_letters": _dead_letters(stores, day),
    }
    view = _events_view([kept, others], _BY_TIME, context)
    start = pa.scalar(_day_end(day) - timedelta(days=1))
    first_posted = registry.filter(
        pc.and_(
            pc.greater_equal(registry["event_time"], start),
            pc.less(registry["event_time"], pa.scalar(_day_end(day))),
        )
    ).sort_by(_BY_TIME)
    order = pa.table({"job_id": first_posted["job_id"], "_n": np.arange(first_posted.num_rows)})
    day_duplicates = duplicates.join(order, "job_id", join_type="inner").sort_by("_n")
    extra = day_duplicates.select(list(DUPLICATE_COLUMNS)).cast(_strings(DUPLICATE_COLUMNS))
    return View(view.table, {"duplicates.csv": extra}, view.context)


def render_snapshot(index: pa.Table) -> pa.Table:
    """Search-index rows (:data:`tables.SEARCH_INDEX_COLUMNS`) as ``active_jobs.csv``."""
    out = {}
    for name in SNAPSHOT_COLUMNS:
        values = index[name]
        if name in ("posted_at", "updated_at"):
            out[name] = _times(values)
        elif name == "remote":
            out[name] = _flags(values)
        else:
            out[name] = _text(values)
    return pa.table(out, schema=_strings(SNAPSHOT_COLUMNS))


def _legacy_dropped(registry: pa.Table, day: str) -> pa.Table:
    local = day_local_duplicates(registry, day)
    return local.select(["job_id", "day"])


def render_active_jobs(day: str, stores: Stores, epoch_day: str) -> View:
    """``active_jobs.csv``: the search index as of the end of the day, by job_id."""
    state, registry = daily.end_of_day_state(stores, day, epoch_day)
    duplicates = daily.registry_duplicates(registry)
    index = table_ops.search_index(state, duplicates).sort_by("job_id")
    active = state.filter(
        pc.and_(pc.equal(state["kind"], "job"), pc.equal(state["status"], "active"))
    )
    context = {
        "duplicates": duplicates.select(list(DUPLICATE_COLUMNS)).append_column(
            "shadowed", pc.is_in(duplicates["duplicate_of_job_id"], active["job_id"])
        ),
        "legacy_dropped": _legacy_dropped(registry, day),
    }
    return View(render_snapshot(index), context=context)


def render_stats(stats: pa.Table) -> pa.Table:
    """board_daily_stats rows (:data:`tables.STATS_SCHEMA`) as ``board_stats.csv``."""
    return pa.table(
        {
            "date": _text(stats["date"]),
            "board": _text(stats["board"]),
            **{c: _text(stats[c]) for c in ("postings", "updates", "expiries", "active_jobs")},
            "avg_salary_min": pa.array(
                [_cents(v) for v in stats["avg_salary_min"].to_pylist()], pa.string()
            ),
        },
        schema=_strings(STATS_COLUMNS),
    )


def _stats(day: str, counted: pa.Table, active: pa.Table) -> pa.Table:
    """Legacy BoardStats' arithmetic: per board, the ``counted`` events by type, and the
    ``active`` jobs with the mean of their salary_min (integer sum / count, "%.2f")."""
    rows: dict[str, list] = {}
    counts = counted.group_by(["source", "event_type"]).aggregate([("event_id", "count")])
    names = ("source", "event_type", "event_id_count")
    for board, kind, n in zip(*(counts[c].to_pylist() for c in names), strict=True):
        row = rows.setdefault(board, [0, 0, 0, 0, 0, 0])
        if kind in _COUNTERS:
            row[_COUNTERS[kind]] = n
    jobs = active.group_by("board").aggregate(
        [("job_id", "count"), ("salary_min", "sum"), ("salary_min", "count")]
    )
    names = ("board", "job_id_count", "salary_min_sum", "salary_min_count")
    for board, n, total, salaries in zip(*(jobs[c].to_pylist() for c in names), strict=True):
        rows.setdefault(board, [0, 0, 0, 0, 0, 0])[3:] = [n, total or 0, salaries]
    columns: dict[str, list[str]] = {c: [] for c in STATS_COLUMNS}
    for board in sorted(rows):
        postings, updates, expiries, active_jobs, total, salaries = rows[board]
        values = (day, board, postings, updates, expiries, active_jobs)
        for name, value in zip(STATS_COLUMNS, values, strict=False):
            columns[name].append(str(value))
        columns["avg_salary_min"].append(_cents(total / salaries) if salaries else "")
    return pa.table(columns, schema=_strings(STATS_COLUMNS))


_COUNTERS = {tables.POSTED: 0, tables.UPDATED: 1, tables.EXPIRED: 2}


def render_board_stats(day: str, stores: Stores, epoch_day: str) -> View:
    """``board_stats.csv``: board_daily_stats of the day (computed if not there yet).

    Context for :func:`day_local_dedupe_stats`: the stats recomputed from the same events and
    end-of-day state both ways. ``stats_as_new`` counts every event of the day and the jobs
    of the search index; ``stats_as_legacy`` counts the events its day-local dedupe leaves
    and the jobs its snapshot holds (every active job but those the dedupe dropped on the
    day they were posted).
    """
    key = f"tables/board_daily_stats/{day}.parquet"
    state, registry = daily.end_of_day_state(stores, day, epoch_day)
    if stores.objects.exists(key):
        stats = _snapshot(stores, key, tables.STATS_SCHEMA)
    elif day < epoch_day:
        stats = tables.empty(tables.STATS_SCHEMA)
    else:
        stats = daily.board_daily_stats(stores, [day], epoch_day)[day]
    events = _all_events(stores, day)
    index = table_ops.search_index(state, daily.registry_duplicates(registry))
    local = day_local_duplicates(registry, day)
    dropped_today = local.filter(pc.equal(local["day"], day))["job_id"]
    left = events.filter(pc.invert(pc.fill_null(pc.is_in(events["job_id"], dropped_today), False)))
    active = state.filter(
        pc.and_(pc.equal(state["kind"], "job"), pc.equal(state["status"], "active"))
    )
    snapshot = active.filter(pc.invert(pc.is_in(active["job_id"], local["job_id"])))
    context = {
        "stats_as_new": _stats(day, events, index),
        "stats_as_legacy": _stats(day, left, snapshot),
    }
    return View(render_stats(stats), context=context)


def legacy_view(redirects: pa.Table) -> pa.Table:
    """A day's redirects as legacy ``redirects.csv`` holds them: strings, status "301"."""
    return pa.table(
        {name: pc.cast(redirects[name], pa.string()) for name in LEGACY_COLUMNS}
    ).sort_by(REDIRECT_ORDER)


def _legacy_snapshot(stores: Stores, day: str, epoch_day: str) -> pa.Table:
    """Legacy's ActiveJobs snapshot of ``day`` rebuilt from the new side's end-of-day state:
    every active job but those legacy's day-local dedupe dropped on the day they were posted
    (it never indexes them). Cross-day duplicates stay, as legacy keeps them."""
    from figstream.migration.views import day_local_duplicates

    state, registry = daily.end_of_day_state(stores, day, epoch_day)
    active = state.filter(
        pc.and_(pc.equal(state["kind"], "job"), pc.equal(state["status"], "active"))
    )
    dropped = day_local_duplicates(registry, day)["job_id"]
    kept = active.filter(pc.invert(pc.is_in(active["job_id"], value_set=dropped)))
    return kept.select(tables.SEARCH_INDEX_COLUMNS)


def redirects_as_legacy(stores: Stores, day: str, epoch_day: str) -> pa.Table:
    """The day's redirects computed the legacy way from the new side's data: the same
    :func:`redirects.day_redirects` over snapshots as legacy's dedupe leaves them."""
    if day < epoch_day:
        return graph.REDIRECTS_SCHEMA.empty_table()
    yesterday = _legacy_snapshot(stores, shift_day(day, -1), epoch_day)
    today = _legacy_snapshot(stores, day, epoch_day)
    return graph.day_redirects(yesterday, today, day_events(stores, day))


def render_redirects(day: str, stores: Stores, epoch_day: str) -> View:
    """The day's redirects as legacy ``redirects.csv`` holds them (strings, status "301"),
    as context the collapsed map as of that day (``map``, for
    :func:`redirects.redirect_chains`) and the day's redirects computed both ways
    (``redirects_as_legacy``, ``redirects_as_new``, for
    :func:`redirects.day_local_dedupe_redirects`). A day not computed yet is computed first."""
    keys = (day_key(day), map_key(day), refused_key(day))
    if not all(stores.objects.exists(key) for key in keys):
        seo_redirects(stores, [day], epoch_day)
    table = read_parquet(stores.objects, day_key(day)).cast(graph.REDIRECTS_SCHEMA)
    redirect_map = read_parquet(stores.objects, map_key(day)).cast(graph.MAP_SCHEMA)
    view = legacy_view(table)
    context = {
        "map": redirect_map,
        "redirects_as_new": view,
        "redirects_as_legacy": legacy_view(redirects_as_legacy(stores, day, epoch_day)),
        # what the allow-list refused, for flaws.hostile_redirect_targets
        "refused": read_parquet(stores.objects, refused_key(day)),
    }
    return View(table=view, context=context)


TASKS: dict[str, TaskView] = {
    "ExtractFeeds": TaskView((("extracted.csv", EVENT_COLUMNS),), render_extract_feeds),
    "CleanPostings": TaskView((("cleaned.csv", EVENT_COLUMNS),), render_clean_postings),
    "DedupePostings": TaskView(
        (("deduped.csv", EVENT_COLUMNS), ("duplicates.csv", DUPLICATE_COLUMNS)),
        render_dedupe_postings,
    ),
    "ActiveJobs": TaskView((("active_jobs.csv", SNAPSHOT_COLUMNS),), render_active_jobs),
    "BoardStats": TaskView((("board_stats.csv", STATS_COLUMNS),), render_board_stats),
    "SeoRedirects": TaskView((("redirects.csv", tuple(graph.LEGACY_COLUMNS)),), render_redirects),
}
LEGACY_OUTPUTS: dict[str, tuple[str, ...]] = {
    task: tuple(name for name, _ in view.outputs) for task, view in TASKS.items()
}


def supports(task: str) -> bool:
    """Whether the task's legacy output can be read, rendered and bridged here."""
    return task in TASKS


def render_new(task: str, day: str, stores: Stores, epoch_day: str) -> View:
    """The new side of ``day`` in the task's legacy columns, all strings, formatted as legacy
    writes them (times in the canonical wire form, which ``datetime.fromisoformat`` reads)."""
    return TASKS[task].render(day, stores, epoch_day)
