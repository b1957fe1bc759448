"""The vectorised transform core: equivalence with ``validate``, dedupe, state, read models.

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
  characters, a board merging into itself, unknown extra fields.

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
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from figstream.events.envelope import Envelope, format_time, parse_time
from figstream.events.schemas import REGISTRY
from figstream.events.validation import EARLIEST, LATEST, validate
from figstream.ingest.dataset import generate
from figstream.ingest.generate import BAD_KINDS
from figstream.streaming import parse
from figstream.streaming.checks import event_times
from figstream.streaming.parse import parse_batch, parse_batches
from figstream.streaming.table_ops import (
    apply_job_state,
    board_daily_stats,
    clean_postings,
    dedupe_events,
    dedupe_key,
    dedupe_postings,
    normalise_text,
    search_index,
)
from figstream.streaming.tables import (
    CANONICAL_SCHEMA,
    EVENTS_SCHEMA,
    POSTINGS_SCHEMA,
    REJECTED_SCHEMA,
    STATE_SCHEMA,
    STATS_SCHEMA,
)

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

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
unicode_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12
)
tricky_texts = st.sampled_from(
    [
        "",
        " ",
        "a",
        "x" * 200,
        "x" * 201,
        "é" * 100,
        "é" * 200,
        "é" * 201,
        " Data  Eng ",
        "tab\tsep",
        "nbsp\u00a0sep",
        "ideo\u3000space",
        "emoji 🚀",
        "a|b",
        "back\\slash",
    ]
)
texts = tricky_texts | unicode_text | st.from_regex(r"[A-Za-z ,.&-]{1,40}", fullmatch=True)
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
    "id": st.sampled_from(["", "x", "x" * 128, "x" * 129, "é" * 128, "é" * 129]),
    "type": st.sampled_from(["job.deleted", "Job.Posted", ""]),
    "source": st.sampled_from(["", " ", "hireloop"]),
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
    """The flattened row of an envelope: its model's fields (defaults filled), nulls elsewhere."""
    model = REGISTRY[(envelope.type, envelope.version)]
    row = {
        "event_id": envelope.id,
        "event_type": envelope.type,
        "source": envelope.source,
        "version": envelope.version,
        "event_time": envelope.time,
    }
    for name in (
        "job_id",
        "title",
        "company",
        "location",
        "employment_type",
        "remote",
        "salary_min",
        "salary_max",
        "currency",
        "url",
        "reason",
        "absorbed_board",
        "surviving_board",
    ):
        field = model.model_fields.get(name)
        row[name] = None if field is None else envelope.data.get(name, field.default)
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
    (GOOD.replace(b'"id":', b'"id":"x","id":', 1), None),  # duplicate key: the last wins
    (_splice(GOOD, b'"data":{', b'"title":"First",'), None),
    (_splice(GOOD, b'"data":{', b'"title":null,'), None),  # an earlier wrong value, overwritten
    (_splice(GOOD, b'"data":{', b'"salary_min":"x",'), None),
    (GOOD.replace(b'"data":{', b'"data":{"x":1},"data":{', 1), None),  # a whole data object
    (GOOD.replace(b"}}", b'},"type":"job.expired"}'), "missing_field"),  # a second tag wins
    (GOOD.replace(b'"type":"job.posted"', b'"type":"job.expired","type":"job.posted"'), None),
    (GOOD.replace(b'"id"', b'"\\u0069d"', 1), None),  # an escaped key
    (GOOD.replace(b'"type"', b'"typ\\u0065"', 1), None),
    (_with_data(salary_min=90_000.0), "wrong_type"),  # floats are never ints
    (GOOD.replace(b"90000", b"9e4"), "wrong_type"),
    (GOOD.replace(b"90000", b"-0"), None),
    (_with_data(salary_min=True), "wrong_type"),
    (_with_data(remote=1), "wrong_type"),
    (_with_data(salary_max=2**63), "invalid_value"),  # beyond int64, within uint64
    (GOOD.replace(b"120000", str(2**64 + 1).encode()), "wrong_type"),  # orjson: a float
    (GOOD.replace(b"90000", str(-(2**63)).encode()), "invalid_value"),
    (GOOD.replace(b"120000", b"1e400"), "malformed_json"),
    (orjson.dumps({**POSTING, "version": 2**63 - 1}), "unknown_version"),
    (GOOD.replace(b'"version":1', b'"version":18446744073709551617'), "wrong_type"),
    (GOOD.replace(b'"version":1', b'"version":1.0'), "wrong_type"),
    (GOOD.replace(b'"version":1', b'"version":true'), "wrong_type"),
    (orjson.dumps({**POSTING, "version": 2}), "unknown_version"),
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
    # Unknown fields are fine, but msgspec skips them unchecked; orjson refuses these.
    (_splice(GOOD, b"{", b'"note":"x",'), None),
    (_splice(GOOD, b'"data":{', b'"note":{"a":[1,{"b":null}]},'), None),
    (_splice(GOOD, b"{", b'"note":"caf\xe9",'), "bad_encoding"),
    (_splice(GOOD, b'"data":{', b'"note":"\xed\xa0\x80",'), "bad_encoding"),
    (_splice(GOOD, b"{", b'"note":"\\ud800",'), "bad_encoding"),
    (_splice(GOOD, b'"data":{', b'"note":1e400,'), "malformed_json"),
    (_splice(GOOD, b'"data":{', b'"note":NaN,'), "malformed_json"),
    (_splice(GOOD, b'"data":{', b'"note":' + b"[" * 500 + b"]" * 500 + b","), None),
    (_splice(GOOD, b'"data":{', b'"note":' + b"[" * 2000 + b"]" * 2000 + b","), "malformed_json"),
    (_splice(GOOD, b'"data":{', b'"note":"a\x01b",'), "malformed_json"),
    # Bad text in a typed field.
    (GOOD.replace(b"Acme", b"Acm\xe9"), "bad_encoding"),
    (GOOD.replace(b"Acme", b"\\udc00"), "bad_encoding"),
    (GOOD.replace(b"Acme", b"\\ud83d\\ude80"), None),  # a proper surrogate pair
    (GOOD.replace(b"Acme", b"\\u0000"), None),
    (GOOD.replace(b"Acme", b"A\tB"), "malformed_json"),
    (b"\xef\xbb\xbf" + GOOD, "malformed_json"),
    (GOOD + b"\r", None),
    (b" \t" + GOOD + b" ", None),
    (GOOD + b"\x0c", "malformed_json"),
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
    where = parse._Lines(
        ("b",), pa.array(["b"]), np.zeros(len(lines), int), np.arange(1, len(lines) + 1), {}
    )
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


@st.composite
def time_strings(draw) -> str:
    year = draw(
        st.sampled_from([0, 1, 1900, 1999, 2000, 2004, 2024, 2026, 2096, 2099, 2100, 2400, 9999])
        | st.integers(0, 9999)
    )
    month = draw(st.integers(0, 13))
    day = draw(st.sampled_from([0, 1, 28, 29, 30, 31, 32]) | st.integers(0, 39))
    hour, minute, second = (draw(st.integers(0, top)) for top in (25, 61, 61))
    fraction = draw(st.text("0123456789", max_size=7))
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    text += f".{fraction}Z" if fraction or draw(st.booleans()) else "Z"
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(["", "0", "-", ":", ".", "T", "t", "Z", "z", " ", "+", "٣"]))
        text = text[:at] + piece + text[at + draw(st.integers(0, 1)) :]
    return text


edge_times = st.sampled_from(
    [
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00.0Z",
        "2099-12-31T23:59:59.999999Z",
        "2100-01-01T00:00:00Z",
        "2100-01-01T00:00:00.000000Z",
        "2000-02-29T12:00:00Z",
        "2100-02-29T12:00:00Z",
        "2024-02-29T23:59:59.5Z",
        "2026-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-12-31T23:59:59Z",
    ]
)


def _reference_micros(text: str) -> int | None:
    """What validate() makes of an envelope time: its instant in microseconds, or None."""
    try:
        when = parse_time(text)
    except ValueError:
        return None
    if not EARLIEST <= when < LATEST:
        return None
    return (when - _EPOCH) // timedelta(microseconds=1)


@settings(max_examples=300, deadline=None)
@given(st.lists(edge_times | time_strings(), min_size=1, max_size=30))
def test_event_times_take_only_what_parse_time_reads_and_every_canonical_one(texts):
    ok, micros = event_times(pa.array([*texts, None], pa.string()))
    assert not ok[-1]
    for text, taken, got in zip(texts, ok.tolist(), micros.tolist(), strict=False):
        expected = _reference_micros(text)
        if taken:
            assert got == expected, text
        else:
            assert got == 0, text
            # The fast path leaves no canonical time to validate(): that would only be slower.
            assert expected is None or not _CANONICAL.fullmatch(text), text


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
        "invalid_value",
        "wrong_type",
        "bad_encoding",
        "unknown_version",
        "malformed_json",
    ]
    assert [r["event_id"] for r in rows] == ["e-1", "e-2", "e-3", "e-4", None]
    assert [r["event_time"] for r in rows] == [None, None, T0, T0, None]
    assert parsed.records == 5 and parsed.valid.num_rows == 0


# --- normalisation, dedupe by event id ----------------------------------------------------------


@given(st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=15)))
def test_normalise_text_is_pythons_split_and_join(values):
    assert normalise_text(pa.array(values, pa.string())).to_pylist() == [
        " ".join(v.split()) for v in values
    ]


@given(st.lists(st.tuples(texts, texts, texts), max_size=10))
def test_dedupe_key_is_injective_casefolded_text(parts):
    columns = list(zip(*parts, strict=True)) or [(), (), ()]
    company, title, location = (pa.array(list(col), pa.string()) for col in columns)
    keys = dedupe_key(company, title, location).to_pylist()

    def escape(s: str) -> str:
        return s.casefold().replace("\\", "\\\\").replace("|", "\\|")

    assert keys == ["|".join(escape(p) for p in triple) for triple in parts]
    for a, b in zip(parts, keys, strict=True):
        for c, d in zip(parts, keys, strict=True):
            if b == d:
                assert [x.casefold() for x in a] == [x.casefold() for x in c]


def event_rows(rows: list[dict]) -> pa.Table:
    full = [{f.name: row.get(f.name) for f in EVENTS_SCHEMA} for row in rows]
    return pa.Table.from_pylist(full, schema=EVENTS_SCHEMA)


@FAST
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from(["b1", "b2", "b3"]), st.integers(1, 5)),
        max_size=30,
    ),
    st.randoms(),
)
def test_dedupe_events_keeps_the_first_delivery(deliveries, rng):
    rows = [
        {
            "event_id": f"e{e}",
            "batch_id": b,
            "line_no": n,
            "event_type": "job.expired",
            "title": f"{b}:{n}",
        }
        for e, b, n in deliveries
    ]
    table = event_rows(rows)
    out = dedupe_events(table)
    expected = {}
    for row in sorted(rows, key=lambda r: (r["batch_id"], r["line_no"])):
        expected.setdefault(row["event_id"], row["title"])
    assert dict(zip(out["event_id"].to_pylist(), out["title"].to_pylist(), strict=True)) == expected
    assert out.num_rows == len(expected)
    shuffled = table.take(pa.array(rng.sample(range(table.num_rows), table.num_rows), pa.int64()))
    assert dedupe_events(shuffled).sort_by("event_id").equals(out.sort_by("event_id"))


def posting(
    event_id: str,
    job_id: str,
    minutes: int,
    title: str = "Data Engineer",
    company: str = "Acme",
    location: str = "Austin, TX",
    board: str = "hireloop",
    event_type: str = "job.posted",
    salary: int | None = 100_000,
) -> dict:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "source": board,
        "version": 1,
        "event_time": T0 + timedelta(minutes=minutes),
        "job_id": job_id,
        "title": title,
        "company": company,
        "location": location,
        "employment_type": "full_time",
        "remote": False,
        "salary_min": salary,
        "salary_max": None,
        "currency": "USD",
        "url": f"https://{board}.example/jobs/{job_id}",
        "batch_id": "b",
        "line_no": 1,
    }


def test_clean_postings_normalises_and_keys():
    events = event_rows(
        [
            posting("e1", "j1", 0, title="  Data   Engineer ", company="ACME\u00a0Inc"),
            posting("e2", "j2", 1, title="data engineer", company="acme inc", board="jobnest"),
            {
                "event_id": "e3",
                "event_type": "job.expired",
                "source": "hireloop",
                "event_time": T0,
                "job_id": "j1",
                "reason": "filled",
                "batch_id": "b",
                "line_no": 2,
            },
        ]
    )
    out = clean_postings(events)
    assert out.schema == POSTINGS_SCHEMA
    assert out["title"].to_pylist() == ["Data Engineer", "data engineer"]
    assert out["company"].to_pylist() == ["ACME Inc", "acme inc"]
    assert out["board"].to_pylist() == ["hireloop", "jobnest"]
    assert out["dedupe_key"].to_pylist() == ["acme inc|data engineer|austin, tx"] * 2


# --- cross-board dedupe -------------------------------------------------------------------------

posting_events = st.lists(
    st.builds(
        lambda n, job, minutes, title, company, kind: posting(
            f"e{n:03d}",
            f"j{job}",
            minutes,
            title=title,
            company=company,
            board=f"b{job % 3}",
            event_type=kind,
        ),
        st.integers(0, 999),
        st.integers(0, 7),
        st.integers(0, 5),
        st.sampled_from(["Data Engineer", "data  engineer", "Nurse"]),
        st.sampled_from(["Acme", "ACME", "Lee"]),
        st.sampled_from(["job.posted", "job.posted", "job.updated"]),
    ),
    max_size=25,
    unique_by=lambda r: r["event_id"],
)


def reference_duplicates(rows: list[dict]) -> dict[str, str]:
    def key(r: dict) -> str:
        return "|".join(" ".join(r[f].split()).casefold() for f in ("company", "title", "location"))

    first = {}
    for r in sorted(rows, key=lambda r: (r["event_time"], r["event_id"])):
        if r["event_type"] == "job.posted":
            first.setdefault(r["job_id"], r)
    winner = {}
    for r in sorted(first.values(), key=lambda r: (r["event_time"], r["event_id"])):
        winner.setdefault(key(r), r["job_id"])
    return {j: winner[key(r)] for j, r in first.items() if winner[key(r)] != j}


@FAST
@given(posting_events, st.randoms(), st.integers(1, 4))
def test_dedupe_postings_is_order_insensitive_and_idempotent(rows, rng, parts):
    postings = clean_postings(event_rows(rows))
    once = dedupe_postings(postings)
    expected = reference_duplicates(rows)
    got = once.duplicates.to_pylist()
    assert {d["job_id"]: d["duplicate_of_job_id"] for d in got} == expected
    assert set(once.kept["job_id"].to_pylist()) == {r["job_id"] for r in rows} - expected.keys()
    assert once.canonical.schema == CANONICAL_SCHEMA

    order = rng.sample(range(len(rows)), len(rows))
    cuts = sorted(rng.sample(range(len(rows) + 1), min(parts, len(rows) + 1)))
    canonical = None
    for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        chunk = clean_postings(event_rows([rows[i] for i in order[a:b]]))
        result = dedupe_postings(chunk, canonical)
        canonical = result.canonical
    assert result.canonical.equals(once.canonical)
    assert result.duplicates.equals(once.duplicates)

    again = dedupe_postings(postings, once.canonical)
    assert again.canonical.equals(once.canonical)
    assert again.duplicates.equals(once.duplicates)
    assert again.kept.equals(once.kept)


def test_a_late_earlier_posting_takes_the_key_over():
    early = posting("e1", "j1", 0, board="jobnest")
    middle = posting("e2", "j2", 5, title="DATA  ENGINEER")
    late = posting("e3", "j3", 9, board="workwave")
    first = dedupe_postings(clean_postings(event_rows([middle, late])))
    assert first.duplicates.to_pylist() == [
        {"job_id": "j3", "duplicate_of_job_id": "j2", "dedupe_key": "acme|data engineer|austin, tx"}
    ]
    second = dedupe_postings(clean_postings(event_rows([early])), first.canonical)
    assert [(d["job_id"], d["duplicate_of_job_id"]) for d in second.duplicates.to_pylist()] == [
        ("j2", "j1"),
        ("j3", "j1"),
    ]


# --- job state ----------------------------------------------------------------------------------

JOBS = ["j0", "j1", "j2", "j3"]


@st.composite
def job_events(draw) -> list[dict]:
    events = []
    for n in range(draw(st.integers(0, 18))):
        kind = draw(st.sampled_from(["job.posted", "job.updated", "job.expired", "board.merged"]))
        minutes = draw(st.integers(0, 6))  # few distinct times: ties broken by event id
        event_id = f"e{draw(st.integers(0, 99)):02d}-{n}"
        if kind == "board.merged":
            absorbed, surviving = draw(st.permutations(["b0", "b1", "b2"]))[:2]
            events.append(
                {
                    "event_id": event_id,
                    "event_type": kind,
                    "source": surviving,
                    "event_time": T0 + timedelta(minutes=minutes),
                    "absorbed_board": absorbed,
                    "surviving_board": surviving,
                    "batch_id": "b",
                    "line_no": n,
                }
            )
        elif kind == "job.expired":
            events.append(
                {
                    "event_id": event_id,
                    "event_type": kind,
                    "source": "b0",
                    "event_time": T0 + timedelta(minutes=minutes),
                    "job_id": draw(st.sampled_from(JOBS)),
                    "reason": draw(st.sampled_from(["filled", "expired"])),
                    "batch_id": "b",
                    "line_no": n,
                }
            )
        else:
            events.append(
                posting(
                    event_id,
                    draw(st.sampled_from(JOBS)),
                    minutes,
                    title=draw(st.sampled_from(["Nurse", " Nurse  II "])),
                    board=draw(st.sampled_from(["b0", "b1", "b2"])),
                    event_type=kind,
                    salary=draw(st.sampled_from([None, 50_000])),
                )
            )
    return events


def reference_state(events: list[dict]) -> dict[str, dict]:
    """Events folded one by one in (event_time, event_id) order: the spec, row by row."""
    jobs: dict[str, dict] = {}
    for e in sorted(events, key=lambda e: (e["event_time"], e["event_id"])):
        at, eid = e["event_time"], e["event_id"]
        if e["event_type"] in ("job.posted", "job.updated"):
            job = jobs.setdefault(e["job_id"], {"posted_at": None})
            job.update(
                board=e["source"],
                title=" ".join(e["title"].split()),
                status="active",
                updated_at=at,
                expired_at=None,
                merged_into=None,
                last=(at, eid),
            )
            if e["event_type"] == "job.posted" and job["posted_at"] is None:
                job["posted_at"] = at
        elif e["event_type"] == "job.expired":
            job = jobs.setdefault(
                e["job_id"], {"posted_at": None, "board": None, "title": None, "updated_at": None}
            )
            job.update(status="expired", expired_at=at, merged_into=None, last=(at, eid))
        else:
            for job in jobs.values():
                if job["board"] == e["absorbed_board"] and job["status"] in ("active", "merged"):
                    job.update(status="merged", merged_into=e["surviving_board"], last=(at, eid))
    return jobs


def state_view(state: pa.Table) -> dict[str, dict]:
    jobs = state.filter(pc.equal(state["kind"], "job")).to_pylist()
    return {
        j["job_id"]: {
            "posted_at": j["posted_at"],
            "board": j["board"],
            "title": j["title"],
            "status": j["status"],
            "updated_at": j["updated_at"],
            "expired_at": j["expired_at"],
            "merged_into": j["merged_into"],
            "last": (j["last_event_time"], j["last_event_id"]),
        }
        for j in jobs
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_events(), job_events(), st.randoms())
def test_job_state_is_last_writer_wins_idempotent_and_order_insensitive(a, b, rng):
    ids = {e["event_id"] for e in a}
    b = [e for e in b if e["event_id"] not in ids]
    table_a, table_b = event_rows(a), event_rows(b)
    both = apply_job_state(None, event_rows(a + b))
    assert both.schema == STATE_SCHEMA
    assert state_view(both) == reference_state(a + b)
    ab = apply_job_state(apply_job_state(None, table_a), table_b)
    ba = apply_job_state(apply_job_state(None, table_b), table_a)
    assert ab.equals(both) and ba.equals(both)
    assert apply_job_state(both, table_a).equals(both)
    shuffled = event_rows(rng.sample(a + b, len(a + b)))
    assert apply_job_state(None, shuffled).equals(both)


def test_a_merger_acts_as_of_its_event_time():
    merger = {
        "event_id": "m",
        "event_type": "board.merged",
        "source": "hireloop",
        "event_time": T0 + timedelta(minutes=30),
        "absorbed_board": "jobnest",
        "surviving_board": "hireloop",
        "batch_id": "b",
        "line_no": 9,
    }
    events = [
        posting("e1", "open", 0, board="jobnest"),
        posting("e2", "closed", 0, board="jobnest"),
        {
            "event_id": "e3",
            "event_type": "job.expired",
            "source": "jobnest",
            "job_id": "closed",
            "event_time": T0 + timedelta(minutes=10),
            "reason": "filled",
            "batch_id": "b",
            "line_no": 3,
        },
        posting("e4", "elsewhere", 0, board="workwave"),
        posting("e5", "after", 45, board="jobnest"),  # impossible in practice: stays active
    ]
    state = apply_job_state(None, event_rows([merger]))
    # The merger arrived first; the postings it covers arrive late and still meet it.
    state = apply_job_state(state, event_rows(events))
    status = dict(zip(state["job_id"].to_pylist(), state["status"].to_pylist(), strict=True))
    assert status == {
        "open": "merged",
        "closed": "expired",
        "elsewhere": "active",
        "after": "active",
        "@jobnest": None,
    }
    merged = state.filter(pc.equal(state["job_id"], "open")).to_pylist()[0]
    assert (merged["merged_into"], merged["last_event_id"]) == ("hireloop", "m")
    assert search_index(state)["job_id"].to_pylist() == ["after", "elsewhere"]


# --- read models --------------------------------------------------------------------------------


def test_search_index_hides_duplicates_of_active_jobs_only():
    events = [
        posting("e1", "j1", 0),
        posting("e2", "j2", 1, board="jobnest"),
        posting("e3", "j3", 2, title="Nurse"),
        posting("e4", "j4", 3, title="nurse", board="w"),
        {
            "event_id": "e5",
            "event_type": "job.expired",
            "source": "hireloop",
            "job_id": "j3",
            "event_time": T0 + timedelta(minutes=5),
            "reason": "filled",
            "batch_id": "b",
            "line_no": 5,
        },
    ]
    table = event_rows(events)
    state = apply_job_state(None, table)
    duplicates = dedupe_postings(clean_postings(table)).duplicates
    assert duplicates["job_id"].to_pylist() == ["j2", "j4"]
    index = search_index(state, duplicates)
    assert index.column_names[:2] == ["job_id", "board"]
    # j2 duplicates the active j1; j4 duplicates j3, which expired, so j4 shows.
    assert index["job_id"].to_pylist() == ["j1", "j4"]
    assert search_index(state)["job_id"].to_pylist() == ["j1", "j2", "j4"]


def test_board_daily_stats_mirror_legacy_columns():
    events = [
        posting("e1", "j1", 0, salary=100_000),
        posting("e2", "j2", 1, salary=None),
        posting("e3", "j3", 2, salary=50_001, board="jobnest"),
        posting("e4", "j1", 3, event_type="job.updated", salary=100_001),
        {
            "event_id": "e5",
            "event_type": "job.expired",
            "source": "jobnest",
            "job_id": "j3",
            "event_time": T0 + timedelta(minutes=5),
            "reason": "filled",
            "batch_id": "b",
            "line_no": 5,
        },
        {
            "event_id": "e6",
            "event_type": "board.merged",
            "source": "careerhub",
            "event_time": T0 + timedelta(minutes=6),
            "absorbed_board": "x1",
            "surviving_board": "careerhub",
            "batch_id": "b",
            "line_no": 6,
        },
    ]
    table = event_rows(events)
    stats = board_daily_stats(table, apply_job_state(None, table))
    assert stats.schema == STATS_SCHEMA
    assert stats.to_pylist() == [
        {
            "date": date(2026, 11, 20),
            "board": "careerhub",
            "postings": 0,
            "updates": 0,
            "expiries": 0,
            "active_jobs": 0,
            "avg_salary_min": None,
        },
        {
            "date": date(2026, 11, 20),
            "board": "hireloop",
            "postings": 2,
            "updates": 1,
            "expiries": 0,
            "active_jobs": 2,
            "avg_salary_min": 100_001.0,
        },
        {
            "date": date(2026, 11, 20),
            "board": "jobnest",
            "postings": 1,
            "updates": 0,
            "expiries": 1,
            "active_jobs": 0,
            "avg_salary_min": None,
        },
    ]
    with pytest.raises(ValueError, match="needs a day"):
        board_daily_stats(event_rows([]), apply_job_state(None, table))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 5_000_000), min_size=1, max_size=12))
def test_average_salary_rounds_like_legacy(salaries):
    rows = [posting(f"e{i}", f"j{i}", i, salary=s) for i, s in enumerate(salaries)]
    table = event_rows(rows)
    stats = board_daily_stats(table, apply_job_state(None, table), day=date(2026, 11, 20))
    legacy = float("%.2f" % (sum(salaries) / len(salaries)))
    assert stats["avg_salary_min"].to_pylist() == [pytest.approx(legacy, abs=0.0051)]


def test_everything_runs_on_a_generated_day(tmp_path: Path):
    generate(tmp_path, date(2026, 11, 20), days=1, events_per_day=2000, seed=11)
    batches = [(p.stem, p.read_bytes()) for p in sorted((tmp_path / "landing").rglob("*.jsonl"))]
    events = dedupe_events(parse_batches(batches).valid)
    assert pc.count_distinct(events["event_id"]).as_py() == events.num_rows
    rng = random.Random(1)
    shuffled = events.take(pa.array(rng.sample(range(events.num_rows), events.num_rows)))
    half = shuffled.num_rows // 2
    state = apply_job_state(None, events)
    assert apply_job_state(
        apply_job_state(None, shuffled.slice(half)), shuffled.slice(0, half)
    ).equals(state)
    result = dedupe_postings(clean_postings(events))
    stats = board_daily_stats(events, state, duplicates=result.duplicates)
    assert stats["board"].to_pylist() == sorted(stats["board"].to_pylist())
    assert sum(stats["active_jobs"].to_pylist()) == search_index(state, result.duplicates).num_rows


def test_job_state_can_be_applied_to_the_slice_the_events_touch(tmp_path: Path):
    generate(tmp_path, date(2026, 11, 20), days=2, events_per_day=1500, seed=5, bad_rate=0)
    batches = [(p.stem, p.read_bytes()) for p in sorted((tmp_path / "landing").rglob("*.jsonl"))]
    events = dedupe_events(parse_batches(batches).valid)
    merger_time = events.filter(pc.equal(events["event_type"], "board.merged"))["event_time"][0]
    late = pc.greater_equal(events["event_time"], merger_time)
    before, after = events.filter(pc.invert(late)), events.filter(late)
    state = apply_job_state(None, before)
    absorbed = after.filter(pc.equal(after["event_type"], "board.merged"))["absorbed_board"]
    touched = pc.or_(
        pc.or_(
            pc.is_in(state["job_id"], after["job_id"].drop_null()),
            pc.equal(state["kind"], "merger"),
        ),
        pc.is_in(state["board"], absorbed),
    )
    updated = apply_job_state(state.filter(touched), after)
    untouched = state.filter(pc.invert(pc.is_in(state["job_id"], updated["job_id"])))
    upserted = pa.concat_tables([untouched, updated]).sort_by(
        [("kind", "ascending"), ("job_id", "ascending")]
    )
    assert upserted.equals(apply_job_state(state, after))
    assert pc.sum(pc.equal(upserted["status"], "merged")).as_py() > 0


def test_empty_inputs_give_empty_tables_of_the_right_shape():
    for parsed in (parse_batches([]), parse_batch(b"", "b"), parse_batch(b"\n \r\n", "b")):
        assert parsed.records == 0
        assert parsed.valid.schema == EVENTS_SCHEMA and parsed.valid.num_rows == 0
    nothing = event_rows([])
    assert dedupe_events(nothing).num_rows == 0
    result = dedupe_postings(clean_postings(nothing))
    assert result.canonical.schema == CANONICAL_SCHEMA and result.duplicates.num_rows == 0
    state = apply_job_state(None, nothing)
    assert state.schema == STATE_SCHEMA and search_index(state).num_rows == 0
    assert board_daily_stats(nothing, state, day=date(2026, 11, 20)).num_rows == 0
