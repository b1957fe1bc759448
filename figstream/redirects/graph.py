"""SEO redirects: the 301s of the postings that went away on a day, and the running redirect map.

Two pieces, both pure functions over Arrow tables:

* :func:`day_redirects` is legacy ``SeoRedirects`` (``legacy/pipeline.py``), vectorised: for
  each posting in yesterday's end-of-day search index, a job of a board absorbed today goes to
  the surviving board's matching posting in today's index (same board, same lower-cased
  company, title and location; the lowest job id wins a tie), else to a search URL on the
  survivor; a job that expired today goes to a search URL of its own board. A merger wins over
  an expiry, as in legacy. Its output equals legacy ``redirects.csv`` given the same indexes.
* :func:`collapse` folds a day's redirects into the running map, so that every redirected URL
  points straight at its final destination, where legacy serves one hop a night and lets
  chains grow (its known flaw; :func:`redirect_chains` explains that difference in a parity
  check).

The map keeps, per redirected URL, its single hop as redirected on its day (``next_url``,
legacy's ``to_url``) and where that chain ends now (``to_url``). The collapse rule:

1. The newest redirect of a URL replaces its older one.
2. A live page is never redirected. Live means in ``live`` (the URLs of today's search index:
   a posting that came back, e.g. re-posted under its old id) or the target of one of today's
   redirects (a day's redirects only point at pages live at the end of that day). The
   redirect *of* such a URL is dropped; redirects *to* it stay, so a URL that comes back
   becomes the destination again of every chain through it.
3. Every remaining single hop is followed to the end of its chain: ``to_url``, ``hops`` the
   number of single hops followed.

So ``to_url`` is what following legacy's single hops gives, and it is never itself redirected.
Rule 2 makes loops impossible: a redirect added on day d points at a page live on day d, so
that page's own redirect, if any, was added later; around a loop each redirect would be later
than the one before it. A loop can only come from a registry not made by :func:`collapse`
(e.g. imported legacy hops); :func:`collapse_day` refuses its newest hop (``since``; the
smallest URL among equals) and reports it, so that URL stops being redirected and becomes
the others' destination. :func:`collapse_day` also applies the expiry policy: a redirect made
``keep_days`` or more days before the day is dropped before the map is re-resolved. Rows are
sorted by ``from_url``; the result depends on nothing but the rows' content, and re-applying
a day changes nothing.

Targets are not checked here: :mod:`figstream.redirects.safe` picks each posting's first safe
candidate (:func:`redirect_candidates`) before the collapse, so every hop, and so every
chain's end, is on an allowed host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import quote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from figstream.streaming.tables import EXPIRED, MERGED

STATUS = 301
REASON_EXPIRED, REASON_MERGED = "expired", "board_merged"
REDIRECTS_SCHEMA = pa.schema(
    [
        pa.field("from_url", pa.string()),
        pa.field("to_url", pa.string()),
        pa.field("status", pa.int64()),
        pa.field("reason", pa.string()),  # why from_url went away: expired | board_merged
    ]
)
MAP_SCHEMA = pa.schema(
    [
        *REDIRECTS_SCHEMA,  # to_url: the end of the chain, never itself redirected
        pa.field("hops", pa.int64()),  # single hops followed from from_url to to_url
        pa.field("next_url", pa.string()),  # the single hop made on from_url's day
        pa.field("since", pa.string()),  # from_url's day (YYYY-MM-DD); null: imported, no day
    ]
)
LOOPS_SCHEMA = pa.schema(
    [
        pa.field("from_url", pa.string()),
        pa.field("next_url", pa.string()),  # the hop refused: it closed a loop
        pa.field("reason", pa.string()),
        pa.field("since", pa.string()),
    ]
)
LEGACY_COLUMNS = REDIRECTS_SCHEMA.names  # legacy redirects.csv
REDIRECT_ORDER = [("from_url", "ascending"), ("to_url", "ascending"), ("reason", "ascending")]


def one_chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values.cast(pa.string())


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def legacy_lower(values: pa.Array | pa.ChunkedArray, title: bool = False) -> pa.Array:
    """``s.lower()`` (``s.title().lower()`` with ``title``) of each value, as legacy computes
    its posting key and search URLs; legacy title-cases titles when it cleans them.

    ASCII values in Arrow (title-casing does not change their lower case); the rest in Python,
    whose full Unicode mappings Arrow lacks (``"ß".title().lower() == "ss"``).
    """
    values = one_chunk(values)
    lowered = pc.ascii_lower(values)
    other = ~_mask(pc.string_is_ascii(values)) & _mask(pc.is_valid(values))
    if not other.any():
        return lowered
    mask = pa.array(other)
    fold = (lambda s: s.title().lower()) if title else str.lower
    fixed = [fold(s) for s in values.filter(mask).to_pylist()]
    return pc.replace_with_mask(lowered, mask, pa.array(fixed, pa.string()))


def _quote_plus(values: pa.Array) -> pa.Array:
    """``urllib.parse.quote_plus`` per value, computed once per distinct value."""
    encoded = pc.dictionary_encode(values)
    quoted = pa.array([quote_plus(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return quoted.take(encoded.indices)


def search_urls(boards: pa.Array, titles: pa.Array, locations: pa.Array) -> pa.Array:
    """Legacy ``search_url``: ``https://<board>.example/search?q=<title>&l=<location>`` with
    the lower-cased title and location, ``quote_plus``-encoded."""
    query = _quote_plus(legacy_lower(titles, title=True))
    where = _quote_plus(legacy_lower(locations))
    return pc.binary_join_element_wise(
        "https://", one_chunk(boards), ".example/search?q=", query, "&l=", where, ""
    )


def _keys(table: pa.Table, board: pa.Array) -> pa.Table:
    """(board, company, title, location) lower-cased the legacy way: legacy ``posting_key``."""
    return pa.table(
        {
            "k_board": one_chunk(board),
            "k_company": legacy_lower(table["company"]),
            "k_title": legacy_lower(table["title"], title=True),
            "k_location": legacy_lower(table["location"]),
        }
    )


_KEY_NAMES = ["k_board", "k_company", "k_title", "k_location"]


def _survivors(day_events: pa.Table) -> dict[str, str]:
    """absorbed board -> surviving board of the day's mergers; for a board absorbed twice the
    last merger by (event time, event id) wins, as legacy's dict assignment in event order."""
    mergers = day_events.filter(pc.equal(day_events["event_type"], MERGED))
    mergers = mergers.select(["event_time", "event_id", "absorbed_board", "surviving_board"])
    mergers = mergers.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
    return {r["absorbed_board"]: r["surviving_board"] for r in mergers.to_pylist()}


def _matches(rows: pa.Table, survivor: pa.Array, today_index: pa.Table) -> pa.Array:
    """URL of the surviving board's posting with each row's key in ``today_index`` (the lowest
    job id among equals), null where there is none."""
    today = today_index.filter(pc.is_in(today_index["board"], pc.unique(survivor)))
    today_keys = _keys(today, today["board"])
    candidates = pa.table(
        [*today_keys.columns, today["job_id"], today["url"]],
        names=[*_KEY_NAMES, "job_id", "url"],
    )
    lowest = candidates.group_by(_KEY_NAMES).aggregate([("job_id", "min")])
    lowest = lowest.rename_columns([*_KEY_NAMES, "job_id"]).join(
        candidates.select(["job_id", "url"]), "job_id", join_type="inner"
    )
    lowest = lowest.group_by(_KEY_NAMES).aggregate([("url", "min")])  # a job id is unique
    wanted = _keys(rows, survivor).append_column("row", pa.array(np.arange(rows.num_rows)))
    found = wanted.join(lowest, _KEY_NAMES, join_type="left outer").sort_by("row")
    return one_chunk(found["url_min"])


CANDIDATES_SCHEMA = pa.schema(
    [
        pa.field("from_url", pa.string()),
        pa.field("source_board", pa.string()),  # the board of the posting that went away
        pa.field("board", pa.string()),  # the board the redirect lands on
        pa.field("reason", pa.string()),
        pa.field("match", pa.string()),  # the same job on the surviving board, if any
        pa.field("search", pa.string()),  # a search page for its title and location
    ]
)


def redirect_candidates(
    yesterday_index: pa.Table, today_index: pa.Table, day_events: pa.Table
) -> pa.Table:
    """Every posting that went away on the day with its candidate targets in order of
    preference, :data:`CANDIDATES_SCHEMA` sorted by ``from_url``: the same job on the
    surviving board (mergers only; null where there is none), then a search page on the
    board the redirect lands on. The rules are :func:`day_redirects`'s."""
    survivors = _survivors(day_events)
    expired = day_events.filter(pc.equal(day_events["event_type"], EXPIRED))["job_id"]
    jobs = yesterday_index.select(["job_id", "board", "title", "company", "location", "url"])
    absorbed = pa.array(list(survivors), pa.string())
    survivor = pa.array(list(survivors.values()), pa.string()).take(
        pc.index_in(jobs["board"], value_set=absorbed)
    )
    is_merged = _mask(pc.is_valid(survivor))
    is_expired = ~is_merged & _mask(pc.is_in(jobs["job_id"], value_set=one_chunk(expired)))

    merged = jobs.filter(pa.array(is_merged))
    survivor = survivor.filter(pa.array(is_merged))
    gone = jobs.filter(pa.array(is_expired))
    parts = [
        (
            merged,
            survivor,
            REASON_MERGED,
            _matches(merged, survivor, today_index),
            search_urls(survivor, merged["title"], merged["location"]),
        ),
        (
            gone,
            gone["board"],
            REASON_EXPIRED,
            pa.nulls(gone.num_rows, pa.string()),
            search_urls(gone["board"], gone["title"], gone["location"]),
        ),
    ]
    out = pa.concat_tables(
        [
            pa.table(
                [
                    one_chunk(rows["url"]),
                    one_chunk(rows["board"]),
                    one_chunk(board),
                    pa.repeat(pa.scalar(reason), rows.num_rows),
                    one_chunk(match),
                    one_chunk(search),
                ],
                schema=CANDIDATES_SCHEMA,
            )
            for rows, board, reason, match, search in parts
        ]
    )
    return out.sort_by([("from_url", "ascending"), ("reason", "ascending")]).combine_chunks()


def day_redirects(
    yesterday_index: pa.Table, today_index: pa.Table, day_events: pa.Table
) -> pa.Table:
    """The redirects created on a day, :data:`REDIRECTS_SCHEMA`, sorted by ``from_url``, as
    legacy makes them: every target trusted (the safe ones: :mod:`figstream.redirects.safe`).

    ``yesterday_index`` and ``today_index`` are the end-of-day search indexes
    (:data:`figstream.streaming.tables.SEARCH_INDEX_COLUMNS`) of the day before and of the day;
    ``day_events`` are the day's events (:data:`figstream.streaming.tables.EVENTS_SCHEMA`: postings,
    expiries and mergers). Only postings in yesterday's index get a redirect, so one that
    appeared and went away within the day gets none. Legacy semantics, kept exactly: a job
    with an expiry event today is redirected even if it was re-posted later the same day
    (:func:`collapse` then drops it, as a live page), and a survivor that was itself absorbed
    today still gets the search URL.
    """
    found = redirect_candidates(yesterday_index, today_index, day_events)
    return redirects_table(
        found["from_url"], pc.coalesce(found["match"], found["search"]), found["reason"]
    )


def redirects_table(
    sources: pa.Array | pa.ChunkedArray,
    targets: pa.Array | pa.ChunkedArray,
    reasons: pa.Array | pa.ChunkedArray,
) -> pa.Table:
    """:data:`REDIRECTS_SCHEMA` rows (status 301) sorted by :data:`REDIRECT_ORDER`."""
    out = pa.table(
        [
            one_chunk(sources),
            one_chunk(targets),
            pa.repeat(pa.scalar(STATUS, pa.int64()), len(sources)),
            one_chunk(reasons),
        ],
        schema=REDIRECTS_SCHEMA,
    )
    return out.sort_by(REDIRECT_ORDER).combine_chunks()


# --- the running map ----------------------------------------------------------------------------


def empty_map() -> pa.Table:
    return MAP_SCHEMA.empty_table()


_EDGE_ORDER = [("from_url", "ascending"), ("next_url", "ascending"), ("reason", "ascending")]


def _edges(table: pa.Table) -> pa.Table:
    """Single hops (from_url, next_url, status, reason), one per ``from_url`` (the smallest
    next_url, then reason), no nulls. Without ``next_url`` (a day's redirects, imported
    legacy hops) ``to_url`` is the single hop."""
    n = table.num_rows
    names = table.column_names
    hop = "next_url" if "next_url" in names else "to_url"
    out = pa.table(
        {
            "from_url": one_chunk(table["from_url"]),
            "next_url": one_chunk(table[hop]),
            "status": table["status"].cast(pa.int64())
            if "status" in names
            else pa.repeat(pa.scalar(STATUS, pa.int64()), n),
            "reason": one_chunk(table["reason"]) if "reason" in names else pa.nulls(n, pa.string()),
            "since": one_chunk(table["since"]) if "since" in names else pa.nulls(n, pa.string()),
        }
    )
    out = out.filter(pc.and_(pc.is_valid(out["from_url"]), pc.is_valid(out["next_url"])))
    out = out.sort_by(_EDGE_ORDER).combine_chunks()
    sources = out["from_url"].combine_chunks()
    if len(sources) < 2:
        return out
    repeat = _mask(pc.equal(sources.slice(1), sources.slice(0, len(sources) - 1)))
    return out.filter(pa.array(np.concatenate([[True], ~repeat])))


def _rounds(n: int) -> int:
    return max(1, math.ceil(math.log2(n + 1)) + 1)


def _roots(succ: np.ndarray) -> np.ndarray:
    """The node each node's chain ends at (one without successor), or a node on the loop the
    chain runs into: pointer jumping, log2(n) numpy gathers."""
    jump = np.where(succ >= 0, succ, np.arange(len(succ)))
    for _ in range(_rounds(len(succ))):
        jump = jump[jump]
    return jump


def _loop_minimum(succ: np.ndarray, on_loop: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """The smallest ``rank`` (a permutation of the node indexes) on the loop through each
    node of ``on_loop``."""
    n = len(succ)
    jump = np.where(succ >= 0, succ, np.arange(n))
    smallest = rank.copy()
    for _ in range(_rounds(n)):
        smallest = np.minimum(smallest, smallest[jump])
        jump = jump[jump]
    return smallest[on_loop]


def _newest_first(edges: pa.Table) -> np.ndarray:
    """Each edge's rank, newest ``since`` first (null: oldest), then by ``from_url``."""
    order = pa.table(
        {"since": pc.fill_null(edges["since"], ""), "row": np.arange(edges.num_rows)}
    ).sort_by([("since", "descending"), ("row", "ascending")])["row"]
    rank = np.empty(edges.num_rows, np.int64)
    rank[order.to_numpy()] = np.arange(edges.num_rows)
    return rank


def _lengths(succ: np.ndarray) -> np.ndarray:
    """Number of nodes on each node's chain, itself included, on a loop-free graph."""
    n = len(succ)
    jump = np.append(np.where(succ >= 0, succ, n), n)  # n: a sink that counts 0
    total = np.append(np.ones(n, np.int64), 0)
    for _ in range(_rounds(n)):
        total = total + total[jump]
        jump = jump[jump]
    return total[:n]


def _resolve(edges: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Follow every single hop of ``edges`` (one per from_url, sorted) to the end of its chain;
    also the hops refused because they closed a loop (:data:`LOOPS_SCHEMA`)."""
    refused = [LOOPS_SCHEMA.empty_table()]
    while True:
        succ = pc.index_in(edges["next_url"], value_set=edges["from_url"])
        succ = pc.fill_null(succ, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        roots = _roots(succ)
        looping = succ[roots] >= 0 if len(succ) else np.zeros(0, bool)
        if not looping.any():
            break
        # The newest hop on a loop closed it: it is refused (reported), so its URL stops being
        # redirected and becomes the destination of the others.
        rank = _newest_first(edges)
        keep = np.ones(edges.num_rows, bool)
        node = np.argsort(rank)
        keep[node[np.unique(_loop_minimum(succ, roots[looping], rank))]] = False
        refused.append(edges.filter(pa.array(~keep)).select(LOOPS_SCHEMA.names))
        edges = edges.filter(pa.array(keep))
    resolved = pa.table(
        {
            "from_url": edges["from_url"],
            "to_url": edges["next_url"].take(pa.array(roots, pa.int64())),
            "status": edges["status"],
            "reason": edges["reason"],
            "hops": pa.array(_lengths(succ), pa.int64()),
            "next_url": edges["next_url"],
            "since": edges["since"],
        },
        schema=MAP_SCHEMA,
    )
    loops = pa.concat_tables(refused).cast(LOOPS_SCHEMA).sort_by("from_url").combine_chunks()
    return resolved, loops


@dataclass(frozen=True)
class Collapsed:
    map: pa.Table  # MAP_SCHEMA
    loops: pa.Table  # LOOPS_SCHEMA: hops refused because they closed a loop
    expired: int  # entries dropped by the expiry policy


def expire(registry: pa.Table, day: str, keep_days: int) -> pa.Table:
    """``registry`` without the redirects made ``keep_days`` or more days before ``day``
    (those with a null ``since``, imported without a day, stay)."""
    if "since" not in registry.column_names:
        return registry
    first = (date.fromisoformat(day) - timedelta(days=keep_days - 1)).isoformat()
    kept = pc.fill_null(pc.greater_equal(registry["since"], first), True)
    return registry.filter(kept)


def collapse_day(
    registry: pa.Table,
    new: pa.Table,
    *,
    live: pa.Array | pa.ChunkedArray | None = None,
    day: str | None = None,
    keep_days: int | None = None,
) -> Collapsed:
    """:func:`collapse`, stamping ``new`` with ``day`` (its ``since``), first dropping what the
    expiry policy (``keep_days``) retires on ``day``, and reporting the hops refused because
    they closed a loop."""
    expired = 0
    if day is not None and keep_days is not None:
        kept = expire(registry, day, keep_days)
        expired, registry = registry.num_rows - kept.num_rows, kept
    if day is not None:
        new = new.append_column("since", pa.repeat(pa.scalar(day), new.num_rows))
    fresh = _edges(new)
    old = _edges(registry)
    live_now = [fresh["next_url"]]
    if live is not None:
        live_now.append(one_chunk(live))
    live_now = pc.unique(pa.chunked_array(live_now, pa.string()))
    fresh = fresh.filter(pc.invert(pc.is_in(fresh["from_url"], value_set=live_now)))
    replaced = pa.chunked_array([live_now, fresh["from_url"]], pa.string())
    old = old.filter(pc.invert(pc.is_in(old["from_url"], value_set=replaced)))
    edges = pa.concat_tables([old, fresh]).sort_by("from_url").combine_chunks()
    resolved, loops = _resolve(edges)
    return Collapsed(resolved.combine_chunks(), loops, expired)


def collapse(
    registry: pa.Table, new: pa.Table, *, live: pa.Array | pa.ChunkedArray | None = None
) -> pa.Table:
    """The redirect map after ``new`` (a day's redirects, :data:`REDIRECTS_SCHEMA`) on top of
    ``registry`` (the map so far, :data:`MAP_SCHEMA`, or any table of single hops with
    from_url and to_url), as :data:`MAP_SCHEMA` sorted by ``from_url``.

    ``live``: the URLs live at the end of the day (today's search index); they stop being
    redirected. The rule is in the module docstring. The whole map is re-resolved from its
    single hops, so a URL that comes back re-routes every chain through it; that costs
    log2(map size) vectorised passes.
    """
    return collapse_day(registry, new, live=live).map
