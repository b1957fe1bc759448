"""Parsing landed batches (``streaming.parse``): exactly what ``validate`` accepts, vectorised.

Bad inputs tried against ``parse_batch`` (each line must be valid iff ``validate`` says so,
with the same code and detail otherwise):

* raw bytes: truncated lines, invalid UTF-8 (latin-1 bytes, lone continuation bytes), a BOM,
  CRLF endings, whitespace-only and empty lines, ``NaN``, lone surrogate escapes, duplicate
  keys, non-object JSON (arrays, strings, numbers, null), deep nesting;
* envelope: each field missing, null or of another JSON type (bool, int, float, huge int,
  string, list, object), booleans and floats as versions (``true``, ``1.0``), unknown types
  and versions, ids of 0/1/128/129 characters, empty sources, extra fields;
* times: offsets, naive times, no seconds, space separator, 0-9 fraction digits, impossible
  dates (Feb 29 of a common year, Feb 30, month 13, hour 24, second 60), the 2000/2100
  edges, years 0000 and 9999, garbage of the right length, ints;
* data: each field missing, null or mistyped (``"90k"``, ``1`` for ``remote``, ``True`` for a
  salary, ints beyond 64 bits, integral floats), salaries at -1/0/5,000,000/5,000,001 and
  inverted ranges, text of 0/1/200/201 characters and non-ASCII text near the limits,
  unknown employment types and reasons, job ids with forbidden characters or 65 characters,
  currencies in lower case or of 2/4 letters, URLs with other schemes, Unicode spaces,
  non-ASCII characters or 501 characters, boards with upper case, a leading dash, 1 or 65
  characters, a board merging into itself, unknown extra fields;
* hostile lines (``figstream.events.validation``'s specific codes): duplicate keys where the
  quote count alone would balance (an optional field absent and another repeated, a key's
  spelling inside a value, a key spelt with a space or an escape), ints beyond int64 in
  typed and extra fields, NaN and -Infinity, nesting at and over the limit, raw and escaped
  C0, DEL and C1 controls (and the no-break space, which is none), lines at and over the
  event size, ids and sources with separators, escapes, a leading dash or the ``aws.`` prefix.

Parsing has stages (msgspec typed structs; orjson dicts and column checks; ``validate``), and
the equivalence is checked with each stage forced to take every line it can, so that a stage
that only sees the leftovers of another in real data is still tested on everything. The lines
where msgspec and orjson part ways (duplicate keys and tags, floats and bools as ints, null
versus missing fields, unknown fields holding what only orjson refuses) are listed explicitly.

The state and dedupe properties are checked against small row-by-row reference models, and
for arrival-order insensitivity and idempotence with hypothesis permutations and splits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transform_cases import FAST, T0, edge_times, texts, time_strings

from figstream.events.envelope import Envelope, format_time
from figstream.events.upcasters import UPCASTERS
from figstream.events.validation import validate
from figstream.ingest.dataset import generate
from figstream.ingest.generate import BAD_KINDS
from figstream.streaming import parse
from figstream.streaming.parse import parse_batch, parse_batches
from figstream.streaming.tables import (
    DATA_COLUMNS,
    EVENTS_SCHEMA,
    REJECTED_SCHEMA,
)

# --- records for the equivalence test -----------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
job_ids = st.sampled_from(
    ["j-1", "a" * 64, "a" * 65, "", "job id", "job/1", "jöb", "J.o_b:1-2", "job\n", "-"]
) | st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True)
boards = st.sampled_from(
    ["hireloop", "jobnest", "a", "ab", "a" * 64, "a" * 65, "-ab", "Ab", "a_b", "a-b", "0x"]
)
urls = st.sampled_from(
    [
        "https://hireloop.example/jobs/1",
        "http://x",
        "https://",
        "http://",
        "ftp://x.example/",
        "https://a.example/\u00a0x",
        "https://a.example/\u2003",
        "https://a.example/é",
        "https://a.example/ x",
        "https://a.example/" + "x" * 480,
        "https://a.example/" + "x" * 483,
        "HTTPS://a.example/",
        "https://a.example/\x7f",
    ]
)
salaries = st.sampled_from([None, 0, 1, 90_000, 5_000_000, 5_000_001, -1, 2**63, 2**64 + 1]) | (
    st.integers(0, 5_000_000)
)
times = st.sampled_from(
    [
        "2026-11-20T10:00:00Z",
        "2026-11-20T10:00:00.5Z",
        "2026-11-20T10:00:00.123456Z",
        "2026-11-20T10:00:00.1234567Z",
        "2026-11-20T10:00:00.Z",
        "2026-11-20T10:00:00+00:00",
        "2026-11-20T10:00:00+05:30",
        "2026-11-20T10:00:00",
        "2026-11-20T10:00Z",
        "2026-11-20 10:00:00Z",
        "2026-11-20t10:00:00z",
        "2026-02-29T10:00:00Z",
        "2024-02-29T10:00:00Z",
        "2026-02-30T10:00:00Z",
        "2026-13-01T10:00:00Z",
        "2026-11-20T24:00:00Z",
        "2026-11-20T10:00:60Z",
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T00:00:00Z",
        "2099-12-31T23:59:59.999999Z",
        "2100-01-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2026-11-2OT10:00:00Z",
        "20261120T100000Z",
        "yesterday",
        "abcdefghijklmnopqrsZ",
        "2026-11-20T10:00:00.000000Z",
    ]
)
random_times = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2110, 1, 1), timezones=st.just(UTC)
).map(format_time)


@st.composite
def good_records(draw) -> dict:
    event_type = draw(st.sampled_from(["job.posted", "job.updated", "job.expired", "board.merged"]))
    if event_type in ("job.posted", "job.updated"):
        low = draw(st.none() | st.integers(0, 200_000))
        data = {
            "job_id": draw(st.from_regex(r"[a-z]{2,8}-[0-9]{1,7}", fullmatch=True)),
            "title": draw(st.from_regex(r"[A-Za-z][A-Za-z ,.&-]{0,30}", fullmatch=True)),
            "company": draw(st.sampled_from(["Acme Inc", "Lee, Lynch and Sons", "Café Ltd"])),
            "location": draw(st.sampled_from(["Austin, TX", "West Mark, CT"])),
            "employment_type": draw(st.sampled_from(["full_time", "contract", "internship"])),
            "remote": draw(st.booleans()),
            "salary_min": low,
            "salary_max": None if low is None else low + draw(st.integers(0, 50_000)),
            "currency": "USD",
            "url": "https://hireloop.example/jobs/"
            + draw(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True)),
        }
    elif event_type == "job.expired":
        data = {
            "job_id": draw(st.from_regex(r"[a-z]{2,8}-[0-9]{1,7}", fullmatch=True)),
            "reason": draw(st.sampled_from(["filled", "expired", "withdrawn"])),
        }
    else:
        data = {"absorbed_board": "jobnest", "surviving_board": "hireloop"}
    return {
        "id": draw(st.uuids()).hex,
        "type": event_type,
        "source": draw(st.sampled_from(["hireloop", "jobnest", "workwave"])),
        "version": 1,
        "time": draw(random_times | times),
        "data": data,
    }


FIELD_VALUES = {
    "title": texts,
    "company": texts,
    "location": texts,
    "job_id": job_ids,
    "url": urls,
    "salary_min": salaries,
    "salary_max": salaries,
    "remote": st.sampled_from([1, 0, "true", None]),
    "employment_type": st.sampled_from(["gig", "FULL_TIME", "full_time ", None]),
    "currency": st.sampled_from(["usd", "US", "EURO", "EUR", "€UR", None]),
    "reason": st.sampled_from(["lapsed", "Filled", "", None]),
    "absorbed_board": boards,
    "surviving_board": boards,
    "id": st.sampled_from(["", "x", "x" * 128, "x" * 129, "é" * 128, "é" * 129])
    | st.sampled_from(["../x", "a/b", "a\\b", "-x", "x\x00", "x\x7f", "x y", "A:b.c_9", ".x"]),
    "type": st.sampled_from(["job.deleted", "Job.Posted", ""]),
    "source": st.sampled_from(
        ["", " ", "hireloop", "aws.s3", "../x", "a/b", "H.l_1", "-x", "x" * 65, "x:y", "h\x07"]
    ),
    "version": st.sampled_from([True, False, 1.0, "1", 2, 99, 0, -1, 2**64]),
    "time": times | random_times | st.integers(),
}


@st.composite
def mutated_records(draw) -> dict:
    record = draw(good_records())
    for _ in range(draw(st.integers(0, 3))):
        in_data = draw(st.booleans()) and isinstance(record.get("data"), dict)
        target = record["data"] if in_data else record
        keys = sorted(FIELD_VALUES) if not in_data else sorted(set(FIELD_VALUES) - set(record))
        key = draw(st.sampled_from([*keys, "extra_field"]))
        action = draw(st.sampled_from(["set", "set", "json", "delete"]))
        if action == "delete":
            target.pop(key, None)
        elif action == "json" or key not in FIELD_VALUES:
            target[key] = draw(json_values)
        else:
            target[key] = draw(FIELD_VALUES[key])
    if draw(st.integers(0, 9)) == 0:
        record["data"] = draw(json_values)
    return record


def encode(record: dict, style: int) -> bytes:
    # The stdlib writes ints beyond 64 bits and NaN; orjson refuses both.
    text = json.dumps(record, ensure_ascii=bool(style & 1), separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def raw_lines(draw) -> bytes:
    line = encode(draw(mutated_records()), draw(st.integers(0, 3)))
    corruption = draw(st.integers(0, 12))
    if corruption == 0:
        line = line[: draw(st.integers(0, len(line)))]
    elif corruption == 1:
        at = draw(st.integers(0, len(line)))
        line = (
            line[:at]
            + draw(st.sampled_from([b"\xe9", b"\x80", b"\xff\xfe", b"\xed\xa0\x80"]))
            + line[at:]
        )
    elif corruption == 2:
        line = b"\xef\xbb\xbf" + line
    elif corruption == 3:
        line = line + b"\r"
    elif corruption == 4:
        line = draw(
            st.sampled_from(
                [
                    b"",
                    b"   ",
                    b"\t",
                    b"null",
                    b"[]",
                    b'"x"',
                    b"42",
                    b'{"id":NaN}',
                    b'{"id":"\\ud800"}',
                    b'{"a":' * 300 + b"1" + b"}" * 300,
                    b"\x0c",
                ]
            )
        )
    elif corruption == 5:
        line = line.replace(b'"id":', b'"id":"dup","id":', 1)
    return line


def _envelope_row(envelope: Envelope) -> dict:
    """The flattened row of an envelope: its data upcast to the latest version and flattened
    (defaults filled), nulls elsewhere."""
    version, flat = UPCASTERS.flat_data(envelope)
    row = {
        "event_id": envelope.id,
        "event_type": envelope.type,
        "source": envelope.source,
        "version": version,
        "event_time": envelope.time,
    }
    for field in DATA_COLUMNS:
        row[field.name] = flat.get(field.name)
    return row


def check_equivalence(batches: list[tuple[str, bytes]]) -> None:
    parsed = parse_batches(batches)
    assert parsed.valid.schema == EVENTS_SCHEMA
    assert parsed.rejected.schema == REJECTED_SCHEMA
    valid = {(r["batch_id"], r["line_no"]): r for r in parsed.valid.to_pylist()}
    rejected = {(r["batch_id"], r["line_no"]): r for r in parsed.rejected.to_pylist()}
    records = 0
    for batch_id, data in batches:
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        for line_no, line in enumerate(lines, start=1):
            key = (batch_id, line_no)
            if not line.strip(b" \t\r"):
                assert key not in valid and key not in rejected
                continue
            records += 1
            result = validate(line)
            if isinstance(result, Envelope):
                assert key in valid, (line, result)
                row = {k: v for k, v in valid[key].items() if k not in ("batch_id", "line_no")}
                assert row == _envelope_row(result), line
            else:
                assert key in rejected, (line, result)
                got = rejected[key]
                assert (got["code"], got["detail"]) == (result.code, result.detail), line
                assert got["payload"] == line
    assert parsed.records == records == len(valid) + len(rejected)


STAGES = ["msgspec", "orjson", "validate"]


@contextmanager
def first_stage(stage: str) -> Iterator[None]:
    """Parse with ``stage`` as the first one, taking every line it can (the default setup
    sends the few lines msgspec leaves straight to validate, skipping the column checks)."""
    with pytest.MonkeyPatch.context() as mp:
        if stage in ("orjson", "validate"):
            mp.setattr(parse, "_parse_wire", lambda lines, where: np.zeros(len(lines), bool))
        mp.setattr(parse, "VECTOR_MIN_LINES", 1 if stage == "orjson" else 1 << 62)
        yield


@FAST
@given(st.lists(raw_lines() | good_records().map(orjson.dumps), max_size=40))
@pytest.mark.parametrize("stage", STAGES)
def test_parse_batch_accepts_exactly_what_validate_accepts(stage, lines):
    with first_stage(stage):
        check_equivalence([("batch-1", b"\n".join(lines) + b"\n")])


@FAST
@given(st.lists(st.lists(raw_lines(), max_size=8), min_size=1, max_size=4))
@pytest.mark.parametrize("stage", ["msgspec", "orjson"])
def test_parse_batches_equals_each_batch_alone(stage, batches):
    named = [(f"b{i}", b"\n".join(lines)) for i, lines in enumerate(batches)]
    with first_stage(stage):
        check_equivalence(named)
        together = parse_batches(named)
        alone = [parse_batch(data, name) for name, data in named]
    order = [("batch_id", "ascending"), ("line_no", "ascending")]
    assert together.valid.sort_by(order).equals(
        pa.concat_tables([p.valid for p in alone]).sort_by(order)
    )
    assert together.rejected.equals(pa.concat_tables([p.rejected for p in alone]))


POSTING = {
    "id": "e-1",
    "type": "job.posted",
    "source": "hireloop",
    "version": 1,
    "time": "2026-11-20T10:00:00Z",
    "data": {
        "job_id": "hireloop-1",
        "title": "Data Engineer",
        "company": "Acme",
        "location": "Austin, TX",
        "employment_type": "full_time",
        "remote": True,
        "salary_min": 90_000,
        "salary_max": 120_000,
        "currency": "EUR",
        "url": "https://hireloop.example/jobs/1",
    },
}
GOOD = orjson.dumps(POSTING)
GOOD_DATA = orjson.dumps(POSTING["data"])


def _with_data(**changes) -> bytes:
    data = {k: v for k, v in {**POSTING["data"], **changes}.items() if v is not ...}
    return orjson.dumps({**POSTING, "data": data})


def _splice(line: bytes, after: bytes, text: bytes) -> bytes:
    """``line`` with ``text`` inserted after the first ``after`` (raw JSON surgery)."""
    at = line.index(after) + len(after)
    return line[:at] + text + line[at:]


# Lines where msgspec's typed decoding and orjson's differ, or could: each must come out as
# validate() says. ``None`` means valid.
WIRE_EDGES: list[tuple[bytes, str | None]] = [
    (GOOD, None),
    # Duplicate keys: msgspec and orjson keep the last without a word; validate refuses them.
    (GOOD.replace(b'"id":', b'"id":"x","id":', 1), "duplicate_key"),
    (_splice(GOOD, b'"data":{', b'"title":"First",'), "duplicate_key"),
    (_splice(GOOD, b'"data":{', b'"title":null,'), "duplicate_key"),
    (_splice(GOOD, b'"data":{', b'"salary_min":"x",'), "duplicate_key"),
    (GOOD.replace(b'"data":{', b'"data":{"x":1},"data":{', 1), "duplicate_key"),
    (GOOD.replace(b"}}", b'},"type":"job.expired"}'), "duplicate_key"),
    (
        GOOD.replace(b'"type":"job.posted"', b'"type":"job.expired","type":"job.posted"'),
        "duplicate_key",
    ),
    (GOOD.replace(b'"remote":true', b'"remote":true,"remote":false'), "duplicate_key"),
    # An optional field absent and another repeated: the key count alone would balance.
    (
        _with_data(salary_min=...).replace(b'"remote":true', b'"remote":true,"remote":true'),
        "duplicate_key",
    ),
    (_with_data(currency=...).replace(b'"title":', b'"title":"x","title":'), "duplicate_key"),
    (_with_data(salary_min=..., title='x"salary_min":'), None),  # a key's spelling in a value
    (
        _with_data(salary_min=..., title='x"salary_min":').replace(
            b'"remote":true', b'"remote":true,"remote":true'
        ),
        "duplicate_key",
    ),
    (GOOD.replace(b'"salary_min":', b'"salary_min" :'), None),  # a key spelt another way
    (
        GOOD.replace(b'"salary_min":', b'"salary_min" :').replace(
            b'"remote":true', b'"remote":true,"remote":true'
        ),
        "duplicate_key",
    ),
    (GOOD.replace(b'"id":', b'"\\u0069d":"x","id":', 1), "duplicate_key"),  # the same key escaped
    (_with_data(title='Data "Engineer"'), None),  # escaped quotes
    (GOOD.replace(b'"id"', b'"\\u0069d"', 1), None),  # an escaped key
    (GOOD.replace(b'"type"', b'"typ\\u0065"', 1), None),
    (_with_data(salary_min=90_000.0), "wrong_type"),  # floats are never ints
    (GOOD.replace(b"90000", b"9e4"), "wrong_type"),
    (GOOD.replace(b"90000", b"-0"), None),
    (_with_data(salary_min=True), "wrong_type"),
    (_with_data(remote=1), "wrong_type"),
    (_with_data(salary_max=2**63), "number_out_of_range"),  # beyond int64, within uint64
    (GOOD.replace(b"120000", str(2**64 + 1).encode()), "number_out_of_range"),  # orjson: a float
    (GOOD.replace(b"90000", str(-(2**63)).encode()), "invalid_value"),
    (GOOD.replace(b"90000", str(-(2**63) - 1).encode()), "number_out_of_range"),
    (GOOD.replace(b"120000", b"1e400"), "number_out_of_range"),
    (orjson.dumps({**POSTING, "version": 2**63 - 1}), "unknown_version"),
    (GOOD.replace(b'"version":1', b'"version":18446744073709551617'), "number_out_of_range"),
    (GOOD.replace(b'"version":1', b'"version":1.0'), "wrong_type"),
    (GOOD.replace(b'"version":1', b'"version":true'), "wrong_type"),
    (orjson.dumps({**POSTING, "version": 3}), "unknown_version"),
    (_with_data(currency=...), None),  # missing: the default
    (_with_data(currency=None), "wrong_type"),  # null is not missing
    (_with_data(salary_min=..., salary_max=...), None),
    (_with_data(salary_min=None), None),
    (_with_data(title=None), "wrong_type"),
    (_with_data(title=...), "missing_field"),
    (orjson.dumps({**POSTING, "data": None}), "wrong_type"),
    (orjson.dumps({**POSTING, "data": [GOOD_DATA.decode()]}), "wrong_type"),
    (orjson.dumps({**POSTING, "source": None}), "wrong_type"),
    (orjson.dumps({k: v for k, v in POSTING.items() if k != "type"}), "missing_field"),
    (orjson.dumps({**POSTING, "type": "job.deleted"}), "unknown_type"),
    # Unknown fields in data are fine (not in the envelope), but msgspec skips them unchecked.
    (_splice(GOOD, b"{", b'"note":"x",'), "unknown_field"),
    (_splice(GOOD, b'"data":{', b'"note":"x\\u0000",'), None),  # data it does not read
    (_splice(GOOD, b'"data":{', b'"note":' + str(2**63).encode() + b","), "number_out_of_range"),
    (_splice(GOOD, b'"data":{', b'"note":' + b"[" * 14 + b"]" * 14 + b","), None),  # 16 deep
    (_splice(GOOD, b'"data":{', b'"note":' + b"[" * 15 + b"]" * 15 + b","), "too_deep"),
    (_splice(GOOD, b'"data":{', b'"note":{"a":[1,{"b":null}]},'), None),
    (_splice(GOOD, b"{", b'"note":"caf\xe9",'), "bad_encoding"),
    (_splice(GOOD, b'"data":{', b'"note":"\xed\xa0\x80",'), "bad_encoding"),
    (_splice(GOOD, b"{", b'"note":"\\ud800",'), "bad_encoding"),
    (_splice(GOOD, b'"data":{', b'"note":1e400,'), "number_out_of_range"),
    (_splice(GOOD, b'"data":{', b'"note":NaN,'), "number_out_of_range"),
    (_splice(GOOD, b'"data":{', b'"note":-Infinity,'), "number_out_of_range"),
    (_splice(GOOD, b'"data":{', b'"note":' + b"[" * 500 + b"]" * 500 + b","), "too_deep"),
    (_splice(GOOD, b'"data":{', b'"note":' + b"[" * 2000 + b"]" * 2000 + b","), "too_deep"),
    (_splice(GOOD, b'"data":{', b'"note":"a\x01b",'), "control_character"),
    # Bad text in a typed field.
    (GOOD.replace(b"Acme", b"Acm\xe9"), "bad_encoding"),
    (GOOD.replace(b"Acme", b"\\udc00"), "bad_encoding"),
    (GOOD.replace(b"Acme", b"\\ud83d\\ude80"), None),  # a proper surrogate pair
    (GOOD.replace(b"Acme", b"\\u0000"), "control_character"),
    (GOOD.replace(b"Acme", b"\\u0085"), "control_character"),  # C1
    (GOOD.replace(b"Acme", b"\xc2\x9f"), "control_character"),  # C1, raw
    (GOOD.replace(b"Acme", b"\x7f"), "control_character"),  # DEL, raw
    (GOOD.replace(b"Acme", b"\xc2\xa0\xc2\xa9"), None),  # no-break space, (c): not controls
    (GOOD.replace(b"Austin", b"\\u001b[31m"), "control_character"),  # a terminal escape
    (GOOD.replace(b"Acme", b"A\tB"), "control_character"),
    (b"\xef\xbb\xbf" + GOOD, "bom"),
    (GOOD + b"\r", None),
    (b" \t" + GOOD + b" ", None),
    (GOOD + b" " * (parse.MAX_EVENT_BYTES - len(GOOD)), None),
    (GOOD + b" " * (parse.MAX_EVENT_BYTES - len(GOOD) + 1), "too_large"),
    (GOOD + b"\x0c", "control_character"),
    # The envelope's id and source: a safe alphabet, however spelt.
    (GOOD.replace(b'"e-1"', b'"a\\/b"'), "bad_id"),
    (GOOD.replace(b'"e-1"', b'"..\\u002fx"'), "bad_id"),
    (GOOD.replace(b'"e-1"', b'"e-1\\u0000"'), "bad_id"),
    (GOOD.replace(b'"e-1"', b'"-e"'), "bad_id"),
    (GOOD.replace(b'"e-1"', b'"E.1:x_2"'), None),
    (GOOD.replace(b'"hireloop",', b'"aws.events",'), "bad_source"),
    (GOOD.replace(b'"hireloop",', b'"Hire.loop_2",'), None),
    (GOOD.replace(b'"hireloop",', b'"hire:loop",'), "bad_source"),
    (GOOD + b"{}", "malformed_json"),
    (GOOD[:-1], "malformed_json"),
    (GOOD[:-1] + b",}", "malformed_json"),
    (b"[" + GOOD + b"]", "not_an_object"),
    (b"null", "not_an_object"),
]


@pytest.mark.parametrize("stage", STAGES)
def test_lines_where_msgspec_and_orjson_part_ways(stage):
    for i, (line, code) in enumerate(WIRE_EDGES):
        result = validate(line)
        assert getattr(result, "code", None) == code, (i, line, result)
    lines = [line for line, _ in WIRE_EDGES]
    with first_stage(stage):
        check_equivalence([("b", b"\n".join(lines))])


def test_msgspec_takes_the_clean_lines():
    """The fast stage must not quietly hand good lines to the slow ones (same rows, but
    several times the cost): every line of a clean generated batch decodes."""
    lines = [orjson.dumps(r) for r in (POSTING, *_one_of_each_type())]
    decoded = parse._decode_wire(lines)
    assert all(d is not None for d in decoded)
    split, where = parse.lines_of([("b", b"\n".join(lines))])
    assert split == lines
    assert parse._parse_wire(lines, where).all()


def _one_of_each_type() -> list[dict]:
    return [
        {**POSTING, "id": "e-2", "type": "job.updated", "time": "2026-11-20T10:00:00.123456Z"},
        {
            **POSTING,
            "id": "e-3",
            "type": "job.expired",
            "data": {"job_id": "j", "reason": "filled"},
        },
        {
            **POSTING,
            "id": "e-4",
            "type": "board.merged",
            "data": {"absorbed_board": "jobnest", "surviving_board": "hireloop"},
        },
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        datetime,
        st.integers(1999, 2100),
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
    ),
    st.integers(0, 999_999),
    st.integers(0, 6),
    st.integers(0, 9999),
)
def test_times_and_their_corruptions_match(when, micros, digits, noise):
    text = when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{micros:06d}"[: digits + 1] if digits else "")
    variants = [
        text + "Z",
        text.replace("-", str(noise % 10), 1) + "Z",
        text[: noise % len(text)] + str(noise % 7) + text[noise % len(text) + 1 :] + "Z",
    ]
    base = {
        "id": "e",
        "type": "job.expired",
        "source": "s",
        "version": 1,
        "data": {"job_id": "j-1", "reason": "filled"},
    }
    lines = [orjson.dumps({**base, "id": f"e{i}", "time": t}) for i, t in enumerate(variants)]
    check_equivalence([("b", b"\n".join(lines))])


# Time strings of the canonical shape with every field free (impossible months, days, hours,
# leap days of every kind of year, 0 to 7 fraction digits), and their corruptions.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")


@FAST
@given(st.lists(edge_times | time_strings(), min_size=1, max_size=20))
@pytest.mark.parametrize("stage", STAGES)
def test_time_strings_parse_as_validate_reads_them(stage, texts):
    base = {
        "type": "job.expired",
        "source": "s",
        "version": 1,
        "data": {"job_id": "j-1", "reason": "filled"},
    }
    lines = [orjson.dumps({**base, "id": f"e{i}", "time": t}) for i, t in enumerate(texts)]
    with first_stage(stage):
        check_equivalence([("b", b"\n".join(lines))])


@pytest.mark.parametrize("pass_bytes", [parse.PASS_BYTES, 20_000])
def test_a_generated_day_with_every_kind_of_bad_record(tmp_path: Path, monkeypatch, pass_bytes):
    monkeypatch.setattr(parse, "PASS_BYTES", pass_bytes)  # one pass, or one per batch or so
    summary = generate(
        tmp_path,
        date(2026, 11, 20),
        days=1,
        events_per_day=3000,
        seed=3,
        bad_rate=0.05,
        batch_size=500,
    )
    batches = [(p.stem, p.read_bytes()) for p in sorted((tmp_path / "landing").rglob("*.jsonl"))]
    check_equivalence(batches)
    rejected = parse_batches(batches).rejected
    codes = pc.value_counts(rejected["code"]).to_pylist()
    expected = {}
    for kind, count in summary.bad_by_kind.items():
        expected[BAD_KINDS[kind]] = expected.get(BAD_KINDS[kind], 0) + count
    by_code = {c["values"]: c["counts"] for c in codes}
    # Redelivered duplicates land twice, so each code is seen at least as often as generated.
    assert by_code.keys() == {k for k, v in expected.items() if v}
    assert all(by_code[k] >= v for k, v in expected.items() if v)


def test_rejected_records_keep_what_identifies_them():
    good = {
        "id": "e-1",
        "type": "job.expired",
        "source": "hireloop",
        "version": 1,
        "time": "2026-11-20T10:00:00Z",
        "data": {"job_id": "j-1", "reason": "filled"},
    }
    lines = [
        orjson.dumps({**good, "time": "2999-01-01T00:00:00Z"}),
        orjson.dumps({**good, "id": "e-2", "time": 1_700_000_000}),
        orjson.dumps({**good, "id": "e-3", "data": {**good["data"], "note": "clôturée"}}).replace(
            "é".encode(), b"\xe9"
        ),
        orjson.dumps({**good, "id": "e-4", "version": 2}),
        b'{"id":"e-5","type":"job.exp',
        b"",
        b"   ",
    ]
    parsed = parse_batch(b"\r\n".join(lines), "b-1")
    rows = parsed.rejected.to_pylist()
    assert [r["line_no"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["code"] for r in rows] == [
        "time_out_of_range",
        "wrong_type",
        "bad_encoding",
        "unknown_version",
        "malformed_json",
    ]
    assert [r["event_id"] for r in rows] == ["e-1", "e-2", "e-3", "e-4", None]
    assert [r["event_time"] for r in rows] == [None, None, T0, T0, None]
    assert parsed.records == 5 and parsed.valid.num_rows == 0
