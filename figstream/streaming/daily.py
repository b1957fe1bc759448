"""Daily views of the streaming tables: ``board_daily_stats`` and the state at a day's end.

Both read the *day rows* of the state store (:func:`figstream.streaming.jobs.apply_to_days`):
per (job, UTC day of event time) the join of that job's events of that day alone, and per
(board, day) its merger. Job state is a join-semilattice (see
:func:`table_ops.apply_job_state`), so the state as of the end of day D is the join of the
rows of D and before, which :func:`end_of_day_state` streams in job_id order. No copy of the
state is kept per day: the state exists once, in the store.

``board_daily_stats`` of D is the stats of D - 1 plus what D changed: the jobs with a row of
D, the jobs of a board merged on D, and every registry member of those jobs' dedupe keys
(whose shadowing may change with them). For each, visible before (its rows before D) and
after (with D's) are compared, and the active count, the salary_min sum and the salary_min
count per board carried as exact integers in the kept stats file; the mean is derived from
them. Cross-board duplicates come from the store's dedupe registry, as of D: its first
postings timed up to the end of D (an earlier posting always wins, so only jobs first posted
on D join a key on D, and those have a row of D).

Day rows of days ``day_rows_keep_days`` ago and before are folded (:mod:`day_fold`): the
state as of the end of a day before the store's horizon is then refused
(:class:`~figstream.storage.state.DayRowsFolded`), and so are the stats of the horizon's day
itself (they need the day before). Stats kept for those days stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.objects import ObjectStore, read_parquet, write_parquet
from figstream.storage.state import JOB_SCHEMA, MERGER_SCHEMA
from figstream.streaming import table_ops, tables
from figstream.streaming.fragments import read_fragments
from figstream.streaming.jobs import convert_day_rows, job_rows
from figstream.streaming.stores import INGEST_TABLES, Stores, day_partitions

CARRIES = ("salary_min_sum", "salary_min_count")  # kept beside active_jobs in the stats file
CARRIED_SCHEMA = tables.STATS_SCHEMA.append(pa.field(CARRIES[0], pa.int64())).append(
    pa.field(CARRIES[1], pa.int64())
)
JOBS_PER_BATCH = 5_000  # touched jobs folded at once
_NO_EVENTS = tables.empty(tables.EVENTS_SCHEMA)


def stats_key(day: str) -> str:
    return f"tables/board_daily_stats/{day}.parquet"


def _day_start(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)


def _day_end(day: str) -> datetime:
    return _day_start(day) + timedelta(days=1)


def _shift(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


# --- the state as of a day's end ------------------------------------------------------------------


def _mergers(stores: Stores, until: str, epoch_day: str) -> pa.Table:
    """State merger rows of the mergers timed from the epoch to the end of ``until``."""
    held = stores.state.merger_days(until)
    held = held.filter(pc.greater_equal(held["day"], epoch_day))
    return table_ops.merger_rows(held.select(MERGER_SCHEMA.names))


def _as_of(day_rows: pa.Table, mergers: pa.Table) -> pa.Table:
    """The job state (jobs only) the day rows join to, under ``mergers`` (state rows)."""
    jobs = job_rows(day_rows.select(JOB_SCHEMA.names))
    state = table_ops.apply_job_state(pa.concat_tables([jobs, mergers]), _NO_EVENTS)
    return state.filter(pc.equal(state["kind"], "job"))


def _since(day_rows: pa.Table, epoch_day: str) -> pa.Table:
    return day_rows.filter(pc.greater_equal(day_rows["day"], epoch_day))


def registry_as_of(stores: Stores, day: str, epoch_day: str, registry: pa.Table | None = None):
    """The dedupe registry (:data:`tables.CANONICAL_SCHEMA`) as of the end of ``day``: the
    first postings timed from the epoch to then (``registry``: the store's by default)."""
    held = stores.state.registry() if registry is None else registry
    held = held.filter(
        pc.and_(
            pc.greater_equal(held["event_time"], pa.scalar(_day_start(epoch_day))),
            pc.less(held["event_time"], pa.scalar(_day_end(day))),
        )
    )
    return held.select(tables.CANONICAL_SCHEMA.names).cast(tables.CANONICAL_SCHEMA)


def iter_end_of_day_jobs(stores: Stores, day: str, epoch_day: str) -> Iterable[pa.Table]:
    """The job rows (:data:`tables.STATE_SCHEMA`, jobs only) as of the end of ``day``, in
    job_id order, a bounded batch of jobs at a time."""
    mergers = _mergers(stores, day, epoch_day)
    for rows in stores.state.iter_job_days(day):
        rows = _since(rows, epoch_day)
        if rows.num_rows:
            yield _as_of(rows, mergers)


def end_of_day_state(stores: Stores, day: str, epoch_day: str) -> tuple[pa.Table, pa.Table]:
    """(job state, dedupe registry) as of the end of ``day``, joined from the store's day
    rows; a day before the epoch is empty."""
    if date.fromisoformat(day) < date.fromisoformat(epoch_day):
        return tables.empty(tables.STATE_SCHEMA), tables.empty(tables.CANONICAL_SCHEMA)
    convert_day_rows(stores)
    jobs = list(iter_end_of_day_jobs(stores, day, epoch_day))
    mergers = _mergers_latest(stores, day, epoch_day)
    state = pa.concat_tables([tables.empty(tables.STATE_SCHEMA), *jobs, mergers])
    state = state.sort_by([("kind", "ascending"), ("job_id", "ascending")]).combine_chunks()
    return state, registry_as_of(stores, day, epoch_day)


def _mergers_latest(stores: Stores, day: str, epoch_day: str) -> pa.Table:
    """The latest merger of each board as of the end of ``day`` (state rows)."""
    state = table_ops.apply_job_state(_mergers(stores, day, epoch_day), _NO_EVENTS)
    return state.filter(pc.equal(state["kind"], "merger"))


def registry_duplicates(registry: pa.Table) -> pa.Table:
    """The duplicates (:data:`tables.DUPLICATES_SCHEMA`) a dedupe registry defines."""
    return table_ops.dedupe_postings(tables.empty(tables.POSTINGS_SCHEMA), registry).duplicates


def end_of_day_index(stores: Stores, day: str, epoch_day: str) -> pa.Table:
    """The search index (:data:`tables.SEARCH_INDEX_COLUMNS`) as of the end of ``day``."""
    state, registry = end_of_day_state(stores, day, epoch_day)
    return table_ops.search_index(state, registry_duplicates(registry))


# --- board_daily_stats ----------------------------------------------------------------------------


def _read_carried(objects: ObjectStore, day: str) -> pa.Table | None:
    """A day's kept stats with their carries; None when not kept (or kept by an earlier
    version, without carries: recomputed)."""
    key = stats_key(day)
    if not objects.exists(key):
        return None
    kept = read_parquet(objects, key)
    if not set(CARRIES) <= set(kept.column_names):
        return None
    return kept.select(CARRIED_SCHEMA.names).cast(CARRIED_SCHEMA)


def _day_events(stores: Stores, day: str) -> pa.Table:
    return pa.concat_tables(
        [
            read_fragments(stores.objects, table, day_partitions(day), None, tables.EVENTS_SCHEMA)
            for table in INGEST_TABLES.values()
        ]
    )


def _touched(stores: Stores, day: str) -> list[str]:
    """Jobs whose state may differ between the ends of ``day - 1`` and ``day``: a row of
    ``day``, or a board merged on ``day`` (any job a day row ever put on it)."""
    state = stores.state
    ids: set[str] = set()
    for chunk in state.day_job_ids(day):
        ids.update(chunk)
    merged = state.merger_days(day)
    for board in set(merged.filter(pc.equal(merged["day"], day))["board"].to_pylist()):
        for chunk in state.board_day_job_ids(board):
            ids.update(chunk)
    return sorted(ids)


def _key_registry(stores: Stores, job_ids: list[str], day: str, epoch_day: str) -> pa.Table:
    """The registry rows (as of the end of ``day``) of every job sharing a dedupe key with
    one of ``job_ids``."""
    state = stores.state
    keys: set[str] = set()
    for start in range(0, len(job_ids), 20_000):
        keys.update(state.first_postings(job_ids[start : start + 20_000])["dedupe_key"].to_pylist())
    ordered = sorted(keys)
    parts = [
        registry_as_of(stores, day, epoch_day, state.key_members(ordered[i : i + 20_000]))
        for i in range(0, len(ordered), 20_000)
    ]
    return pa.concat_tables([tables.empty(tables.CANONICAL_SCHEMA), *parts]).combine_chunks()


def _visible_totals(index: pa.Table, sign: int) -> pa.Table:
    """Per board: sign * (jobs, salary_min sum, salary_min count) of search-index rows."""
    grouped = index.group_by("board").aggregate(
        [("job_id", "count"), ("salary_min", "sum"), ("salary_min", "count")]
    )
    return pa.table(
        {
            "board": grouped["board"],
            "active_jobs": pc.multiply(grouped["job_id_count"], sign),
            CARRIES[0]: pc.multiply(pc.fill_null(grouped["salary_min_sum"], 0), sign),
            CARRIES[1]: pc.multiply(grouped["salary_min_count"], sign),
        }
    )


def _delta(stores: Stores, day: str, epoch_day: str) -> pa.Table:
    """Per board: what ``day`` changed in (active jobs, salary_min sum, salary_min count)."""
    before_day = _shift(day, -1)
    stores.state.check_as_of(before_day)  # both ends of the day must still be readable
    touched = _touched(stores, day)
    registry = _key_registry(stores, touched, day, epoch_day)
    registry_before = registry.filter(pc.less(registry["event_time"], pa.scalar(_day_start(day))))
    duplicates = {
        "after": registry_duplicates(registry),
        "before": registry_duplicates(registry_before),
    }
    mergers = {
        "after": _mergers(stores, day, epoch_day),
        "before": _mergers(stores, before_day, epoch_day),
    }
    affected = sorted(set(touched) | set(registry["job_id"].to_pylist()))
    parts = [_delta_schema().empty_table()]
    for start in range(0, len(affected), JOBS_PER_BATCH):
        batch = pa.array(affected[start : start + JOBS_PER_BATCH], pa.string())
        originals = [
            dups.filter(pc.is_in(dups["job_id"], batch))["duplicate_of_job_id"]
            for dups in duplicates.values()
        ]
        needed = pc.unique(pa.chunked_array([batch, *originals], pa.string())).to_pylist()
        rows = _since(stores.state.job_days(needed, day), epoch_day)
        for when, sign in (("before", -1), ("after", 1)):
            held = rows.filter(pc.less(rows["day"], day)) if when == "before" else rows
            index = table_ops.search_index(_as_of(held, mergers[when]), duplicates[when])
            index = index.filter(pc.is_in(index["job_id"], batch))
            parts.append(_visible_totals(index, sign).cast(_delta_schema()))
    return _sum_per_board(parts)


def _sum_per_board(parts: list[pa.Table]) -> pa.Table:
    columns = ("active_jobs", *CARRIES)
    summed = pa.concat_tables(parts).group_by("board").aggregate([(c, "sum") for c in columns])
    return pa.table(
        {"board": summed["board"], **{c: summed[f"{c}_sum"] for c in columns}},
        schema=_delta_schema(),
    )


def day_stats(stores: Stores, day: str, epoch_day: str, previous: pa.Table) -> pa.Table:
    """``day``'s stats (:data:`CARRIED_SCHEMA`) from the day's events, the day's changes
    and ``previous`` (the stats of the day before, with their carries)."""
    events = _day_events(stores, day)
    counts = events.group_by(["source", "event_type"]).aggregate([("event_id", "count")])
    before = previous.select(["board", "active_jobs", *CARRIES]).cast(_delta_schema())
    carried = _sum_per_board([before, _delta(stores, day, epoch_day)])
    if pc.any(pc.less(carried["active_jobs"], 0)).as_py():
        raise RuntimeError(f"board_daily_stats {day}: a board's active jobs went negative")
    event_boards = pc.unique(events["source"].combine_chunks()).drop_null()
    keep = pc.or_(pc.greater(carried["active_jobs"], 0), pc.is_in(carried["board"], event_boards))
    carried = carried.filter(keep)
    boards = pc.unique(pa.chunked_array([carried["board"], event_boards], pa.string())).sort()
    table = pa.table({"board": boards})
    for name, event_type in (
        ("postings", tables.POSTED),
        ("updates", tables.UPDATED),
        ("expiries", tables.EXPIRED),
    ):
        sub = counts.filter(pc.equal(counts["event_type"], event_type))
        table = table.join(pa.table({"board": sub["source"], name: sub["event_id_count"]}), "board")
    table = table.join(carried, "board")
    n = table.num_rows
    salaries = pc.fill_null(table[CARRIES[1]], 0)
    total = pc.fill_null(table[CARRIES[0]], 0)
    mean = pc.divide(pc.cast(total, pa.float64()), pc.cast(salaries, pa.float64()))
    avg = pc.if_else(pc.greater(salaries, 0), pc.round(mean, 2), pa.scalar(None, pa.float64()))
    out = pa.table(
        {
            "date": pa.repeat(pa.scalar(date.fromisoformat(day), pa.date32()), n),
            "board": table["board"],
            **{c: pc.fill_null(table[c], 0) for c in ("postings", "updates", "expiries")},
            "active_jobs": pc.fill_null(table["active_jobs"], 0),
            "avg_salary_min": avg,
            CARRIES[0]: total,
            CARRIES[1]: salaries,
        }
    )
    return out.cast(CARRIED_SCHEMA).sort_by("board")


def _delta_schema() -> pa.Schema:
    return pa.schema(
        [("board", pa.string()), ("active_jobs", pa.int64()), *((c, pa.int64()) for c in CARRIES)]
    )


def board_daily_stats(stores: Stores, days: Sequence[str], epoch_day: str) -> dict[str, pa.Table]:
    """Stats (:data:`tables.STATS_SCHEMA`) of each of ``days``, with active jobs as of the end
    of that day, each computed from the day's changes and the day before's kept stats.

    A day whose day before has no kept stats computes that one first, back to the epoch, each
    day costing its own changes. A late event touches an older day; the sensor then asks for
    that day onwards, which refreshes every later day too. Days before the epoch have none.
    """
    convert_day_rows(stores)
    wanted = set(days)
    last = max(days)
    start = max(min(days), epoch_day)
    previous = None
    while start > epoch_day:
        previous = _read_carried(stores.objects, _shift(start, -1))
        if previous is not None:
            break
        start = _shift(start, -1)
    if previous is None:
        previous = tables.empty(CARRIED_SCHEMA)
    out = {}
    current = start
    while current <= last:
        stats = day_stats(stores, current, epoch_day, previous)
        write_parquet(stores.objects, stats_key(current), stats)
        if current in wanted:
            out[current] = stats.select(tables.STATS_SCHEMA.names).cast(tables.STATS_SCHEMA)
        previous = stats
        current = _shift(current, 1)
    return out
