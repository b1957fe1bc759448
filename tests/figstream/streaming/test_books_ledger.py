"""The books ledger on both backends, call for call: SQLite in the state store's file, and the
DynamoDB table over real HTTP on moto server (``figstream aws setup`` creates it).

Cases: a row replaced under its key (a re-run), a range of hours in (partition, batch) order
whatever the write order, hours outside the range and other streams left out, a delete of one
batch's row, and rows that do not add up refused before anything is written.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from figstream.storage.books import BOOK_SCHEMA, BooksLedger, SqliteBooks


@pytest.fixture(params=["sqlite", "dynamodb"])
def ledger(request, tmp_path) -> BooksLedger:
    if request.param == "sqlite":
        return SqliteBooks(tmp_path / "figstream.sqlite")
    from figstream.storage.dynamo_books import DynamoBooks
    from figstream.storage.dynamo_state import ensure_tables

    config = request.getfixturevalue("aws_config")
    ensure_tables(config)
    return DynamoBooks(config)


def rows(*entries: tuple[str, str, str, int, int, int, int]) -> pa.Table:
    """(stream, partition, batch, records, materialised, duplicates, dead_lettered) each."""
    return pa.table(
        {
            "stream": [e[0] for e in entries],
            "partition_key": [e[1] for e in entries],
            "batch_id": [e[2] for e in entries],
            "batch_key": [f"landing/2026-11-02/{e[2]}.jsonl" for e in entries],
            **{name: [e[3 + i] for e in entries] for i, name in enumerate(BOOK_SCHEMA.names[4:8])},
            "run_id": pa.array(["run-1"] * len(entries), pa.string()),
            "recorded_at": pa.array([datetime(2026, 11, 2, tzinfo=UTC)] * len(entries)),
        }
    )


def test_a_range_of_hours_reads_back_in_order_and_a_rerun_replaces_its_row(ledger):
    ledger.record(rows(
        ("postings", "2026-11-02-11:00", "b2", 5, 4, 0, 1),
        ("postings", "2026-11-02-10:00", "b9", 3, 3, 0, 0),
        ("postings", "2026-11-02-10:00", "b1", 2, 1, 1, 0),
        ("postings", "2026-11-02-12:00", "b3", 1, 1, 0, 0),
        ("boards", "2026-11-02-10:00", "b1", 7, 7, 0, 0),
    ))  # fmt: skip
    ledger.record(rows(("postings", "2026-11-02-10:00", "b1", 2, 2, 0, 0)))  # a re-run
    got = ledger.rows("postings", "2026-11-02-10:00", "2026-11-02-11:00")
    assert got.schema == BOOK_SCHEMA
    assert list(zip(got["partition_key"].to_pylist(), got["batch_id"].to_pylist(),
                    got["materialised"].to_pylist(), strict=True)) == [
        ("2026-11-02-10:00", "b1", 2),
        ("2026-11-02-10:00", "b9", 3),
        ("2026-11-02-11:00", "b2", 4),
    ]  # fmt: skip
    assert ledger.partition("boards", "2026-11-02-10:00")["records"].to_pylist() == [7]
    assert ledger.partition("postings", "2026-11-02-09:00").num_rows == 0


def test_delete_forgets_one_batch_and_bad_rows_write_nothing(ledger):
    ledger.record(rows(("postings", "2026-11-02-10:00", "b1", 2, 1, 1, 0)))
    assert ledger.delete("postings", "2026-11-02-10:00", "b1") == 1
    assert ledger.delete("postings", "2026-11-02-10:00", "b1") == 0
    with pytest.raises(ValueError, match="3 records != 1 materialised"):
        ledger.record(rows(
            ("postings", "2026-11-02-10:00", "ok", 1, 1, 0, 0),
            ("postings", "2026-11-02-10:00", "b2", 3, 1, 1, 0),
        ))  # fmt: skip
    assert ledger.partition("postings", "2026-11-02-10:00").num_rows == 0
