"""Fast state, kept once: job rows, board mergers, the dedupe registry, event claims and the
landing index, each keyed and written conditionally.

:class:`StateStore` is the interface; :class:`SqliteStateStore` is the local implementation.
Every operation maps one-to-one onto a DynamoDB call, so the aws profile only adds an
implementation:

======================  ===========================================  ==========================
operation               semantics                                    DynamoDB
======================  ===========================================  ==========================
``claim_versions`` /    first claimant wins per claim key (an event  ``PutItem`` with
``claim_batches``       id scoped by its hour), and the claim keeps  ``attribute_not_exists OR
                        the digest of the claimant's content; a      expires_at < :now``,
                        claim expires after ``claim_ttl_s`` (the     ``ALL_OLD`` on failure
                        ``expires_at`` TTL attribute)
``drop_claims`` /       delete claims / the expired ones             ``BatchWriteItem`` / TTL
``purge_claims``
``get_jobs``            the rows of the jobs a step touches, with    ``BatchGetItem``
                        their ``version``
``put_jobs``            one conditional write per job: stored only   ``PutItem``, ``version =
                        if the row is still at the version read      :read`` (or absent)
                        (optimistic concurrency); else a conflict
``board_jobs``          a board's jobs in key order, streamed        ``Query`` on a board index
``mergers`` /           board.merged rows; last writer wins per      ``Scan`` (a handful) /
``put_mergers``         board by (merged_at, merger_event_id)        conditional ``PutItem``
``first_postings`` /    the dedupe registry: a job's first           ``BatchGetItem`` /
``register``            job.posted; the earliest wins, conditionally conditional ``PutItem``
``key_members`` /       the jobs of dedupe keys / of originals       ``Query`` on key and
``duplicates_of``                                                    original indexes
``set_duplicates``      each registry row's original (null: none)    ``UpdateItem``
``index_rows`` /        search-index rows of given jobs / every      ``BatchGetItem`` /
``iter_index``          visible row in job_id order, streamed        ``Scan``
``fold_job_days``       day-row retention: a job's old day rows      ``TransactWriteItems``:
                        replaced by their join, kept at the latest   ``Put``/``Delete`` per
                        (each conditional on its version), together  row, on their versions
``day_fold`` /          the fold's horizon and progress (reads       ``GetItem`` / ``PutItem``
``set_day_fold``        before the horizon are refused)              of a flag item
======================  ===========================================  ==========================

A job's row holds the three components its state is derived from (the latest posting, the first
job.posted and the latest expiry, each a last-writer-wins register by (event time, event id))
plus the status they and the board's merger decide: see
:func:`figstream.streaming.table_ops.apply_job_state`, which the ``job_state`` step runs on
the rows it reads before it writes them back. Because the merge is idempotent and
order-insensitive, a conflict (another writer got there first) is resolved by reading the job
again and merging again.

Dagster runs in separate processes and CLI commands use one database at the same time, so:

* the database is in WAL mode (readers never wait for the writer) with a busy timeout, and
  each call opens its own short-lived connection (safe across threads, forks and pickling);
* writes take the write lock up front (``BEGIN IMMEDIATE``) and commit every ``CHUNK_ROWS``
  rows, so no transaction holds the lock for long; every write is idempotent per row, so a
  partially applied call converges once it is retried.

Times are stored as integer microseconds since the Unix epoch (UTC), so they round-trip
exactly as ``timestamp[us, tz=UTC]``.

Bad inputs tried (see ``tests/figstream/storage/test_state.py``): missing columns, nulls in key
columns, an unknown status, a non-numeric salary, naive timestamps, nanosecond times that
would lose precision, a version that is not an integer, conflicting record counts for one
landed batch, an empty table, text with NUL and non-ASCII characters, times before 1970, one
string (or a null) where a list of ids belongs, 50,000 ids in one filter.
"""

from __future__ import annotations

import json
import sqlite3
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from figstream.events.postings import FLAT_V2_COLUMNS
from figstream.settings import data_home
from figstream.storage.sqlite import (
    BUSY_TIMEOUT_S,
    SqliteDatabase,
    chunks,
    conform,
    delete_in_slices,
    from_rows,
    json_list,
    now_us,
    to_rows,
)

TS = pa.timestamp("us", tz="UTC")
STATUSES = ("active", "expired", "merged")
CLAIM_TTL_S = 14 * 86_400  # a claim's default horizon (platform/streaming.yaml: claim_ttl_days)

POSTING_FIELDS = (
    "title",
    "company",
    "location",
    "employment_type",
    "remote",
    "salary_min",
    "salary_max",
    "currency",
    "url",
)
_POSTING_TYPES = {
    "remote": pa.bool_(),
    "salary_min": pa.int64(),
    "salary_max": pa.int64(),
}
# What v2 postings add to a job's row (``salary_period``, ``city``, ``region``,
# ``country_code``), kept apart from POSTING_FIELDS, which stay v1's: what legacy reads and
# parity compares. A v1 posting's are what the upcaster derives from it (see
# figstream.streaming.table_ops.apply_job_state for the rule when v1 follows v2).
V2_FIELDS = FLAT_V2_COLUMNS
SHOWN_FIELDS = (*POSTING_FIELDS, *V2_FIELDS)  # what a job's row shows of its postings
# The latest structured location a posting's v1 string cannot give back (a v2 producer's),
# a register of its own so that a v1 update naming the same place does not erase it.
STRUCTURE_FIELDS = ("structure_city", "structure_region", "structure_country_code")

# A job's row: its components and what they decide (the streaming state's rows, less ``kind``).
JOB_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("board", pa.string()),
        *(pa.field(f, _POSTING_TYPES.get(f, pa.string())) for f in SHOWN_FIELDS),
        pa.field("dedupe_key", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("posted_at", TS),  # the first job.posted
        pa.field("updated_at", TS),  # the latest posting (posted or updated)
        pa.field("posting_event_id", pa.string()),
        pa.field("structure_at", TS),  # the latest posting with a structure beyond its string
        pa.field("structure_event_id", pa.string()),
        *(pa.field(f, pa.string()) for f in STRUCTURE_FIELDS),
        pa.field("expired_at", TS),  # the latest job.expired
        pa.field("expired_reason", pa.string()),
        pa.field("expiry_event_id", pa.string()),
        pa.field("merged_into", pa.string()),
        pa.field("merged_at", TS),
        pa.field("merger_event_id", pa.string()),
        pa.field("last_event_time", TS, nullable=False),  # the event that decided the status
        pa.field("last_event_id", pa.string(), nullable=False),
    ]
)
# get_jobs/put_jobs: a row and the version it was read at (0: the job was not stored).
VERSIONED_SCHEMA = JOB_SCHEMA.append(pa.field("version", pa.int64(), nullable=False))
# A job's day component (put_job_days/get_job_days): the join of its events of one UTC day
# of event time only, in a job row's columns; the state as of the end of a day is the join of
# its rows of that day and before (status and merged_* are the day's alone: derive them again).
DAY_SCHEMA = JOB_SCHEMA.insert(1, pa.field("day", pa.string(), nullable=False))
DAY_VERSIONED_SCHEMA = DAY_SCHEMA.append(pa.field("version", pa.int64(), nullable=False))
MERGER_SCHEMA = pa.schema(
    [
        pa.field("board", pa.string(), nullable=False),
        pa.field("merged_into", pa.string(), nullable=False),
        pa.field("merged_at", TS, nullable=False),
        pa.field("merger_event_id", pa.string(), nullable=False),
    ]
)
# A board's mergers of one day (put_merger_days): the latest of the day wins.
MERGER_DAY_SCHEMA = MERGER_SCHEMA.insert(1, pa.field("day", pa.string(), nullable=False))
# The dedupe registry: each job's first job.posted, and the job whose duplicate it is.
REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("dedupe_key", pa.string(), nullable=False),
        pa.field("board", pa.string()),
        pa.field("event_time", TS, nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string()),
    ]
)
INDEX_COLUMNS = ["job_id", "board", *SHOWN_FIELDS, "posted_at", "updated_at"]
# index_rows: every asked job that is stored, whether the site shows it, and what it shows.
INDEX_ROW_SCHEMA = pa.schema(
    [JOB_SCHEMA.field(n) for n in INDEX_COLUMNS] + [pa.field("visible", pa.bool_())]
)
# The serving projection (jobs()): a job's fields and status, without its components.
JOB_STATE_SCHEMA = pa.schema(
    [
        *(JOB_SCHEMA.field(n) for n in ["job_id", "board", *SHOWN_FIELDS, "status"]),
        *(JOB_SCHEMA.field(n) for n in ["posted_at", "updated_at", "expired_at"]),
        pa.field("reason", pa.string()),
        *(JOB_SCHEMA.field(n) for n in ["merged_into", "last_event_time", "last_event_id"]),
    ]
)


@dataclass(frozen=True)
class DayFold:
    """Day-row retention (``figstream.streaming.day_fold``): every job's day rows up to
    ``horizon`` may have been joined into its latest row up to it, so the state as of the end
    of a day before ``horizon`` can no longer be read; ``done``: the last day whose rows were
    folded (the fold resumes after it). None: never folded."""

    horizon: str | None = None
    done: str | None = None


class DayRowsFolded(ValueError):
    """An end-of-day read of a day whose day rows were folded away."""

    def __init__(self, day: str, horizon: str) -> None:
        super().__init__(
            f"the state as of the end of {day} can no longer be read: day rows before {horizon}"
            " were folded (day_rows_keep_days in platform/streaming.yaml)"
        )
        self.day, self.horizon = day, horizon


def state_path(home: Path | None = None) -> Path:
    """``$FIGSTREAM_HOME/state/figstream.sqlite``."""
    return (home or data_home()) / "state" / "figstream.sqlite"


# --- the interface ------------------------------------------------------------------------------


class StateStore(ABC):
    claim_ttl_s: int = CLAIM_TTL_S

    # event claims

    def claim_batches(
        self, claims: Sequence[tuple[str, Iterable[str]]], now: int | None = None
    ) -> list[dict[str, str]]:
        """:meth:`claim_versions` without digests: per entry, the owning batch of each id."""
        owned = self.claim_versions(claims, now)
        return [{key: owner for key, (owner, _) in entry.items()} for entry in owned]

    @abstractmethod
    def claim_versions(
        self, claims: Sequence[Claims], now: int | None = None
    ) -> list[dict[str, tuple[str, str | None]]]:
        """Claim the event ids of landed batches, given as (batch_id, event_ids) or
        (batch_id, event_ids, digests), ``digests[i]`` the digest of the content of the event
        of ``event_ids[i]``; first claimant wins and its digest stays with the claim. A batch
        claiming again (a retry, a backfill) gets its own claims back, and a claim older than
        :attr:`claim_ttl_s` is gone (a redelivery after it is new). An earlier entry claims
        first, and of one id given twice in an entry its first digest counts. ``now`` (µs
        since the epoch) defaults to the clock. Returns, per entry, the owner of each distinct
        id given: (owning batch, its digest; None for a claim made without one)."""

    @abstractmethod
    def drop_claims(self, keys: Iterable[str]) -> int:
        """Delete the claims of ``keys`` (``BatchWriteItem`` deletes); returns how many."""

    @abstractmethod
    def purge_claims(self, now: int | None = None, limit: int = 100_000) -> int:
        """Delete up to ``limit`` expired claims (DynamoDB's TTL reaper does this there);
        returns how many."""

    # job state

    @abstractmethod
    def get_jobs(self, job_ids: Iterable[str]) -> pa.Table:
        """:data:`VERSIONED_SCHEMA` rows of the stored jobs among ``job_ids``, by job_id."""

    @abstractmethod
    def put_jobs(self, rows: pa.Table) -> list[str]:
        """Store :data:`VERSIONED_SCHEMA` rows, each only if its job is still at ``version``
        (0: not stored yet), and advance the version. Returns the job ids refused (another
        writer changed them since they were read); the others are stored."""

    @abstractmethod
    def board_jobs(self, board: str, batch_rows: int = 10_000) -> Iterator[pa.Table]:
        """The board's jobs (:data:`VERSIONED_SCHEMA`) by job_id, ``batch_rows`` at a time."""

    @abstractmethod
    def jobs(
        self,
        *,
        board: str | None = None,
        job_ids: Iterable[str] | None = None,
        status: str | None = None,
    ) -> pa.Table:
        """Stored jobs matching every filter given (:data:`JOB_STATE_SCHEMA`), by job_id."""

    @abstractmethod
    def iter_jobs(self, batch_rows: int = 50_000) -> Iterator[pa.Table]:
        """Every job row (:data:`JOB_SCHEMA`) in job_id order, ``batch_rows`` at a time."""

    @abstractmethod
    def mergers(self) -> pa.Table:
        """Every board merger (:data:`MERGER_SCHEMA`), by board."""

    @abstractmethod
    def put_mergers(self, rows: pa.Table) -> int:
        """Store mergers, last writer wins per board by (merged_at, merger_event_id).
        Returns the number stored."""

    # day components: the state as of the end of any day in event time

    @abstractmethod
    def get_job_days(self, keys: Iterable[tuple[str, str]]) -> pa.Table:
        """:data:`DAY_VERSIONED_SCHEMA` rows of the stored (job_id, day) keys, by key."""

    @abstractmethod
    def put_job_days(self, rows: pa.Table) -> list[tuple[str, str]]:
        """Store :data:`DAY_VERSIONED_SCHEMA` rows, each only if its (job_id, day) is still at
        ``version`` (0: not stored yet), as :meth:`put_jobs` does. Returns the keys refused."""

    @abstractmethod
    def job_days(self, job_ids: Iterable[str], until: str) -> pa.Table:
        """:data:`DAY_SCHEMA` rows of the given jobs with ``day <= until``, by (job_id, day)."""

    @abstractmethod
    def day_job_ids(self, day: str, batch_rows: int = 10_000) -> Iterator[list[str]]:
        """The jobs with a row of ``day``, in job_id order, ``batch_rows`` at a time."""

    @abstractmethod
    def board_day_job_ids(self, board: str, batch_rows: int = 10_000) -> Iterator[list[str]]:
        """The jobs any of whose day rows names ``board`` (a superset of the board's jobs as
        of any day), ``batch_rows`` at a time."""

    @abstractmethod
    def iter_job_days(self, until: str, batch_jobs: int = 20_000) -> Iterator[pa.Table]:
        """Every :data:`DAY_SCHEMA` row with ``day <= until`` by (job_id, day), a batch of
        ``batch_jobs`` jobs at a time (a job's rows never split over two batches)."""

    @abstractmethod
    def put_merger_days(self, rows: pa.Table) -> int:
        """Store :data:`MERGER_DAY_SCHEMA` rows, last writer wins per (board, day) by
        (merged_at, merger_event_id). Returns the number stored."""

    @abstractmethod
    def merger_days(self, until: str) -> pa.Table:
        """Every :data:`MERGER_DAY_SCHEMA` row with ``day <= until``, by (board, day)."""

    @abstractmethod
    def fold_job_days(self, rows: pa.Table, gone: Iterable[tuple[str, str, int]]) -> list[str]:
        """Replace jobs' old day rows by their join (day-row retention): store each of
        ``rows`` (:data:`DAY_VERSIONED_SCHEMA`, conditionally on its version as
        :meth:`put_job_days` does) and delete each (job_id, day, version) of ``gone`` only if
        it is still at that version. A job's write and deletes are done together or not at
        all; every job of ``gone`` has a row in ``rows``. Returns the jobs refused."""

    @abstractmethod
    def day_fold(self) -> DayFold:
        """How far the day rows have been folded (:class:`DayFold`)."""

    @abstractmethod
    def set_day_fold(self, fold: DayFold) -> None:
        """Record ``fold``; neither day ever moves back (each is kept at its maximum)."""

    def check_as_of(self, day: str) -> None:
        """Raise :class:`DayRowsFolded` when the end-of-day state of ``day`` can no longer be
        read from the day rows (it is before the fold horizon)."""
        horizon = self.day_fold().horizon
        if horizon is not None and day < horizon:
            raise DayRowsFolded(day, horizon)

    @abstractmethod
    def day_rows_pending(self) -> bool:
        """Whether the store holds jobs whose day rows were never written (a store an earlier
        version wrote): ``figstream.streaming.daily.convert_day_rows`` builds them."""

    @abstractmethod
    def day_rows_done(self) -> None:
        """Record that the day rows are built (:meth:`day_rows_pending` is False after)."""

    # the dedupe registry

    @abstractmethod
    def first_postings(self, job_ids: Iterable[str]) -> pa.Table:
        """Registry rows (:data:`REGISTRY_SCHEMA`) of the given jobs, by job_id."""

    @abstractmethod
    def register(self, rows: pa.Table) -> int:
        """Store first postings (:data:`REGISTRY_SCHEMA` less ``duplicate_of``): a row
        replaces a job's stored one only if its (event_time, event_id) is smaller. Returns
        the number stored."""

    @abstractmethod
    def key_members(self, dedupe_keys: Iterable[str]) -> pa.Table:
        """Registry rows of every job registered under the given keys."""

    @abstractmethod
    def duplicates_of(self, job_ids: Iterable[str]) -> pa.Table:
        """Registry rows of the jobs that are duplicates of the given jobs."""

    @abstractmethod
    def set_duplicates(self, pairs: Sequence[tuple[str, str | None]]) -> int:
        """Set (job_id, duplicate_of) on registered jobs; returns the rows changed."""

    @abstractmethod
    def registry(self) -> pa.Table:
        """The whole registry, by (event_time, event_id): for checks and views, not runs."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """jobs, active, registered and duplicates: what a step reports."""

    # the search index

    @abstractmethod
    def index_rows(self, job_ids: Iterable[str]) -> pa.Table:
        """:data:`INDEX_ROW_SCHEMA` rows of the stored jobs among ``job_ids``: ``visible``
        when the job is active and not a duplicate of an active job."""

    @abstractmethod
    def iter_index(self, batch_rows: int = 50_000) -> Iterator[pa.Table]:
        """Every visible search-index row (:data:`INDEX_COLUMNS`) in job_id order, streamed."""

    # the landing index

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


# A claim_versions entry: (batch_id, event_ids) or (batch_id, event_ids, digests).
Claims = tuple[str, Iterable[str]] | tuple[str, Iterable[str], Iterable[str]]


def claim_lists(claims: Sequence[Claims]) -> list[dict[str, str | None]]:
    """Each entry's distinct ids in order, each with its first digest (None without one);
    ``TypeError``/``ValueError`` say what is wrong."""
    out = []
    for entry in claims:
        ids = entry[1]
        if isinstance(ids, str) or ids is None:
            raise TypeError(f"claim_batches: ids must be an iterable of ids, not {type(ids)}")
        ids = list(ids)
        digests = list(entry[2]) if len(entry) > 2 else [None] * len(ids)
        if len(digests) != len(ids):
            raise ValueError(f"claim_batches: {len(ids)} ids but {len(digests)} digests")
        if not all(isinstance(i, str) for i in ids):
            raise ValueError("claim_batches: ids must be non-null strings")
        if not all(d is None or isinstance(d, str) for d in digests):
            raise ValueError("claim_batches: digests must be strings or None")
        wanted: dict[str, str | None] = {}
        for key, digest in zip(ids, digests, strict=True):
            wanted.setdefault(key, digest)
        out.append(wanted)
    return out


def id_list(values: Iterable[str] | None, what: str) -> list[str]:
    if isinstance(values, str) or values is None:
        raise TypeError(f"{what} must be an iterable of ids, not {type(values).__name__}")
    ids = list(dict.fromkeys(values))
    if not all(isinstance(i, str) for i in ids):
        raise ValueError(f"{what}: ids must be non-null strings")
    return ids


def day_keys(keys: Iterable[tuple[str, str]], what: str) -> list[tuple[str, str]]:
    """(job_id, day) keys checked and deduplicated, in the order given."""
    if isinstance(keys, str) or keys is None:
        raise TypeError(f"{what} must be an iterable of (job_id, day) pairs")
    out = list(dict.fromkeys(tuple(k) for k in keys))
    if not all(len(k) == 2 and all(isinstance(v, str) for v in k) for k in out):
        raise ValueError(f"{what}: keys must be (job_id, day) pairs of strings")
    return out


def landing_entries(
    entries: Iterable[tuple[str, str, int]],
) -> dict[tuple[str, str], int]:
    """``index_batches``' entries checked: (partition_key, batch_key) -> record_count."""
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
    return wanted


def fold_deletes(
    rows: pa.Table, gone: Iterable[tuple[str, str, int]]
) -> dict[str, list[tuple[str, int]]]:
    """:meth:`StateStore.fold_job_days`'s deletes per job, checked: each a stored row (a
    version of at least 1) of a job ``rows`` writes, and not the row it writes."""
    written = dict(zip(rows["job_id"].to_pylist(), rows["day"].to_pylist(), strict=True))
    if len(written) != rows.num_rows:
        raise ValueError("fold_job_days: a job given two rows; give each job one")
    out: dict[str, list[tuple[str, int]]] = {}
    for job, day, version in gone:
        if job not in written:
            raise ValueError(f"fold_job_days: {job!r} has rows to delete but no row to write")
        if day == written[job]:
            raise ValueError(f"fold_job_days: {job!r} would delete the row of {day} it writes")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"fold_job_days: version {version!r} of a stored row; must be >= 1")
        out.setdefault(job, []).append((day, version))
    return out


def versioned_rows(rows: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """Rows to write at the version read, checked: the schema, statuses, versions >= 0."""
    table = conform(rows, schema, what)
    check_statuses(table, what)
    if pc.any(pc.less(table["version"], 0)).as_py():
        raise ValueError(f"{what}: version must be >= 0")
    return table


def check_statuses(table: pa.Table, what: str) -> None:
    bad = pc.invert(pc.is_in(table["status"], pa.array(STATUSES)))
    if pc.any(bad).as_py():
        unknown = sorted(set(table["status"].filter(bad).to_pylist()))
        raise ValueError(f"{what}: status must be one of {STATUSES}, got {unknown}")


# --- SQLite -------------------------------------------------------------------------------------

_JOB_COLUMNS = JOB_SCHEMA.names
_INDEX_SELECT = ", ".join(f"j.{c}" for c in INDEX_COLUMNS)
# Visible: active, and not a duplicate of a job that is active itself.
_VISIBLE = (
    "j.status = 'active' AND NOT EXISTS (SELECT 1 FROM registry r JOIN job_state o"
    " ON o.job_id = r.duplicate_of WHERE r.job_id = j.job_id AND o.status = 'active')"
)
# A job row's columns after its key (job rows and day rows alike), and its version.
# The columns v2 added to those rows, which a file written before them gains on open.
_V2_ROW_COLUMNS = {
    **{f: "TEXT" for f in V2_FIELDS},
    "structure_at": "INTEGER",
    "structure_event_id": "TEXT",
    **{f: "TEXT" for f in STRUCTURE_FIELDS},
}
_ROW_COLUMNS = f"""board TEXT, title TEXT, company TEXT, location TEXT, employment_type TEXT,
    remote INTEGER, salary_min INTEGER, salary_max INTEGER, currency TEXT, url TEXT,
    {", ".join(f"{c} {t}" for c, t in _V2_ROW_COLUMNS.items())},
    dedupe_key TEXT,
    status TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    posted_at INTEGER, updated_at INTEGER, posting_event_id TEXT,
    expired_at INTEGER, expired_reason TEXT, expiry_event_id TEXT,
    merged_into TEXT, merged_at INTEGER, merger_event_id TEXT,
    last_event_time INTEGER NOT NULL, last_event_id TEXT NOT NULL,
    version INTEGER NOT NULL"""
_DDL = f"""
CREATE TABLE IF NOT EXISTS job_state (
    job_id TEXT PRIMARY KEY NOT NULL,
    {_ROW_COLUMNS}
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_state_board ON job_state (board);
CREATE TABLE IF NOT EXISTS mergers (
    board TEXT PRIMARY KEY NOT NULL,
    merged_into TEXT NOT NULL, merged_at INTEGER NOT NULL, merger_event_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry (
    job_id TEXT PRIMARY KEY NOT NULL,
    dedupe_key TEXT NOT NULL, board TEXT,
    event_time INTEGER NOT NULL, event_id TEXT NOT NULL,
    duplicate_of TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS registry_key ON registry (dedupe_key);
CREATE INDEX IF NOT EXISTS registry_original ON registry (duplicate_of)
    WHERE duplicate_of IS NOT NULL;
CREATE TABLE IF NOT EXISTS event_claims (
    event_id TEXT PRIMARY KEY NOT NULL,
    batch_id TEXT NOT NULL,
    claimed_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    digest TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_claims_expiry ON event_claims (expires_at);
CREATE TABLE IF NOT EXISTS landing_index (
    stream TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    record_count INTEGER NOT NULL,
    indexed_at INTEGER NOT NULL,
    PRIMARY KEY (stream, partition_key, batch_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS landing_index_batch ON landing_index (stream, batch_key);
CREATE TABLE IF NOT EXISTS job_days (
    job_id TEXT NOT NULL, day TEXT NOT NULL,
    {_ROW_COLUMNS},
    PRIMARY KEY (job_id, day)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_days_day ON job_days (day);
CREATE INDEX IF NOT EXISTS job_days_board_day ON job_days (board, day);
CREATE TABLE IF NOT EXISTS merger_days (
    board TEXT NOT NULL, day TEXT NOT NULL,
    merged_into TEXT NOT NULL, merged_at INTEGER NOT NULL, merger_event_id TEXT NOT NULL,
    PRIMARY KEY (board, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_flags (
    name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL
) WITHOUT ROWID;
"""

# A new job (read at version 0) is inserted only if absent; a known one is updated only at the
# version read. Either way the job ends at the version read + 1, or the write is refused.
_INSERT_JOB = f"""
INSERT INTO job_state ({", ".join(_JOB_COLUMNS)}, version)
VALUES ({", ".join("?" * len(_JOB_COLUMNS))}, 1) ON CONFLICT (job_id) DO NOTHING
"""
_UPDATE_JOB = f"""
UPDATE job_state SET {", ".join(f"{c} = ?" for c in _JOB_COLUMNS[1:])}, version = version + 1
WHERE job_id = ? AND version = ?
"""
# The same, for a job whose board stays (nearly every update): a statement that sets an indexed
# column rewrites its index entry even to the same value, a second random page per job.
_UPDATE_JOB_SAME_BOARD = f"""
UPDATE job_state SET {", ".join(f"{c} = ?" for c in _JOB_COLUMNS[2:])}, version = version + 1
WHERE job_id = ? AND version = ? AND board IS ?
"""
_PUT_MERGER = """
INSERT INTO mergers VALUES (?, ?, ?, ?)
ON CONFLICT (board) DO UPDATE SET
    merged_into = excluded.merged_into, merged_at = excluded.merged_at,
    merger_event_id = excluded.merger_event_id
WHERE (excluded.merged_at, excluded.merger_event_id)
    > (mergers.merged_at, mergers.merger_event_id)
"""
_REGISTER = """
INSERT INTO registry (job_id, dedupe_key, board, event_time, event_id) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    dedupe_key = excluded.dedupe_key, board = excluded.board,
    event_time = excluded.event_time, event_id = excluded.event_id
WHERE (excluded.event_time, excluded.event_id) < (registry.event_time, registry.event_id)
"""
_DAY_COLUMNS = DAY_SCHEMA.names
_DAY_KEYS_IN = (  # one bound parameter: a JSON list of [job_id, day] pairs
    "(job_id, day) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')"
    " FROM json_each(?))"
)
_INSERT_DAY = f"""
INSERT INTO job_days ({", ".join(_DAY_COLUMNS)}, version)
VALUES ({", ".join("?" * len(_DAY_COLUMNS))}, 1) ON CONFLICT (job_id, day) DO NOTHING
"""
_UPDATE_DAY = f"""
UPDATE job_days SET {", ".join(f"{c} = ?" for c in _DAY_COLUMNS[2:])}, version = version + 1
WHERE job_id = ? AND day = ? AND version = ?
"""
_PUT_MERGER_DAY = """
INSERT INTO merger_days VALUES (?, ?, ?, ?, ?)
ON CONFLICT (board, day) DO UPDATE SET
    merged_into = excluded.merged_into, merged_at = excluded.merged_at,
    merger_event_id = excluded.merger_event_id
WHERE (excluded.merged_at, excluded.merger_event_id)
    > (merger_days.merged_at, merger_days.merger_event_id)
"""
_DAY_ROWS_PENDING = "day_rows_pending"
_DELETE_DAY = "DELETE FROM job_days WHERE job_id = ? AND day = ? AND version = ?"
# store_flags holding DayFold's days (as proleptic ordinals: the flags are integers)
_FOLD_FLAGS = {"horizon": "day_fold_horizon", "done": "day_fold_done"}
_CLAIM = """
INSERT INTO event_claims (event_id, batch_id, claimed_at, expires_at, digest)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (event_id) DO UPDATE SET
    batch_id = excluded.batch_id, claimed_at = excluded.claimed_at,
    expires_at = excluded.expires_at, digest = excluded.digest
WHERE event_claims.expires_at <= excluded.claimed_at
"""


def _day_versions(conn: sqlite3.Connection, keys: list[tuple[str, str]]) -> dict:
    """The stored version of each of the (job_id, day) ``keys`` stored."""
    sql = f"SELECT job_id, day, version FROM job_days WHERE {_DAY_KEYS_IN}"
    return {(job, day): version for job, day, version in conn.execute(sql, (json.dumps(keys),))}


class SqliteStateStore(StateStore):
    def __init__(
        self,
        path: str | Path,
        busy_timeout: float = BUSY_TIMEOUT_S,
        claim_ttl_s: int = CLAIM_TTL_S,
    ) -> None:
        if isinstance(claim_ttl_s, bool) or not isinstance(claim_ttl_s, int) or claim_ttl_s <= 0:
            raise ValueError(f"claim_ttl_s must be a positive number of seconds: {claim_ttl_s!r}")
        self.path = Path(path)
        self.claim_ttl_s = claim_ttl_s
        self._db = SqliteDatabase(self.path, _DDL, busy_timeout, self._upgrade)

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Bring a file written by an earlier version up to date (idempotent):

        * its ``job_state`` table held a serving copy of the state kept in Parquet buckets
          (no components, no version): it is dropped, and the buckets are converted into the
          new table (``figstream.streaming.convert``);
        * its event claims never expired: each now expires ``claim_ttl_s`` after its claim;
        * its event claims held no digest: they keep none (a claim without a digest cannot
          tell a conflicting redelivery from a duplicate, so it counts every one a duplicate);
        * it held no day rows (``job_days``): flagged, so that the next state step builds them
          from the kept ingest fragments (``figstream.streaming.daily.convert_day_rows``);
        * its job and day rows had no v2 columns (``salary_period``, ``city``, ``region``,
          ``country_code`` and the structure register): added, null (``ADD COLUMN`` changes
          only the schema, whatever the number of rows); a job gains them with its next
          posting.
        """

        def columns(table: str) -> set[str]:
            return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}

        held = columns("job_state")
        if held and not columns("job_days"):  # written before the day rows: build them once
            conn.execute(
                "CREATE TABLE IF NOT EXISTS store_flags"
                " (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID"
            )
            conn.execute("INSERT OR REPLACE INTO store_flags VALUES (?, 1)", (_DAY_ROWS_PENDING,))
        if held and "version" not in held:
            conn.execute("DROP TABLE job_state")
        held = columns("event_claims")
        if held and "expires_at" not in held:
            conn.execute(
                "ALTER TABLE event_claims ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0"
            )
            conn.execute(
                "UPDATE event_claims SET expires_at = claimed_at + ?",
                (self.claim_ttl_s * 1_000_000,),
            )
        if columns("event_claims") and "digest" not in columns("event_claims"):
            conn.execute("ALTER TABLE event_claims ADD COLUMN digest TEXT")
        for table in ("job_state", "job_days"):
            held = columns(table)
            if not held:  # absent, or dropped above: the DDL creates it whole
                continue
            for column, kind in _V2_ROW_COLUMNS.items():
                if column not in held:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        # Day rows were indexed by (board, job_id): a run's new rows of today landed at random
        # places in that index once the state outgrew the cache. (board, day) keeps a day's
        # rows of a board together (the DDL builds it, once, on an older file).
        conn.execute("DROP INDEX IF EXISTS job_days_board")

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self.path)!r})"

    # event claims

    def claim_versions(
        self, claims: Sequence[Claims], now: int | None = None
    ) -> list[dict[str, tuple[str, str | None]]]:
        wanted = claim_lists(claims)
        stamp = now_us() if now is None else now
        expires = stamp + self.claim_ttl_s * 1_000_000
        # Inserted in event-id order (stable, so of two batches in this call holding one id the
        # earlier still claims it first): random ids in arrival order dirty a page of the
        # B-tree an id, spilled from the cache and dirtied again, as the table grows.
        inserts = sorted(
            (
                (event_id, claims[i][0], digest)
                for i, ids in enumerate(wanted)
                for event_id, digest in ids.items()
            ),
            key=lambda row: row[0],
        )
        owners: dict[str, tuple[str, str | None]] = {}
        # One write transaction, so one commit and fsync, for all the batches.
        with self._db.write() as conn:
            for chunk in chunks(inserts):
                inserted = conn.executemany(
                    _CLAIM, [(key, batch, stamp, expires, digest) for key, batch, digest in chunk]
                ).rowcount
                if inserted == len(chunk):  # every id new (or expired): each is its inserter's
                    owners.update((key, (batch, digest)) for key, batch, digest in chunk)
                    continue
                rows = conn.execute(
                    "SELECT event_id, batch_id, digest FROM event_claims"
                    " WHERE event_id IN (SELECT value FROM json_each(?))",
                    (json_list(key for key, _, _ in chunk),),
                ).fetchall()
                owners.update((key, (batch, digest)) for key, batch, digest in rows)
        return [{key: owners[key] for key in ids} for ids in wanted]

    def drop_claims(self, keys: Iterable[str]) -> int:
        dropped = 0
        for chunk in chunks(id_list(keys, "drop_claims"), 20_000):
            with self._db.write() as conn:
                dropped += conn.execute(
                    "DELETE FROM event_claims WHERE event_id IN (SELECT value FROM json_each(?))",
                    (json_list(chunk),),
                ).rowcount
        return dropped

    def purge_claims(self, now: int | None = None, limit: int = 100_000) -> int:
        delete = (
            "DELETE FROM event_claims WHERE event_id IN (SELECT event_id FROM"
            " event_claims WHERE expires_at <= ? LIMIT ?)"
        )
        return delete_in_slices(self._db, delete, now_us() if now is None else now, limit)

    # job state

    def _keyed(self, select: str, column: str, ids: list[str], schema: pa.Schema) -> pa.Table:
        """``select ... WHERE <column> IN ids`` in one read (a bound parameter per 20k ids),
        by the first column."""
        rows = []
        with self._db.read() as conn:
            for chunk in chunks(ids, 20_000):
                rows += conn.execute(
                    f"{select} WHERE {column} IN (SELECT value FROM json_each(?))",
                    (json_list(chunk),),
                ).fetchall()
        rows.sort(key=lambda row: row[0])
        return from_rows(rows, schema)

    def get_jobs(self, job_ids: Iterable[str]) -> pa.Table:
        columns = ", ".join([*_JOB_COLUMNS, "version"])
        select = f"SELECT {columns} FROM job_state"
        return self._keyed(select, "job_id", id_list(job_ids, "get_jobs"), VERSIONED_SCHEMA)

    def put_jobs(self, rows: pa.Table) -> list[str]:
        table = versioned_rows(rows, VERSIONED_SCHEMA, "put_jobs")
        refused: list[str] = []
        values = to_rows(table)
        for chunk in chunks(values):
            with self._db.write() as conn:
                for row in chunk:
                    *job, version = row
                    if version == 0:
                        cursor = conn.execute(_INSERT_JOB, job)
                    else:
                        same = (*job[2:], job[0], version, job[1])
                        cursor = conn.execute(_UPDATE_JOB_SAME_BOARD, same)
                        if not cursor.rowcount:  # its board moved, or another writer was first
                            cursor = conn.execute(_UPDATE_JOB, (*job[1:], job[0], version))
                    if not cursor.rowcount:
                        refused.append(job[0])
        return refused

    def board_jobs(self, board: str, batch_rows: int = 10_000) -> Iterator[pa.Table]:
        columns = ", ".join([*_JOB_COLUMNS, "version"])
        sql = (
            f"SELECT {columns} FROM job_state WHERE board = ? AND job_id > ?"
            " ORDER BY job_id LIMIT ?"
        )
        return self._stream(sql, VERSIONED_SCHEMA, batch_rows, (board,))

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
            where.append("job_id IN (SELECT value FROM json_each(?))")
            params.append(json_list(id_list(job_ids, "jobs")))
        names = ["expired_reason" if n == "reason" else n for n in JOB_STATE_SCHEMA.names]
        sql = f"SELECT {', '.join(names)} FROM job_state"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY job_id", params).fetchall()
        return from_rows(rows, JOB_STATE_SCHEMA)

    def _stream(
        self, sql: str, schema: pa.Schema, batch_rows: int, params: tuple = ()
    ) -> Iterator[pa.Table]:
        """``sql`` (ordered by job_id, with a ``job_id > ?`` bound and a LIMIT) a page at a
        time: each page its own short read, so no reader holds a snapshot for the whole scan
        (which would keep the WAL from being checkpointed)."""
        after = ""
        while True:
            with self._db.read() as conn:
                rows = conn.execute(sql, (*params, after, batch_rows)).fetchall()
            if not rows:
                return
            yield from_rows(rows, schema)
            after = rows[-1][0]

    def iter_jobs(self, batch_rows: int = 50_000) -> Iterator[pa.Table]:
        sql = (
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM job_state WHERE job_id > ?"
            " ORDER BY job_id LIMIT ?"
        )
        return self._stream(sql, JOB_SCHEMA, batch_rows)

    def mergers(self) -> pa.Table:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM mergers ORDER BY board").fetchall()
        return from_rows(rows, MERGER_SCHEMA)

    def put_mergers(self, rows: pa.Table) -> int:
        return self._put_each(_PUT_MERGER, conform(rows, MERGER_SCHEMA, "put_mergers"))

    def _put_each(self, sql: str, table: pa.Table) -> int:
        """``sql`` for each row in one write transaction (a handful of rows); rows changed."""
        stored = 0
        with self._db.write() as conn:
            for row in to_rows(table):
                stored += conn.execute(sql, row).rowcount
        return stored

    # day components

    def get_job_days(self, keys: Iterable[tuple[str, str]]) -> pa.Table:
        wanted = day_keys(keys, "get_job_days")
        columns = ", ".join([*_DAY_COLUMNS, "version"])
        sql = f"SELECT {columns} FROM job_days WHERE {_DAY_KEYS_IN}"
        params = [(json.dumps(chunk),) for chunk in chunks(wanted, 10_000)]
        return from_rows(self._read_sorted(sql, params), DAY_VERSIONED_SCHEMA)

    def _read_sorted(self, sql: str, params: Iterable[tuple]) -> list[tuple]:
        """The rows of ``sql`` under each parameter tuple, in one read, by (job_id, day)."""
        rows: list[tuple] = []
        with self._db.read() as conn:
            for values in params:
                rows += conn.execute(sql, values).fetchall()
        rows.sort(key=lambda row: (row[0], row[1]))
        return rows

    def put_job_days(self, rows: pa.Table) -> list[tuple[str, str]]:
        table = versioned_rows(rows, DAY_VERSIONED_SCHEMA, "put_job_days")
        refused: list[tuple[str, str]] = []
        for chunk in chunks(to_rows(table)):
            keys = [row[:2] for row in chunk]
            with self._db.write() as conn:
                # The versions checked and the rows written under one write lock, so the
                # writes can go as two executemany calls instead of a statement a row.
                held = _day_versions(conn, keys)
                inserts, updates = [], []
                for key, row in zip(keys, chunk, strict=True):
                    if held.get(key, 0) != row[-1]:
                        refused.append(key)
                        continue
                    held[key] = row[-1] + 1  # a second row of the key in this call is refused
                    if row[-1] == 0:
                        inserts.append(row[:-1])
                    else:
                        updates.append((*row[2:-1], *key, row[-1]))
                conn.executemany(_INSERT_DAY, inserts)
                conn.executemany(_UPDATE_DAY, updates)
        return refused

    def fold_job_days(self, rows: pa.Table, gone: Iterable[tuple[str, str, int]]) -> list[str]:
        table = versioned_rows(rows, DAY_VERSIONED_SCHEMA, "fold_job_days")
        deletes = fold_deletes(table, gone)
        refused: list[str] = []
        for chunk in chunks(to_rows(table)):
            keys = [row[:2] for row in chunk]
            keys += [(row[0], day) for row in chunk for day, _ in deletes.get(row[0], ())]
            with self._db.write() as conn:
                held = _day_versions(conn, keys)
                inserts, updates, removed = [], [], []
                for row in chunk:
                    job, day, version = row[0], row[1], row[-1]
                    old = deletes.get(job, ())
                    if held.get((job, day), 0) != version or any(
                        held.get((job, d)) != v for d, v in old
                    ):
                        refused.append(job)
                        continue
                    if version == 0:
                        inserts.append(row[:-1])
                    else:
                        updates.append((*row[2:-1], job, day, version))
                    removed += [(job, d, v) for d, v in old]
                conn.executemany(_INSERT_DAY, inserts)
                conn.executemany(_UPDATE_DAY, updates)
                conn.executemany(_DELETE_DAY, removed)
        return refused

    def day_fold(self) -> DayFold:
        with self._db.read() as conn:
            held = dict(
                conn.execute(
                    "SELECT name, value FROM store_flags WHERE name IN (?, ?)",
                    tuple(_FOLD_FLAGS.values()),
                ).fetchall()
            )
        days = {
            field: date.fromordinal(held[name]).isoformat() if name in held else None
            for field, name in _FOLD_FLAGS.items()
        }
        return DayFold(**days)

    def set_day_fold(self, fold: DayFold) -> None:
        with self._db.write() as conn:
            for field, name in _FOLD_FLAGS.items():
                day = getattr(fold, field)
                if day is None:
                    continue
                conn.execute(
                    "INSERT INTO store_flags VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
                    " SET value = max(value, excluded.value)",
                    (name, date.fromisoformat(day).toordinal()),
                )

    def job_days(self, job_ids: Iterable[str], until: str) -> pa.Table:
        self.check_as_of(until)
        ids = id_list(job_ids, "job_days")
        sql = (
            f"SELECT {', '.join(_DAY_COLUMNS)} FROM job_days WHERE job_id IN"
            " (SELECT value FROM json_each(?)) AND day <= ?"
        )
        params = [(json_list(chunk), until) for chunk in chunks(ids, 20_000)]
        return from_rows(self._read_sorted(sql, params), DAY_SCHEMA)

    def _ids(self, sql: str, params: tuple, batch_rows: int) -> Iterator[list[str]]:
        after = ""
        while True:
            with self._db.read() as conn:
                ids = [r[0] for r in conn.execute(sql, (*params, after, batch_rows)).fetchall()]
            if not ids:
                return
            yield ids
            after = ids[-1]

    def day_job_ids(self, day: str, batch_rows: int = 10_000) -> Iterator[list[str]]:
        sql = "SELECT job_id FROM job_days WHERE day = ? AND job_id > ? ORDER BY job_id LIMIT ?"
        return self._ids(sql, (day,), batch_rows)

    def board_day_job_ids(self, board: str, batch_rows: int = 10_000) -> Iterator[list[str]]:
        # One sorted pass over the board's entries of the (board, day) index, in one read: a
        # page at a time from ``job_id > ?`` would re-scan the board's days for every page.
        sql = "SELECT DISTINCT job_id FROM job_days WHERE board = ? ORDER BY job_id"
        with self._db.read() as conn:
            cursor = conn.execute(sql, (board,))
            while rows := cursor.fetchmany(batch_rows):
                yield [row[0] for row in rows]

    def iter_job_days(self, until: str, batch_jobs: int = 20_000) -> Iterator[pa.Table]:
        self.check_as_of(until)
        page = "SELECT DISTINCT job_id FROM job_days WHERE job_id > ? ORDER BY job_id LIMIT ?"
        for ids in self._ids(page, (), batch_jobs):
            rows = self.job_days(ids, until)
            if rows.num_rows:
                yield rows

    def put_merger_days(self, rows: pa.Table) -> int:
        table = conform(rows, MERGER_DAY_SCHEMA, "put_merger_days")
        return self._put_each(_PUT_MERGER_DAY, table)

    def merger_days(self, until: str) -> pa.Table:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT board, day, merged_into, merged_at, merger_event_id FROM merger_days"
                " WHERE day <= ? ORDER BY board, day",
                (until,),
            ).fetchall()
        return from_rows(rows, MERGER_DAY_SCHEMA)

    def day_rows_pending(self) -> bool:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT value FROM store_flags WHERE name = ?", (_DAY_ROWS_PENDING,)
            ).fetchone()
        return bool(row and row[0])

    def day_rows_done(self) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM store_flags WHERE name = ?", (_DAY_ROWS_PENDING,))

    # the dedupe registry

    def _registry_where(self, where: str, values: list[str]) -> pa.Table:
        return self._keyed("SELECT * FROM registry", where, values, REGISTRY_SCHEMA)

    def first_postings(self, job_ids: Iterable[str]) -> pa.Table:
        return self._registry_where("job_id", id_list(job_ids, "first_postings"))

    def register(self, rows: pa.Table) -> int:
        schema = pa.schema(list(REGISTRY_SCHEMA)[:-1])
        table = conform(rows, schema, "register")
        stored = 0
        for chunk in chunks(to_rows(table)):
            with self._db.write() as conn:
                stored += conn.executemany(_REGISTER, chunk).rowcount
        return stored

    def key_members(self, dedupe_keys: Iterable[str]) -> pa.Table:
        return self._registry_where("dedupe_key", id_list(dedupe_keys, "key_members"))

    def duplicates_of(self, job_ids: Iterable[str]) -> pa.Table:
        return self._registry_where("duplicate_of", id_list(job_ids, "duplicates_of"))

    def set_duplicates(self, pairs: Sequence[tuple[str, str | None]]) -> int:
        changed = 0
        for chunk in chunks(list(pairs)):
            with self._db.write() as conn:
                changed += conn.executemany(
                    "UPDATE registry SET duplicate_of = ?2 WHERE job_id = ?1"
                    " AND duplicate_of IS NOT ?2",
                    chunk,
                ).rowcount
        return changed

    def registry(self) -> pa.Table:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM registry ORDER BY event_time, event_id").fetchall()
        return from_rows(rows, REGISTRY_SCHEMA)

    def counts(self) -> dict[str, int]:
        with self._db.read() as conn:
            jobs, active = conn.execute(
                "SELECT count(*), coalesce(sum(status = 'active'), 0) FROM job_state"
            ).fetchone()
            registered, duplicates = conn.execute(
                "SELECT count(*), count(duplicate_of) FROM registry"
            ).fetchone()
        return {"jobs": jobs, "active": active, "registered": registered, "duplicates": duplicates}

    # the search index

    def index_rows(self, job_ids: Iterable[str]) -> pa.Table:
        select = f"SELECT {_INDEX_SELECT}, {_VISIBLE} FROM job_state j"
        return self._keyed(select, "j.job_id", id_list(job_ids, "index_rows"), INDEX_ROW_SCHEMA)

    def iter_index(self, batch_rows: int = 50_000) -> Iterator[pa.Table]:
        sql = (
            f"SELECT {_INDEX_SELECT} FROM job_state j WHERE j.job_id > ? AND {_VISIBLE}"
            " ORDER BY j.job_id LIMIT ?"
        )
        schema = pa.schema([JOB_SCHEMA.field(n) for n in INDEX_COLUMNS])
        return self._stream(sql, schema, batch_rows)

    # the landing index

    def index_batches(self, stream: str, entries: Iterable[tuple[str, str, int]]) -> int:
        items = list(landing_entries(entries).items())
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


_T = TypeVar("_T")
_BESIDE: weakref.WeakKeyDictionary[StateStore, dict[str, Any]] = weakref.WeakKeyDictionary()


def beside(
    state: StateStore, name: str, local: Callable[[Path], _T], aws: Callable[[Any], _T]
) -> _T:
    """A store kept beside ``state`` (the trace index, the books), opened once per store
    object: ``local(path)`` on the SQLite state store's file, or ``aws(config)`` over the
    DynamoDB store's config (a callable, so the caller can import boto3 code lazily)."""
    opened = _BESIDE.setdefault(state, {})
    if name not in opened:
        if isinstance(state, SqliteStateStore):
            opened[name] = local(state.path)
        else:
            config = getattr(state, "config", None)  # the DynamoDB store's AwsConfig
            if config is None:
                raise TypeError(f"no {name} for a {type(state).__name__}")
            opened[name] = aws(config)
    return opened[name]
