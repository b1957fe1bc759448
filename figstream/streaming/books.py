"""The books per (stream, hour): events landed = materialised + dead-lettered + duplicates
dropped, from durable records, never by rescanning events.

Three independent records are held against each other for an hour:

- the landing index (:meth:`StateStore.batch_counts`): the records of each landed batch that
  belong to the stream and hour, written by the sensors before any run;
- the books (:mod:`figstream.storage.books`): per batch, what the ingest step did with them
  (records read, materialised, duplicates dropped, dead-lettered), written by the ingest step
  once the batch's outputs are durable (:func:`record_batches`);
- what actually landed: the rows of each batch's fragment of the ingest table, read from
  Parquet footers (a compacted hour's ``batch_id`` column), and the dead letters the store
  holds for the hour, by reason.

A conflicting redelivery (an event id delivered again with other content: see
:mod:`figstream.streaming.ingest`) is booked as dead-lettered, under its own reason
(``conflicting_redelivery`` in ``by_reason``), never as a duplicate: a duplicate is a record
whose content is held elsewhere already, so nothing booked as one is lost.

An hour balances when every booked batch read exactly what the landing index counts for it,
its fragment holds exactly what it materialised, and the dead-letter store holds exactly what
the hour's batches dead-lettered. A landed batch the ingest has not booked yet (a run queued or
in flight, or an hour ingested before the books existed: a replay books it) is *pending*: it
is reported, it is not an imbalance, and the hour's dead letters are then only checked to be
at least the booked ones (the pending batches' may already be stored).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from figstream.ingest.landing import parse_batch_key
from figstream.storage.books import BOOK_SCHEMA, BooksLedger, SqliteBooks
from figstream.storage.objects import ObjectStore
from figstream.storage.sqlite import now_us
from figstream.storage.state import StateStore, beside
from figstream.streaming.fragments import COMPACTED, batch_id_of, compacted_batches
from figstream.streaming.stores import INGEST_TABLES, Stores, hour_key


def _dynamo_books(config) -> BooksLedger:
    from figstream.storage.dynamo_books import DynamoBooks

    return DynamoBooks(config)


def books_for(state: StateStore) -> BooksLedger:
    """The books beside ``state``: a table in the SQLite state store's file, or the ``books``
    table of the DynamoDB store's account and prefix. Opened once per store object."""
    return beside(state, "books", SqliteBooks, _dynamo_books)


@dataclass(frozen=True)
class BatchEntry:
    """What the ingest step did with one batch's records of a (stream, hour)."""

    batch_id: str
    batch_key: str
    records: int
    materialised: int
    duplicates: int
    dead_lettered: int


def record_batches(
    state: StateStore,
    stream: str,
    partition: str,
    entries: Sequence[BatchEntry],
    run_id: str | None,
) -> int:
    """Book a claim group's batches (one write); returns how many rows were written."""
    if not entries:
        return 0
    n = len(entries)
    rows = pa.table(
        {
            "stream": [stream] * n,
            "partition_key": [partition] * n,
            "batch_id": [e.batch_id for e in entries],
            "batch_key": [e.batch_key for e in entries],
            "records": [e.records for e in entries],
            "materialised": [e.materialised for e in entries],
            "duplicates": [e.duplicates for e in entries],
            "dead_lettered": [e.dead_lettered for e in entries],
            "run_id": pa.array([run_id] * n, pa.string()),
            "recorded_at": pa.array([now_us()] * n, pa.int64()).cast(BOOK_SCHEMA.field(-1).type),
        },
        schema=BOOK_SCHEMA,
    )
    return books_for(state).record(rows)


@dataclass
class HourBooks:
    """One (stream, hour)'s books. ``materialised`` and ``dead_lettered`` are what landed (the
    fragments' rows, the dead-letter store's count); ``duplicates`` what the ingest dropped."""

    stream: str
    partition: str
    landed: int = 0  # records of the hour's landed batches (landing index)
    batches: int = 0
    materialised: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    pending: int = 0  # records of landed batches not booked yet
    pending_batches: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def difference(self) -> int:
        """Landed minus everything accounted for; 0 when the hour balances."""
        return self.landed - (self.materialised + self.dead_lettered + self.duplicates
                              + self.pending)  # fmt: skip

    @property
    def balanced(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        if self.problems:
            return "UNBALANCED"
        return "pending" if self.pending_batches else "balanced"

    def as_dict(self) -> dict:
        return {
            "stream": self.stream,
            "partition": self.partition,
            "landed": self.landed,
            "batches": self.batches,
            "materialised": self.materialised,
            "dead_lettered": self.dead_lettered,
            "duplicates": self.duplicates,
            "pending": self.pending,
            "pending_batches": self.pending_batches,
            "difference": self.difference,
            "status": self.status,
            "dead_letters_by_reason": self.by_reason,
            "problems": self.problems,
        }


PRESENT = -1  # fragment_rows: a loose fragment listed whose rows were not counted


def fragment_rows(
    objects: ObjectStore, table: str, partition: str, counted: Collection[str] | None = None
) -> dict[str, int]:
    """Rows per batch id in a partition's fragments of ``table``: each loose fragment's from
    its Parquet footer, the compacted object's (batches no loose fragment overrides) from its
    ``batch_id`` column; a batch the compacted object holds with no rows counts 0. With
    ``counted``, only those batches' loose fragments have their footers read; the others are
    :data:`PRESENT` (listed). A fragment that a compaction folded in and deleted between the
    listing and its read is read again from the compacted object (written before the fragments
    are deleted)."""
    for _ in range(2):
        try:
            return _fragment_rows(objects, table, partition, counted)
        except FileNotFoundError:
            continue
    return _fragment_rows(objects, table, partition, counted)


def _fragment_rows(
    objects: ObjectStore, table: str, partition: str, counted: Collection[str] | None
) -> dict[str, int]:
    listed = objects.list(f"tables/{table}/{partition}/")
    counts: dict[str, int] = {}
    compacted = None
    for key in listed:
        if key.endswith("/" + COMPACTED):
            compacted = key
            continue
        batch_id = batch_id_of(key)
        if counted is not None and batch_id not in counted:
            counts[batch_id] = PRESENT
            continue
        with objects.open(key) as source:
            counts[batch_id] = pq.read_metadata(source).num_rows
    if compacted is not None:
        with objects.open(compacted) as source:
            ids = pq.read_table(source, columns=["batch_id"])["batch_id"]
        held = dict.fromkeys(compacted_batches(objects, compacted), 0)
        for entry in pc.value_counts(ids).to_pylist():
            held[entry["values"]] = entry["counts"]
        for batch_id, rows in held.items():
            counts.setdefault(batch_id, rows)  # a loose fragment overrides the compacted rows
    return counts


def hour_books(
    stores: Stores,
    stream: str,
    partition: str,
    booked: pa.Table | None = None,
    counted: Collection[str] | None = None,
) -> HourBooks:
    """The books of one (stream, hour); ``booked``: its rows of the books when already read
    (read before the landing index: a batch is indexed before it is booked, so every booked
    batch is in the index read after). An hour that does not balance is read again once when
    a batch landed meanwhile: its run may have stored dead letters between the reads.

    ``counted``: the batches whose fragments' rows are read and held against their books (all
    when None). Every other batch is still held against the landing index, and its fragment
    must be listed, but its materialised rows are taken from the books: what a streaming run
    checks after each run, the batches it wrote counted, so that the check costs what the run
    costs rather than a footer read per batch of the hour (5,400 by the end of a 30-minute
    sustained hour: ~0.8 s a run). ``figstream books`` counts every fragment."""
    if booked is None:
        booked = books_for(stores.state).partition(stream, partition)
    landed = stores.state.batch_counts(stream, partition)
    out = _hour_books(stores, stream, partition, booked, landed, counted)
    if out.problems and stores.state.batch_counts(stream, partition) != landed:
        booked = books_for(stores.state).partition(stream, partition)
        out = _hour_books(stores, stream, partition, booked, stores.state.batch_counts(
            stream, partition), counted)  # fmt: skip
    return out


def pending_batches(stores: Stores, stream: str, partition: str) -> int:
    """Landed batches of (stream, hour) the ingest has not booked yet: two keyed reads, no
    fragment read (a sensor asks it of every hour of a day). Books first, as ``hour_books``
    reads them: a batch booked between the reads counts as pending, never the other way."""
    booked = set(books_for(stores.state).partition(stream, partition)["batch_id"].to_pylist())
    landed = {parse_batch_key(key)[1] for key in stores.state.batch_counts(stream, partition)}
    return len(landed - booked)


def _hour_books(
    stores: Stores,
    stream: str,
    partition: str,
    booked: pa.Table,
    landed: dict[str, int],
    counted: Collection[str] | None = None,
) -> HourBooks:
    out = HourBooks(stream, partition)
    rows = {r["batch_id"]: r for r in booked.to_pylist()}
    if not landed and not rows:
        return out
    out.landed, out.batches = sum(landed.values()), len(landed)
    problems = out.problems
    table = INGEST_TABLES[stream]
    in_table = fragment_rows(stores.objects, table, partition, counted)
    landed_ids = {parse_batch_key(key)[1]: (key, count) for key, count in landed.items()}
    booked_dead = 0
    for batch_id, (_, count) in sorted(landed_ids.items()):
        row = rows.get(batch_id)
        if row is None:
            out.pending += count
            out.pending_batches += 1
            continue
        if row["records"] != count:
            problems.append(
                f"batch {batch_id}: the landing index counts {count} records, the ingest "
                f"booked {row['records']} ({row['records'] - count:+d})"
            )
        held = in_table.get(batch_id)
        if held == PRESENT:  # listed, rows not counted: its books' figure stands
            held = row["materialised"]
        if held is None:
            problems.append(
                f"batch {batch_id}: no {table} fragment, the ingest materialised "
                f"{row['materialised']} ({-row['materialised']:+d})"
            )
        elif held != row["materialised"]:
            problems.append(
                f"batch {batch_id}: {table} holds {held} rows, the ingest materialised "
                f"{row['materialised']} ({held - row['materialised']:+d})"
            )
        out.materialised += held or 0
        out.duplicates += row["duplicates"]
        booked_dead += row["dead_lettered"]
    for batch_id in sorted(rows.keys() - landed_ids.keys()):
        problems.append(f"batch {batch_id}: booked but not in the landing index for this hour")
    for batch_id in sorted(in_table.keys() - landed_ids.keys()):
        n = in_table[batch_id]
        held = f"a fragment in {table}" if n == PRESENT else f"{n} rows in {table}"
        problems.append(f"batch {batch_id}: {held} but not in the landing index for this hour")
    out.by_reason = stores.dead_letters.counts_by_code(stream=stream, partition_key=partition)
    stored = sum(out.by_reason.values())
    if out.pending_batches:
        # The pending batches' dead letters may be stored already: only fewer is wrong.
        out.dead_lettered = booked_dead
        if stored < booked_dead:
            problems.append(
                f"the dead-letter store holds {stored}, the ingest dead-lettered {booked_dead} "
                f"({stored - booked_dead:+d})"
            )
    else:
        out.dead_lettered = stored
        if stored != booked_dead:
            problems.append(
                f"the dead-letter store holds {stored}, the ingest dead-lettered {booked_dead} "
                f"({stored - booked_dead:+d})"
            )
    if out.difference and not problems:
        problems.append(f"{out.difference:+d} records unaccounted for")
    return out


def books(stores: Stores, streams: Iterable[str], partitions: Sequence[str]) -> list[HourBooks]:
    """The books of each stream and hour of ``partitions`` (hourly keys, ascending) that has
    landed or booked anything, by stream then hour."""
    out = []
    if not partitions:
        return out
    for stream in streams:
        booked = books_for(stores.state).rows(stream, partitions[0], partitions[-1])
        by_hour: dict[str, list[int]] = {}
        for i, key in enumerate(booked["partition_key"].to_pylist()):
            by_hour.setdefault(key, []).append(i)
        for partition in partitions:
            rows = booked.take(pa.array(by_hour.get(partition, []), pa.int64()))
            hour = hour_books(stores, stream, partition, rows)
            if hour.landed or hour.problems:
                out.append(hour)
    return out


def hours_between(start: datetime, end: datetime) -> list[str]:
    """Hourly partition keys of every hour that overlaps [start, end)."""
    moment = start.replace(minute=0, second=0, microsecond=0)
    keys = []
    while moment < end:
        keys.append(hour_key(moment))
        moment += timedelta(hours=1)
    return keys


def describe(hour: HourBooks) -> str:
    """One line for a check's description or the CLI: which hour, and by how much."""
    head = (
        f"{hour.stream} {hour.partition}: landed {hour.landed:,} = materialised "
        f"{hour.materialised:,} + dead-lettered {hour.dead_lettered:,} + duplicates "
        f"{hour.duplicates:,}"
    )
    if hour.pending:
        head += f" + pending {hour.pending:,}"
    if hour.difference:
        head += f" (off by {hour.difference:+,})"
    return head + ("" if hour.balanced else ": " + "; ".join(hour.problems))
