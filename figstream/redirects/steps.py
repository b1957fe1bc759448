"""The SEO-redirects step over the stores, free of Dagster (the asset and the parity view call it).

Per day: the day's redirects (``tables/seo_redirects/<day>.parquet``) from the end-of-day search
indexes of the day before and of the day and the day's events, and the collapsed running map
as of the end of the day (``tables/seo_redirects/_map/<day>.parquet``). Each day's map is built
on the kept map of the day before, so a day can be recomputed alone (the same inputs give the
same files) and a range is computed in order from the last kept map. A day whose predecessor
has no kept map yet is reached by computing the missing days first, back to the epoch.

Every target is checked against ``platform/redirects.yaml`` (:mod:`figstream.redirects.safe`);
what is refused, and every hop refused for closing a loop, goes to the dead-letter store with
its reason (stream ``seo_redirects``, the day as partition) and to
``tables/seo_redirects/_refused/<day>.parquet`` (the parity check's context). The map drops the
301s older than the policy's ``keep_301_days``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from figstream.redirects import graph, safe
from figstream.redirects.policy import RedirectPolicy, load_policy
from figstream.storage.objects import read_parquet, write_parquet
from figstream.streaming import daily, fragments, tables
from figstream.streaming import stores as streaming_stores

PREFIX = "tables/seo_redirects"


def day_key(day: str) -> str:
    return f"{PREFIX}/{day}.parquet"


def map_key(day: str) -> str:
    return f"{PREFIX}/_map/{day}.parquet"


def refused_key(day: str) -> str:
    return f"{PREFIX}/_refused/{day}.parquet"


def nginx_key(day: str) -> str:
    return f"exports/seo_redirects/nginx/{day}.conf"


def cloudfront_key(day: str, part: int) -> str:
    return f"exports/seo_redirects/cloudfront/{day}/part-{part:05d}.json"


def shift_day(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def day_events(stores: streaming_stores.Stores, day: str) -> pa.Table:
    """The day's events by event time: raw_events and board_mergers of its 24 hours."""
    return pa.concat_tables(
        [
            fragments.read_fragments(
                stores.objects,
                table,
                streaming_stores.day_partitions(day),
                None,
                tables.EVENTS_SCHEMA,
            )
            for table in streaming_stores.INGEST_TABLES.values()
        ]
    )


def read_map(stores: streaming_stores.Stores, day: str, epoch_day: str) -> pa.Table | None:
    """The kept map as of the end of ``day``; empty before the epoch, None if not computed."""
    if day < epoch_day:
        return graph.empty_map()
    key = map_key(day)
    if not stores.objects.exists(key):
        return None
    kept = read_parquet(stores.objects, key)
    if "since" not in kept.column_names:  # kept before the expiry policy: no day known
        kept = kept.append_column("since", pa.nulls(kept.num_rows, pa.string()))
    metadata = kept.schema.metadata  # the policy it was checked under (safe.recheck)
    return (
        kept.select(graph.MAP_SCHEMA.names).cast(graph.MAP_SCHEMA).replace_schema_metadata(metadata)
    )


@dataclass(frozen=True)
class DayResult:
    redirects: pa.Table
    map: pa.Table
    rewritten: int  # map entries whose destination moved today (chains collapsed)
    refused: pa.Table = field(default_factory=safe.REFUSED_SCHEMA.empty_table)  # and loop hops
    fallbacks: dict[str, int] | None = None  # rule (match, search, home) -> redirects
    expired: int = 0  # map entries dropped today by the expiry policy


def seo_redirects_days(
    stores: streaming_stores.Stores,
    days: Sequence[str],
    epoch_day: str,
    policy: RedirectPolicy | None = None,
) -> dict[str, DayResult]:
    """Compute ``days`` (and any day between them, or before them back to the last kept map,
    since each map builds on the one before) in order; returns the days asked for.
    ``policy``: the allow-list and expiry (default ``platform/redirects.yaml``)."""
    policy = policy or load_policy()
    if not days:
        return {}
    wanted = set(days)
    first, last = min(days), max(days)
    first = max(first, epoch_day)
    previous = read_map(stores, shift_day(first, -1), epoch_day)
    while previous is None:  # no kept map the day before: start earlier
        first = shift_day(first, -1)
        previous = read_map(stores, shift_day(first, -1), epoch_day)
    previous, stale = safe.recheck(previous, policy)  # kept under another policy, if so
    yesterday = daily.end_of_day_index(stores, shift_day(first, -1), epoch_day)
    out = {}
    current = first
    while current <= last:
        today = daily.end_of_day_index(stores, current, epoch_day)
        checked = safe.safe_day_redirects(yesterday, today, day_events(stores, current), policy)
        new = checked.redirects
        result = graph.collapse_day(
            previous, new, live=today["url"], day=current, keep_days=policy.keep_301_days
        )
        collapsed = result.map
        refused = pa.concat_tables([stale, checked.refused, safe.loops_refused(result.loops)])
        stale = safe.REFUSED_SCHEMA.empty_table()
        if refused.num_rows:
            stores.dead_letters.add(
                safe.dead_letters(refused, current), stream=safe.STREAM, partition_key=current
            )
        write_parquet(stores.objects, refused_key(current), refused)
        write_parquet(stores.objects, day_key(current), new)
        collapsed = safe.checked_under(collapsed, policy)
        write_parquet(stores.objects, map_key(current), collapsed)
        if current in wanted:
            rewritten = _rewritten(previous, collapsed)
            out[current] = DayResult(
                new, collapsed, rewritten, refused, checked.fallbacks, result.expired
            )
        previous, yesterday = collapsed, today
        current = shift_day(current, 1)
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
    stores: streaming_stores.Stores, days: Sequence[str], epoch_day: str
) -> dict[str, pa.Table]:
    """Each day's redirects (:data:`figstream.redirects.graph.REDIRECTS_SCHEMA`), computed from the
    end-of-day indexes of ``day - 1`` and ``day`` and the day's events; writes the day's
    redirects and the collapsed map as of the end of the day."""
    return {day: r.redirects for day, r in seo_redirects_days(stores, days, epoch_day).items()}


def day_map(
    stores: streaming_stores.Stores, day: str, epoch_day: str, policy: RedirectPolicy | None = None
) -> pa.Table:
    """The kept map as of the end of ``day``, computed first if it is not kept yet."""
    kept = read_map(stores, day, epoch_day)
    if kept is None:
        kept = seo_redirects_days(stores, [day], epoch_day, policy)[day].map
    return kept
