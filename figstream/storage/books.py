"""The books: per (stream, hourly partition, landed batch), what the ingest step did with the
batch's records, so conservation (landed = materialised + dead-lettered + duplicates) is checked
per hour from a few durable rows, never by rescanning events.

The ingest step writes one row per batch it took for a partition (:meth:`BooksLedger.record`),
after the batch's fragment, dead letters and trace rows are written: records read (the lines of
the batch that belong to the stream and hour), materialised (rows in its fragment),
duplicates dropped and dead-lettered. A re-run of the batch (a retry, a backfill, a replay)
gets its own claims back and writes the same figures under the same key, so the row converges
like every other write. :mod:`figstream.streaming.books` compares these rows with the landing
index and with what actually landed (fragment row counts, the dead-letter store).

:class:`SqliteBooks` keeps its table in the state store's file (``WITHOUT ROWID``, keyed by
stream, partition and batch, so an hour's rows and a range of hours are one index range);
the DynamoDB table is :class:`figstream.storage.dynamo_books.DynamoBooks`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.sqlite import (
    BUSY_TIMEOUT_S,
    SIDE_CACHE_KIB,
    SqliteDatabase,
    conform,
    from_rows,
    to_rows,
)

TS = pa.timestamp("us", tz="UTC")
COUNTS = ("records", "materialised", "duplicates", "dead_lettered")
BOOK_SCHEMA = pa.schema(
    [
        pa.field("stream", pa.string(), nullable=False),
        pa.field("partition_key", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("batch_key", pa.string(), nullable=False),  # the landing object
        *(pa.field(name, pa.int64(), nullable=False) for name in COUNTS),
        pa.field("run_id", pa.string()),  # the Dagster run that booked it; null outside one
        pa.field("recorded_at", TS, nullable=False),
    ]
)


def conform_books(rows: pa.Table) -> pa.Table:
    """``rows`` as :data:`BOOK_SCHEMA`; ``ValueError`` when a column is missing, a key is null,
    a count is negative or a batch's counts do not add up to its records."""
    table = conform(rows, BOOK_SCHEMA, "books")
    for name in COUNTS:
        if table.num_rows and pc.min(table[name]).as_py() < 0:
            raise ValueError(f"books: column {name!r} has a negative count")
    parts = pc.add(pc.add(table["materialised"], table["duplicates"]), table["dead_lettered"])
    wrong = pc.not_equal(parts, table["records"])
    if table.num_rows and pc.any(wrong).as_py():
        bad = table.filter(wrong).slice(0, 1).to_pylist()[0]
        raise ValueError(
            f"books: batch {bad['batch_id']!r} of {bad['stream']}/{bad['partition_key']}: "
            f"{bad['records']} records != {bad['materialised']} materialised + "
            f"{bad['duplicates']} duplicates + {bad['dead_lettered']} dead-lettered"
        )
    return table


class BooksLedger(ABC):
    """Per (stream, partition, batch) ingest counts: written by the ingest step, read by the
    books check and ``figstream books``."""

    @abstractmethod
    def record(self, rows: pa.Table) -> int:
        """Store ``rows`` (:data:`BOOK_SCHEMA`); a row held under its (stream, partition,
        batch) is replaced. Returns how many were written."""

    @abstractmethod
    def rows(self, stream: str, first: str, last: str) -> pa.Table:
        """Every row of ``stream`` whose partition key is within ``first``..``last``
        (inclusive; hourly keys sort in time order), by partition then batch."""

    def partition(self, stream: str, partition_key: str) -> pa.Table:
        return self.rows(stream, partition_key, partition_key)

    @abstractmethod
    def delete(self, stream: str, partition_key: str, batch_id: str) -> int:
        """Forget one batch's row (an operator's repair; tests plant imbalances with it)."""


_DDL = """
CREATE TABLE IF NOT EXISTS ingest_books (
    stream TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    records INTEGER NOT NULL,
    materialised INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    dead_lettered INTEGER NOT NULL,
    run_id TEXT,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (stream, partition_key, batch_id)
) WITHOUT ROWID
"""
_INSERT = "INSERT OR REPLACE INTO ingest_books VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


class SqliteBooks(BooksLedger):
    """The books in a SQLite file (locally: the state store's, ``figstream.sqlite``)."""

    def __init__(self, path: str | Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._db = SqliteDatabase(self.path, _DDL, busy_timeout, cache_kib=SIDE_CACHE_KIB)

    def __repr__(self) -> str:
        return f"SqliteBooks({str(self.path)!r})"

    def record(self, rows: pa.Table) -> int:
        table = conform_books(rows)
        if table.num_rows == 0:
            return 0
        with self._db.write() as conn:  # a claim group's batches: a handful of rows
            conn.executemany(_INSERT, to_rows(table))
        return table.num_rows

    def rows(self, stream: str, first: str, last: str) -> pa.Table:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(BOOK_SCHEMA.names)} FROM ingest_books"
                " WHERE stream = ? AND partition_key BETWEEN ? AND ?"
                " ORDER BY partition_key, batch_id",
                (stream, first, last),
            ).fetchall()
        return from_rows(rows, BOOK_SCHEMA)

    def delete(self, stream: str, partition_key: str, batch_id: str) -> int:
        with self._db.write() as conn:
            return conn.execute(
                "DELETE FROM ingest_books WHERE stream = ? AND partition_key = ? AND batch_id = ?",
                (stream, partition_key, batch_id),
            ).rowcount
