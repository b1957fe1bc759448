"""A day's redirects with every target checked: no open redirect, and nothing silently dropped.

Legacy trusts the URL a producer put in a posting, so a merger could send the absorbed board's
users to any host. Here each posting that went away gets the first of its candidates
(:func:`figstream.redirects.graph.redirect_candidates`) that the allow-list accepts
(:meth:`~figstream.redirects.policy.RedirectPolicy.refusal`), in this order:

1. ``match``: the same job on the surviving board (mergers only);
2. ``search``: a search page on that board for its title and location;
3. ``home``: that board's home page.

Every candidate refused on the way is reported with its reason code (:data:`REFUSED_SCHEMA`),
so a hostile target is visible even when a fallback took its place. A candidate equal to the
source itself (a job re-posted on the survivor under the very same URL) is a loop: refused as
``redirect_loop``, with no fallback, since that page is live. A posting whose own URL
(the source, which becomes a key of the CDN's map) is refused gets no redirect at all, and one
whose every candidate is refused gets none either (``no_safe_target``); both are reported.
:func:`dead_letters` turns the report into dead-letter rows (stream ``seo_redirects``, the day
as partition), with ids stable per (day, source, rule) so that recomputing a day adds nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
import pyarrow as pa

from figstream.redirects import graph
from figstream.redirects.policy import RedirectPolicy
from figstream.storage.state import TS

STREAM = "seo_redirects"
RULES = ("match", "search", "home")
SOURCE, LOOP, NONE_SAFE, RECHECK = "source", "loop", "none_safe", "recheck"
POLICY_KEY = b"figstream_redirect_policy"  # the map's Parquet metadata: the policy it passed
REFUSED_SCHEMA = pa.schema(
    [
        pa.field("from_url", pa.string()),
        pa.field("to_url", pa.string()),  # the refused target (the source itself for "source")
        pa.field("board", pa.string()),  # the board the redirect would land on
        pa.field("rule", pa.string()),  # match|search|home|source|loop|none_safe|recheck
        pa.field("code", pa.string()),  # the reason code, e.g. target_other_host
        pa.field("reason", pa.string()),  # why from_url went away: expired | board_merged
    ]
)


@dataclass(frozen=True)
class SafeDay:
    redirects: pa.Table  # graph.REDIRECTS_SCHEMA, only safe targets
    refused: pa.Table  # REFUSED_SCHEMA
    fallbacks: dict[str, int]  # rule -> redirects that took it


def safe_redirects(candidates: pa.Table, policy: RedirectPolicy) -> SafeDay:
    """The first safe candidate of each row of :data:`graph.CANDIDATES_SCHEMA`."""
    checked: dict[tuple[str | None, str | None], str | None] = {}

    def refusal(url: str | None, board: str | None) -> str | None:
        key = (url, board)
        if key not in checked:  # a day's search and home pages repeat a lot
            checked[key] = policy.refusal(url, board)
        return checked[key]

    sources, targets, reasons, refused = [], [], [], []
    fallbacks = dict.fromkeys(RULES, 0)
    for row in candidates.to_pylist():
        source, board, why = row["from_url"], row["board"], row["reason"]
        code = refusal(source, row["source_board"])
        if code is not None:
            refused.append((source, source, board, SOURCE, f"source_{code}", why))
            continue
        options = {"match": row["match"], "search": row["search"], "home": policy.home_url(board)}
        chosen = None
        for rule, url in options.items():
            if url is None and rule == "match":
                continue  # no such job: not a refusal, just the next rule
            if url == source:  # the page is live under the same URL: a loop, not a fallback
                refused.append((source, url, board, LOOP, "redirect_loop", why))
                break
            code = refusal(url, board)
            if code is None:
                chosen = (rule, url)
                break
            refused.append((source, url, board, rule, f"target_{code}", why))
        if chosen is None:
            if not refused or refused[-1][3] != LOOP or refused[-1][0] != source:
                refused.append((source, None, board, NONE_SAFE, "no_safe_target", why))
            continue
        fallbacks[chosen[0]] += 1
        sources.append(source)
        targets.append(chosen[1])
        reasons.append(why)
    redirects = graph.redirects_table(
        pa.array(sources, pa.string()), pa.array(targets, pa.string()), pa.array(reasons)
    )
    table = pa.Table.from_pylist(
        [dict(zip(REFUSED_SCHEMA.names, r, strict=True)) for r in refused], schema=REFUSED_SCHEMA
    )
    return SafeDay(redirects, table, fallbacks)


def safe_day_redirects(
    yesterday_index: pa.Table, today_index: pa.Table, day_events: pa.Table, policy: RedirectPolicy
) -> SafeDay:
    """:func:`graph.day_redirects` with every source and target checked against ``policy``."""
    found = graph.redirect_candidates(yesterday_index, today_index, day_events)
    return safe_redirects(found, policy)


def loops_refused(loops: pa.Table) -> pa.Table:
    """Hops :func:`graph.collapse_day` refused for closing a loop, as :data:`REFUSED_SCHEMA`."""
    n = loops.num_rows
    return pa.table(
        {
            "from_url": loops["from_url"],
            "to_url": loops["next_url"],
            "board": pa.nulls(n, pa.string()),
            "rule": pa.repeat(pa.scalar(LOOP), n),
            "code": pa.repeat(pa.scalar("redirect_loop"), n),
            "reason": loops["reason"],
        },
        schema=REFUSED_SCHEMA,
    )


def recheck(redirect_map: pa.Table, policy: RedirectPolicy) -> tuple[pa.Table, pa.Table]:
    """``redirect_map`` without the entries ``policy`` refuses, and those as
    :data:`REFUSED_SCHEMA` (rule ``recheck``). For a map kept under another policy (or before
    there was one): an allow-list that shrank, or a target legacy trusted, leaves the map
    instead of being served for another year. A map already checked under ``policy`` (its
    :data:`POLICY_KEY` metadata) is returned as it is, without a look at its rows."""
    metadata = redirect_map.schema.metadata or {}
    if metadata.get(POLICY_KEY) == policy.fingerprint().encode():
        return redirect_map, REFUSED_SCHEMA.empty_table()
    keep, refused = [], []
    for row in redirect_map.select(["from_url", "next_url", "reason"]).to_pylist():
        source, hop = row["from_url"], row["next_url"]
        code = policy.refusal(source, policy.board_of(source))
        role = "source"
        if code is None:
            role, code = "target", policy.refusal(hop, policy.board_of(hop))
        keep.append(code is None)
        if code is not None:
            board = policy.board_of(hop)
            refused.append((source, hop, board, RECHECK, f"{role}_{code}", row["reason"]))
    table = pa.Table.from_pylist(
        [dict(zip(REFUSED_SCHEMA.names, r, strict=True)) for r in refused], schema=REFUSED_SCHEMA
    )
    return redirect_map.filter(pa.array(keep, pa.bool_())), table


def checked_under(redirect_map: pa.Table, policy: RedirectPolicy) -> pa.Table:
    """``redirect_map`` marked as checked under ``policy`` (see :func:`recheck`)."""
    return redirect_map.replace_schema_metadata({POLICY_KEY: policy.fingerprint().encode()})


def dead_letters(refused: pa.Table, day: str) -> pa.Table:
    """Dead-letter rows (:data:`figstream.storage.deadletter.DEAD_LETTER_SCHEMA` less stream
    and partition) of a day's refusals: one batch per source URL, a line per rule."""
    rows = []
    for r in refused.to_pylist():
        digest = hashlib.sha256(r["from_url"].encode("utf-8", "surrogatepass")).hexdigest()[:24]
        what = "source" if r["rule"] == SOURCE else f"{r['rule']} target"
        rows.append(
            {
                "batch_id": f"{STREAM}/{day}/{digest}",
                "line_no": [*RULES, SOURCE, LOOP, NONE_SAFE, RECHECK].index(r["rule"]),
                "event_id": None,
                "event_time": None,
                "code": r["code"],
                "detail": f"{what} {r['to_url']!r} of {r['from_url']!r} refused: {r['code']}",
                "payload": orjson.dumps(r),
            }
        )
    schema = pa.schema(
        [
            ("batch_id", pa.string()),
            ("line_no", pa.int64()),
            ("event_id", pa.string()),
            ("event_time", TS),
            ("code", pa.string()),
            ("detail", pa.string()),
            ("payload", pa.binary()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)
