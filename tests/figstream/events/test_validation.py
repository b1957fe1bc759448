"""Validation never raises for bad data and names the reason.

Bad inputs tried here: arbitrary bytes (including invalid UTF-8), arbitrary JSON values,
malformed JSON, non-object JSON, each envelope field missing or mistyped, booleans posing as
versions, unknown types and versions, naive and out-of-range times, mistyped, missing and
absurd data fields (negative or huge salaries, inverted ranges, bad currency, non-http URL),
and a board merging into itself.
"""

import copy

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from figstream.events.envelope import Envelope
from figstream.events.validation import REASON_CODES, Rejection, validate

GOOD = {
    "id": "6f1c7d1e-0000-4000-8000-000000000001",
    "type": "job.posted",
    "source": "hireloop",
    "version": 1,
    "time": "2026-11-20T10:00:00Z",
    "data": {
        "job_id": "hireloop-0000001",
        "title": "Data Engineer",
        "company": "Acme Inc",
        "location": "Austin, TX",
        "employment_type": "full_time",
        "remote": False,
        "salary_min": 90000,
        "salary_max": 120000,
        "currency": "USD",
        "url": "https://hireloop.example/jobs/hireloop-0000001",
    },
}


def mutated(**changes):
    record = copy.deepcopy(GOOD)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = record
        for part in parents:
            target = target[part]
        if value is KeyError:
            del target[leaf]
        else:
            target[leaf] = value
    return record


def test_good_record_becomes_an_envelope():
    result = validate(orjson.dumps(GOOD))
    assert isinstance(result, Envelope)
    assert result.data["salary_max"] == 120000


@pytest.mark.parametrize(
    ("raw", "code", "mentions"),
    [
        (b"\xff\xfeoops", "bad_encoding", "UTF-8"),
        (b'{"id": "x", "type": "job.posted"', "malformed_json", ""),
        (b"[1, 2]", "not_an_object", "list"),
        (b'"just a string"', "not_an_object", "str"),
        (mutated(id=KeyError), "missing_field", "'id'"),
        (mutated(data=KeyError), "missing_field", "'data'"),
        (mutated(version="1"), "wrong_type", "'version'"),
        (mutated(version=True), "wrong_type", "'version'"),
        (mutated(data=[1]), "wrong_type", "'data'"),
        (mutated(id=""), "bad_id", "'id'"),
        (mutated(id="../../etc/passwd"), "bad_id", "'id'"),
        (mutated(id="x" * 129), "bad_id", "'id'"),
        (mutated(source=""), "bad_source", "'source'"),
        (mutated(source="aws.s3"), "bad_source", "aws."),
        (mutated(extra=1), "unknown_field", "'extra'"),
        (mutated(type="job.deleted"), "unknown_type", "job.deleted"),
        (mutated(version=99), "unknown_version", "version 99"),
        (mutated(time="2026-11-20T10:00:00"), "time_without_offset", "offset"),
        (mutated(time="yesterday"), "bad_time", "time"),
        (mutated(time="1970-01-01T00:00:00Z"), "time_out_of_range", "outside"),
        (mutated(time="2999-01-01T00:00:00Z"), "time_out_of_range", "outside"),
        (mutated(data__title=KeyError), "missing_field", "data.title"),
        (mutated(data__salary_min="90k"), "wrong_type", "data.salary_min"),
        (mutated(data__remote="yes"), "wrong_type", "data.remote"),
        (mutated(data__salary_max=10**12), "invalid_value", "data.salary_max"),
        (mutated(data__salary_min=-5), "invalid_value", "data.salary_min"),
        (mutated(data__salary_min=200000), "invalid_value", "salary_max"),
        (mutated(data__currency="dollars"), "invalid_value", "data.currency"),
        (mutated(data__url="javascript:alert(1)"), "invalid_value", "data.url"),
        (mutated(data__employment_type="gig"), "invalid_value", "data.employment_type"),
        (mutated(data__title=""), "invalid_value", "data.title"),
        (
            mutated(type="board.merged", data={"absorbed_board": "a1", "surviving_board": "a1"}),
            "invalid_value",
            "itself",
        ),
    ],
)
def test_bad_records_get_a_reason(raw, code, mentions):
    result = validate(raw if isinstance(raw, bytes) else orjson.dumps(raw))
    assert isinstance(result, Rejection), result
    assert result.code == code, result
    assert mentions in result.detail


def test_unknown_extra_fields_are_tolerated():
    """Producers may add fields before consumers know them (zero-downtime schema changes)."""
    assert isinstance(validate(mutated(data__benefits=["dental"])), Envelope)


def test_every_reason_is_documented_and_the_size_limit_is_eventbridges():
    from figstream.events.validation import MAX_EVENT_BYTES, REASONS
    from figstream.ingest.eventbridge import MAX_EVENT_BYTES as EVENTBRIDGE_LIMIT

    assert tuple(REASONS) == REASON_CODES and all(REASONS.values())
    assert len(set(REASON_CODES)) == len(REASON_CODES)
    assert MAX_EVENT_BYTES == EVENTBRIDGE_LIMIT


@pytest.mark.parametrize(
    ("record", "code"),
    [
        (mutated(data__n=2**63), "number_out_of_range"),
        (mutated(data__n=float("inf")), "number_out_of_range"),
        (mutated(data__n=float("nan")), "number_out_of_range"),
        (mutated(data__n=[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]), "too_deep"),
        (mutated(data__title="a\x00b"), "control_character"),
    ],
)
def test_parsed_records_are_checked_as_lines_are(record, code):
    """validate() also takes a dict (a replay, a Lambda event): the same checks as for a line,
    less those of the bytes (size, BOM, encoding, duplicate keys)."""
    result = validate(record)
    assert isinstance(result, Rejection) and result.code == code, result


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(raw):
    result = validate(raw)
    assert isinstance(result, Envelope | Rejection)
    if isinstance(result, Rejection):
        assert result.code in REASON_CODES and result.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(sorted(GOOD)), json_values, max_size=6))
def test_arbitrary_envelope_shapes_never_raise(fields):
    record = {**GOOD, **fields}
    result = validate(record)
    assert isinstance(result, Envelope | Rejection)


@given(st.dictionaries(st.sampled_from(sorted(GOOD["data"])), json_values, max_size=6))
def test_arbitrary_data_fields_never_raise(fields):
    record = {**GOOD, "data": {**GOOD["data"], **fields}}
    result = validate(record)
    assert isinstance(result, Envelope | Rejection)
    if isinstance(result, Rejection):
        assert result.code in REASON_CODES
