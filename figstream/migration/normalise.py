"""Parity's per-column normalisers: text folding, and numbers and timestamps parsed from CSV.

A value a ``number`` or ``timestamp`` normaliser cannot parse is counted as unparsable, never
silently equal.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Python's str.isspace() set, so squash does what " ".join(s.split()) does
_SPACE = r"[\t\n\x{0b}\f\r\x{1c}-\x{1f}\x{85}\p{Z}]"


def normalise_column(
    values: pa.Array | pa.ChunkedArray, steps: list[str]
) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray | None]:
    """Apply the normalisers in order; also return which values failed to parse, if any step
    parses."""
    bad = None
    for step in steps:
        if step == "strip":
            values = pc.utf8_trim_whitespace(values)
        elif step == "squash":
            values = pc.utf8_trim(pc.replace_substring_regex(values, _SPACE + "+", " "), " ")
        elif step == "casefold":
            values = _casefold(values)
        elif step == "empty_as_null":
            values = pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)
        elif step == "number":
            values, bad = parse_number(values)
        elif step == "timestamp":
            values, bad = _parse_timestamp(values)
    return values, bad


def _casefold(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    lowered = pc.utf8_lower(values)
    non_ascii = pc.fill_null(pc.invert(pc.string_is_ascii(values)), False)
    if not pc.any(non_ascii).as_py():
        return lowered  # for ASCII, lower() is casefold()
    # Arrow has no casefold ("ß" -> "ss"): fold the distinct non-ASCII values in Python
    distinct = pc.unique(pc.filter(values, non_ascii))
    folded = pa.array([s.casefold() for s in distinct.to_pylist()], values.type)
    return pc.if_else(non_ascii, pc.take(folded, pc.index_in(values, value_set=distinct)), lowered)


_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"


def parse_number(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """As float(): surrounding whitespace allowed; NaN and infinities count as unparsable."""
    text = pc.utf8_trim_whitespace(values)
    ok = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False)
    parsed = pc.cast(pc.if_else(ok, text, pa.scalar(None, text.type)), pa.float64())
    finite = pc.fill_null(pc.is_finite(parsed), False)
    bad = bools(pc.and_(pc.is_valid(values), pc.invert(finite)))
    return _one(pc.if_else(finite, parsed, pa.scalar(None, pa.float64()))), bad


_TIMESTAMP = (
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<hm>\d{2}:\d{2})"
    r"(?::(?P<sec>\d{2})(?:[.,](?P<frac>\d+))?)?"
    r"(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)$"
)


def _parse_timestamp(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """ISO-8601 with ``Z`` or an offset -> microseconds since the epoch, UTC (int64)."""
    values = _one(values)
    shaped = pc.fill_null(pc.match_substring_regex(values, _TIMESTAMP), False)
    try:  # Arrow's own parser is fast and strict, but all or nothing
        parsed = pc.cast(pc.if_else(shaped, values, pa.scalar(None, values.type)), _UTC_US)
    except pa.ArrowInvalid:  # an impossible date, lower case, a comma, > 6 fraction digits
        return _parse_timestamp_parts(values)
    return pc.cast(parsed, pa.int64()), bools(pc.and_(pc.is_valid(values), pc.invert(shaped)))


_UTC_US = pa.timestamp("us", "UTC")


def _parse_timestamp_parts(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The same, value by value: parse the parts, then check each is real."""
    parts = pc.extract_regex(values, _TIMESTAMP)
    matched = np.flatnonzero(bools(pc.is_valid(parts)))
    parts = parts.take(matched)
    text = pa.large_string()

    def part(name: str) -> pa.Array:
        return pc.cast(pc.struct_field(parts, name), text)

    def number(piece: pa.Array) -> np.ndarray:
        piece = pc.if_else(pc.equal(piece, ""), pa.scalar("0", text), piece)
        return pc.cast(piece, pa.int64()).to_numpy(zero_copy_only=False)

    seconds = pc.if_else(pc.equal(part("sec"), ""), pa.scalar("00", text), part("sec"))
    joined = pc.binary_join_element_wise(
        part("date"),
        pa.scalar("T", text),
        part("hm"),
        pa.scalar(":", text),
        seconds,
        pa.scalar("", text),
    )
    local = pc.strptime(joined, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=True)
    # strptime rolls 2026-11-31 into December and 10:00:60 into 10:01: a real date and time
    # prints back as written (with %S, Arrow prints the microseconds too)
    printed = pc.cast(pc.strftime(local, format="%Y-%m-%dT%H:%M:%S"), text)
    as_written = pc.binary_join_element_wise(
        joined, pa.scalar(".000000", text), pa.scalar("", text)
    )
    local_ok = bools(pc.fill_null(pc.equal(printed, as_written), False))
    local_us = pc.fill_null(pc.cast(local, pa.int64()), 0).to_numpy(zero_copy_only=False)
    padded = pc.binary_join_element_wise(
        part("frac"), pa.scalar("000000", text), pa.scalar("", text)
    )
    micros = number(pc.utf8_slice_codeunits(padded, 0, 6))
    zone = pc.replace_substring(pc.utf8_upper(part("tz")), ":", "")
    zone = pc.if_else(pc.equal(zone, "Z"), pa.scalar("+00", text), zone)
    hours, minutes = (
        number(pc.utf8_slice_codeunits(zone, 1, 3)),
        number(pc.utf8_slice_codeunits(zone, 3, 5)),
    )
    sign = np.where(bools(pc.starts_with(zone, "-")), -1, 1)
    zone_ok = (hours < 24) & (minutes < 60)
    instants = local_us + micros - sign * (hours * 3600 + minutes * 60) * 1_000_000

    ok = np.zeros(len(values), dtype=bool)
    ok[matched] = local_ok & zone_ok
    out = np.zeros(len(values), dtype=np.int64)
    out[matched] = instants
    bad = bools(pc.is_valid(values)) & ~ok
    return pa.array(out, pa.int64(), mask=~ok), bad


def chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def bools(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


def _one(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
