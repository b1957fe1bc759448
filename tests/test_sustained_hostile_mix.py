"""The sustained bench's hostile trickle (``bench/hostile_mix.py``): the share it is asked for,
every planted corpus line unique and given its expected reason code by the validator and by the
vectorised parser, conflicting redeliveries that share an id with other content, and, through
the real ingest of landed batches, each planted line dead-lettered with its expected code and
each exact redelivery dropped as a duplicate, with the hour's books balanced.
"""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from figstream.events.validation import Rejection, validate
from figstream.ingest.landing import batch_key, parse_batch_key
from figstream.storage.deadletter import CONFLICTING_REDELIVERY
from figstream.streaming import books, ingest, landing_index
from figstream.streaming.parse import parse_batches
from figstream.streaming.stores import Stores
from tests.hostile.hostile_corpus import ARRIVAL, CASES, FIRST_PARTITION, HOUR, good_events

# The bench runs with bench/ on sys.path (``.venv/bin/python bench/sustained_bench.py``).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
hostile_mix = importlib.import_module("hostile_mix")

STAMP = b"2026-11-02T10:20:00.000001Z"  # in HOUR, before ARRIVAL


def originals() -> list[bytes]:
    lines = hostile_mix.redelivery_candidates(b"\n".join(good_events(40)))
    assert lines and all(orjson.loads(line)["type"] == "job.posted" for line in lines)
    return lines


def test_the_trickle_rate_gives_the_asked_share_of_what_lands():
    for rate, percent in ((2000.0, 1.0), (500.0, 5.0), (2000.0, 0.0)):
        hostile = hostile_mix.trickle_rate(rate, percent)
        assert hostile / (rate + hostile) == pytest.approx(percent / 100)
    with pytest.raises(ValueError):
        hostile_mix.trickle_rate(2000.0, 100.0)


def test_the_mix_deals_every_case_and_one_redelivery_of_each_kind_in_ten():
    mix = hostile_mix.HostileMix()
    mix.offer(originals())
    planted = list(mix.lines(len(CASES) * 10, STAMP))
    kinds = Counter(what.label for _, what in planted)
    assert kinds[hostile_mix.CONFLICTING] == kinds[hostile_mix.EXACT] == len(CASES)
    corpus = {label: n for label, n in kinds.items() if label not in
              (hostile_mix.CONFLICTING, hostile_mix.EXACT)}  # fmt: skip
    assert set(corpus) == {case.label for case in CASES}
    assert max(corpus.values()) - min(corpus.values()) <= 1  # round-robin
    # Every planted corpus line differs: a bad record landed twice would be one bad event.
    bad = [line for line, what in planted if what.label in corpus]
    assert len(set(bad)) == len(bad)


def test_each_planted_line_gets_its_expected_code_from_the_validator_and_the_parser():
    mix = hostile_mix.HostileMix()  # no originals: every slot is a corpus case
    planted = list(mix.lines(len(CASES) * 3, STAMP))
    assert {what.label for _, what in planted} == {case.label for case in CASES}
    for line, what in planted:
        result = validate(line)
        assert isinstance(result, Rejection) and result.code == what.code, (what, result)
    parsed = parse_batches([("b0", b"\n".join(line for line, _ in planted))])
    got = {r["line_no"]: r["code"] for r in parsed.rejected.to_pylist()}
    assert got == {n: what.code for n, (_, what) in enumerate(planted, start=1)}
    assert parsed.valid.num_rows == 0


def test_conflicting_redeliveries_share_an_id_and_time_with_other_content():
    good = originals()
    for serial, line in enumerate(good):
        again = hostile_mix.conflicting(line, serial)
        first, second = orjson.loads(line), orjson.loads(again)
        assert second["id"] == first["id"] and second["time"] == first["time"]
        assert second["data"] != first["data"]
        assert validate(again).id == first["id"]  # valid: only the content conflicts


def test_through_the_ingest_each_planted_line_is_dead_lettered_as_expected(tmp_path: Path):
    stores = Stores.local(tmp_path, FIRST_PARTITION)
    source = b"\n".join(good_events(40)) + b"\n"
    mix = hostile_mix.HostileMix()
    mix.offer(originals())
    planted = list(mix.lines(len(CASES) + 40, STAMP))
    keys = [
        batch_key(ARRIVAL, "source", 0),
        batch_key(ARRIVAL + timedelta(seconds=1), "bench-hostile", 1),
    ]
    stores.objects.put(keys[0], source)
    stores.objects.put(keys[1], b"\n".join(line for line, _ in planted) + b"\n")
    streams = sorted(stores.router.streams)
    for stream in streams:
        landing_index.index_landing(stores, stream, keys)
    # The source's batch first, as the bench offers only lines of batches already ingested.
    for key in keys:
        for stream in streams:
            ingest.ingest_range(stores, stream, [HOUR], [key], run_id="mix")

    hostile_id = parse_batch_key(keys[1])[1]
    letters = {
        d.line_no: d.code for d in stores.dead_letters.list(limit=None) if d.batch_id == hostile_id
    }
    expected = {n: what.code for n, (_, what) in enumerate(planted, start=1) if what.code}
    assert letters == expected
    assert CONFLICTING_REDELIVERY in letters.values()
    hour = books.hour_books(stores, "postings", HOUR)
    assert hour.balanced and hour.difference == 0 and hour.pending == 0, books.describe(hour)
    exact = sum(what.label == hostile_mix.EXACT for _, what in planted)
    assert exact and hour.duplicates == exact
