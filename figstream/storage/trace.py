"""The trace index: every delivery of every event, keyed by event id, so ``figstream trace``
finds where one event went with a keyed read, never a scan.

The event-id claims cannot serve: they expire after ``claim_ttl_days`` (14) and hold only the
delivery that won. This index holds one row per delivery, keyed by (event id, batch id, line):
its partition and outcome (``materialised``; ``duplicate``, with the batch whose delivery
counted; ``dead_lettered``, with the reason code). What a batch's deliveries share (landing
key, stream, the Dagster run that ingested it) is one row per (batch, partition), so the row
the ingest step writes per event stays narrow: it is on the hot path (``bench/trace_bench.py``
measures what it adds). The ingest step writes a claim group's rows in one transaction after
its claims (:meth:`TraceIndex.record`); a retried run writes the same keys again, so the index
converges like every other write. What the event was (type, job, time) is read back from its
ingest fragment or dead letter, not kept twice.

A batch row names only the run that last ingested the batch; every run that ingested it (a
sensor run, then a backfill or replay of its hour) is kept in a run history, one row per
(batch, partition, run), written from the same batch rows: :meth:`TraceIndex.runs` gives a
batch's runs, :meth:`TraceIndex.run_batches` a run's batches of an hour, both keyed reads. That
is what lets ``figstream trace`` show each run's search-index change of the event's job.

Retention: a row expires ``TRACE_TTL_DAYS`` (90) after it was written, a horizon far past the
claims' and the landing archive's replay window; :meth:`TraceIndex.purge` deletes expired rows
(DynamoDB's TTL reaps them on aws), and a lookup never returns an expired row.

:class:`SqliteTraceIndex` keeps its tables in the state store's file (``WITHOUT ROWID``: the
rows live in the primary key's B-tree, so a lookup is one descent and a join on the batch's
key); the DynamoDB table is :class:`figstream.storage.dynamo_trace.DynamoTraceIndex`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from figstream.storage.sqlite import (
    BUSY_TIMEOUT_S,
    SIDE_CACHE_KIB,
    SqliteDatabase,
    chunks,
    conform,
    delete_in_slices,
    from_rows,
    json_list,
    now_us,
    to_rows,
)
from figstream.storage.state import id_list

TS = pa.timestamp("us", tz="UTC")
TRACE_TTL_DAYS = 90
TRACE_TTL_S = TRACE_TTL_DAYS * 86_400
OUTCOMES = ("materialised", "duplicate", "dead_lettered")
# One row per delivery of an event (a landed line); (event_id, batch_id, line_no) is the key.
# Narrow on purpose: the ingest step writes one per event, and what a batch's deliveries share
# is written once per (batch, partition) in BATCH_SCHEMA.
DELIVERY_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),
        pa.field("partition_key", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("counted_batch", pa.string()),  # a duplicate's: the delivery that counted
        pa.field("reason", pa.string()),  # the dead-letter reason code
    ]
)
BATCH_SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("partition_key", pa.string(), nullable=False),
        pa.field("batch_key", pa.string(), nullable=False),  # the landing object
        pa.field("stream", pa.string(), nullable=False),
        pa.field("run_id", pa.string()),  # the Dagster run that last ingested it; null outside one
        pa.field("recorded_at", TS, nullable=False),
    ]
)
# What a lookup returns: each delivery with its batch's facts, in (batch, line) order.
TRACE_SCHEMA = pa.schema([*DELIVERY_SCHEMA, *(f for f in BATCH_SCHEMA if f.name not in
                                                 ("batch_id", "partition_key"))])  # fmt: skip
_KEY = ("event_id", "batch_id", "line_no")
# The run history: every run that ingested a (batch, partition), oldest first; a null run_id
# is an ingest outside Dagster (one row for all of them: the latest).
RUN_SCHEMA = pa.schema(
    [BATCH_SCHEMA.field(n) for n in ("batch_id", "partition_key", "run_id", "recorded_at")]
)
NO_RUN = ""  # the run_id key of an ingest outside Dagster (a key column cannot be null)
# What materialised() returns: each event's materialised deliveries, where they went.
MATERIALISED_SCHEMA = pa.schema(
    [TRACE_SCHEMA.field(n) for n in ("event_id", "stream", "partition_key", "batch_id",
                                      "line_no")]
)  # fmt: skip


def check_outcomes(rows: pa.Table) -> None:
    bad = set(rows["outcome"].to_pylist()) - set(OUTCOMES)
    if bad:
        raise ValueError(f"trace rows: unknown outcome(s) {sorted(bad)}; expected {OUTCOMES}")


def conform_both(deliveries: pa.Table, batches: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Both tables checked (``ValueError`` says what is wrong); every delivery's (batch,
    partition) must be among ``batches``."""
    deliveries = conform(deliveries, DELIVERY_SCHEMA, "trace deliveries")
    batches = conform(batches, BATCH_SCHEMA, "trace batches")
    check_outcomes(deliveries)
    known = set(zip(batches["batch_id"].to_pylist(), batches["partition_key"].to_pylist(),
                    strict=True))  # fmt: skip
    pairs = set(zip(deliveries["batch_id"].to_pylist(), deliveries["partition_key"].to_pylist(),
                    strict=True))  # fmt: skip
    if pairs - known:
        raise ValueError(f"trace deliveries: batch(es) {sorted(pairs - known)[:3]} not given")
    return deliveries, batches


class TraceIndex(ABC):
    """Deliveries by event id: written by the ingest step, read by ``figstream trace``."""

    ttl_s: int = TRACE_TTL_S

    @abstractmethod
    def record(self, deliveries: pa.Table, batches: pa.Table) -> int:
        """Store ``deliveries`` (:data:`DELIVERY_SCHEMA`) and their ``batches``
        (:data:`BATCH_SCHEMA`); a row already held under its key is replaced. Returns how many
        deliveries were written."""

    @abstractmethod
    def deliveries(self, event_id: str, now: int | None = None) -> pa.Table:
        """Every unexpired delivery of ``event_id`` (:data:`TRACE_SCHEMA`), in (batch, line)
        order; empty when the index holds none."""

    @abstractmethod
    def materialised(self, event_ids: Sequence[str], since: int) -> pa.Table:
        """The ``materialised`` deliveries of ``event_ids`` (:data:`MATERIALISED_SCHEMA`)
        written at or after ``since`` (µs since the epoch), in no particular order: the
        ingest step's look-up of an event id across hours and streams (a keyed read per id,
        ``Query`` on DynamoDB), before it materialises a version of an event."""

    @abstractmethod
    def runs(self, batches: Sequence[tuple[str, str]], now: int | None = None) -> pa.Table:
        """Every unexpired run that ingested each of the (batch id, partition) pairs
        (:data:`RUN_SCHEMA`), by batch, partition, then ``recorded_at``; a pair recorded before
        the history existed has none (its batch row still names its last run)."""

    @abstractmethod
    def run_batches(self, run_id: str | None, partition: str, now: int | None = None) -> list[str]:
        """The batch ids ``run_id`` (None: outside Dagster) ingested in ``partition``, sorted."""

    @abstractmethod
    def purge(self, now: int | None = None, limit: int = 100_000) -> int:
        """Delete up to ``limit`` expired deliveries (and the expired run history); returns
        how many deliveries."""


def run_pairs(batches: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(batch id, partition) pairs checked and deduplicated, in the order given."""
    if isinstance(batches, str) or batches is None:
        raise TypeError("runs: batches must be an iterable of (batch id, partition) pairs")
    pairs = list(dict.fromkeys(tuple(p) for p in batches))
    if not all(len(p) == 2 and all(isinstance(v, str) for v in p) for p in pairs):
        raise ValueError("runs: each pair must be two strings (batch id, partition)")
    return pairs


def run_rows(batches: pa.Table) -> list[tuple[str, str, str, int]]:
    """The run-history rows (batch, partition, run or :data:`NO_RUN`, recorded_at in µs) of
    conformed batch rows."""
    return [
        (batch, partition, NO_RUN if run is None else run, at)
        for batch, partition, _, _, run, at in to_rows(batches)
    ]


def run_table(rows: Sequence[tuple[str, str, str, int]]) -> pa.Table:
    """Run-history rows back as :data:`RUN_SCHEMA` (:data:`NO_RUN` read as null)."""
    return from_rows([(b, p, None if r == NO_RUN else r, at) for b, p, r, at in rows], RUN_SCHEMA)


_DDL = """
CREATE TABLE IF NOT EXISTS event_trace (
    event_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    partition_key TEXT NOT NULL,
    outcome TEXT NOT NULL,
    counted_batch TEXT,
    reason TEXT,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, batch_id, line_no)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_batches (
    batch_id TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    stream TEXT NOT NULL,
    run_id TEXT,
    recorded_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (batch_id, partition_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_runs (
    batch_id TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (batch_id, partition_key, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_runs_by_run ON trace_runs (run_id, partition_key, batch_id)
"""
_INSERT = "INSERT OR REPLACE INTO event_trace VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_BATCH = "INSERT OR REPLACE INTO trace_batches VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_RUN = "INSERT OR REPLACE INTO trace_runs VALUES (?, ?, ?, ?, ?)"
_RUNS = (
    "SELECT r.batch_id, r.partition_key, r.run_id, r.recorded_at FROM trace_runs r"
    " JOIN (SELECT json_extract(value, '$[0]') AS batch_id,"
    " json_extract(value, '$[1]') AS partition_key FROM json_each(?)) p"
    " USING (batch_id, partition_key) WHERE r.expires_at > ?"
    " ORDER BY r.batch_id, r.partition_key, r.recorded_at"
)
_RUN_BATCHES = (
    "SELECT batch_id FROM trace_runs WHERE run_id = ? AND partition_key = ? AND expires_at > ?"
    " ORDER BY batch_id"
)
_SELECT = (
    "SELECT d.event_id, d.batch_id, d.line_no, d.partition_key, d.outcome, d.counted_batch,"
    " d.reason, b.batch_key, b.stream, b.run_id, b.recorded_at FROM event_trace d"
    " JOIN trace_batches b USING (batch_id, partition_key)"
    " WHERE d.event_id = ? AND d.expires_at > ? ORDER BY d.batch_id, d.line_no"
)

_MATERIALISED = (
    "SELECT d.event_id, b.stream, d.partition_key, d.batch_id, d.line_no FROM event_trace d"
    " JOIN trace_batches b USING (batch_id, partition_key)"
    " WHERE d.event_id IN (SELECT value FROM json_each(?)) AND d.outcome = 'materialised'"
    " AND d.expires_at >= ?"
)


class SqliteTraceIndex(TraceIndex):
    """The trace index in a SQLite file (locally: the state store's, ``figstream.sqlite``)."""

    def __init__(
        self, path: str | Path, busy_timeout: float = BUSY_TIMEOUT_S, ttl_s: int = TRACE_TTL_S
    ) -> None:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
            raise ValueError(f"ttl_s must be a positive number of seconds: {ttl_s!r}")
        self.path = Path(path)
        self.ttl_s = ttl_s
        self._db = SqliteDatabase(self.path, _DDL, busy_timeout, cache_kib=SIDE_CACHE_KIB)

    def __repr__(self) -> str:
        return f"SqliteTraceIndex({str(self.path)!r})"

    def record(self, deliveries: pa.Table, batches: pa.Table) -> int:
        deliveries, batches = conform_both(deliveries, batches)
        if deliveries.num_rows == 0:
            return 0
        # In key order: random event ids in arrival order would dirty a page of the B-tree each.
        deliveries = deliveries.sort_by([(name, "ascending") for name in _KEY])
        expires = now_us() + self.ttl_s * 1_000_000
        # One transaction: a group is bounded by the ingest step (CLAIM_GROUP_ROWS records).
        with self._db.write() as conn:
            conn.executemany(_INSERT_BATCH, [(*row, expires) for row in to_rows(batches)])
            conn.executemany(_INSERT_RUN, [(*row, expires) for row in run_rows(batches)])
            conn.executemany(_INSERT, [(*row, expires) for row in to_rows(deliveries)])
        return deliveries.num_rows

    def deliveries(self, event_id: str, now: int | None = None) -> pa.Table:
        if not isinstance(event_id, str):
            raise ValueError(f"event id must be a string, got {type(event_id).__name__}")
        with self._db.read() as conn:
            rows = conn.execute(_SELECT, (event_id, now_us() if now is None else now)).fetchall()
        return from_rows(rows, TRACE_SCHEMA)

    def materialised(self, event_ids: Sequence[str], since: int) -> pa.Table:
        ids = id_list(event_ids, "materialised")
        rows: list[tuple] = []
        # A row written at ``since`` expires ttl_s later; the rows' pages are the ones the
        # ingest step's record() dirties right after, through this same connection's cache.
        floor = since + self.ttl_s * 1_000_000
        with self._db.read() as conn:
            for chunk in chunks(ids, 20_000):
                rows += conn.execute(_MATERIALISED, (json_list(chunk), floor)).fetchall()
        return from_rows(rows, MATERIALISED_SCHEMA)

    def runs(self, batches: Sequence[tuple[str, str]], now: int | None = None) -> pa.Table:
        pairs = run_pairs(batches)
        stamp = now_us() if now is None else now
        rows: list[tuple] = []
        with self._db.read() as conn:
            for chunk in chunks(pairs, 20_000):
                rows += conn.execute(_RUNS, (json.dumps(chunk), stamp)).fetchall()
        return run_table(rows)

    def run_batches(self, run_id: str | None, partition: str, now: int | None = None) -> list[str]:
        if not isinstance(partition, str) or not (run_id is None or isinstance(run_id, str)):
            raise ValueError("run_batches: the run id and partition must be strings")
        run = NO_RUN if run_id is None else run_id
        stamp = now_us() if now is None else now
        with self._db.read() as conn:
            return [b for (b,) in conn.execute(_RUN_BATCHES, (run, partition, stamp))]

    def purge(self, now: int | None = None, limit: int = 100_000) -> int:
        # A scan of the table (no index on expires_at): a daily reap, off the ingest path.
        delete = (
            "DELETE FROM event_trace WHERE (event_id, batch_id, line_no) IN (SELECT"
            " event_id, batch_id, line_no FROM event_trace WHERE expires_at <= ? LIMIT ?)"
        )
        stamp = now_us() if now is None else now
        purged = delete_in_slices(self._db, delete, stamp, limit)
        with self._db.write() as conn:  # a handful a batch: no slices
            conn.execute("DELETE FROM trace_batches WHERE expires_at <= ?", (stamp,))
            conn.execute("DELETE FROM trace_runs WHERE expires_at <= ?", (stamp,))
        return purged
