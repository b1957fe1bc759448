"""Hostile input: every bad event of the labelled corpus (``hostile_corpus.CASES``) gets its own
specific reason code, from ``validate``, from the vectorised ``parse_batches`` (each stage
forced to take every line it can), and through the real ingest of landed batches, where the
run does not fail, every good event of the same batches lands, each bad one is dead-lettered
with its code, and the hour's books balance.

Bad inputs: truncated and non-JSON lines, invalid UTF-8, a BOM, NUL and other control
characters raw and escaped (in the envelope and in data), huge fields and events over 256 KB,
wrong types, missing fields, an extra envelope field, unknown types and versions, times far in
the future and past, without an offset or impossible, ints beyond int64 and uint64, NaN,
Infinity, float overflow, deep nesting, duplicate keys, path traversal, separators, control
characters and reserved prefixes in the id and the source, traversal and injection in data.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from hostile_corpus import (
    ARRIVAL,
    CASES,
    EXTRA_DATA_FIELD,
    FIRST_PARTITION,
    HOUR,
    STAGES,
    first_stage,
    good_events,
    mixed_batches,
)

from figstream.events.envelope import Envelope
from figstream.events.validation import REASON_CODES, Rejection, validate
from figstream.ingest.landing import batch_key, parse_batch_key
from figstream.storage.objects import read_parquet
from figstream.streaming import books, ingest, landing_index
from figstream.streaming.parse import parse_batches
from figstream.streaming.stores import Stores

# Codes the ingest step gives valid events (not the validator): tested through ingest,
# ``tests/figstream/streaming/test_streaming_ingest.py``.
INGEST_CODES = {"time_outside_window"}


def test_the_corpus_is_labelled_and_covers_the_kinds_asked_for():
    labels = [case.label for case in CASES]
    assert len(labels) == len(set(labels)) >= 30
    assert set(REASON_CODES) >= INGEST_CODES
    assert {case.code for case in CASES} <= set(REASON_CODES) - INGEST_CODES
    # Each code the corruption of an envelope or of data can lead to is exercised.
    assert set(REASON_CODES) - INGEST_CODES <= {case.code for case in CASES}
    assert len({case.line for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.label for case in CASES])
def test_validate_gives_each_case_its_code(case):
    result = validate(case.line)
    assert isinstance(result, Rejection), result
    assert result.code == case.code, result
    assert result.detail


def test_extra_data_fields_are_allowed():
    """A producer may add a field to data before consumers read it: refusing it would make
    every additive schema change a coordinated, downtime-bearing release."""
    result = validate(EXTRA_DATA_FIELD)
    assert isinstance(result, Envelope) and result.data["benefits"] == ["dental"]


@pytest.mark.parametrize("stage", STAGES)
def test_parse_batches_rejects_each_case_as_validate_does(stage):
    batches = [
        (f"b{i}", b"\n".join(line for line, _ in lines))
        for i, lines in enumerate(mixed_batches(good_events(300), 3))
    ]
    expected = {
        (f"b{i}", n): code
        for i, lines in enumerate(mixed_batches(good_events(300), 3))
        for n, (_, code) in enumerate(lines, start=1)
    }
    with first_stage(stage):
        parsed = parse_batches(batches)
    got = {
        (r["batch_id"], r["line_no"]): (r["code"], r["event_id"])
        for r in parsed.rejected.to_pylist()
    }
    valid = set(
        zip(parsed.valid["batch_id"].to_pylist(), parsed.valid["line_no"].to_pylist(), strict=True)
    )
    assert {k: v[0] for k, v in got.items()} == {k: c for k, c in expected.items() if c}
    assert valid == {k for k, c in expected.items() if c is None}
    assert parsed.records == len(expected)
    # An unsafe id never becomes a dead letter's key or a trace's.
    for key, (_, event_id) in got.items():
        assert event_id is None or not {"/", "\\", "\x00", " ", "\n"} & set(event_id), key


def test_ingest_lands_every_good_event_and_dead_letters_each_bad_one(tmp_path: Path):
    stores = Stores.local(tmp_path, FIRST_PARTITION)
    good = good_events(400)
    dealt = mixed_batches(good, 4)
    keys, expected = [], {}
    for seq, lines in enumerate(dealt):
        key = batch_key(ARRIVAL + timedelta(seconds=seq), "hostile", seq)
        stores.objects.put(key, b"\n".join(line for line, _ in lines) + b"\n")
        keys.append(key)
        _, batch_id = parse_batch_key(key)
        for n, (_, code) in enumerate(lines, start=1):
            expected[(batch_id, n)] = code
    streams = sorted(stores.router.streams)
    for stream in streams:
        landing_index.index_landing(stores, stream, keys)

    reports = [ingest.ingest_range(stores, s, [HOUR], keys, run_id="hostile") for s in streams]

    ids = [
        event_id
        for key in stores.objects.list(f"tables/raw_events/{HOUR}/")
        for event_id in read_parquet(stores.objects, key)["event_id"].to_pylist()
    ]
    good_ids = [orjson.loads(line)["id"] for line in [*good, EXTRA_DATA_FIELD]]
    assert sorted(ids) == sorted(good_ids)  # each good event once, none of the bad ones
    letters = {(d.batch_id, d.line_no): d.code for d in stores.dead_letters.list(limit=None)}
    assert letters == {k: c for k, c in expected.items() if c}
    total = sum(r.totals.records for r in reports)
    assert total == len(expected) == len(ids) + len(letters)
    hour = books.hour_books(stores, "postings", HOUR)
    assert hour.balanced and hour.difference == 0, books.describe(hour)
    assert (hour.landed, hour.materialised, hour.dead_lettered) == (
        len(expected),
        len(good_ids),
        len(CASES),
    )
    assert hour.by_reason == dict(Counter(case.code for case in CASES))
