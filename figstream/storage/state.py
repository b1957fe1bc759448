"""Fast state: current job rows, event claims, the landing index.

:class:`StateStore` is the interface; :class:`SqliteStateStore` is the local implementation and
a DynamoDB one will follow (each write below is one conditional write per item there).

Dagster runs in separate processes and CLI commands use one database at the same time, so:

* the database is in WAL mode (readers never wait for the writer) with a busy timeout, and
  each call opens its own short-lived connection (safe across threads, forks and pickling);
* writes take the write lock up front (``BEGIN IMMEDIATE``: a deferred transaction that
  upgrades can fail with "database is locked" without waiting) and commit every
  ``CHUNK_ROWS`` rows, so no transaction holds the lock for long;
* every write is idempotent per row (and, but for event claims, order-insensitive), which is
  what makes chunked commits, retries and concurrent writers safe: a partially applied call
  converges to the same state once it is retried, whatever else ran in between.

Semantics:

* :meth:`StateStore.upsert_jobs`: last writer wins per ``job_id`` by
  ``(last_event_time, last_event_id)``; a row replaces the stored one only when its pair is
  strictly greater. Event ids are unique per event, so a pair names one event and the state
  derived from it; two *different* rows with the same job and pair would be a producer bug,
  and then the first one stored stays.
* :meth:`StateStore.claim_batches`: the first batch to claim an event id owns it for good, so
  a redelivered event is materialised from one batch only, and a re-run of the owning batch
  (after a crash between claim and write) still owns it. Which of two batches holding the
  same event owns it depends on which ran first; the event is the same either way.
* :meth:`StateStore.index_batches`: a landed batch is immutable, so re-indexing the same
  entry changes nothing and a different record count for it is refused.

The store is a serving projection: it keeps the row that decided each job's status, not the
components it was derived from. Rows must come from the full per-job state
(:func:`figstream.streaming.table_ops.apply_job_state`, converted by :func:`job_state_rows`).

Times are stored as integer microseconds since the Unix epoch (UTC), so they round-trip
exactly as ``timestamp[us, tz=UTC]``.

Bad inputs tried (see ``tests/figstream/storage/test_state.py``): missing columns, nulls in key
columns, an unknown status, a non-numeric salary, naive timestamps, nanosecond times that
would lose precision, conflicting record counts for one landed batch, an empty table, text
with NUL and non-ASCII characters, times before 1970, one string (or a null) where a list of
ids belongs, 50,000 ids in one filter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from figstream.settings import data_home
from figstream.storage.sqlite import (
    BUSY_TIMEOUT_S,
    SqliteDatabase,
    chunks,
    conform,
    from_rows,
    json_list,
    now_us,
    to_rows,
)

TS = pa.timestamp("us", tz="UTC")
STATUSES = ("active", "expired", "merged")

JOB_STATE_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("board", pa.string()),
        pa.field("title", pa.string()),
        pa.field("company", pa.string()),
        pa.field("location", pa.string()),
        pa.field("employment_type", pa.string()),
        pa.field("remote", pa.bool_()),
        pa.field("salary_min", pa.int64()),
        pa.field("salary_max", pa.int64()),
        pa.field("currency", pa.string()),
        pa.field("url", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("posted_at", TS),
        pa.field("updated_at", TS),
        pa.field("expired_at", TS),
        pa.field("reason", pa.string()),
        pa.field("merged_into", pa.string()),
        pa.field("last_event_time", TS, nullable=False),
        pa.field("last_event_id", pa.string(), nullable=False),
    ]
)


def state_path(home: Path | None = None) -> Path:
    """``$FIGSTREAM_HOME/state/figstream.sqlite``."""
    return (home or data_home()) / "state" / "figstream.sqlite"


# --- the interface ------------------------------------------------------------------------------


class StateStore(ABC):
    @abstractmethod
    def upsert_jobs(self, rows: pa.Table) -> int:
        """Store job rows (:data:`JOB_STATE_SCHEMA`), last writer wins per job_id by
        (last_event_time, last_event_id). Returns the number of rows inserted or replaced."""

    @abstractmethod
    def jobs(
        self,
        *,
        board: str | None = None,
        job_ids: Iterable[str] | None = None,
        status: str | None = None,
    ) -> pa.Table:
        """Stored job rows matching every filter given, sorted by job_id."""

    @abstractmethod
    def claim_batches(self, claims: Sequence[tuple[str, Iterable[str]]]) -> list[dict[str, str]]:
        """Claim the event ids of landed batches, given as (batch_id, event_ids), first
        claimant wins; a batch claiming again (a retry, a backfill) gets its own claims back.
        An earlier entry claims first, and the call takes as few round trips as the store
        allows. Returns, per entry, the owning batch of each distinct id given."""

    @abstractmethod
    def index_batches(self, stream: str, entries: Iterable[tuple[str, str, int]]) -> int:
        """Record (partition_key, batch_key, record_count) entries of landed batches.
        Returns the number of entries not indexed before."""

    @abstractmethod
    def batches_for(self, stream: str, partition_key: str) -> list[str]:
        """Batch keys indexed under a partition, sorted."""

    @abstractmethod
    def batch_counts(self, stream: str, partition_key: str) -> dict[str, int]:
        """Record count per batch key indexed under a partition (events in, for conservation)."""

    @abstractmethod
    def partitions_for(self, stream: str, batch_key: str) -> list[str]:
        """Partition keys a batch was indexed under, sorted."""

    @abstractmethod
    def indexed_batches(self, stream: str) -> set[str]:
        """Every batch key indexed for ``stream``, including batches with none of its records
        (indexed under the partition ``""``)."""


def job_state_rows(state: pa.Table) -> pa.Table:
    """Job rows of a :func:`figstream.streaming.table_ops.apply_job_state` table in
    :data:`JOB_STATE_SCHEMA` (merger rows dropped, ``expired_reason`` renamed ``reason``)."""
    if "kind" in state.column_names:
        state = state.filter(pc.equal(state["kind"], "job"))
    if "reason" not in state.column_names and "expired_reason" in state.column_names:
        names = ["reason" if n == "expired_reason" else n for n in state.column_names]
        state = state.rename_columns(names)
    return conform(state, JOB_STATE_SCHEMA, "job state")


# --- SQLite -------------------------------------------------------------------------------------

_JOB_COLUMNS = JOB_STATE_SCHEMA.names
# No index on status alone (dropped where an older file has one): most jobs share one of three
# statuses, so a status query scans the table as fast, and every upsert sets status, so the
# index cost a delete and an insert a row (57k rows into 427k jobs: 1.8-2.6 s with it, 1.4-1.5
# without, in executemany).
_DDL = f"""
CREATE TABLE IF NOT EXISTS job_state (
    job_id TEXT PRIMARY KEY NOT NULL,
    board TEXT, title TEXT, company TEXT, location TEXT, employment_type TEXT,
    remote INTEGER, salary_min INTEGER, salary_max INTEGER, currency TEXT, url TEXT,
    status TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    posted_at INTEGER, updated_at INTEGER, expired_at INTEGER, reason TEXT, merged_into TEXT,
    last_event_time INTEGER NOT NULL, last_event_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_state_board ON job_state (board, status);
DROP INDEX IF EXISTS job_state_status;
CREATE TABLE IF NOT EXISTS event_claims (
    event_id TEXT PRIMARY KEY NOT NULL,
    batch_id TEXT NOT NULL,
    claimed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS landing_index (
    stream TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    record_count INTEGER NOT NULL,
    indexed_at INTEGER NOT NULL,
    PRIMARY KEY (stream, partition_key, batch_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS landing_index_batch ON landing_index (stream, batch_key);
"""

_UPSERT_JOB = f"""
INSERT INTO job_state ({", ".join(_JOB_COLUMNS)}) VALUES ({", ".join("?" * len(_JOB_COLUMNS))})
ON CONFLICT (job_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _JOB_COLUMNS[1:])}
WHERE (excluded.last_event_time, excluded.last_event_id)
    > (job_state.last_event_time, job_state.last_event_id)
"""


class SqliteStateStore(StateStore):
    def __init__(self, path: str | Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._db = SqliteDatabase(self.path, _DDL, busy_timeout)

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self.path)!r})"

    def upsert_jobs(self, rows: pa.Table) -> int:
        table = conform(rows, JOB_STATE_SCHEMA, "upsert_jobs")
        bad = pc.invert(pc.is_in(table["status"], pa.array(STATUSES)))
        if pc.any(bad).as_py():
            unknown = sorted(set(table["status"].filter(bad).to_pylist()))
            raise ValueError(f"upsert_jobs: status must be one of {STATUSES}, got {unknown}")
        changed = 0
        for chunk in chunks(to_rows(table)):
            with self._db.write() as conn:
                changed += conn.executemany(_UPSERT_JOB, chunk).rowcount
        return changed

    def jobs(
        self,
        *,
        board: str | None = None,
        job_ids: Iterable[str] | None = None,
        status: str | None = None,
    ) -> pa.Table:
        where, params = [], []
        if board is not None:
            where.append("board = ?")
            params.append(board)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if job_ids is not None:
            if isinstance(job_ids, str):
                raise TypeError("job_ids must be an iterable of ids, not one string")
            where.append("job_id IN (SELECT value FROM json_each(?))")
            params.append(json_list(job_ids))
        sql = f"SELECT {', '.join(_JOB_COLUMNS)} FROM job_state"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY job_id", params).fetchall()
        return from_rows(rows, JOB_STATE_SCHEMA)

    def claim_batches(self, claims: Sequence[tuple[str, Iterable[str]]]) -> list[dict[str, str]]:
        wanted = []
        for _, event_ids in claims:
            if isinstance(event_ids, str):
                raise TypeError("event_ids must be an iterable of ids, not one string")
            ids = list(dict.fromkeys(event_ids))
            if not all(isinstance(i, str) for i in ids):
                raise ValueError("claim_batches: event ids must be non-null strings")
            wanted.append(ids)
        stamp = now_us()
        # Inserted in event-id order (stable, so of two batches in this call holding one id the
        # earlier still claims it first): random ids in arrival order dirty a page of the
        # B-tree an id, spilled from the cache and dirtied again, as the table grows.
        inserts = sorted(
            ((event_id, claims[i][0]) for i, ids in enumerate(wanted) for event_id in ids),
            key=lambda pair: pair[0],
        )
        owners: dict[str, str] = {}
        # One write transaction, so one commit and fsync, for all the batches; the write lock
        # is held a few milliseconds per thousand ids.
        with self._db.write() as conn:
            for chunk in chunks(inserts):
                inserted = conn.executemany(
                    "INSERT INTO event_claims VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    [(event_id, batch_id, stamp) for event_id, batch_id in chunk],
                ).rowcount
                if inserted == len(chunk):  # every id new: each is its inserting batch's
                    owners.update(chunk)
                    continue
                owners.update(
                    conn.execute(
                        "SELECT event_id, batch_id FROM event_claims"
                        " WHERE event_id IN (SELECT value FROM json_each(?))",
                        (json_list(event_id for event_id, _ in chunk),),
                    ).fetchall()
                )
        return [{event_id: owners[event_id] for event_id in ids} for ids in wanted]

    def index_batches(self, stream: str, entries: Iterable[tuple[str, str, int]]) -> int:
        wanted: dict[tuple[str, str], int] = {}
        for partition_key, batch_key, record_count in entries:
            if not (isinstance(partition_key, str) and isinstance(batch_key, str)):
                raise ValueError("index_batches: partition and batch keys must be strings")
            if isinstance(record_count, bool) or not isinstance(record_count, int):
                raise ValueError(f"index_batches: record_count of {batch_key!r} is not an int")
            if record_count < 0:
                raise ValueError(f"index_batches: record_count of {batch_key!r} is negative")
            key = (partition_key, batch_key)
            if wanted.setdefault(key, record_count) != record_count:
                raise ValueError(f"index_batches: two record counts for {key}")
        items = list(wanted.items())
        added = 0
        stamp = now_us()
        for chunk in chunks(items):
            with self._db.write() as conn:
                for (partition_key, batch_key), count in chunk:
                    cursor = conn.execute(
                        "INSERT INTO landing_index VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (stream, partition_key, batch_key, count, stamp),
                    )
                    if cursor.rowcount:
                        added += 1
                        continue
                    (stored,) = conn.execute(
                        "SELECT record_count FROM landing_index"
                        " WHERE stream = ? AND partition_key = ? AND batch_key = ?",
                        (stream, partition_key, batch_key),
                    ).fetchone()
                    if stored != count:
                        raise ValueError(
                            f"index_batches: batch {batch_key!r} of {stream}/{partition_key} "
                            f"is indexed with {stored} records, not {count}; batches are "
                            "immutable"
                        )
        return added

    def batches_for(self, stream: str, partition_key: str) -> list[str]:
        return list(self.batch_counts(stream, partition_key))

    def indexed_batches(self, stream: str) -> set[str]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT batch_key FROM landing_index WHERE stream = ?", (stream,)
            ).fetchall()
        return {row[0] for row in rows}

    def batch_counts(self, stream: str, partition_key: str) -> dict[str, int]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT batch_key, record_count FROM landing_index"
                " WHERE stream = ? AND partition_key = ? ORDER BY batch_key",
                (stream, partition_key),
            ).fetchall()
        return dict(rows)

    def partitions_for(self, stream: str, batch_key: str) -> list[str]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT partition_key FROM landing_index"
                " WHERE stream = ? AND batch_key = ? ORDER BY partition_key",
                (stream, batch_key),
            ).fetchall()
        return [row[0] for row in rows]
