"""A redelivery with the same event id but other content, through the real ingest step, on both
profiles (local: a directory and SQLite; aws: S3 and DynamoDB on moto server): it is
dead-lettered as ``conflicting_redelivery`` with the first delivery named, both versions are
kept (the first materialised, the second whole in the dead-letter store), and the books balance.

Bad inputs tried: a true duplicate beside a conflicting one in one batch, a second version in
the same hour, a second version whose event time moved to another hour, a redelivery of the
second version, the same batches ingested again (a retry) and the first hour backfilled after
the second, a third version, an upcast v2 delivery of a v1 event (not a conflict).
"""

from __future__ import annotations

import orjson
import pyarrow.compute as pc
import pytest

from figstream.ingest.publish import Publisher
from figstream.storage.deadletter import CONFLICTING_REDELIVERY
from figstream.streaming import books, ingest, landing_index, trace
from figstream.streaming.stores import Stores
from tests.figstream.trace.trace_cases import HOUR, TIME, posting

NEXT_HOUR = "2026-11-02-11:00"
FIRST = "2026-10-01-00:00"


@pytest.fixture(params=["local", "aws"])
def stores(request: pytest.FixtureRequest, tmp_path) -> Stores:
    if request.param == "local":
        return Stores.local(tmp_path, FIRST)
    from figstream.cli.aws import setup
    from figstream.ingest.routing import Router
    from figstream.settings import routing_path

    config = request.getfixturevalue("aws_config")
    setup(config, Router.from_file(routing_path()))
    return Stores.aws(config, FIRST)


def land(stores: Stores, *batches: list[dict]) -> list[str]:
    """Publish each batch and index it; the landing keys, in order."""
    publisher = Publisher(stores.objects, producer="test")
    keys = []
    for records in batches:
        landed = publisher.publish(records)
        landing_index.index_landing(stores, "postings", landed)
        keys += landed
    return keys


def line_of(stores: Stores, key: str, line_no: int) -> bytes:
    return stores.objects.get(key).split(b"\n")[line_no - 1]


def batch_id(key: str) -> str:
    return key.rsplit("/", 1)[1].removesuffix(".jsonl")


def raw_events(stores: Stores, hour: str) -> list[tuple[str, str]]:
    """(event id, title) of every materialised event of ``hour``."""
    from figstream.storage.objects import read_parquet

    rows = []
    for key in stores.objects.list(f"tables/raw_events/{hour}/"):
        table = read_parquet(stores.objects, key)
        rows += zip(table["event_id"].to_pylist(), table["title"].to_pylist(), strict=True)
    return sorted(rows)


def assert_balanced(stores: Stores, hour: str, **expected: int) -> books.HourBooks:
    got = books.hour_books(stores, "postings", hour)
    assert got.balanced, got.problems
    assert got.landed == got.materialised + got.dead_lettered + got.duplicates
    assert {k: getattr(got, k) for k in expected} == expected
    return got


def test_a_second_version_in_the_same_hour_is_dead_lettered_and_both_are_kept(stores):
    first = posting("ev-1", "job-1")
    second = posting("ev-1", "job-1", title="Changed Title")
    keys = land(
        stores,
        [first, posting("ev-2", "job-2")],
        [first, second],  # a true duplicate, then a conflicting redelivery
        [second],  # the second version again: a duplicate of its first delivery
    )
    report = ingest.ingest_range(stores, "postings", [HOUR], keys).totals
    assert (report.records, report.materialised, report.dead_lettered, report.duplicates) == (
        5, 2, 1, 2,
    )  # fmt: skip
    assert report.conflicting == 1
    # The first version stays materialised, once.
    assert raw_events(stores, HOUR) == [("ev-1", "Trace Engineer"), ("ev-2", "Trace Engineer")]
    # The second is kept whole in the dead-letter store, with its own reason.
    (letter,) = stores.dead_letters.list(limit=None)
    assert (letter.code, letter.batch_id, letter.line_no) == (
        CONFLICTING_REDELIVERY, batch_id(keys[1]), 2,
    )  # fmt: skip
    assert letter.payload == line_of(stores, keys[1], 2)
    assert orjson.loads(letter.payload)["data"]["title"] == "Changed Title"
    landed = stores.objects.get(keys[1])
    digests = ingest.content_digests(
        ingest.validate_batch(landed, keys[1], "postings", HOUR, stores.router, FIRST).valid
    )
    assert digests[0] != digests[1]
    # The detail names the first delivery (batch and line) and both digests.
    assert f"{batch_id(keys[0])}:1" in letter.detail
    assert digests[0] in letter.detail and digests[1] in letter.detail
    assert_balanced(stores, HOUR, landed=5, materialised=2, dead_lettered=1, duplicates=2)
    assert books.hour_books(stores, "postings", HOUR).by_reason == {CONFLICTING_REDELIVERY: 1}
    # Every delivery of ev-1 is traced: where each went.
    delivered = trace.index_for(stores.state).deliveries("ev-1").to_pylist()
    assert [(d["batch_id"], d["line_no"], d["outcome"], d["counted_batch"]) for d in delivered] == [
        (batch_id(keys[0]), 1, "materialised", None),
        (batch_id(keys[1]), 1, "duplicate", batch_id(keys[0])),
        (batch_id(keys[1]), 2, "dead_lettered", None),
        (batch_id(keys[2]), 1, "duplicate", batch_id(keys[1])),
    ]
    assert delivered[2]["reason"] == CONFLICTING_REDELIVERY

    # A retry (the same batches again) decides the same way: nothing new anywhere.
    again = ingest.ingest_range(stores, "postings", [HOUR], keys).totals
    assert (again.materialised, again.dead_lettered, again.duplicates) == (2, 1, 2)
    assert raw_events(stores, HOUR) == [("ev-1", "Trace Engineer"), ("ev-2", "Trace Engineer")]
    assert stores.dead_letters.count() == 1
    assert_balanced(stores, HOUR, landed=5, materialised=2, dead_lettered=1, duplicates=2)


def test_a_second_version_in_another_hour_is_dead_lettered_there(stores):
    first = posting("ev-9", "job-9")
    moved = {**posting("ev-9", "job-9"), "time": TIME.replace("T10:", "T11:")}
    keys = land(stores, [first, posting("ev-3", "job-3")], [moved, moved])
    ingest.ingest_range(stores, "postings", [HOUR], keys[:1])
    report = ingest.ingest_range(stores, "postings", [NEXT_HOUR], keys[1:]).totals
    assert (report.materialised, report.dead_lettered, report.duplicates) == (0, 1, 1)
    assert raw_events(stores, HOUR) == [("ev-3", "Trace Engineer"), ("ev-9", "Trace Engineer")]
    assert raw_events(stores, NEXT_HOUR) == []
    (letter,) = stores.dead_letters.list(limit=None)
    assert (letter.code, letter.partition_key, letter.line_no) == (
        CONFLICTING_REDELIVERY, NEXT_HOUR, 1,
    )  # fmt: skip
    assert letter.payload == line_of(stores, keys[1], 1)
    assert f"{batch_id(keys[0])}:1 (postings {HOUR}" in letter.detail
    assert_balanced(stores, HOUR, landed=2, materialised=2, dead_lettered=0, duplicates=0)
    assert_balanced(stores, NEXT_HOUR, landed=2, materialised=0, dead_lettered=1, duplicates=1)

    # A retry of the second hour, then a backfill of the first: each keeps its decision.
    ingest.ingest_range(stores, "postings", [NEXT_HOUR], None)
    ingest.ingest_range(stores, "postings", [HOUR], None)
    assert raw_events(stores, HOUR) == [("ev-3", "Trace Engineer"), ("ev-9", "Trace Engineer")]
    assert raw_events(stores, NEXT_HOUR) == []
    assert stores.dead_letters.count() == 1
    assert_balanced(stores, NEXT_HOUR, landed=2, materialised=0, dead_lettered=1, duplicates=1)

    # A third version, back in the first hour: a conflict with the first version's claim.
    third = posting("ev-9", "job-9", salary_max=99_000)
    more = land(stores, [third])
    ingest.ingest_range(stores, "postings", [HOUR], more)
    codes = pc.value_counts(
        pc.cast([d.code for d in stores.dead_letters.list(limit=None)], "string")
    ).to_pylist()
    assert codes == [{"values": CONFLICTING_REDELIVERY, "counts": 2}]
    assert_balanced(stores, HOUR, landed=3, materialised=2, dead_lettered=1, duplicates=0)


def test_a_v2_delivery_of_a_v1_event_is_the_same_event(tmp_path):
    stores = Stores.local(tmp_path, FIRST)
    v1 = posting("ev-5", "job-5")
    keys = land(stores, [v1])
    batch = ingest.validate_batch(
        stores.objects.get(keys[0]), keys[0], "postings", HOUR, stores.router, FIRST
    )
    valid = batch.valid
    # The same upcast content delivered as another schema version, in another batch and line.
    other = valid.set_column(valid.schema.get_field_index("version"), "version",
                             pc.add(valid["version"], 1))  # fmt: skip
    other = other.set_column(other.schema.get_field_index("line_no"), "line_no",
                             pc.add(valid["line_no"], 4))  # fmt: skip
    assert ingest.content_digests(valid) == ingest.content_digests(other)
    changed = valid.set_column(valid.schema.get_field_index("title"), "title",
                               pc.utf8_upper(valid["title"]))  # fmt: skip
    assert ingest.content_digests(valid) != ingest.content_digests(changed)
