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

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from figstream import redirect_steps, redirects, transform
from figstream import streaming as steps
from figstream.objectstore import LocalObjectStore, read_parquet
from figstream.parity import Differences, Explained, FlawRule, View
from figstream.streaming import Stores

# The legacy output formats (legacy/pipeline.py); a test keeps them equal to legacy's own.
EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "source",
    "version",
    "event_time",
    "job_id",
    *transform.POSTING_FIELDS,
    "reason",
    "absorbed_board",
    "surviving_board",
)
SNAPSHOT_COLUMNS = ("job_id", "board", *transform.POSTING_FIELDS, "posted_at", "updated_at")
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

Renderer = Callable[[str, Stores, str], View]


@dataclass(frozen=True)
class TaskView:
    """A legacy task's outputs (file name -> columns, the compared one first) and how the
    new side renders them."""

    outputs: tuple[tuple[str, tuple[str, ...]], ...]
    render: Renderer


def legacy_dir(data_root: Path, day: str) -> Path:
    """``<data_root>/legacy/<day>``: where the legacy tasks of ``day`` write (``legacy_target``)."""
    return Path(data_root) / "legacy" / day


# --- reading legacy -------------------------------------------------------------------------------


def read_csv(path: Path) -> pa.Table:
    """A legacy CSV as legacy's ``read_csv`` sees it, every column a string exactly as the
    file holds it ("" for an empty cell)."""
    data = Path(path).read_bytes()
    if b"\r" not in data:
        header = next(csv.reader(io.StringIO(data[: data.find(b"\n") + 1].decode("utf-8"))), None)
        if header is None:
            return pa.table({})
        return pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    # Arrow's reader differs from the csv module on carriage returns (legacy writes a bare
    # "\r" in a value unquoted, and its reader then splits the row there): read as legacy does,
    # a short row's missing cells empty and a long row's extra cells, which DictReader files
    # under no column, dropped.
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    if not rows:
        return pa.table({})
    header, width = rows[0], len(rows[0])
    # DictReader skips a row with no cells at all (a bare "\r" line), so do we.
    cells = [(row + [""] * width)[:width] for row in rows[1:] if row]
    columns = list(zip(*cells, strict=True)) if cells else [()] * width
    return pa.table([pa.array(c, pa.string()) for c in columns], names=header)


def read_legacy(task: str, day: str, data_root: Path) -> pa.Table | None:
    """The task's main output of ``day`` as all-string columns; None if it does not exist."""
    path = legacy_dir(data_root, day) / LEGACY_OUTPUTS[task][0]
    return read_csv(path) if path.exists() else None


# --- the bridge -----------------------------------------------------------------------------------


def csv_bytes(table: pa.Table) -> bytes:
    """The table as legacy's ``write_csv`` writes it: the csv module's default dialect with
    ``lineterminator="\\n"``, UTF-8, a header row; the same bytes, but for one fix.

    With that line terminator the csv module does not quote a value holding a carriage
    return, so legacy's own reader splits that row (a legacy flaw); a row holding one is
    written with every value quoted, which the same reader reads back intact.
    """
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(table.column_names)
    columns = [table[name].to_pylist() for name in table.column_names]
    for row in zip(*columns, strict=True):
        if any(isinstance(v, str) and "\r" in v for v in row):
            quoted.writerow(row)
        else:
            writer.writerow(row)
    return out.getvalue().encode("utf-8")


def write_legacy_outputs(task: str, day: str, view: View, data_root: Path) -> list[Path]:
    """Write the task's legacy files of ``day`` from ``view``, where Luigi's ``output()`` looks.

    Each file is written to a temporary name and renamed, the main output last, so Luigi
    (which calls a task complete when all its outputs exist) never sees a half-written day.
    Returns the paths, main output first.
    """
    outputs = TASKS[task].outputs
    tables = {}
    for index, (name, columns) in enumerate(outputs):
        table = view.table if index == 0 else view.extra_outputs.get(name)
        if table is None:
            raise ValueError(f"{task}: the view has no {name!r} to write")
        if tuple(table.column_names) != columns:
            raise ValueError(
                f"{task}: {name} needs the columns {list(columns)}, got {table.column_names}"
            )
        tables[name] = table.cast(pa.schema([(c, pa.string()) for c in columns]))
    # LocalObjectStore.put: temp file in the same directory, fsync, rename, fsync the directory
    store = LocalObjectStore(data_root)
    names = [name for name, _ in outputs]
    for name in [*names[1:], names[0]]:
        store.put(f"legacy/{day}/{name}", csv_bytes(tables[name]))
    return [legacy_dir(data_root, day) / name for name in names]


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


def _column(table: pa.Table, name: str, n: int) -> pa.ChunkedArray | pa.Array:
    return table[name] if name in table.column_names else pa.nulls(n, pa.string())


def render_events(events: pa.Table) -> pa.Table:
    """Rows of :data:`transform.EVENTS_SCHEMA` (or postings) in legacy's flattened event columns."""
    n = events.num_rows
    out = {}
    for name in EVENT_COLUMNS:
        values = _column(events, name, n)
        if name == "event_time":
            out[name] = _times(values)
        elif name == "remote":
            out[name] = _flags(values)
        else:
            out[name] = _text(values)
    return pa.table(out)


def _strings(columns: tuple[str, ...]) -> pa.Schema:
    return pa.schema([(c, pa.string()) for c in columns])


# --- the new side's tables for a day --------------------------------------------------------------


def _day_events(stores: Stores, day: str, table: str) -> pa.Table:
    return steps.read_fragments(
        stores.objects, table, steps.day_partitions(day), None, transform.EVENTS_SCHEMA
    )


def _all_events(stores: Stores, day: str) -> pa.Table:
    return pa.concat_tables([_day_events(stores, day, t) for t in steps.INGEST_TABLES.values()])


def _of_type(events: pa.Table, *types: str) -> pa.Table:
    return events.filter(pc.is_in(events["event_type"], pa.array(types)))


def _day_postings(stores: Stores, day: str, table: str) -> pa.Table:
    return steps.read_fragments(
        stores.objects, table, steps.day_partitions(day), None, transform.POSTINGS_SCHEMA
    )


def _snapshot(stores: Stores, key: str, schema: pa.Schema) -> pa.Table:
    if not stores.objects.exists(key):
        return transform.empty(schema)
    table = read_parquet(stores.objects, key)
    return table.select(schema.names).cast(schema)


def _dead_letters(stores: Stores, day: str) -> pa.Table:
    """Event ids (where the record still yields one) the new side dead-lettered in the day."""
    ids, codes = [], []
    for stream in steps.INGEST_TABLES:
        for partition in steps.day_partitions(day):
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
    found = steps.registry_duplicates(scoped)
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
            for f in transform.EVENTS_SCHEMA
        },
        schema=transform.EVENTS_SCHEMA,
    )


def _non_posting(events: pa.Table) -> pa.Table:
    """Expiries and mergers: legacy's clean step passes them through (they carry no text)."""
    return _of_type(events, transform.EXPIRED, transform.MERGED)


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
    duplicates = steps.read_duplicates(stores.objects)
    registry = steps.read_registry(stores.objects)
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
    """Search-index rows (:data:`transform.SEARCH_INDEX_COLUMNS`) as ``active_jobs.csv``."""
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
    state, registry = steps.end_of_day_state(stores, day, epoch_day)
    duplicates = steps.registry_duplicates(registry)
    index = transform.search_index(state, duplicates).sort_by("job_id")
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
    """board_daily_stats rows (:data:`transform.STATS_SCHEMA`) as ``board_stats.csv``."""
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


_COUNTERS = {transform.POSTED: 0, transform.UPDATED: 1, transform.EXPIRED: 2}


def render_board_stats(day: str, stores: Stores, epoch_day: str) -> View:
    """``board_stats.csv``: board_daily_stats of the day (computed if not there yet).

    Context for :func:`day_local_dedupe_stats`: the stats recomputed from the same events and
    end-of-day state both ways. ``stats_as_new`` counts every event of the day and the jobs
    of the search index; ``stats_as_legacy`` counts the events its day-local dedupe leaves
    and the jobs its snapshot holds (every active job but those the dedupe dropped on the
    day they were posted).
    """
    key = f"tables/board_daily_stats/{day}.parquet"
    state, registry = steps.end_of_day_state(stores, day, epoch_day)
    if stores.objects.exists(key):
        stats = _snapshot(stores, key, transform.STATS_SCHEMA)
    elif day < epoch_day:
        stats = transform.empty(transform.STATS_SCHEMA)
    else:
        stats = steps.board_daily_stats(stores, [day], epoch_day)[day]
    events = _all_events(stores, day)
    index = transform.search_index(state, steps.registry_duplicates(registry))
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


TASKS: dict[str, TaskView] = {
    "ExtractFeeds": TaskView((("extracted.csv", EVENT_COLUMNS),), render_extract_feeds),
    "CleanPostings": TaskView((("cleaned.csv", EVENT_COLUMNS),), render_clean_postings),
    "DedupePostings": TaskView(
        (("deduped.csv", EVENT_COLUMNS), ("duplicates.csv", DUPLICATE_COLUMNS)),
        render_dedupe_postings,
    ),
    "ActiveJobs": TaskView((("active_jobs.csv", SNAPSHOT_COLUMNS),), render_active_jobs),
    "BoardStats": TaskView((("board_stats.csv", STATS_COLUMNS),), render_board_stats),
    "SeoRedirects": TaskView(
        (("redirects.csv", tuple(redirects.LEGACY_COLUMNS)),), redirect_steps.render_view
    ),
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


# --- known legacy flaws ---------------------------------------------------------------------------


def _mask(table: pa.Table, column: str, values: pa.Array) -> pa.Array:
    if column not in table.column_names:
        return pa.array(np.zeros(table.num_rows, bool))
    return pc.fill_null(pc.is_in(table[column], values), False).combine_chunks()


def _none(differences: Differences) -> Explained:
    return Explained(
        *(
            pa.array(np.zeros(t.num_rows, bool))
            for t in (differences.only_legacy, differences.only_new, differences.differing)
        )
    )


def _ids(context: Mapping[str, pa.Table], name: str, column: str = "job_id") -> pa.Array:
    table = context.get(name)
    if table is None or column not in table.column_names:
        return pa.array([], pa.string())
    return table[column].combine_chunks()


def day_local_dedupe(differences: Differences, context: Mapping[str, pa.Table]) -> Explained:
    """DedupePostings sees one day: a duplicate posted on a later day than its original is
    kept, and so are the events of a duplicate on days after the one it was posted on.

    Explains a row only in legacy whose job the new side holds as a duplicate
    (``duplicates``) while legacy's day-local dedupe finds no duplicate in that day's
    postings (``day_local_duplicates``). Nothing else.
    """
    if "duplicates" not in context or "day_local_duplicates" not in context:
        return _none(differences)
    new_duplicates = _ids(context, "duplicates")
    local = _ids(context, "day_local_duplicates")
    legacy_keeps = pc.filter(new_duplicates, pc.invert(pc.is_in(new_duplicates, local)))
    none = _none(differences)
    return Explained(
        _mask(differences.only_legacy, "job_id", legacy_keeps), none.only_new, none.differing
    )


def day_local_dedupe_index(differences: Differences, context: Mapping[str, pa.Table]) -> Explained:
    """The day-local dedupe as seen in the ActiveJobs snapshot.

    Only in legacy: a duplicate (``duplicates``) the new index hides while the job it
    duplicates is active (``shadowed``), and that legacy indexed because its dedupe never
    saw both on one day (not in ``legacy_dropped``). Only in new: a job legacy's dedupe
    dropped on the day it was posted (``legacy_dropped``), so legacy never indexes it, while
    the new index shows it (its original is no longer active, e.g. expired or merged away).
    """
    if "duplicates" not in context or "legacy_dropped" not in context:
        return _none(differences)
    duplicates = context["duplicates"]
    dropped = _ids(context, "legacy_dropped")
    shadowed = duplicates.filter(duplicates["shadowed"])["job_id"].combine_chunks()
    legacy_keeps = pc.filter(shadowed, pc.invert(pc.is_in(shadowed, dropped)))
    none = _none(differences)
    return Explained(
        _mask(differences.only_legacy, "job_id", legacy_keeps),
        _mask(differences.only_new, "job_id", dropped),
        none.differing,
    )


def _same(value: str | None, expected: str | None) -> bool:
    """Equal strings, or numbers within a cent (both sides round means to cents)."""
    if value == expected:
        return True
    try:
        return abs(float(value) - float(expected)) <= 0.01 + 1e-9  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def day_local_dedupe_stats(differences: Differences, context: Mapping[str, pa.Table]) -> Explained:
    """The day-local dedupe as seen in BoardStats: legacy counts only the day's events its
    dedupe leaves, and the active jobs of its snapshot (see ``day_local_dedupe_index``),
    while the new stats count every event of the day and the jobs of the search index.

    ``stats_as_legacy`` and ``stats_as_new`` are the stats recomputed both ways from the
    same events and state. Explains a differing row when, in every differing column, legacy
    holds the value computed the legacy way and new the value computed the new way; a board
    only on one side when its whole row is the one computed that side's way and the other
    way has no such board. A wrong number on either side stays unexplained.
    """
    as_legacy, as_new = context.get("stats_as_legacy"), context.get("stats_as_new")
    if as_legacy is None or as_new is None:
        return _none(differences)
    legacy_rows = {row["board"]: row for row in as_legacy.to_pylist()}
    new_rows = {row["board"]: row for row in as_new.to_pylist()}

    def whole(row: dict, expected: dict | None, other: dict | None) -> bool:
        return (
            expected is not None
            and other is None
            and all(_same(row.get(c), expected[c]) for c in STATS_COLUMNS if c in row)
        )

    only_legacy = [
        whole(row, legacy_rows.get(row.get("board")), new_rows.get(row.get("board")))
        for row in differences.only_legacy.to_pylist()
    ]
    only_new = [
        whole(row, new_rows.get(row.get("board")), legacy_rows.get(row.get("board")))
        for row in differences.only_new.to_pylist()
    ]
    differing = []
    for row in differences.differing.to_pylist():
        board = row.get("board")
        legacy_way, new_way = legacy_rows.get(board), new_rows.get(board)
        columns = [c for c in (row.get("differing_columns") or "").split(",") if c]
        differing.append(
            legacy_way is not None
            and new_way is not None
            and bool(columns)
            and all(
                c in legacy_way
                and _same(row.get(f"{c}_legacy"), legacy_way[c])
                and _same(row.get(f"{c}_new"), new_way[c])
                for c in columns
            )
        )
    return Explained(
        pa.array(only_legacy, pa.bool_()),
        pa.array(only_new, pa.bool_()),
        pa.array(differing, pa.bool_()),
    )


def no_validation(differences: Differences, context: Mapping[str, pa.Table]) -> Explained:
    """Legacy validates nothing, so a record it can still flatten (an absurd salary, an
    unknown schema version, a mistyped flag) is in its output while the new side
    dead-lettered it. Explains a row only in legacy whose event id the new side
    dead-lettered that day (``dead_letters``)."""
    none = _none(differences)
    if "dead_letters" not in context:
        return none
    rejected = _ids(context, "dead_letters", "event_id")
    return Explained(
        _mask(differences.only_legacy, "event_id", rejected), none.only_new, none.differing
    )


def arrived_after_cutoff(differences: Differences, context: Mapping[str, pa.Table]) -> Explained:
    """Legacy reads the feed dump as mirrored when its night ran; an event of the day that
    landed after that (a late delivery) reaches only the new side. Explains a row only in new
    whose event id the new side ingested from a batch newer than the mirror's cut-off
    (``after_cutoff``, which the parity check adds when the dump was mirrored)."""
    none = _none(differences)
    if "after_cutoff" not in context:
        return none
    late = _ids(context, "after_cutoff", "event_id")
    return Explained(
        none.only_legacy, _mask(differences.only_new, "event_id", late), none.differing
    )


KNOWN_FLAWS: dict[str, FlawRule] = {
    "arrived_after_cutoff": arrived_after_cutoff,
    "day_local_dedupe": day_local_dedupe,
    "day_local_dedupe_index": day_local_dedupe_index,
    "day_local_dedupe_stats": day_local_dedupe_stats,
    "no_validation": no_validation,
    "day_local_dedupe_redirects": redirects.day_local_dedupe_redirects,
    "redirect_chains": redirects.redirect_chains,
}
