"""The ingest step: landed batches into ``raw_events`` (postings) and ``board_mergers`` (boards).

Each batch is parsed, its events' ids are claimed (the first batch to claim an id owns it, so
a duplicate delivery is materialised once), and every rejected record is dead-lettered with its
reason. Conservation: events landed = events materialised + events dead-lettered + duplicates.

A redelivery is a duplicate only when it is the same event. Each claim carries the digest of
its event's canonical content (:func:`content_digests`), so a delivery of a claimed id with
other content is a ``conflicting_redelivery``
(:data:`figstream.storage.deadletter.CONFLICTING_REDELIVERY`): dead-lettered whole, with the
first delivery's batch, line and digest in its detail, while the first version stays
materialised. A version whose event time moved to another hour carries another hour's claim
key, so before an event is materialised its id is looked up in the trace index
(:meth:`figstream.storage.trace.TraceIndex.materialised`, keyed by event id, within the
claims' horizon): materialised in another hour or stream, it is a conflicting redelivery too.
Both checks decide the same way on a retry or a backfill of the same batch, so re-landing
stays idempotent.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from figstream.ingest.archive import read_batch
from figstream.ingest.landing import parse_batch_key
from figstream.ingest.routing import Router
from figstream.storage.deadletter import CONFLICTING_REDELIVERY
from figstream.storage.objects import write_parquet
from figstream.streaming import books, parse, trace
from figstream.streaming.landing_index import assign, split_lines
from figstream.streaming.stores import INGEST_TABLES, Stores, fragment_key, release_arrow_memory
from figstream.streaming.tables import EVENTS_SCHEMA, REJECTED_SCHEMA, empty

# --- ingest: raw_events (postings) and board_mergers (boards) ---------------------------------


@dataclass
class IngestReport:
    batches: int = 0
    records: int = 0
    valid: int = 0
    materialised: int = 0
    duplicates: int = 0  # of valid events and of rejected records
    dead_lettered: int = 0  # rejected records and conflicting redeliveries
    conflicting: int = 0  # of them, valid events that conflict with a first version
    event_times: list[pa.Array] = field(default_factory=list)
    batch_ids: list[str] = field(default_factory=list)

    _COUNTS = ("batches", "records", "valid", "materialised", "duplicates", "dead_lettered",
               "conflicting")  # fmt: skip

    def add(self, other: IngestReport) -> None:
        for attr in self._COUNTS:
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
    # Quantiles of the times themselves, over the arrays as they are: the lag is now minus the
    # time, so its q-quantile is now minus the times' (1 - q)-quantile (linear interpolation is
    # symmetric). Computing the lag of every event first took four copies of the run's times
    # (concatenated, cast, subtracted, divided): 150 MiB of a 5M-event range run's peak.
    micros = pa.chunked_array(times).cast(pa.int64())
    p05, p50 = pc.quantile(micros, q=[0.05, 0.5]).to_pylist()
    earliest = pc.min(micros).as_py()
    return {
        "lag_seconds_p50": round((now_us - p50) / 1e6, 3),
        "lag_seconds_p95": round((now_us - p05) / 1e6, 3),
        "lag_seconds_max": round((now_us - earliest) / 1e6, 3),
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
    # ``validated`` first: each batch is asked of it before its key, so a generator runs to its
    # end (the Lambda's reader deletes a batch's outputs once the next one is asked for).
    for batch, key in zip(validated, sorted(batch_keys), strict=True):
        if batch is None:
            # A named batch that holds none of the hour's records (rewritten after the sensor
            # indexed it here) is booked as read with nothing in it, so the books name it
            # against the landing index's count instead of calling the hour pending for ever.
            batch_id = parse_batch_key(key)[1]
            group.append((batch_id, empty(EVENTS_SCHEMA), empty(REJECTED_SCHEMA)))
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
    """Claim a group of parsed batches' ids, valid events by event id with their content's
    digest and rejected records by their exact bytes (a bad record delivered twice is one bad
    event), in the order of the batches; split off the conflicting redeliveries; then write
    each batch's fragment, dead-letter the group's rejected records and conflicting
    redeliveries and record every delivery's outcome in the trace index, then book each
    batch's counts."""
    claims: list[tuple] = []
    for batch_id, valid, rejected in group:
        ids = claim_keys(partition, valid["event_id"])
        claims.append((batch_id, ids, content_digests(valid)))
        claims.append((batch_id, _payload_ids(rejected).to_pylist()))
    owners = stores.state.claim_versions(claims)
    split = [
        _Split.of(batch_id, valid, claims[2 * i][1], claims[2 * i][2], owners[2 * i])
        for i, (batch_id, valid, _) in enumerate(group)
    ]
    _elsewhere(stores, partition, split)
    _claim_conflicts(stores, partition, split)
    dead = []
    traced = []
    booked = []
    for i, (batch_id, valid, rejected) in enumerate(group):
        part = split[i]
        same = valid.take(pa.array(part.same, pa.int64()))
        same_ids = [part.ids[n] for n in part.same]
        kept = _claimed(batch_id, same, same_ids, part.owners)
        key = fragment_key(INGEST_TABLES[stream], partition, batch_id)
        write_parquet(stores.objects, key, kept)
        bad_ids = claims[2 * i + 1][1]
        bad_owners = {k: owner for k, (owner, _) in owners[2 * i + 1].items()}
        new_rejected = _claimed(batch_id, rejected, bad_ids, bad_owners)
        conflicts = _conflict_rows(stores, keys.get(batch_id), valid, part, split)
        new_conflicts = _claimed(batch_id, conflicts, part.conflict_ids, part.conflict_owners)
        dead += [new_rejected, new_conflicts]
        records = valid.num_rows + rejected.num_rows
        dead_lettered = new_rejected.num_rows + new_conflicts.num_rows
        duplicates = records - kept.num_rows - dead_lettered
        report.batches += 1
        report.batch_ids.append(batch_id)
        report.valid += valid.num_rows
        report.materialised += kept.num_rows
        report.duplicates += duplicates
        report.dead_lettered += dead_lettered
        report.conflicting += new_conflicts.num_rows
        booked.append(books.BatchEntry(batch_id, keys.get(batch_id, batch_id), records,
                                       kept.num_rows, duplicates, dead_lettered))  # fmt: skip
        report.event_times.append(kept["event_time"].combine_chunks())
        # Conflicting deliveries are traced as the rejected ones are: dead-lettered (the first
        # of a version) or a duplicate of that version's first delivery.
        traced.append(
            trace.ClaimedBatch(
                batch_id, keys.get(batch_id, batch_id), same, same_ids, part.owners,
                pa.concat_tables([rejected, conflicts]), [*bad_ids, *part.conflict_ids],
                bad_owners | part.conflict_owners,
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
    reused with another event time is not the same event: the trace index finds the first
    version (see the module docstring). Rejected records are claimed by the digest of their
    bytes, unscoped (:func:`_payload_ids`)."""
    return [f"{partition}/{event_id}" for event_id in event_ids.to_pylist()]


# Not part of an event's content: where it was delivered, and the schema version it came in
# (upcast to the latest, a v1 and a v2 delivery of one event are alike).
_NOT_CONTENT = ("event_id", "version", "batch_id", "line_no")


def content_digests(valid: pa.Table) -> list[str]:
    """The SHA-256 of each valid event's canonical content: its upcast, flattened columns
    (type, source, event time, data) less :data:`_NOT_CONTENT`, as one JSON array a row."""
    if valid.num_rows == 0:
        return []
    columns = []
    for name in valid.column_names:
        if name in _NOT_CONTENT:
            continue
        column = valid[name]
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns.append(column.to_pylist())
    return [hashlib.sha256(orjson.dumps(row)).hexdigest() for row in zip(*columns, strict=True)]


@dataclass
class _Split:
    """One batch's valid rows split by their claims: ``same`` (row indexes) are the same event
    as their claim's owner holds (the owner's first row is materialised, the rest are
    duplicates); the rest are conflicting redeliveries, each claimed again by its version
    (:func:`_claim_conflicts`) so that a redelivery of a conflicting version is a duplicate."""

    batch_id: str
    ids: list[str]  # each valid row's claim key
    digests: list[str]
    lines: list[int]
    claimed: dict[str, tuple[str, str | None]]  # claim key -> (owner, its digest)
    same: list[int] = field(default_factory=list)
    conflict: list[int] = field(default_factory=list)
    conflict_ids: list[str] = field(default_factory=list)
    conflict_owners: dict[str, str] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)  # conflict row's claim key -> detail

    @property
    def owners(self) -> dict[str, str]:
        return {key: owner for key, (owner, _) in self.claimed.items()}

    @classmethod
    def of(
        cls,
        batch_id: str,
        valid: pa.Table,
        ids: list[str],
        digests: list[str],
        claimed: dict[str, tuple[str, str | None]],
    ) -> _Split:
        out = cls(batch_id, ids, digests, valid["line_no"].to_pylist(), claimed)
        for n, (key, digest) in enumerate(zip(ids, digests, strict=True)):
            held = claimed[key][1]
            # A claim without a digest (an earlier version's) cannot tell: a duplicate.
            (out.same if held is None or held == digest else out.conflict).append(n)
        return out

    def move_to_conflicts(self, keys: set[str]) -> None:
        """Rows of ``keys`` (this batch's own claims) conflict with a version elsewhere."""
        moved = [n for n in self.same if self.ids[n] in keys]
        self.same = [n for n in self.same if self.ids[n] not in keys]
        self.conflict = sorted(self.conflict + moved)


def _elsewhere(stores: Stores, partition: str, split: list[_Split]) -> None:
    """Rows about to be materialised whose event id is materialised in another hour (or
    stream) within the claims' horizon: conflicting redeliveries of that first version."""
    candidates: dict[str, list[tuple[_Split, str]]] = {}
    for part in split:
        for n in part.same:
            key = part.ids[n]
            if part.claimed[key][0] == part.batch_id:
                candidates.setdefault(key.split("/", 1)[1], []).append((part, key))
    if not candidates:
        return
    since = time.time_ns() // 1000 - stores.state.claim_ttl_s * 1_000_000
    found = trace.index_for(stores.state).materialised(list(candidates), since)
    moved: dict[int, set[str]] = {}
    for row in found.to_pylist():
        if row["partition_key"] == partition:
            continue  # this hour's own: the claim decides
        for part, key in candidates.get(row["event_id"], ()):
            moved.setdefault(id(part), set()).add(key)
            part.first.setdefault(key, _where(row, None))
    for part in split:
        if id(part) in moved:
            part.move_to_conflicts(moved[id(part)])


def _claim_conflicts(stores: Stores, partition: str, split: list[_Split]) -> None:
    """Claim each conflicting row by its version: ``<hour>/<id>#<digest>``, so that the first
    delivery of a conflicting version is dead-lettered and its redeliveries are duplicates. A
    row moved here by :func:`_elsewhere` keeps its own hour's claim, which it owns."""
    wanted = []
    for part in split:
        for n in part.conflict:
            key = part.ids[n]
            if part.claimed[key][0] == part.batch_id and part.claimed[key][1] == part.digests[n]:
                part.conflict_ids.append(key)
                part.conflict_owners[key] = part.batch_id
            else:
                part.conflict_ids.append(f"{key}#{part.digests[n]}")
        wanted.append((part.batch_id, [i for i in part.conflict_ids if i not in
                                       part.conflict_owners]))  # fmt: skip
    if not any(ids for _, ids in wanted):
        return
    for part, owned in zip(split, stores.state.claim_batches(wanted), strict=True):
        part.conflict_owners |= owned


def _conflict_rows(
    stores: Stores, batch_key: str | None, valid: pa.Table, part: _Split, split: list[_Split]
) -> pa.Table:
    """The conflicting rows of a batch as dead letters (:data:`REJECTED_SCHEMA`): the landed
    line whole (read back from the batch), and the first version in the detail."""
    if not part.conflict:
        return empty(REJECTED_SCHEMA)
    rows = valid.take(pa.array(part.conflict, pa.int64()))
    lines = split_lines(read_batch(stores.objects, batch_key))
    details = []
    for n in part.conflict:
        key = part.ids[n]
        first = part.first.get(key) or _first_in_group(key, split) or _where_claimed(
            stores, key, part.claimed[key])  # fmt: skip
        details.append(
            f"event id {key.split('/', 1)[1]} was delivered before with other content, "
            f"first in {first}; this delivery's content digest is {part.digests[n]}. The first "
            f"version stays materialised, this one is kept here whole"
        )
    return pa.table(
        {
            "batch_id": rows["batch_id"],
            "line_no": rows["line_no"],
            "event_id": rows["event_id"],
            "event_time": rows["event_time"],
            "code": pa.array([CONFLICTING_REDELIVERY] * rows.num_rows, pa.string()),
            "detail": pa.array(details, pa.string()),
            "payload": pa.array([lines[n - 1] for n in rows["line_no"].to_pylist()],
                                pa.binary()),
        },
        schema=REJECTED_SCHEMA,
    )  # fmt: skip


def _where(row: dict, digest: str | None) -> str:
    """A delivery as a dead letter's detail names it: batch:line (stream hour, digest)."""
    where = f"{row['batch_id']}:{row['line_no']} ({row['stream']} {row['partition_key']}"
    return where + (f", content digest {digest})" if digest else ")")


def _first_in_group(key: str, split: list[_Split]) -> str | None:
    """Where the owner of claim ``key`` delivered it, when the owner is in this group."""
    for part in split:
        owner, digest = part.claimed.get(key, ("", None))
        if owner == part.batch_id and key in part.ids:
            line = part.lines[part.ids.index(key)]
            return f"{owner}:{line} ({key.split('/', 1)[0]}, content digest {digest})"
    return None


def _where_claimed(stores: Stores, key: str, owner: tuple[str, str | None]) -> str:
    """Where the owner of claim ``key`` delivered it, from the trace index (a keyed read)."""
    hour, event_id = key.split("/", 1)
    for row in trace.index_for(stores.state).materialised([event_id], 0).to_pylist():
        if row["batch_id"] == owner[0] and row["partition_key"] == hour:
            return _where(row, owner[1])
    return f"batch {owner[0]} ({hour}, content digest {owner[1]})"


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
    """Valid events whose time is not in ``partition`` were placed by arrival (see assign):
    their time is outside the accepted window, so they are ``time_outside_window``."""
    if valid.num_rows == 0:
        return valid, rejected
    hours = pc.strftime(valid["event_time"], format="%Y-%m-%d-%H:00", locale="C")
    inside = pc.equal(hours, partition)
    if pc.all(inside).as_py():
        return valid, rejected
    outside = valid.filter(pc.invert(inside))
    # Placed in its batch's arrival hour: a later hour is a clock ahead of the bus, an earlier
    # one (the window starts at the first partition) is before history began.
    ahead = pc.greater(pc.filter(hours, pc.invert(inside)), partition)
    detail = pc.if_else(
        ahead,
        f"event time in an hour after its batch arrived ({partition}): outside the accepted "
        f"window (from the first partition up to the arrival hour); placed in {partition}",
        f"event time before the first partition: outside the accepted window (from the first "
        f"partition up to the hour the batch arrived); placed in {partition}",
    )
    moved = pa.table(
        {
            "batch_id": outside["batch_id"],
            "line_no": outside["line_no"],
            "event_id": outside["event_id"],
            "event_time": outside["event_time"],
            "code": pa.array(["time_outside_window"] * outside.num_rows),
            "detail": detail,
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
