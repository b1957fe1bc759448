"""The ingest step: landed batches into ``raw_events`` (postings) and ``board_mergers`` (boards).

Each batch is parsed, its events' ids are claimed (the first batch to claim an id owns it, so
a duplicate delivery is materialised once), and every rejected record is dead-lettered with its
reason. Conservation: events landed = events materialised + events dead-lettered.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from figstream.ingest.archive import read_batch
from figstream.ingest.landing import parse_batch_key
from figstream.ingest.routing import Router
from figstream.storage.objects import write_parquet
from figstream.streaming import books, parse, trace
from figstream.streaming.landing_index import assign, split_lines
from figstream.streaming.stores import INGEST_TABLES, Stores, fragment_key, release_arrow_memory

# --- ingest: raw_events (postings) and board_mergers (boards) ---------------------------------


@dataclass
class IngestReport:
    batches: int = 0
    records: int = 0
    valid: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    event_times: list[pa.Array] = field(default_factory=list)
    batch_ids: list[str] = field(default_factory=list)

    @property
    def materialised(self) -> int:
        return self.valid - self.duplicates

    def add(self, other: IngestReport) -> None:
        for attr in ("batches", "records", "valid", "duplicates", "dead_lettered"):
            setattr(self, attr, getattr(self, attr) + getattr(other, attr))
        self.event_times.extend(other.event_times)
        self.batch_ids.extend(other.batch_ids)

    def lag_seconds(self, now_us: int | None = None) -> dict[str, float]:
        return lag_seconds(self.event_times, now_us)


def lag_seconds(event_times: list[pa.Array], now_us: int | None = None) -> dict[str, float]:
    """Seconds from event time to ``now_us`` (default: now) of the events: p50, p95 and max,
    as plottable numbers; empty when there were none."""
    times = [t for t in event_times if len(t)]
    if not times:
        return {}
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    micros = pc.cast(pa.concat_arrays(times), pa.int64())
    lag = pc.divide(pc.cast(pc.subtract(now_us, micros), pa.float64()), 1e6)
    p50, p95 = pc.quantile(lag, q=[0.5, 0.95]).to_pylist()
    return {
        "lag_seconds_p50": round(p50, 3),
        "lag_seconds_p95": round(p95, 3),
        "lag_seconds_max": round(pc.max(lag).as_py(), 3),
    }


@dataclass
class RangeReport:
    """What :func:`ingest_range` did over a range of hours, and its worst hour's dead letters."""

    totals: IngestReport = field(default_factory=IngestReport)
    hours: dict[str, IngestReport] = field(default_factory=dict)  # each hour's own figures
    worst_dead_letter_rate: float = 0.0
    worst_partition: str | None = None


def ingest_range(
    stores: Stores,
    stream: str,
    partitions: Sequence[str],
    batch_keys: Sequence[str] | None,
    validator: Validator | None = None,
    run_id: str | None = None,
) -> RangeReport:
    """:func:`ingest` for each hour of ``partitions``: of the ``batch_keys`` the landing index
    holds for that hour (a sensor run over a range names every new batch), or, without
    ``batch_keys`` (a backfill), of every batch it holds. The dead-letter rate of an hour is its
    dead letters over every record the landing index counts for it, not only this run's.
    ``validator`` validates an hour's batches elsewhere (see :func:`ingest`); default here.
    ``run_id``, the Dagster run's, goes into the trace index with each delivery."""
    out = RangeReport()
    named = set(batch_keys or ())
    for partition in partitions:
        indexed = stores.state.batches_for(stream, partition)
        keys = [k for k in indexed if k in named] if batch_keys else indexed
        validated = None if validator is None or not keys else validator(partition, sorted(keys))
        out.hours[partition] = ingest(stores, stream, partition, keys, validated, run_id)
        out.totals.add(out.hours[partition])
        records = sum(stores.state.batch_counts(stream, partition).values())
        dead = stores.dead_letters.count(stream=stream, partition_key=partition)
        rate = dead / records if records else 0.0
        if rate >= out.worst_dead_letter_rate:
            out.worst_dead_letter_rate, out.worst_partition = rate, partition
    return out


@dataclass(frozen=True)
class ValidatedBatch:
    """One landed batch's records of a (stream, partition), validated and upcast: what
    :func:`validate_batch` makes of it (in process, or in the ``validate-batch`` Lambda) and
    what the claim step takes. ``records == valid.num_rows + rejected.num_rows``."""

    batch_id: str
    records: int
    valid: pa.Table  # EVENTS_SCHEMA, in line order
    rejected: pa.Table  # REJECTED_SCHEMA, in line order


# (partition, its batch keys in order) -> each batch's ValidatedBatch, or None where the batch
# holds none of the partition's records; ingest() takes what it yields in that order.
Validator = Callable[[str, Sequence[str]], Iterable["ValidatedBatch | None"]]


def validate_batch(
    data: bytes, key: str, stream: str, partition: str, router: Router, first_partition: str
) -> ValidatedBatch | None:
    """Parse, validate and upcast the lines of the landed batch ``key`` (its bytes ``data``)
    that belong to (``stream``, ``partition``); None when there are none. Pure: no store."""
    lines = assign(data, key, router, first_partition).get((stream, partition))
    if not lines:
        return None
    _, batch_id = parse_batch_key(key)
    all_lines = split_lines(data)
    parsed = parse.parse_batch(b"\n".join(all_lines[i] for i in lines), batch_id)
    # parse_batch numbers the lines it was given; map them back to the landed batch.
    original = pa.array([i + 1 for i in lines], pa.int64())
    valid = _renumber(parsed.valid, original)
    rejected = _renumber(parsed.rejected, original)
    valid, rejected = _outside_partition(valid, rejected, partition, all_lines)
    return ValidatedBatch(batch_id, parsed.records, valid.sort_by("line_no"), rejected)


def ingest(
    stores: Stores,
    stream: str,
    partition: str,
    batch_keys: Sequence[str],
    validated: Iterable[ValidatedBatch | None] | None = None,
    run_id: str | None = None,
) -> IngestReport:
    """Validate, upcast and dedupe the stream's records of ``partition`` in ``batch_keys``.

    Valid events become a fragment per batch; rejected records go to the dead-letter store with
    their reason, batch, partition and original bytes. A record seen again (at-least-once
    delivery) is kept only in the batch that first claimed its event id. Batches are parsed a
    group at a time (:data:`CLAIM_GROUP_ROWS`) and each group's ids are claimed in one call.
    ``validated``, when given, is what :func:`validate_batch` made of each of the sorted
    ``batch_keys`` elsewhere (the ``validate-batch`` Lambda); the claims, fragments and dead
    letters are then exactly the ones validating here would give. Every delivery's outcome
    goes into the trace index (:mod:`figstream.streaming.trace`) with ``run_id``.
    """
    if validated is None:
        validated = (
            # the landing object, or its archived copy
            validate_batch(
                read_batch(stores.objects, key),
                key,
                stream,
                partition,
                stores.router,
                stores.first_partition,
            )
            for key in sorted(batch_keys)
        )
    report = IngestReport()
    keys = {parse_batch_key(key)[1]: key for key in batch_keys}
    group: list[tuple[str, pa.Table, pa.Table]] = []
    held = 0
    for batch in validated:
        if batch is None:
            continue
        group.append((batch.batch_id, batch.valid, batch.rejected))
        report.records += batch.records
        held += batch.records
        if held >= CLAIM_GROUP_ROWS:
            _store_group(stores, stream, partition, group, report, keys, run_id)
            group, held = [], 0
    if group:
        _store_group(stores, stream, partition, group, report, keys, run_id)
    release_arrow_memory()
    return report


CLAIM_GROUP_ROWS = 20_000  # records parsed before their ids are claimed in one transaction


def _store_group(
    stores: Stores,
    stream: str,
    partition: str,
    group: list[tuple[str, pa.Table, pa.Table]],
    report: IngestReport,
    keys: dict[str, str],
    run_id: str | None,
) -> None:
    """Claim a group of parsed batches' ids, valid events by event id and rejected records by
    their exact bytes (a bad record delivered twice is one bad event), in the order of the
    batches; then write each batch's fragment, dead-letter the group's rejected records and
    record every delivery's outcome in the trace index, then book each batch's counts."""
    claims = []
    booked = []
    for batch_id, valid, rejected in group:
        claims.append((batch_id, claim_keys(partition, valid["event_id"])))
        claims.append((batch_id, _payload_ids(rejected).to_pylist()))
    owners = stores.state.claim_batches(claims)
    dead = []
    traced = []
    for i, (batch_id, valid, rejected) in enumerate(group):
        kept = _claimed(batch_id, valid, claims[2 * i][1], owners[2 * i])
        key = fragment_key(INGEST_TABLES[stream], partition, batch_id)
        write_parquet(stores.objects, key, kept)
        new_rejected = _claimed(batch_id, rejected, claims[2 * i + 1][1], owners[2 * i + 1])
        dead.append(new_rejected)
        report.batches += 1
        report.batch_ids.append(batch_id)
        report.valid += valid.num_rows
        report.duplicates += (
            valid.num_rows - kept.num_rows + rejected.num_rows - new_rejected.num_rows
        )
        report.dead_lettered += new_rejected.num_rows
        booked.append(books.BatchEntry(
            batch_id, keys.get(batch_id, batch_id), valid.num_rows + rejected.num_rows,
            kept.num_rows, valid.num_rows - kept.num_rows + rejected.num_rows
            - new_rejected.num_rows, new_rejected.num_rows,
        ))  # fmt: skip
        report.event_times.append(kept["event_time"].combine_chunks())
        traced.append(
            trace.ClaimedBatch(
                batch_id, keys.get(batch_id, batch_id), valid, claims[2 * i][1], owners[2 * i],
                rejected, claims[2 * i + 1][1], owners[2 * i + 1],
            )
        )  # fmt: skip
    dead = [rows for rows in dead if rows.num_rows]
    if dead:
        stores.dead_letters.add(pa.concat_tables(dead), stream=stream, partition_key=partition)
    trace.record_group(stores.state, stream, partition, traced, run_id)
    # Booked last: a batch's books say what its durable outputs hold (figstream.streaming.books).
    books.record_batches(stores.state, stream, partition, booked, run_id)


def claim_keys(partition: str, event_ids: pa.Array | pa.ChunkedArray) -> list[str]:
    """The claim keys of valid events of an hourly partition: ``<hour>/<event id>``.

    A redelivery is the same event, so it has the same id and the same event time, and so the
    same hour: scoping the claim by the hour finds every redelivery, and it keeps a run's claims
    together in the store's key order (a B-tree's pages, a DynamoDB partition's items), so the
    claim step costs what the run's events cost whatever the number of claims held (10k claims:
    0.012 s into 100k or 3M held, against 0.05 s and 0.22 s keyed by the id alone). An id
    reused with another event time is another event here. Rejected records are claimed by the
    digest of their bytes, unscoped (:func:`_payload_ids`)."""
    return [f"{partition}/{event_id}" for event_id in event_ids.to_pylist()]


def _payload_ids(rejected: pa.Table) -> pa.Array:
    digests = ["rejected:" + hashlib.sha256(p).hexdigest() for p in rejected["payload"].to_pylist()]
    return pa.array(digests, pa.string())


def _claimed(batch_id: str, rows: pa.Table, ids: list[str], owners: dict[str, str]) -> pa.Table:
    """The rows whose id (``ids[i]`` is row i's) this batch owns: the first batch to claim an
    id keeps it for good, and a batch claiming again (a retry, a backfill) gets its own claims
    back. One row per id within the batch, too."""
    if rows.num_rows == 0:
        return rows
    first = {}
    for index, event_id in enumerate(ids):
        if owners[event_id] == batch_id:
            first.setdefault(event_id, index)
    return rows.take(pa.array(sorted(first.values()), pa.int64()))


def _outside_partition(
    valid: pa.Table, rejected: pa.Table, partition: str, lines: list[bytes]
) -> tuple[pa.Table, pa.Table]:
    """Valid events whose time is not in ``partition`` were placed by arrival (see assign)."""
    if valid.num_rows == 0:
        return valid, rejected
    hours = pc.strftime(valid["event_time"], format="%Y-%m-%d-%H:00", locale="C")
    inside = pc.equal(hours, partition)
    if pc.all(inside).as_py():
        return valid, rejected
    outside = valid.filter(pc.invert(inside))
    detail = (
        f"event time outside the accepted window (from the first partition up to the hour "
        f"the batch arrived); placed in {partition}"
    )
    moved = pa.table(
        {
            "batch_id": outside["batch_id"],
            "line_no": outside["line_no"],
            "event_id": outside["event_id"],
            "event_time": outside["event_time"],
            "code": pa.array(["invalid_value"] * outside.num_rows),
            "detail": pa.array([detail] * outside.num_rows),
            "payload": pa.array(
                [lines[n - 1] for n in outside["line_no"].to_pylist()], pa.binary()
            ),
        }
    )
    return valid.filter(inside), pa.concat_tables([rejected, moved.cast(rejected.schema)])


def _renumber(table: pa.Table, original: pa.Array) -> pa.Table:
    if table.num_rows == 0:
        return table
    index = table.schema.get_field_index("line_no")
    positions = pc.subtract(table["line_no"], 1)
    return table.set_column(index, "line_no", pc.take(original, positions))
