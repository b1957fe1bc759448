"""The landing key scheme: round trips, ordering, the generator's keys, and refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from figstream.ingest.dataset import generate
from figstream.ingest.generate import batch_stamp
from figstream.ingest.landing import (
    LANDING_PREFIX,
    batch_key,
    format_stamp,
    key_floor,
    parse_batch_id,
    parse_batch_key,
)
from figstream.storage.objects import LocalObjectStore

T = datetime(2026, 11, 1, 9, 30, 5, 123456, tzinfo=UTC)

aware = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
    timezones=st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)  # fmt: skip
producers = st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True)
seqs = st.integers(0, 10**9)


def test_examples_of_both_forms():
    assert batch_key(T, None, 7) == "landing/2026-11-01/20261101T093005123456Z-000007.jsonl"
    live = batch_key(T, "demo-2", 1_234_567)
    assert live == "landing/2026-11-01/20261101T093005123456Z-demo-2-1234567.jsonl"
    assert parse_batch_key(live) == (T, "20261101T093005123456Z-demo-2-1234567")
    assert parse_batch_id(live) == (T, "demo-2", 1_234_567)
    assert parse_batch_id(batch_key(T, None, 0)) == (T, None, 0)
    # An offset is converted: the key (and its date directory) are UTC.
    local = datetime(2026, 11, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert batch_key(local, "p", 0).startswith("landing/2026-11-01/20261101T223000000000Z-")


@given(arrival=aware, producer=st.none() | producers, seq=seqs)
def test_batch_key_round_trips(arrival, producer, seq):
    key = batch_key(arrival, producer, seq)
    assert key.startswith(LANDING_PREFIX) and key.endswith(".jsonl")
    when, batch_id = parse_batch_key(key)
    assert when == arrival and when.tzinfo is UTC
    assert key == f"landing/{when.date().isoformat()}/{batch_id}.jsonl"
    assert parse_batch_id(key) == (arrival, producer, seq)


@given(a=aware, b=aware, producer=producers, seq_a=st.integers(0, 999_999),
       seq_b=st.integers(0, 999_999))  # fmt: skip
def test_keys_sort_by_arrival_then_sequence(a, b, producer, seq_a, seq_b):
    ka, kb = batch_key(a, producer, seq_a), batch_key(b, producer, seq_b)
    if a != b:
        assert (ka < kb) == (a < b)
    else:
        assert (ka < kb) == (seq_a < seq_b)


@given(arrival=aware, floor=aware, producer=st.none() | producers, seq=seqs)
def test_key_floor_selects_arrivals_at_or_after(arrival, floor, producer, seq):
    assert (batch_key(arrival, producer, seq) > key_floor(floor)) == (arrival >= floor)


@given(us=st.integers(0, 253402300799999999))
def test_stamp_agrees_with_the_generator(us):
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    if when.year >= 1000:  # strftime does not zero-pad years below 1000 on every platform
        assert format_stamp(when) == batch_stamp(us)


def test_every_generated_key_parses(tmp_path):
    generate(tmp_path, date(2026, 11, 1), days=2, events_per_day=300, seed=5, batch_size=40,
             batch_seconds=600, progress=False)  # fmt: skip
    keys = LocalObjectStore(tmp_path).list(LANDING_PREFIX)
    assert len(keys) > 10
    parsed = [parse_batch_id(k) for k in keys]
    assert all(p.producer is None for p in parsed)
    assert [p.arrival for p in parsed] == sorted(p.arrival for p in parsed)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("landing/2026-11-01/20261101T093005123456Z-000007.json", "not a landing batch key"),
        ("landng/2026-11-01/20261101T093005123456Z-000007.jsonl", "not a landing batch key"),
        ("landing/20261101T093005123456Z-000007.jsonl", "not a landing batch key"),
        ("landing/2026-11-01/x/20261101T093005123456Z-000007.jsonl", "not a landing batch key"),
        ("landing/2026-11-01/20261101T093005123456-000007.jsonl", "not a landing batch key"),
        ("landing/2026-11-01/20261101T0930051234Z-000007.jsonl", "not a landing batch key"),
        ("landing/2026-11-01/20261101T093005123456Z-7.jsonl", "not a landing batch key"),
        ("landing/2026-11-01/20261101T093005123456Z-Demo-000007.jsonl", "not a landing batch key"),
        ("landing/2026-11-01/20261101T093005123456Z-de_mo-000007.jsonl", "not a landing batch key"),
        ("landing/2026-11-01/20261101T093005123456Z-demo.jsonl", "not a landing batch key"),
        ("landing/2026-11-01/20261101T093005123456Z.jsonl", "not a landing batch key"),
        ("landing/2026-13-01/20261301T093005123456Z-000007.jsonl", "impossible arrival time"),
        ("landing/2026-11-01/20261101T253005123456Z-000007.jsonl", "impossible arrival time"),
        ("landing/2026-11-02/20261101T093005123456Z-000007.jsonl", "does not match"),
        ("", "not a landing batch key"),
    ],
)
def test_bad_keys_are_refused_with_a_reason(key, message):
    with pytest.raises(ValueError, match=message):
        parse_batch_key(key)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="naive"):
        batch_key(datetime(2026, 11, 1), None, 0)
    for producer in ("", "Demo", "de_mo", "a/b", "x" * 65):
        with pytest.raises(ValueError, match="producer"):
            batch_key(T, producer, 0)
    for seq in (-1, 1.5, True):
        with pytest.raises(ValueError, match="sequence"):
            batch_key(T, None, seq)
    with pytest.raises(ValueError, match="must be a str"):
        parse_batch_key(None)
