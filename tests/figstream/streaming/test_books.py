"""The books per (stream, hour): what the ingest step books, and the imbalances the check finds.

Every figure here comes from the real steps (landing index, ingest, compaction) on a home of
three batches with duplicates within and across batches and a bad record delivered twice.
Imbalances are planted the ways they happen: a fragment lost, a dead letter lost, a batch's
books lost, a batch landed but not ingested yet (pending, not an imbalance).

Bad inputs tried for the books rows: counts that do not add up, negative counts, a null key,
a missing column (each refused with a message naming it).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_streaming_ingest import ARRIVAL, HOUR, posting

from figstream.ingest.landing import batch_key, parse_batch_key
from figstream.storage.books import BOOK_SCHEMA, conform_books
from figstream.storage.deadletter import deadletter_path
from figstream.streaming import books, compaction, ingest, landing_index
from figstream.streaming.stores import Stores, fragment_key

BAD = b'{"id": "x", "type": "job.posted"'
BATCHES = [
    [posting(1, 1), posting(2, 2), posting(1, 1), BAD],  # 2 kept, 1 duplicate, 1 dead letter
    [posting(3, 3), posting(2, 2), b"not json", BAD],  # 1 kept, 2 duplicates, 1 dead letter
    [posting(4, 4), posting(5, 5), posting(3, 3)],  # 2 kept, 1 duplicate
]


def land(stores: Stores, batches=BATCHES, start: int = 0) -> list[str]:
    keys = []
    for seq, lines in enumerate(batches, start):
        key = batch_key(ARRIVAL + timedelta(seconds=seq), "test", seq)
        stores.objects.put(key, b"\n".join(lines))
        keys.append(key)
    landing_index.index_landing(stores, "postings", keys)
    return keys


@pytest.fixture
def stores(tmp_path: Path) -> Stores:
    stores = Stores.local(tmp_path, "2026-10-01-00:00")
    keys = land(stores)
    ingest.ingest_range(stores, "postings", [HOUR], keys, run_id="run-1")
    return stores


def test_an_ingested_hour_balances_with_the_figures_of_each_outcome(stores):
    hour = books.hour_books(stores, "postings", HOUR)
    assert (hour.landed, hour.materialised, hour.dead_lettered, hour.duplicates) == (11, 5, 2, 4)
    assert (hour.batches, hour.pending, hour.difference) == (3, 0, 0)
    assert hour.balanced and hour.status == "balanced"
    assert hour.by_reason == {"malformed_json": 2}
    booked = books.books_for(stores.state).partition("postings", HOUR)
    assert booked["records"].to_pylist() == [4, 4, 3]
    assert booked["materialised"].to_pylist() == [2, 1, 2]
    assert set(booked["run_id"].to_pylist()) == {"run-1"}


def test_a_rerun_or_backfill_books_the_same_figures(stores):
    before = books.books_for(stores.state).partition("postings", HOUR).drop(["recorded_at"])
    ingest.ingest_range(stores, "postings", [HOUR], None, run_id="run-2")  # a backfill
    after = books.books_for(stores.state).partition("postings", HOUR)
    assert after.drop(["recorded_at", "run_id"]) == before.drop(["run_id"])
    assert books.hour_books(stores, "postings", HOUR).balanced


def test_a_lost_fragment_fails_naming_the_hour_the_batch_and_how_much(stores):
    key = sorted(stores.objects.list(f"tables/raw_events/{HOUR}/"))[0]
    stores.objects.delete(key)
    hour = books.hour_books(stores, "postings", HOUR)
    assert not hour.balanced and hour.status == "UNBALANCED"
    assert hour.difference == 2
    line = books.describe(hour)
    batch = key.rsplit("/", 1)[1].removesuffix(".parquet")
    assert line.startswith(f"postings {HOUR}: landed 11 = materialised 3")
    assert "(off by +2)" in line
    assert f"batch {batch}: no raw_events fragment, the ingest materialised 2 (-2)" in line


def test_a_fragment_with_a_row_too_many_fails(stores):
    key = sorted(stores.objects.list(f"tables/raw_events/{HOUR}/"))[-1]
    from figstream.storage.objects import read_parquet, write_parquet

    rows = read_parquet(stores.objects, key)
    write_parquet(stores.objects, key, pa.concat_tables([rows, rows.slice(0, 1)]))
    hour = books.hour_books(stores, "postings", HOUR)
    assert hour.difference == -1
    assert "raw_events holds 3 rows, the ingest materialised 2 (+1)" in books.describe(hour)


def test_a_runs_check_counts_its_own_fragments_and_lists_the_rest(stores, monkeypatch):
    """A streaming run's check (``counted``: the batches it wrote) reads only those footers;
    another batch's lost fragment is still found by the listing, its tampered row count only by
    a full count (``figstream books``)."""
    keys = sorted(stores.objects.list(f"tables/raw_events/{HOUR}/"))
    batch_of = [k.rsplit("/", 1)[1].removesuffix(".parquet") for k in keys]
    from figstream.storage.objects import read_parquet, write_parquet

    rows = read_parquet(stores.objects, keys[-1])
    write_parquet(stores.objects, keys[-1], pa.concat_tables([rows, rows.slice(0, 1)]))
    opened = []
    real_open = stores.objects.open
    monkeypatch.setattr(stores.objects, "open", lambda key: opened.append(key) or real_open(key))
    own = books.hour_books(stores, "postings", HOUR, counted={batch_of[0]})
    assert opened == [keys[0]], "only the run's own fragment is read"
    assert own.balanced and own.materialised == 5  # the tampered batch's books figure stands
    assert not books.hour_books(stores, "postings", HOUR).balanced  # a full count sees it
    stores.objects.delete(keys[1])
    own = books.hour_books(stores, "postings", HOUR, counted={batch_of[0]})
    assert not own.balanced and own.difference == 1
    assert f"batch {batch_of[1]}: no raw_events fragment, the ingest materialised 1 (-1)" in (
        books.describe(own)
    )


def test_a_lost_dead_letter_fails_with_the_stores_count(stores, tmp_path):
    with sqlite3.connect(deadletter_path(tmp_path)) as conn:
        conn.execute("DELETE FROM dead_letters WHERE id = (SELECT min(id) FROM dead_letters)")
    hour = books.hour_books(stores, "postings", HOUR)
    assert hour.difference == 1
    assert "the dead-letter store holds 1, the ingest dead-lettered 2 (-1)" in hour.problems


def test_lost_books_of_an_ingested_batch_show_it_pending_until_a_rerun_books_it(stores):
    first = books.books_for(stores.state).partition("postings", HOUR)["batch_id"][0].as_py()
    assert books.books_for(stores.state).delete("postings", HOUR, first) == 1
    hour = books.hour_books(stores, "postings", HOUR)
    assert (hour.pending_batches, hour.pending, hour.status) == (1, 4, "pending")
    assert hour.materialised == 3 and hour.dead_lettered == 1  # the booked batches' only
    ingest.ingest_range(stores, "postings", [HOUR], None)
    assert books.hour_books(stores, "postings", HOUR).status == "balanced"


def test_a_landed_batch_not_ingested_yet_is_pending_not_an_imbalance(stores):
    late = land(stores, [[posting(6, 6), BAD + b" "]], start=3)
    hour = books.hour_books(stores, "postings", HOUR)
    assert (hour.landed, hour.pending, hour.pending_batches) == (13, 2, 1)
    assert hour.balanced and hour.status == "pending" and hour.difference == 0
    assert books.pending_batches(stores, "postings", HOUR) == 1  # the keyed reads agree
    ingest.ingest_range(stores, "postings", [HOUR], late)
    hour = books.hour_books(stores, "postings", HOUR)
    assert (hour.landed, hour.materialised, hour.dead_lettered, hour.pending) == (13, 6, 3, 0)
    assert hour.status == "balanced"
    assert books.pending_batches(stores, "postings", HOUR) == 0


def test_a_batch_ingested_while_the_hour_is_read_is_read_again_not_reported(stores, monkeypatch):
    booked = books.books_for(stores.state).partition("postings", HOUR)  # read before it landed
    before = stores.state.batch_counts("postings", HOUR)
    late = land(stores, [[posting(6, 6), BAD + b" "]], start=3)
    ingest.ingest_range(stores, "postings", [HOUR], late)  # its fragment and dead letter
    real, calls = stores.state.batch_counts, []

    def racing(stream: str, partition: str) -> dict[str, int]:
        calls.append(partition)
        return before if len(calls) == 1 else real(stream, partition)

    monkeypatch.setattr(stores.state, "batch_counts", racing)
    hour = books.hour_books(stores, "postings", HOUR, booked)
    assert hour.balanced and (hour.landed, hour.dead_lettered) == (13, 3)
    assert len(calls) == 3  # the stale read, the check that the index moved, the fresh read


def test_a_compacted_hour_balances_and_a_lost_compacted_row_is_found(stores):
    report = compaction.compact_fragments(stores, ARRIVAL + timedelta(days=1), 3600)
    assert any(h.table == "raw_events" and h.fragments == 3 for h in report.hours)
    assert stores.objects.list(f"tables/raw_events/{HOUR}/") == [
        f"tables/raw_events/{HOUR}/compacted.parquet"
    ]
    assert books.hour_books(stores, "postings", HOUR).balanced
    # A re-run after compaction writes a loose fragment that overrides the compacted rows.
    ingest.ingest_range(stores, "postings", [HOUR], None)
    assert books.hour_books(stores, "postings", HOUR).balanced
    third = parse_batch_key(sorted(stores.state.batches_for("postings", HOUR))[2])[1]
    stores.objects.delete(fragment_key("raw_events", HOUR, third))  # compacted rows count again
    assert books.hour_books(stores, "postings", HOUR).balanced


def test_books_over_a_range_list_only_hours_that_landed_something(stores):
    hours = books.hours_between(ARRIVAL - timedelta(hours=2), ARRIVAL + timedelta(hours=2))
    assert hours[0] == "2026-11-02-08:00" and hours[-1] == "2026-11-02-12:00"
    found = books.books(stores, ["postings", "boards"], hours)
    assert [(h.stream, h.partition) for h in found] == [("postings", HOUR)]


def _rows(records, materialised, duplicates, dead_lettered, **overrides) -> pa.Table:
    row = {
        "stream": "postings", "partition_key": HOUR, "batch_id": "b1", "batch_key": "k",
        "records": records, "materialised": materialised, "duplicates": duplicates,
        "dead_lettered": dead_lettered, "run_id": None,
        "recorded_at": datetime(2026, 11, 2, tzinfo=UTC), **overrides,
    }  # fmt: skip
    loose = pa.schema([f.with_nullable(True) for f in BOOK_SCHEMA])  # conform_books judges nulls
    return pa.Table.from_pylist([row], schema=loose)


@given(st.lists(st.integers(0, 1000), min_size=3, max_size=3), st.integers(-3, 3))
def test_books_rows_must_add_up(parts, off):
    rows = _rows(sum(parts) + off, *parts)
    if sum(parts) + off < 0:  # refused first for the negative count
        with pytest.raises(ValueError, match="negative count"):
            conform_books(rows)
    elif off:
        with pytest.raises(ValueError, match="records != "):
            conform_books(rows)
    else:
        assert conform_books(rows).num_rows == 1


def test_bad_books_rows_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="negative count"):
        conform_books(_rows(0, 1, -1, 0))
    with pytest.raises(ValueError, match="'stream' has nulls"):
        conform_books(_rows(1, 1, 0, 0, stream=None))
    with pytest.raises(ValueError, match="missing column"):
        conform_books(_rows(1, 1, 0, 0).drop(["records"]))
