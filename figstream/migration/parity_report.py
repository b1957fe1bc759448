"""What a parity comparison found (``ParityReport``), with samples, as data and as markdown."""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa


def sample_rows(
    differences: Differences,
    explained_by: dict[str, np.ndarray],
    flaw_names: list[str],
    repeated: dict[str, np.ndarray],
    keys: list[str],
    limit: int,
) -> dict[str, list[dict]]:
    samples = {}
    for category in CATEGORIES:
        by = explained_by[category]
        rows = np.concatenate([np.flatnonzero(by < 0), np.flatnonzero(by >= 0)])[:limit]
        picked = []
        for row, values in zip(
            rows, getattr(differences, category).take(rows).to_pylist(), strict=True
        ):
            if category == "differing":
                differing = values["differing_columns"].split(",")
                sample = {k: values[k] for k in keys}
                sample["differing_columns"] = values["differing_columns"]
                for column in differing:
                    sample[f"{column}_legacy"] = values[f"{column}_legacy"]
                    sample[f"{column}_new"] = values[f"{column}_new"]
            else:
                sample = dict(values)
                if repeated[category][row]:
                    sample["duplicate_key"] = True
            if by[row] >= 0:
                sample["explained_by"] = flaw_names[by[row]]
            picked.append({str(k): _jsonable(v) for k, v in sample.items()})
        samples[category] = picked
    return samples


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


_CELL_LIMIT = 120


def _cell(value: Any) -> str:
    if value is None:
        return "*null*"
    if value == "":
        return '""'
    text = str(value)
    if len(text) > _CELL_LIMIT:
        text = text[:_CELL_LIMIT] + "…"
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


_BLANK = object()  # an empty cell, unlike None (a null value) and "" (an empty string)


def _table(header: list[str], rows: list[list[Any]], numeric: int = 0) -> list[str]:
    """A markdown table; the last ``numeric`` columns are right-aligned counts."""
    rule = ["---"] * (len(header) - numeric) + ["---:"] * numeric
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    for row in rows:
        lines.append("| " + " | ".join("" if v is _BLANK else _cell(v) for v in row) + " |")
    return lines


_TITLES = {"only_legacy": "only in legacy", "only_new": "only in new", "differing": "differing"}


def _markdown(report: ParityReport) -> str:
    lines = [f"**Parity: {report.verdict}**", ""]
    lines += _table(
        ["rows", "total", "explained", "unexplained"],
        [
            ["legacy", report.legacy_rows, _BLANK, _BLANK],
            ["new", report.new_rows, _BLANK, _BLANK],
            ["matched", report.matched, _BLANK, _BLANK],
            *(
                [
                    _TITLES[c],
                    getattr(report, c),
                    getattr(report, c) - report.unexplained.get(c, 0),
                    report.unexplained.get(c, 0),
                ]
                for c in CATEGORIES
            ),
            ["repeated key in legacy", report.duplicate_keys.get("legacy", 0), _BLANK, _BLANK],
            ["repeated key in new", report.duplicate_keys.get("new", 0), _BLANK, _BLANK],
        ],
        numeric=3,
    )
    if report.schema.get("missing_in_new") or report.schema.get("extra_in_new"):
        lines += ["", "Schema differences:", ""]
        lines += _table(
            ["column", "difference"],
            [[c, "missing in new"] for c in report.schema.get("missing_in_new", [])]
            + [[c, "only in new"] for c in report.schema.get("extra_in_new", [])],
        )
    for title, counts, header in (
        ("Rows that differ, by column:", report.column_differences, "column"),
        ("Explained by known flaws:", report.explained, "known flaw"),
        ("Values that could not be parsed:", report.unparsable, "column"),
    ):
        if counts:
            lines += ["", title, ""]
            lines += _table([header, "rows"], [[k, v] for k, v in counts.items()], numeric=1)
    for category in CATEGORIES:
        samples = report.samples.get(category, [])
        if not samples:
            continue
        lines += ["", f"Sample rows {_TITLES[category]}:", ""]
        if category == "differing":
            keys = list(itertools.takewhile(lambda k: k != "differing_columns", samples[0]))
            rows = [
                [
                    *(s.get(k) for k in keys),
                    column,
                    s.get(f"{column}_legacy"),
                    s.get(f"{column}_new"),
                    s.get("explained_by", _BLANK),
                ]
                for s in samples
                for column in s["differing_columns"].split(",")
            ]
            lines += _table([*keys, "column", "legacy", "new", "explained by"], rows)
        else:
            header = list(dict.fromkeys(k for s in samples for k in s))
            lines += _table(header, [[s.get(k, _BLANK) for k in header] for s in samples])
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Differences:
    """Rows only in legacy, rows only in new (each with the side's columns), and rows that
    differ (key columns, then ``<column>_legacy`` / ``<column>_new`` for every compared column,
    plus ``differing_columns``: the names that differ, comma-separated)."""

    only_legacy: pa.Table
    only_new: pa.Table
    differing: pa.Table


CATEGORIES = ("only_legacy", "only_new", "differing")
VERDICTS = ("clean", "explained", "mismatch")


@dataclass(frozen=True)
class ParityReport:
    """What one ``compare`` found: counts, per-column and per-flaw counts, and sample rows.

    Every legacy row counts once in ``matched``, ``differing`` or ``only_legacy``, and every new
    row once in ``matched``, ``differing`` or ``only_new``. ``schema`` lists compared columns the
    new side lacks (``missing_in_new``) and columns only the new side has (``extra_in_new``).
    ``unparsable`` counts, per column, rows where a ``number`` or ``timestamp`` normaliser or a
    tolerance met a value it could not parse.
    """

    verdict: str
    legacy_rows: int
    new_rows: int
    matched: int
    only_legacy: int
    only_new: int
    differing: int
    explained: dict[str, int]
    unexplained: dict[str, int]
    column_differences: dict[str, int]
    samples: dict[str, list[dict]]
    duplicate_keys: dict[str, int]
    schema: dict[str, list[str]] = field(
        default_factory=lambda: {"missing_in_new": [], "extra_in_new": []}
    )
    unparsable: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict in ("clean", "explained")

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> ParityReport:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"not a parity report: unknown field(s) {', '.join(unknown)}")
        if d.get("verdict") not in VERDICTS:
            raise ValueError(f"not a parity report: verdict {d.get('verdict')!r}")
        return cls(**copy.deepcopy(d))

    def to_markdown(self) -> str:
        return _markdown(self)
