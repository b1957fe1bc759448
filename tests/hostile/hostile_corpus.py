"""The labelled hostile corpus: one bad event per kind, each with the reason code it must get,
and the good events it is mixed with.

Every case is a single landed line built from a good posting by one corruption, so that the
one thing wrong with it is the thing its label names. ``EXTRA_DATA_FIELD`` is a good event on
purpose: fields ``data``'s schema does not know are allowed (a producer adds a field before
consumers read it: the zero-downtime schema change), while an extra *envelope* field is
refused (``unknown_field``): EventBridge's mapping of the envelope would drop it silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import orjson
import pytest

from figstream.events.envelope import format_time
from figstream.events.validation import MAX_EVENT_BYTES
from figstream.streaming import parse

ARRIVAL = datetime(2026, 11, 2, 10, 30, tzinfo=UTC)
HOUR = "2026-11-02-10:00"
FIRST_PARTITION = "2026-10-01-00:00"


def posting(n: int, **data: Any) -> dict:
    return {
        "id": f"g-{n}",
        "type": "job.posted",
        "source": "hireloop",
        "version": 1,
        "time": format_time(ARRIVAL - timedelta(minutes=1 + n % 29, microseconds=n)),
        "data": {
            "job_id": f"hireloop-{n:07d}",
            "title": "Data Engineer",
            "company": "Acme",
            "location": "Austin, TX",
            "employment_type": "full_time",
            "remote": n % 2 == 0,
            "salary_min": 90_000,
            "salary_max": 120_000,
            "currency": "USD",
            "url": f"https://hireloop.example/jobs/{n}",
            **data,
        },
    }


def posting_v2(n: int) -> dict:
    record = posting(n)
    data = record["data"]
    del data["salary_min"], data["salary_max"], data["currency"]
    data["location"] = {"city": "Berlin", "region": "BE", "country_code": "DE"}
    data["salary"] = {"min": 50_000, "max": 60_000, "currency": "EUR", "period": "year"}
    return {**record, "version": 2}


def expiry(n: int) -> dict:
    return {
        **posting(n),
        "type": "job.expired",
        "data": {"job_id": f"hireloop-{n:07d}", "reason": "filled"},
    }


def good_events(count: int) -> list[bytes]:
    """``count`` good lines: v1 and v2 postings, expiries, and one with extra data fields."""
    out = []
    for n in range(count):
        if n % 10 == 3:
            record = posting_v2(n)
        elif n % 10 == 7:
            record = expiry(n)
        else:
            record = posting(n)
        out.append(orjson.dumps(record))
    return out


EXTRA_DATA_FIELD = orjson.dumps(posting(9_000, benefits=["dental"], team={"size": 7}))

BASE = posting(10_000)
LINE = orjson.dumps(BASE)


class Case(NamedTuple):
    label: str
    line: bytes
    code: str


def _env(**changes: Any) -> bytes:
    record = {**BASE, **changes}
    return orjson.dumps({k: v for k, v in record.items() if v is not ...})


def _data(**changes: Any) -> bytes:
    data = {k: v for k, v in {**BASE["data"], **changes}.items() if v is not ...}
    return orjson.dumps({**BASE, "data": data})


def _raw(old: bytes, new: bytes, line: bytes = LINE) -> bytes:
    """Raw JSON surgery: what no JSON encoder would write."""
    assert old in line, old
    return line.replace(old, new, 1)


def _nested(depth: int) -> bytes:
    return b'{"n":' * depth + b"1" + b"}" * depth


CASES: list[Case] = [
    # bytes and JSON
    Case("truncated_json", LINE[: len(LINE) // 2], "malformed_json"),
    Case("truncated_to_one_brace", b"{", "malformed_json"),
    Case("trailing_garbage", LINE + b"}", "malformed_json"),
    Case("not_json_at_all", b"<html>502 Bad Gateway</html>", "malformed_json"),
    Case("json_array_not_object", b"[" + LINE + b"]", "not_an_object"),
    Case("json_null", b"null", "not_an_object"),
    Case("invalid_utf8_latin1", _raw(b"Acme", b"Soci\xe9t\xe9"), "bad_encoding"),
    Case("invalid_utf8_lone_continuation", _raw(b"Acme", b"Ac\x80me"), "bad_encoding"),
    Case("invalid_utf8_overlong_nul", _raw(b"Acme", b"Ac\xc0\x80me"), "bad_encoding"),
    Case("lone_surrogate_escape", _raw(b"Acme", b"\\ud800"), "bad_encoding"),
    Case("utf8_bom", b"\xef\xbb\xbf" + LINE, "bom"),
    Case("raw_nul_in_string", _raw(b"Acme", b"Ac\x00me"), "control_character"),
    Case("raw_nul_after_object", LINE + b"\x00", "control_character"),
    Case("raw_escape_char_in_string", _raw(b"Acme", b"\x1b[31mAcme"), "control_character"),
    Case("escaped_nul_in_title", _data(title="Data\u0000Engineer"), "control_character"),
    Case("escaped_terminal_escape", _data(company="\u001b[2J\u001b[HAcme"), "control_character"),
    Case("c1_control_in_location", _data(location="Austin\u0085TX"), "control_character"),
    Case("escaped_nul_in_url", _data(url="https://hireloop.example/\u0000"), "control_character"),
    # size
    Case("huge_title", _data(title="T" * 10_000), "invalid_value"),
    Case("huge_url", _data(url="https://x.example/" + "a" * 5_000), "invalid_value"),
    Case("over_256kb", _data(blob="x" * MAX_EVENT_BYTES), "too_large"),
    Case("over_256kb_of_whitespace", LINE + b" " * MAX_EVENT_BYTES, "too_large"),
    # types and fields
    Case("version_as_string", _env(version="1"), "wrong_type"),
    Case("version_as_bool", _env(version=True), "wrong_type"),
    Case("remote_as_string", _data(remote="yes"), "wrong_type"),
    Case("salary_as_text", _data(salary_min="90k"), "wrong_type"),
    Case("data_as_list", _env(data=[1, 2]), "wrong_type"),
    Case("missing_id", _env(id=...), "missing_field"),
    Case("missing_time", _env(time=...), "missing_field"),
    Case("missing_data_title", _data(title=...), "missing_field"),
    Case("empty_object", b"{}", "missing_field"),
    Case("extra_envelope_field", _env(priority="high"), "unknown_field"),
    Case("unknown_type", _env(type="job.deleted"), "unknown_type"),
    Case("unknown_version", _env(version=99), "unknown_version"),
    Case("negative_version", _env(version=-1), "unknown_version"),
    # times
    Case("time_far_future", _env(time="2999-01-01T00:00:00Z"), "time_out_of_range"),
    Case("time_far_past", _env(time="1970-01-01T00:00:00Z"), "time_out_of_range"),
    Case("time_year_zero", _env(time="0001-01-01T00:00:00Z"), "time_out_of_range"),
    Case("time_without_offset", _env(time="2026-11-02T10:00:00"), "time_without_offset"),
    Case("time_not_iso", _env(time="yesterday"), "bad_time"),
    Case("time_impossible_date", _env(time="2026-02-30T10:00:00Z"), "bad_time"),
    # numbers
    Case("int_over_int64", _data(salary_max=2**63), "number_out_of_range"),
    Case(
        "int_over_uint64",
        _raw(b'"salary_max":120000', b'"salary_max":' + str(10**30).encode()),
        "number_out_of_range",
    ),
    Case(
        "int_under_int64",
        _raw(b'"salary_min":90000', b'"salary_min":' + str(-(2**63) - 1).encode()),
        "number_out_of_range",
    ),
    Case("int_overflow_in_extra_field", _data(n=2**64 - 1), "number_out_of_range"),
    Case(
        "version_overflow",
        _raw(b'"version":1', b'"version":99999999999999999999'),
        "number_out_of_range",
    ),
    Case("nan", _raw(b'"salary_min":90000', b'"salary_min":' + b"NaN"), "number_out_of_range"),
    Case(
        "infinity",
        _raw(b'"salary_min":90000', b'"salary_min":' + b"Infinity"),
        "number_out_of_range",
    ),
    Case(
        "minus_infinity",
        _raw(b'"salary_min":90000', b'"salary_min":' + b"-Infinity"),
        "number_out_of_range",
    ),
    Case(
        "float_overflow",
        _raw(b'"salary_min":90000', b'"salary_min":' + b"1e999"),
        "number_out_of_range",
    ),
    # structure
    Case("deep_extra_field", _raw(b'"data":{', b'"data":{"x":' + _nested(40) + b","), "too_deep"),
    Case(
        "stack_bomb",
        _raw(b'"data":{', b'"data":{"x":' + b"[" * 5000 + b"]" * 5000 + b","),
        "too_deep",
    ),
    Case("duplicate_envelope_key", _raw(b'"id":', b'"id":"g-other","id":'), "duplicate_key"),
    Case("duplicate_type_key", _raw(b'"type":', b'"type":"job.expired","type":'), "duplicate_key"),
    Case(
        "duplicate_data_key",
        _raw(b'"salary_min":', b'"salary_min":1,"salary_min":'),
        "duplicate_key",
    ),
    Case("duplicate_key_escaped", _raw(b'"id":', b'"\\u0069d":"g-other","id":'), "duplicate_key"),
    # the envelope's id and source
    Case("id_path_traversal", _env(id="../../../etc/passwd"), "bad_id"),
    Case("id_with_slash", _env(id="2026-11-02-10:00/g-1"), "bad_id"),
    Case("id_with_escaped_slash", _raw(b'"g-10000"', b'"a\\/b"'), "bad_id"),
    Case("id_with_backslash", _env(id="a\\..\\b"), "bad_id"),
    Case("id_with_nul", _env(id="g-1\u0000"), "bad_id"),
    Case("id_with_newline", _env(id="g-1\nX-Injected: 1"), "bad_id"),
    Case("id_with_space", _env(id="g 1"), "bad_id"),
    Case("id_dot_dot", _env(id=".."), "bad_id"),
    Case("id_leading_dash", _env(id="-rf"), "bad_id"),
    Case("id_non_ascii", _env(id="g\u2215 1"), "bad_id"),
    Case("id_too_long", _env(id="g" * 129), "bad_id"),
    Case("id_empty", _env(id=""), "bad_id"),
    Case("source_path_traversal", _env(source="../hireloop"), "bad_source"),
    Case("source_with_slash", _env(source="hire/loop"), "bad_source"),
    Case("source_with_bell", _env(source="hire\u0007loop"), "bad_source"),
    Case("source_reserved_by_aws", _env(source="aws.events"), "bad_source"),
    Case("source_too_long", _env(source="h" * 65), "bad_source"),
    Case("source_empty", _env(source=""), "bad_source"),
    # in data
    Case("job_id_path_traversal", _data(job_id="../../x"), "invalid_value"),
    Case("job_id_with_nul", _data(job_id="hireloop-1\u0000"), "invalid_value"),
    Case("url_javascript", _data(url="javascript:alert(1)"), "invalid_value"),
    Case("url_with_newline", _data(url="https://x.example/\nSet-Cookie:a"), "invalid_value"),
    Case("salary_absurd", _data(salary_min=10**12), "invalid_value"),
]


def mixed_batches(good: list[bytes], batches: int) -> list[list[tuple[bytes, str | None]]]:
    """The corpus and the good lines dealt round-robin into ``batches`` batches, each line
    with its expected code (None for good ones)."""
    lines: list[tuple[bytes, str | None]] = [(line, None) for line in good]
    lines.append((EXTRA_DATA_FIELD, None))
    every = max(1, len(lines) // len(CASES))
    for i, case in enumerate(CASES):
        lines.insert(i * (every + 1), (case.line, case.code))
    return [lines[b::batches] for b in range(batches)]


STAGES = ("msgspec", "orjson", "validate")


@contextmanager
def first_stage(stage: str) -> Iterator[None]:
    """Parse with ``stage`` first, taking every line it can (as test_parse.py does)."""
    with pytest.MonkeyPatch.context() as mp:
        if stage in ("orjson", "validate"):
            mp.setattr(parse, "_parse_wire", lambda lines, where: np.zeros(len(lines), bool))
        mp.setattr(parse, "VECTOR_MIN_LINES", 1 if stage == "orjson" else 1 << 62)
        yield
