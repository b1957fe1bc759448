"""Parsing v2 postings: the column checks take exactly what ``validate`` takes.

v2 lines have no msgspec struct (the stage-1 struct of a type is its v1), so they take the
orjson stage and its column checks, or ``validate``. Hypothesis draws v2 postings and mutates
their nested objects: a location or salary that is not an object, children of the wrong JSON
type (floats and bools for ints, ints for strings), missing and extra children, countries
that are not ISO codes, inverted ranges, unknown periods, locations too long for v1. The
equivalence check of ``test_parse`` (same rows, same reason codes and details) runs on each
stage first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "figstream" / "streaming"))
from test_parse import STAGES, check_equivalence, first_stage, good_records  # noqa: E402

from figstream.events.geo import ISO_COUNTRIES  # noqa: E402
from figstream.events.postings import downcast_data, legacy_line, upcast_record  # noqa: E402
from figstream.events.schemas import JobPostedV1  # noqa: E402
from figstream.events.validation import Rejection, validate  # noqa: E402
from figstream.streaming.parse import parse_batch  # noqa: E402

odd = st.sampled_from([None, 1, 2.0, True, "", [], {}, "x" * 201, 2**64])
countries = st.sampled_from(["DE", "US", "GB", "UK", "de", "XX", "D", "DEU", None, 49])
periods = st.sampled_from(["year", "month", "hour", "fortnight", "YEAR", None, 1])
amounts = st.none() | st.integers(-5, 5_000_001) | st.sampled_from([2.0, True, "90k", 2**63])
texts = st.text(min_size=0, max_size=12) | st.sampled_from(["Berlin", "Austin", "São Paulo"])


@st.composite
def locations(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(odd | texts)
    location = {
        "city": draw(texts | odd),
        "region": draw(st.none() | texts | odd),
        "country_code": draw(countries),
    }
    for key in draw(st.lists(st.sampled_from(["city", "region", "country_code"]), max_size=2)):
        location.pop(key, None)
    if draw(st.booleans()):
        location["district"] = draw(texts)
    return location


@st.composite
def salaries(draw):
    if draw(st.integers(0, 6)) == 0:
        return draw(odd)
    salary = {
        "min": draw(amounts),
        "max": draw(amounts),
        "currency": draw(st.sampled_from(["EUR", "USD", "usd", "EURO", None, 1])),
        "period": draw(periods),
    }
    for key in draw(st.lists(st.sampled_from(list(salary)), max_size=2)):
        salary.pop(key, None)
    return salary


@st.composite
def v2_lines(draw) -> bytes:
    data = {
        "job_id": draw(st.from_regex(r"[a-z]{2,8}-[0-9]{1,7}", fullmatch=True)),
        "title": "Data Engineer",
        "company": "Acme",
        "location": draw(locations()),
        "employment_type": "full_time",
        "remote": draw(st.booleans()),
        "url": "https://hireloop.example/jobs/1",
    }
    if draw(st.booleans()):
        data["salary"] = draw(st.none() | salaries())
    record = {
        "id": draw(st.uuids()).hex,
        "type": draw(st.sampled_from(["job.posted", "job.updated"])),
        "source": "hireloop",
        "version": 2,
        "time": "2026-11-20T10:00:00Z",
        "data": data,
    }
    # the stdlib writes ints beyond 64 bits (orjson refuses them)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=80, deadline=None)
@given(st.lists(v2_lines() | good_records().map(upcast_record).map(orjson.dumps), max_size=40))
@pytest.mark.parametrize("stage", STAGES)
def test_v2_lines_parse_exactly_as_validate_says(stage, lines):
    with first_stage(stage):
        check_equivalence([("b-1", b"\n".join(lines))])


# No control characters: validate refuses them in the text it reads (control_character).
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=60)


@st.composite
def valid_v2_lines(draw) -> bytes:
    low, high = sorted(draw(st.lists(st.integers(0, 5_000_000), min_size=2, max_size=2)))
    salary = {
        "min": draw(st.none() | st.just(low)),
        "max": draw(st.none() | st.just(high)),
        "currency": draw(st.sampled_from(["USD", "EUR", "GBP"])),
        "period": draw(st.sampled_from(["year", "month", "week", "day", "hour"])),
    }
    location = {
        "city": draw(names),
        "region": draw(st.none() | names),
        "country_code": draw(st.none() | st.sampled_from(sorted(ISO_COUNTRIES))),
    }
    data = {
        "job_id": "aa-1",
        "title": draw(names),
        "company": "Acme",
        "location": location,
        "employment_type": "contract",
        "remote": draw(st.booleans()),
        "salary": draw(st.none() | st.just(salary)),
        "url": "https://hireloop.example/jobs/1",
    }
    record = {"id": "e-1", "type": "job.updated", "source": "hireloop", "version": 2,
              "time": "2026-11-20T10:00:00Z", "data": data}  # fmt: skip
    return orjson.dumps(record)


@settings(max_examples=300, deadline=None)
@given(valid_v2_lines())
def test_every_valid_v2_downcasts_to_a_valid_v1_for_legacy(line):
    envelope = validate(line)
    assert not isinstance(envelope, Rejection), envelope
    v1 = downcast_data(envelope.data)
    JobPostedV1.model_validate(v1)  # raises if legacy would get an invalid v1
    assert orjson.loads(legacy_line(line))["data"] == v1
    (row,) = parse_batch(line, "b-1").valid.to_pylist()  # and the platform's row agrees
    assert (row["location"], row["salary_min"], row["currency"]) == (
        v1["location"], v1["salary_min"], v1["currency"]
    )  # fmt: skip
