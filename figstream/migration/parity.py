"""Parity between a legacy task's output and the new implementation's, for one day.

Both sides come as Arrow tables with the legacy output's columns (strings, as the legacy CSV
holds them). ``compare`` matches rows on the ledger's key, applies its normalisers and
tolerances, and sorts every difference into rows only in legacy, rows only in new and rows
that differ. Known-flaw rules then explain the differences a documented legacy flaw causes,
so those are reported as such instead of as mismatches.

Why not datacompy (evaluated: datacompy 1.1.0, ``PandasCompare``): volume is not the obstacle
(1M rows x 12 string columns took it about 5 s), the semantics are.

* A key that repeats is paired by sorted row number and counted as rows in common; here a
  repeated key is a mismatch in itself and is never paired by guesswork.
* Its normalisation is global (``ignore_spaces``, ``ignore_case``): no per-column squash,
  casefold, empty-as-null, number or ISO-8601 instant parsing. Doing those here leaves
  datacompy only a join and an equality, which Arrow does natively without a pandas copy of
  1-5M rows a day.
* Known-flaw rules need the differences as Arrow tables of a fixed shape and attribute each
  difference to one flaw; datacompy yields pandas frames and a text report.
* It would add polars and jinja2 to a pure core, and its API moved between releases
  (``datacompy.Compare`` became ``PandasCompare`` in 1.0; it lower-cases column names by
  default).

So the comparison is a hash of the normalised key on both sides (numpy for the index work),
then per-column vectorised Arrow compute on the matched pairs only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from figstream.migration.ledger import ParitySpec
from figstream.migration.normalise import bools, chunks, normalise_column, parse_number
from figstream.migration.parity_report import CATEGORIES, Differences, ParityReport, sample_rows


@dataclass(frozen=True)
class View:
    """One side of a day as the legacy task's output: ``table`` is compared with the legacy
    task's main output; ``extra_outputs`` are the other files the legacy task writes (by file
    name); ``context`` holds tables known-flaw rules may consult."""

    table: pa.Table
    extra_outputs: dict[str, pa.Table] = field(default_factory=dict)
    context: dict[str, pa.Table] = field(default_factory=dict)


@dataclass(frozen=True)
class Explained:
    """Boolean masks, one per row of the matching ``Differences`` table: True where the rule
    explains that row."""

    only_legacy: pa.Array
    only_new: pa.Array
    differing: pa.Array


# A known-flaw rule: (differences, the new side's context tables) -> which rows it explains.
FlawRule = Callable[[Differences, Mapping[str, pa.Table]], Explained]


class UnknownFlawError(KeyError, ValueError):
    """The spec names a known flaw no rule implements: a ledger typo must not pass silently."""

    def __str__(self) -> str:  # KeyError's own __str__ would quote the message
        return str(self.args[0])


def compare(
    legacy: pa.Table,
    new: View,
    spec: ParitySpec,
    flaws: Mapping[str, FlawRule] | None = None,
) -> ParityReport:
    """Compare a legacy task's output with the new side's rendering of it, for one day.

    * Rows match on ``spec.key`` after the key columns' normalisers. A key that repeats on
      either side is never paired by guesswork: all its rows, on both sides, are reported as
      only-legacy / only-new, ``duplicate_keys`` counts the repeating rows, and the verdict is
      a mismatch.
    * Compared columns are the legacy table's columns minus the key and ``spec.ignore``.
      Non-string columns are compared as their text. Null equals null; null is not ``""``
      unless ``empty_as_null`` makes it so.
    * ``number`` and ``timestamp`` end a column's normaliser list. A value they, or a
      tolerance, cannot parse makes its row differ in that column, even if both sides hold the
      same text, and is counted in ``unparsable``: put ``empty_as_null`` first to let blanks
      through as nulls. Timestamps need a ``Z`` or an offset; they compare as UTC instants to
      the microsecond (finer digits are dropped).
    * A tolerance passes ``|legacy - new| <= tolerance``, allowing for binary rounding only.
    * A compared column the new side lacks differs on every key-matched row; it and any column
      only the new side has (not ignored) are listed in ``schema`` and make it a mismatch.
    * Known-flaw rules run in ``spec.known_flaws`` order with ``(differences, new.context)``;
      a row several rules explain counts for the first. ``View.extra_outputs`` are not
      compared here.

    Raises ``ValueError`` for a spec that cannot apply to these tables (a key column missing,
    a misplaced normaliser, a column no side has), ``UnknownFlawError`` (a ``ValueError``) for
    a known-flaw name that ``flaws`` lacks, and ``ValueError``/``TypeError`` for a flaw rule
    whose masks do not fit the differences.
    """
    new_table = new.table
    rules = _check_spec(legacy, new_table, spec, flaws or {})
    keys = list(spec.key)
    compared = [c for c in legacy.column_names if c not in keys and c not in spec.ignore]
    missing_in_new = [c for c in compared if c not in new_table.column_names]
    extra_in_new = [
        c
        for c in new_table.column_names
        if c not in legacy.column_names and c not in keys and c not in spec.ignore
    ]
    unparsable: dict[str, int] = {}

    match = _match(legacy, new_table, spec, unparsable)
    masks: dict[str, np.ndarray] = {}
    for column in compared:
        if column in missing_in_new:
            masks[column] = np.ones(len(match.pair_l), dtype=bool)
            continue
        differs, bad = _column_differs(
            legacy.column(column).take(match.pair_l),
            new_table.column(column).take(match.pair_n),
            spec.normalise.get(column, []),
            spec.tolerances.get(column),
        )
        masks[column] = differs
        if bad:
            unparsable[column] = unparsable.get(column, 0) + bad

    any_differs = np.zeros(len(match.pair_l), dtype=bool)
    for differs in masks.values():
        any_differs |= differs
    column_masks = {c: m[any_differs] for c, m in masks.items() if m.any()}
    differences = Differences(
        only_legacy=legacy.take(match.only_l),
        only_new=new_table.take(match.only_n),
        differing=_differing_table(
            legacy,
            new_table,
            keys,
            compared,
            match.pair_l[any_differs],
            match.pair_n[any_differs],
            column_masks,
        ),
    )
    explained_by = _explain(differences, MappingProxyType(dict(new.context)), rules)

    counts = {c: getattr(differences, c).num_rows for c in CATEGORIES}
    unexplained = {c: int((explained_by[c] < 0).sum()) for c in CATEGORIES}
    explained = {
        name: sum(int((explained_by[c] == index).sum()) for c in CATEGORIES)
        for index, (name, _) in enumerate(rules)
    }
    duplicate_keys = {"legacy": int(match.dup_l.sum()), "new": int(match.dup_n.sum())}
    if any(duplicate_keys.values()) or missing_in_new or extra_in_new or any(unexplained.values()):
        verdict = "mismatch"
    elif any(counts.values()):
        verdict = "explained"
    else:
        verdict = "clean"

    return ParityReport(
        verdict=verdict,
        legacy_rows=legacy.num_rows,
        new_rows=new_table.num_rows,
        matched=int((~any_differs).sum()),
        only_legacy=counts["only_legacy"],
        only_new=counts["only_new"],
        differing=counts["differing"],
        explained=explained,
        unexplained=unexplained,
        column_differences={c: int(m.sum()) for c, m in column_masks.items()},
        samples=sample_rows(
            differences,
            explained_by,
            [name for name, _ in rules],
            {"only_legacy": match.only_l_dup, "only_new": match.only_n_dup},
            keys,
            spec.sample_rows,
        ),
        duplicate_keys=duplicate_keys,
        schema={"missing_in_new": missing_in_new, "extra_in_new": extra_in_new},
        unparsable=unparsable,
    )


_TEXT_STEPS = ("strip", "squash", "casefold", "empty_as_null")
_PARSE_STEPS = ("number", "timestamp")


def _check_spec(
    legacy: pa.Table, new: pa.Table, spec: ParitySpec, flaws: Mapping[str, FlawRule]
) -> list[tuple[str, FlawRule]]:
    for side, table in (("legacy", legacy), ("new", new)):
        for column in spec.key:
            if column not in table.column_names:
                raise ValueError(f"key column {column!r} is missing from the {side} table")
    present = set(legacy.column_names) | set(new.column_names)
    for what, columns in (("normalise", spec.normalise), ("tolerances", spec.tolerances)):
        for column in columns:
            if column not in present:
                raise ValueError(f"parity spec {what}.{column}: neither side has that column")
    for column, steps in spec.normalise.items():
        for position, step in enumerate(steps):
            if step not in _TEXT_STEPS + _PARSE_STEPS:
                raise ValueError(f"parity spec normalise.{column}: unknown normaliser {step!r}")
            if step in _PARSE_STEPS and position != len(steps) - 1:
                raise ValueError(f"parity spec normalise.{column}: {step!r} must come last")
    for column in spec.tolerances:
        if column in spec.key:
            raise ValueError(f"parity spec tolerances.{column}: a key column takes no tolerance")
        if "timestamp" in spec.normalise.get(column, []):
            raise ValueError(f"parity spec tolerances.{column}: tolerances are for numbers")
    rules = []
    for name in spec.known_flaws:
        if name not in flaws:
            known = ", ".join(sorted(flaws)) or "none"
            raise UnknownFlawError(
                f"parity spec names unknown known flaw {name!r} (known: {known})"
            )
        rules.append((name, flaws[name]))
    return rules


@dataclass(frozen=True)
class _Match:
    pair_l: np.ndarray  # legacy row of each one-to-one key match, ascending
    pair_n: np.ndarray  # its new row
    only_l: np.ndarray  # legacy rows without a one-to-one partner, ascending
    only_n: np.ndarray
    only_l_dup: np.ndarray  # per only_l row: its key repeats on some side
    only_n_dup: np.ndarray
    dup_l: np.ndarray  # per legacy row: its key repeats on the legacy side
    dup_n: np.ndarray


def _match(legacy: pa.Table, new: pa.Table, spec: ParitySpec, unparsable: dict[str, int]) -> _Match:
    """Pair rows one-to-one on the normalised key.

    Each key column is dictionary-encoded over both sides at once (nulls get a code of their
    own, so a null key part matches a null), the codes fold into one dense group id per row,
    and counting group ids per side finds pairs, strays and repeats without a join.
    """
    n_l = legacy.num_rows
    group = np.zeros(n_l + new.num_rows, dtype=np.int64)
    bad = np.zeros(n_l + new.num_rows, dtype=bool)
    for position, column in enumerate(spec.key):
        steps = spec.normalise.get(column, [])
        values_l, bad_l = normalise_column(_as_text(legacy.column(column)), steps)
        values_n, bad_n = normalise_column(_as_text(new.column(column)), steps)
        both = pa.chunked_array([*chunks(values_l), *chunks(values_n)], values_l.type)
        encoded = pc.dictionary_encode(both.combine_chunks(), null_encoding="encode")
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        if position:
            codes = np.unique(group * len(encoded.dictionary) + codes, return_inverse=True)[1]
        group = codes.reshape(-1)
        if bad_l is not None:
            bad |= np.concatenate([bad_l, bad_n])
            if bad_l.any() or bad_n.any():
                unparsable[column] = int(bad_l.sum() + bad_n.sum())
    if bad.any():  # an unparsable key is a key of its own: it matches nothing
        group = np.where(bad, group.max() + 1 + np.arange(len(group)), group)
    groups = int(group.max()) + 1 if len(group) else 0
    count_l = np.bincount(group[:n_l], minlength=groups)[group]
    count_n = np.bincount(group[n_l:], minlength=groups)[group]
    row_n = np.zeros(groups, dtype=np.int64)
    row_n[group[n_l:]] = np.arange(new.num_rows)
    paired = (count_l == 1) & (count_n == 1)
    repeated = (count_l > 1) | (count_n > 1)
    pair_l = np.flatnonzero(paired[:n_l])
    only_l, only_n = np.flatnonzero(~paired[:n_l]), np.flatnonzero(~paired[n_l:])
    return _Match(
        pair_l=pair_l,
        pair_n=row_n[group[pair_l]],
        only_l=only_l,
        only_n=only_n,
        only_l_dup=repeated[:n_l][only_l],
        only_n_dup=repeated[n_l:][only_n],
        dup_l=count_l[:n_l] > 1,
        dup_n=count_n[n_l:] > 1,
    )


def _as_text(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if pa.types.is_large_string(values.type):
        return values
    return pc.cast(values, pa.large_string())


def _same(a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray) -> np.ndarray:
    equal = pc.fill_null(pc.equal(a, b), False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    return bools(pc.or_(equal, both_null))


def _column_differs(
    old: pa.ChunkedArray, new: pa.ChunkedArray, steps: list[str], tolerance: float | None
) -> tuple[np.ndarray, int]:
    """Per matched pair: does this column differ; and how many pairs held an unparsable value."""
    if not steps and tolerance is None and old.type == new.type:
        return ~_same(old, new), 0
    old_values, old_bad = normalise_column(_as_text(old), steps)
    new_values, new_bad = normalise_column(_as_text(new), steps)
    if tolerance is not None:
        if not pa.types.is_floating(old_values.type):
            old_values, old_bad = _or_bad(parse_number(old_values), old_bad)
            new_values, new_bad = _or_bad(parse_number(new_values), new_bad)
        same = _within(old_values, new_values, tolerance)
    else:
        same = _same(old_values, new_values)
    bad = np.zeros(len(same), dtype=bool)
    for side_bad in (old_bad, new_bad):
        if side_bad is not None:
            bad |= side_bad
    return ~same | bad, int(bad.sum())


def _or_bad(
    parsed: tuple[pa.Array, np.ndarray], bad: np.ndarray | None
) -> tuple[pa.Array, np.ndarray]:
    values, parse_bad = parsed
    return values, parse_bad if bad is None else parse_bad | bad


# decimal text parses to the nearest double: allow a few ulps so "exactly at tolerance" passes
_ROUNDING = 8 * np.finfo(np.float64).eps


def _within(a: pa.Array, b: pa.Array, tolerance: float) -> np.ndarray:
    x = np.asarray(a.to_numpy(zero_copy_only=False), dtype=np.float64)
    y = np.asarray(b.to_numpy(zero_copy_only=False), dtype=np.float64)
    null_x, null_y = np.isnan(x), np.isnan(y)  # parsed numbers are finite, so NaN is null
    with np.errstate(invalid="ignore"):
        slack = _ROUNDING * np.maximum(np.abs(x), np.abs(y))
        close = np.abs(x - y) <= tolerance + slack
    return (null_x & null_y) | (~null_x & ~null_y & close)


def _differing_table(
    legacy: pa.Table,
    new: pa.Table,
    keys: list[str],
    compared: list[str],
    rows_l: np.ndarray,
    rows_n: np.ndarray,
    column_masks: dict[str, np.ndarray],
) -> pa.Table:
    columns = {k: legacy.column(k).take(rows_l) for k in keys}
    for column in compared:
        columns[f"{column}_legacy"] = legacy.column(column).take(rows_l)
        if column in new.column_names:
            columns[f"{column}_new"] = new.column(column).take(rows_n)
        else:
            columns[f"{column}_new"] = pa.nulls(len(rows_n), legacy.schema.field(column).type)
    names = [
        pc.if_else(pa.array(mask), pa.scalar(column), pa.scalar(None, pa.string()))
        for column, mask in column_masks.items()
    ]
    if names:
        columns["differing_columns"] = pc.binary_join_element_wise(
            *names, ",", null_handling="skip"
        )
    else:
        columns["differing_columns"] = pa.array([""] * len(rows_l), pa.string())
    return pa.table(columns)


def _explain(
    differences: Differences, context: Mapping[str, pa.Table], rules: list[tuple[str, FlawRule]]
) -> dict[str, np.ndarray]:
    """Per category and row: the index of the first rule that explains it, or -1."""
    sizes = {c: getattr(differences, c).num_rows for c in CATEGORIES}
    explained_by = {c: np.full(n, -1, dtype=np.int64) for c, n in sizes.items()}
    if not any(sizes.values()):
        return explained_by
    for index, (name, rule) in enumerate(rules):
        result = rule(differences, context)
        if not isinstance(result, Explained):
            raise TypeError(f"known flaw {name!r} returned {type(result).__name__}, not Explained")
        for category in CATEGORIES:
            mask = _mask(getattr(result, category), sizes[category], name, category)
            explained_by[category][mask & (explained_by[category] < 0)] = index
    return explained_by


def _mask(values: Any, rows: int, flaw: str, category: str) -> np.ndarray:
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array(values)
    if len(values) != rows:
        raise ValueError(
            f"known flaw {flaw!r}: its {category} mask has {len(values)} values for {rows} rows"
        )
    if len(values) and not pa.types.is_boolean(values.type):
        raise TypeError(f"known flaw {flaw!r}: its {category} mask is {values.type}, not bool")
    if not len(values):
        return np.zeros(0, dtype=bool)
    return bools(pc.fill_null(values, False))  # a null explains nothing
