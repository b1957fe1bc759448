"""Known legacy flaws as rules: each recognises the parity differences a flaw explains.

The ledger names a task's ``known_flaws``; ``KNOWN_FLAWS`` maps each name to its rule, and a
difference a rule explains is counted under the flaw's name instead of as a mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from figstream.migration.parity import Explained, FlawRule
from figstream.migration.parity_report import Differences
from figstream.migration.views import STATS_COLUMNS
from figstream.redirects.graph import one_chunk

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


# --- parity -------------------------------------------------------------------------------------


def _final(urls: pa.Array | pa.ChunkedArray, redirect_map: pa.Table) -> pa.Array:
    """The map's destination of each URL (null where the map does not redirect it)."""
    index = pc.index_in(one_chunk(urls), value_set=one_chunk(redirect_map["from_url"]))
    return one_chunk(redirect_map["to_url"]).take(index)


def _false(n: int) -> pa.Array:
    return pa.array(np.zeros(n, bool))


def redirect_chains(differences: Differences, context: Mapping[str, pa.Table]) -> Explained:
    """Known legacy flaw: single-hop redirects (chains grow over the nights).

    Legacy sends ``u`` to ``v`` and, once ``v`` goes away too, ``v`` to ``w``; the collapsed
    map (``context["map"]``) sends ``u`` straight to ``w``. A difference is explained when the
    legacy target is itself redirected by the map to the new target:

    * a differing row (key ``from_url``) whose only differing column is ``to_url`` and where
      ``map[to_url_legacy] == to_url_new``;
    * with ``to_url`` in the key, the pair shows as a row only in legacy ``(u, v)`` and a row
      only in new ``(u, w)``: both are explained when ``map[v] == w == map[u]``.
    """
    redirect_map = context.get("map")
    n_legacy = differences.only_legacy.num_rows
    n_new = differences.only_new.num_rows
    n_diff = differences.differing.num_rows
    if redirect_map is None or redirect_map.num_rows == 0:
        return Explained(_false(n_legacy), _false(n_new), _false(n_diff))

    differing = differences.differing
    if {"to_url_legacy", "to_url_new", "differing_columns"} <= set(differing.column_names):
        only_target = pc.equal(differing["differing_columns"], "to_url")
        onward = _final(differing["to_url_legacy"], redirect_map)
        chained = pc.equal(onward, differing["to_url_new"])
        diff_mask = pc.fill_null(pc.and_(only_target, chained), False)
    else:
        diff_mask = _false(n_diff)

    legacy, new = differences.only_legacy, differences.only_new
    needed = {"from_url", "to_url"}
    if needed <= set(legacy.column_names) and needed <= set(new.column_names) and n_legacy:
        destination = _final(legacy["from_url"], redirect_map)
        chained = pc.equal(_final(legacy["to_url"], redirect_map), destination)
        pairs = pc.binary_join_element_wise(legacy["from_url"], destination, "\n")
        new_pairs = pc.binary_join_element_wise(new["from_url"], new["to_url"], "\n")
        in_new = pc.is_in(pairs, value_set=one_chunk(new_pairs))
        legacy_mask = pc.fill_null(pc.and_(chained, in_new), False)
        explained_pairs = one_chunk(pairs).filter(legacy_mask)
        new_mask = pc.fill_null(pc.is_in(new_pairs, value_set=explained_pairs), False)
    else:
        legacy_mask, new_mask = _false(n_legacy), _false(n_new)
    return Explained(_array_bool(legacy_mask), _array_bool(new_mask), _array_bool(diff_mask))


def hostile_redirect_targets(
    differences: Differences, context: Mapping[str, pa.Table]
) -> Explained:
    """Known legacy flaw: an open redirect. Legacy trusts the URL a producer put in a
    posting; figstream refuses a target off the allow-list (and a hostile source) with a
    reason and falls back to the next rule (``figstream.redirects.safe``).

    ``context["refused"]`` is the day's refusals (from_url, to_url, rule, code). Explained:
    a differing row whose only differing column is ``to_url`` and whose legacy target was
    refused for that source; a row only in legacy whose pair was refused, or whose source
    got no redirect (``source`` or ``none_safe``); with ``to_url`` in the key, a row only in
    new whose source has such a legacy row.
    """
    refused = context.get("refused")
    n = [t.num_rows for t in (differences.only_legacy, differences.only_new, differences.differing)]
    if refused is None or refused.num_rows == 0:
        return Explained(*(_false(k) for k in n))
    pairs = {(r["from_url"], r["to_url"]) for r in refused.to_pylist()}
    dropped = {r["from_url"] for r in refused.to_pylist() if r["rule"] in ("source", "none_safe")}
    differing = [
        r.get("differing_columns") == "to_url" and (r["from_url"], r.get("to_url_legacy")) in pairs
        for r in differences.differing.to_pylist()
    ]
    only_legacy = [
        (r.get("from_url"), r.get("to_url")) in pairs or r.get("from_url") in dropped
        for r in differences.only_legacy.to_pylist()
    ]
    explained = {
        r.get("from_url")
        for r, hit in zip(differences.only_legacy.to_pylist(), only_legacy, strict=True)
        if hit
    }
    only_new = [r.get("from_url") in explained for r in differences.only_new.to_pylist()]
    return Explained(*(pa.array(m, pa.bool_()) for m in (only_legacy, only_new, differing)))


def day_local_dedupe_redirects(
    differences: Differences, context: Mapping[str, pa.Table]
) -> Explained:
    """Known legacy flaw: DedupePostings sees one day at a time, so legacy's snapshots differ
    from the search index on cross-board duplicates (it drops a same-day duplicate for good,
    which figstream shows again once its original is gone; it keeps a duplicate posted a day
    after its original, which figstream hides while the original is active), and with them
    the redirects *from* those postings and *to* them (a merger's match).

    ``redirects_as_legacy`` and ``redirects_as_new`` (legacy columns, strings) are the day's
    redirects computed both ways from the same events and end-of-day states: from snapshots
    as legacy's dedupe leaves them, and from the search indexes. A row only on one side is
    explained when that side's way computes exactly this row and the other way does not; a
    differing row when, in every differing column, legacy holds the legacy way's value and new
    the new way's. A wrong URL on either side stays unexplained.
    """
    as_legacy, as_new = context.get("redirects_as_legacy"), context.get("redirects_as_new")
    tables = (differences.only_legacy, differences.only_new, differences.differing)
    if as_legacy is None or as_new is None:
        return Explained(*(_false(t.num_rows) for t in tables))
    columns = ("to_url", "status", "reason")

    def by_source(table: pa.Table) -> dict[str, dict]:
        return {r["from_url"]: r for r in table.select(["from_url", *columns]).to_pylist()}

    legacy_way, new_way = by_source(as_legacy), by_source(as_new)

    def holds(way: dict[str, dict], row: dict) -> bool:
        found = way.get(row.get("from_url"))
        return found is not None and all(str(found[c]) == str(row[c]) for c in columns if c in row)

    only_legacy = [
        holds(legacy_way, r) and not holds(new_way, r) for r in differences.only_legacy.to_pylist()
    ]
    only_new = [
        holds(new_way, r) and not holds(legacy_way, r) for r in differences.only_new.to_pylist()
    ]
    differing = []
    for row in differences.differing.to_pylist():
        legacy_row, new_row = legacy_way.get(row.get("from_url")), new_way.get(row.get("from_url"))
        names = [c for c in (row.get("differing_columns") or "").split(",") if c]
        differing.append(
            legacy_row is not None
            and new_row is not None
            and bool(names)
            and all(
                c in columns
                and str(row.get(f"{c}_legacy")) == str(legacy_row[c])
                and str(row.get(f"{c}_new")) == str(new_row[c])
                for c in names
            )
        )
    return Explained(*(pa.array(m, pa.bool_()) for m in (only_legacy, only_new, differing)))


def _array_bool(mask: pa.Array | pa.ChunkedArray) -> pa.Array:
    return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask


KNOWN_FLAWS: dict[str, FlawRule] = {
    "arrived_after_cutoff": arrived_after_cutoff,
    "day_local_dedupe": day_local_dedupe,
    "day_local_dedupe_index": day_local_dedupe_index,
    "day_local_dedupe_stats": day_local_dedupe_stats,
    "no_validation": no_validation,
    "day_local_dedupe_redirects": day_local_dedupe_redirects,
    "hostile_redirect_targets": hostile_redirect_targets,
    "redirect_chains": redirect_chains,
}
