"""The SEO-redirects step over the stores, free of Dagster (the asset and the parity view call it).

Per day: the day's redirects (``tables/seo_redirects/<day>.parquet``) from the end-of-day search
indexes of the day before and of the day and the day's events, and the collapsed running map
as of the end of the day (``tables/seo_redirects/_map/<day>.parquet``). Each day's map is built
on the kept map of the day before, so a day can be recomputed alone (the same inputs give the
same files) and a range is computed in order from the last kept map. A day whose predecessor
has no kept map yet is reached by computing the missing days first, back to the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from figstream import redirects, streaming, transform
from figstream.objectstore import read_parquet, write_parquet
from figstream.parity import View

PREFIX = "tables/seo_redirects"


def day_key(day: str) -> str:
    return f"{PREFIX}/{day}.parquet"


def map_key(day: str) -> str:
    return f"{PREFIX}/_map/{day}.parquet"


def _shift(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def day_events(stores: streaming.Stores, day: str) -> pa.Table:
    """The day's events by event time: raw_events and board_mergers of its 24 hours."""
    return pa.concat_tables(
        [
            streaming.read_fragments(
                stores.objects, table, streaming.day_partitions(day), None, transform.EVENTS_SCHEMA
            )
            for table in streaming.INGEST_TABLES.values()
        ]
    )


def read_map(stores: streaming.Stores, day: str, epoch_day: str) -> pa.Table | None:
    """The kept map as of the end of ``day``; empty before the epoch, None if not computed."""
    if day < epoch_day:
        return redirects.empty_map()
    key = map_key(day)
    if not stores.objects.exists(key):
        return None
    return read_parquet(stores.objects, key).cast(redirects.MAP_SCHEMA)


@dataclass(frozen=True)
class DayResult:
    redirects: pa.Table
    map: pa.Table
    rewritten: int  # map entries whose destination moved today (chains collapsed)


def seo_redirects_days(
    stores: streaming.Stores, days: Sequence[str], epoch_day: str
) -> dict[str, DayResult]:
    """Compute ``days`` (and any day between them, or before them back to the last kept map,
    since each map builds on the one before) in order; returns the days asked for."""
    if not days:
        return {}
    wanted = set(days)
    first, last = min(days), max(days)
    first = max(first, epoch_day)
    previous = read_map(stores, _shift(first, -1), epoch_day)
    while previous is None:  # no kept map the day before: start earlier
        first = _shift(first, -1)
        previous = read_map(stores, _shift(first, -1), epoch_day)
    yesterday = streaming.end_of_day_index(stores, _shift(first, -1), epoch_day)
    out = {}
    current = first
    while current <= last:
        today = streaming.end_of_day_index(stores, current, epoch_day)
        new = redirects.day_redirects(yesterday, today, day_events(stores, current))
        collapsed = redirects.collapse(previous, new, live=today["url"])
        write_parquet(stores.objects, day_key(current), new)
        write_parquet(stores.objects, map_key(current), collapsed)
        if current in wanted:
            out[current] = DayResult(new, collapsed, _rewritten(previous, collapsed))
        previous, yesterday = collapsed, today
        current = _shift(current, 1)
    return out


def _rewritten(before: pa.Table, after: pa.Table) -> int:
    """Entries of ``after`` that existed ``before`` with another destination."""
    both = after.select(["from_url", "to_url"]).join(
        before.select(["from_url", "to_url"]).rename_columns(["from_url", "to_before"]),
        "from_url",
        join_type="inner",
    )
    return int(pc.sum(pc.not_equal(both["to_url"], both["to_before"])).as_py() or 0)


def seo_redirects(
    stores: streaming.Stores, days: Sequence[str], epoch_day: str
) -> dict[str, pa.Table]:
    """Each day's redirects (:data:`figstream.redirects.REDIRECTS_SCHEMA`), computed from the
    end-of-day indexes of ``day - 1`` and ``day`` and the day's events; writes the day's
    redirects and the collapsed map as of the end of the day."""
    return {day: r.redirects for day, r in seo_redirects_days(stores, days, epoch_day).items()}


def _legacy_snapshot(stores: streaming.Stores, day: str, epoch_day: str) -> pa.Table:
    """Legacy's ActiveJobs snapshot of ``day`` rebuilt from the new side's end-of-day state:
    every active job but those legacy's day-local dedupe dropped on the day they were posted
    (it never indexes them). Cross-day duplicates stay, as legacy keeps them."""
    from figstream.views import day_local_duplicates  # views renders every task: no cycle here

    state, registry = streaming.end_of_day_state(stores, day, epoch_day)
    active = state.filter(
        pc.and_(pc.equal(state["kind"], "job"), pc.equal(state["status"], "active"))
    )
    dropped = day_local_duplicates(registry, day)["job_id"]
    kept = active.filter(pc.invert(pc.is_in(active["job_id"], value_set=dropped)))
    return kept.select(transform.SEARCH_INDEX_COLUMNS)


def redirects_as_legacy(stores: streaming.Stores, day: str, epoch_day: str) -> pa.Table:
    """The day's redirects computed the legacy way from the new side's data: the same
    :func:`redirects.day_redirects` over snapshots as legacy's dedupe leaves them."""
    if day < epoch_day:
        return redirects.REDIRECTS_SCHEMA.empty_table()
    yesterday = _legacy_snapshot(stores, _shift(day, -1), epoch_day)
    today = _legacy_snapshot(stores, day, epoch_day)
    return redirects.day_redirects(yesterday, today, day_events(stores, day))


def render_view(day: str, stores: streaming.Stores, epoch_day: str) -> View:
    """The day's redirects as legacy ``redirects.csv`` holds them (strings, status "301"),
    as context the collapsed map as of that day (``map``, for
    :func:`redirects.redirect_chains`) and the day's redirects computed both ways
    (``redirects_as_legacy``, ``redirects_as_new``, for
    :func:`redirects.day_local_dedupe_redirects`). A day not computed yet is computed first."""
    if not (stores.objects.exists(day_key(day)) and stores.objects.exists(map_key(day))):
        seo_redirects(stores, [day], epoch_day)
    table = read_parquet(stores.objects, day_key(day)).cast(redirects.REDIRECTS_SCHEMA)
    redirect_map = read_parquet(stores.objects, map_key(day)).cast(redirects.MAP_SCHEMA)
    view = redirects.legacy_view(table)
    context = {
        "map": redirect_map,
        "redirects_as_new": view,
        "redirects_as_legacy": redirects.legacy_view(redirects_as_legacy(stores, day, epoch_day)),
    }
    return View(table=view, context=context)
