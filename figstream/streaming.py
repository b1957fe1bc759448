"""The streaming pipeline's steps over the stores, free of Dagster so the CLI and benchmarks
can run the very code the assets run.

Landed batches hold events of any hour. Each step works on one (stream, hourly partition) and a
set of batches: the sensor passes the batches that are new, a backfill passes every batch the
landing index knows for the partition. Outputs are written per batch as *fragments*
(``tables/<table>/<partition>/<batch_id>.parquet``), so a re-run of a batch overwrites its own
fragment and never another's: replays and backfills are idempotent, and a sensor run costs
what its new batches cost, not what the partition holds.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from figstream import buckets, transform
from figstream.buckets import Manifest, merge_sorted, split, write_bucket
from figstream.deadletter import DeadLetterStore, SqliteDeadLetterStore, deadletter_path
from figstream.events import parse_time
from figstream.landing import LANDING_PREFIX, parse_batch_key
from figstream.objectstore import LocalObjectStore, ObjectStore, read_parquet, write_parquet
from figstream.routing import Router
from figstream.settings import routing_path
from figstream.state import SqliteStateStore, StateStore, job_state_rows, state_path
from figstream.validation import EARLIEST, LATEST

HOUR_FORMAT = "%Y-%m-%d-%H:00"  # Dagster's hourly partition key format
INGEST_TABLES = {"postings": "raw_events", "boards": "board_mergers"}
SEARCH_INDEX_KEY = "tables/search_index/snapshot.parquet"


def hour_key(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(HOUR_FORMAT)


def hour_start(partition: str) -> datetime:
    return datetime.strptime(partition, HOUR_FORMAT).replace(tzinfo=UTC)


def fragment_key(table: str, partition: str, batch_id: str) -> str:
    return f"tables/{table}/{partition}/{batch_id}.parquet"


@dataclass
class Stores:
    objects: ObjectStore
    state: StateStore
    dead_letters: DeadLetterStore
    router: Router
    # The first hourly partition; an event before it has no partition to land in.
    first_partition: str = "2000-01-01-00:00"

    @classmethod
    def local(cls, home: Path, first_partition: str, objects: ObjectStore | None = None) -> Stores:
        """The local profile's stores in one data home, with the project's routing file."""
        return cls(
            objects=LocalObjectStore(home) if objects is None else objects,
            state=SqliteStateStore(state_path(home)),
            dead_letters=SqliteDeadLetterStore(deadletter_path(home)),
            router=Router.from_file(routing_path()),
            first_partition=first_partition,
        )


# --- assignment: which lines of a batch belong to which (stream, partition) -------------------


# The wire form figstream writes (events.format_time): UTC, "Z", no or 3 or 6 fraction digits.
# Such a time's hour is its first 13 characters, so only those need parsing, once per hour.
_CANONICAL_TIME = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d):[0-5]\d:[0-5]\d(?:\.\d{3}|\.\d{6})?Z", re.ASCII
)


@functools.lru_cache(maxsize=4096)
def _hour_of_prefix(prefix: str) -> str | None:
    return _hour_of_time(f"{prefix}:00:00Z")


def _hour_of_time(value: str) -> str | None:
    try:
        moment = parse_time(value)
    except (TypeError, ValueError):
        return None
    return hour_key(moment) if EARLIEST <= moment < LATEST else None


def _event_hour(record: object) -> str | None:
    """The hour of a record's usable event time (within [EARLIEST, LATEST)), else None."""
    if not isinstance(record, dict):
        return None
    value = record.get("time")
    if not isinstance(value, str):
        return None
    canonical = _CANONICAL_TIME.fullmatch(value)
    if canonical:  # EARLIEST and LATEST are whole hours, so the hour decides the window too
        return _hour_of_prefix(canonical.group(1))
    return _hour_of_time(value)


def split_lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def assign(
    data: bytes, batch_key: str, router: Router, first_partition: str = "2000-01-01-00:00"
) -> dict[tuple[str, str], list[int]]:
    """(stream, hourly partition) -> indexes of the batch's lines that belong there.

    A record goes to the hour of its event time. A record without a usable time, or with one
    outside [first partition, arrival hour] (before history began, or from a clock ahead of
    the bus), goes to the hour its batch arrived in, and ingest dead-letters it there. The rule
    depends only on the batch, never on the wall clock, and the sensor and the assets both call
    this, so they can never disagree about where a line belongs.
    """
    arrival, _ = parse_batch_key(batch_key)
    arrival_hour = hour_key(arrival)
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, line in enumerate(split_lines(data)):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        partition = _event_hour(record)
        if partition is None or not first_partition <= partition <= arrival_hour:
            partition = arrival_hour
        for stream in router.route_record(record):
            out[(stream, partition)].append(index)
    return dict(out)


NO_PARTITION = ""  # index entry of a batch that holds none of a stream's records


def index_landing(stores: Stores, stream: str, keys: Sequence[str]) -> dict[str, list[str]]:
    """Record in the landing index which hours of ``stream`` each batch touches.

    Returns partition -> batch keys. A batch with none of the stream's records is indexed under
    ``NO_PARTITION`` so that it counts as seen. Idempotent: batches are immutable.
    """
    touched: dict[str, list[str]] = defaultdict(list)
    entries = []
    for key in keys:
        assigned = assign(stores.objects.get(key), key, stores.router, stores.first_partition)
        mine = [(p, len(lines)) for (s, p), lines in assigned.items() if s == stream]
        for partition, count in mine:
            touched[partition].append(key)
            entries.append((partition, key, count))
        if not mine:
            entries.append((NO_PARTITION, key, 0))
    stores.state.index_batches(stream, entries)
    return dict(touched)


def catch_up_index(stores: Stores, stream: str) -> int:
    """Index every landed batch the index has not seen (a backfill before any sensor tick,
    or a batch that became visible later than the sensors' look-back). Returns how many."""
    seen = stores.state.indexed_batches(stream)
    missing = [k for k in stores.objects.list(LANDING_PREFIX) if k not in seen]
    if missing:
        index_landing(stores, stream, missing)
    return len(missing)


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


def ingest(stores: Stores, stream: str, partition: str, batch_keys: Sequence[str]) -> IngestReport:
    """Validate, upcast and dedupe the stream's records of ``partition`` in ``batch_keys``.

    Valid events become a fragment per batch; rejected records go to the dead-letter store with
    their reason, batch, partition and original bytes. A record seen again (at-least-once
    delivery) is kept only in the batch that first claimed its event id. Batches are parsed a
    group at a time (:data:`CLAIM_GROUP_ROWS`) and each group's ids are claimed in one call.
    """
    report = IngestReport()
    group: list[tuple[str, pa.Table, pa.Table]] = []
    held = 0
    for key in sorted(batch_keys):
        data = stores.objects.get(key)
        lines = assign(data, key, stores.router, stores.first_partition).get((stream, partition))
        if not lines:
            continue
        _, batch_id = parse_batch_key(key)
        all_lines = split_lines(data)
        parsed = transform.parse_batch(b"\n".join(all_lines[i] for i in lines), batch_id)
        # parse_batch numbers the lines it was given; map them back to the landed batch.
        original = pa.array([i + 1 for i in lines], pa.int64())
        valid = _renumber(parsed.valid, original)
        rejected = _renumber(parsed.rejected, original)
        valid, rejected = _outside_partition(valid, rejected, partition, all_lines)
        group.append((batch_id, valid.sort_by("line_no"), rejected))
        report.records += parsed.records
        held += parsed.records
        if held >= CLAIM_GROUP_ROWS:
            _store_group(stores, stream, partition, group, report)
            group, held = [], 0
    if group:
        _store_group(stores, stream, partition, group, report)
    _release_arrow_memory()
    return report


CLAIM_GROUP_ROWS = 20_000  # records parsed before their ids are claimed in one transaction


def _store_group(
    stores: Stores,
    stream: str,
    partition: str,
    group: list[tuple[str, pa.Table, pa.Table]],
    report: IngestReport,
) -> None:
    """Claim a group of parsed batches' ids, valid events by event id and rejected records by
    their exact bytes (a bad record delivered twice is one bad event), in the order of the
    batches; then write each batch's fragment and dead-letter the group's rejected records."""
    claims = []
    for batch_id, valid, rejected in group:
        claims.append((batch_id, valid["event_id"].to_pylist()))
        claims.append((batch_id, _payload_ids(rejected).to_pylist()))
    owners = stores.state.claim_batches(claims)
    dead = []
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
        report.event_times.append(kept["event_time"].combine_chunks())
    dead = [rows for rows in dead if rows.num_rows]
    if dead:
        stores.dead_letters.add(pa.concat_tables(dead), stream=stream, partition_key=partition)


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


# --- downstream steps ---------------------------------------------------------------------------


def fragments(
    objects: ObjectStore, table: str, partition: str, batch_ids: Iterable[str] | None
) -> list[str]:
    """Keys of a partition's fragments: the named batches', or all of them (a backfill)."""
    keys = objects.list(f"tables/{table}/{partition}/")
    if batch_ids is None:
        return keys
    wanted = set(batch_ids)
    return [k for k in keys if batch_id_of(k) in wanted]


def read_fragments(
    objects: ObjectStore,
    table: str,
    partitions: Iterable[str],
    batch_ids: Iterable[str] | None,
    schema: pa.Schema,
) -> pa.Table:
    batch_ids = None if batch_ids is None else list(batch_ids)
    tables = [
        read_parquet(objects, key).select(schema.names).cast(schema)
        for partition in partitions
        for key in fragments(objects, table, partition, batch_ids)
    ]
    return pa.concat_tables(tables) if tables else transform.empty(schema)


def batch_id_of(key: str) -> str:
    return key.rsplit("/", 1)[1].removesuffix(".parquet")


def _write_each(objects: ObjectStore, table: str, rows: pa.Table) -> int:
    """One fragment per (event-time hour, batch) of ``rows``, each in ``rows``' order: one
    stable sort of the keys, then the groups gathered a window at a time (never a second copy
    of all of ``rows``); returns the rows written."""
    if rows.num_rows == 0:
        return 0
    hours = pc.strftime(rows["event_time"], format="%Y-%m-%d-%H:00", locale="C")
    keys = pa.table({"partition": hours, "batch_id": rows["batch_id"]})
    order = pc.sort_indices(keys, sort_keys=[("partition", "ascending"), ("batch_id", "ascending")])
    keys = keys.take(order)
    starts = [0]
    if rows.num_rows > 1:
        changed = pc.or_(
            *(
                pc.not_equal(keys[name].slice(1), keys[name].slice(0, rows.num_rows - 1))
                for name in ("partition", "batch_id")
            )
        )
        starts += (np.flatnonzero(changed.to_numpy(zero_copy_only=False)) + 1).tolist()
    ends = [*starts[1:], rows.num_rows]
    window_start, window = 0, rows.slice(0, 0)
    for start, end in zip(starts, ends, strict=True):
        if end > window_start + window.num_rows:  # gather the next groups, WRITE_WINDOW rows
            at = bisect.bisect_left(ends, start + WRITE_WINDOW)  # ends are sorted
            last = ends[at] if at < len(ends) else rows.num_rows
            window_start, window = start, rows.take(order.slice(start, max(last, end) - start))
        partition, batch_id = keys["partition"][start].as_py(), keys["batch_id"][start].as_py()
        key = fragment_key(table, partition, batch_id)
        write_parquet(objects, key, window.slice(start - window_start, end - start))
    return rows.num_rows


WRITE_WINDOW = 20_000  # rows _write_each gathers at once: few gathers, no copy of every row


R = TypeVar("R")


def by_hour(
    step: Callable[[Stores, Sequence[str], list[str] | None], R],
    stores: Stores,
    partitions: Sequence[str],
    batch_ids: Iterable[str] | None,
) -> list[R]:
    """Run ``step`` over a range of partitions (a backfill, a catch-up run) one hour at a time,
    in order; returns its reports (one call with no partitions for an empty range). A run then
    holds one hour's events, however long its range. The state merges are order-insensitive,
    so the result is the one a single pass would give (and the one the sensor's hourly runs
    give); the price is each touched bucket rewritten once per hour."""
    ids = None if batch_ids is None else list(batch_ids)
    hours = [[partition] for partition in sorted(partitions)] or [[]]
    reports = []
    for hour in hours:
        reports.append(step(stores, hour, ids))
        _release_arrow_memory()
    return reports


def _release_arrow_memory() -> None:
    """Hand the memory Arrow's pool kept from a step back to the system. The pool (mimalloc)
    keeps freed pages for reuse, but the next step's Python objects come from another
    allocator and cannot use them: after exporting 1.5M index rows it held 146 MiB with nothing
    allocated. Returning them costs well under a millisecond."""
    pa.default_memory_pool().release_unused()


def clean(stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None) -> int:
    """clean_postings fragments from the partitions' raw_events fragments, an hour at a time."""
    return sum(by_hour(_clean, stores, partitions, batch_ids))


def _clean(stores: Stores, partitions: Sequence[str], batch_ids: list[str] | None) -> int:
    events = read_fragments(
        stores.objects, "raw_events", partitions, batch_ids, transform.EVENTS_SCHEMA
    )
    return _write_each(stores.objects, "clean_postings", transform.clean_postings(events))


# --- the global state, kept in hash buckets (figstream.buckets) -------------------------------
#
# A run reads, updates and rewrites only the buckets its events touch, one at a time, so its
# memory is its events (and the rows they touch) plus one bucket. Within a run, what is derived
# is written before what it derives from, and the manifest (a new token) last, so a retried run
# redoes what a crash left undone.

# Job rows by job_id; the merger rows (a handful, which every bucket needs: a merger acts on
# the jobs of its absorbed board in every bucket) in one object of their own.
JOB_STATE_BUCKETS = "tables/job_state/jobs/"
MERGERS_KEY = "tables/job_state/mergers.parquet"
JOB_STATE_MANIFEST = "tables/job_state/manifest.json"
# Each job bucket's active jobs as search-index rows by job_id, before duplicates are shadowed.
ACTIVE_BUCKETS = "tables/job_state/active/"
INDEX_ROW_GROUP = 4096  # rows a row group of those holds: what the index merge reads at a time
# The dedupe registry (a job's first job.posted) by job_id, to find a job's row when it is
# posted again, and by dedupe_key, since a key's duplicates are decided among all its jobs.
# Keys alone would not do: a job re-posted with another key earlier than its first posting
# moves from one key to the other. The duplicates are kept by key bucket, like the latter.
REGISTRY_BY_JOB = "tables/postings_registry/by_job/"
REGISTRY_BY_KEY = "tables/postings_registry/by_key/"
REGISTRY_MANIFEST = "tables/postings_registry/manifest.json"
DUPLICATES_BUCKETS = "tables/duplicates/"
SEARCH_INDEX_SOURCE = "tables/search_index/source.json"  # the manifest tokens it was built from
# The single-object layout of earlier versions: a state step's first run converts it (that
# run holds the whole table once); readers read it until then.
OLD_JOB_STATE_KEY = "tables/job_state/state.parquet"
OLD_REGISTRY_KEY = "tables/postings_registry/registry.parquet"
OLD_DUPLICATES_KEY = "tables/duplicates/current.parquet"
_BY_JOB_ID = [("kind", "ascending"), ("job_id", "ascending")]
_BY_FIRST_POSTING = [("event_time", "ascending"), ("event_id", "ascending")]


def _snapshot(objects: ObjectStore, key: str, schema: pa.Schema) -> pa.Table:
    if not objects.exists(key):
        return transform.empty(schema)
    return read_parquet(objects, key).select(schema.names).cast(schema)


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else transform.empty(schema)


def _read_buckets(
    objects: ObjectStore, manifest: Manifest, prefix: str, schema: pa.Schema
) -> pa.Table:
    keys = manifest.keys(prefix)
    return _concat([_snapshot(objects, k, schema) for k in keys if objects.exists(k)], schema)


def _read_all(
    objects: ObjectStore, manifest: str, prefix: str, old_key: str, schema: pa.Schema
) -> pa.Table:
    """Every bucket of a table as one table (for views and checks: it holds the whole table),
    or the earlier single object while it has not been converted."""
    layout = Manifest.read(objects, manifest)
    if layout is None:
        return _snapshot(objects, old_key, schema)  # empty when there is none either
    return _read_buckets(objects, layout, prefix, schema)


def read_job_state(objects: ObjectStore) -> pa.Table:
    """The whole job state (:data:`transform.STATE_SCHEMA`, by kind and job_id)."""
    jobs = _read_all(
        objects, JOB_STATE_MANIFEST, JOB_STATE_BUCKETS, OLD_JOB_STATE_KEY, transform.STATE_SCHEMA
    )
    if not objects.exists(JOB_STATE_MANIFEST) and objects.exists(OLD_JOB_STATE_KEY):
        return jobs  # the old object holds the merger rows too
    mergers = _snapshot(objects, MERGERS_KEY, transform.STATE_SCHEMA)
    return pa.concat_tables([jobs, mergers]).sort_by(_BY_JOB_ID).combine_chunks()


def read_registry(objects: ObjectStore) -> pa.Table:
    """The whole dedupe registry (:data:`transform.CANONICAL_SCHEMA`, by event time and id)."""
    registry = _read_all(
        objects, REGISTRY_MANIFEST, REGISTRY_BY_JOB, OLD_REGISTRY_KEY, transform.CANONICAL_SCHEMA
    )
    return registry.sort_by(_BY_FIRST_POSTING).combine_chunks()


def read_duplicates(objects: ObjectStore) -> pa.Table:
    """Every duplicate (:data:`transform.DUPLICATES_SCHEMA`, by job_id)."""
    duplicates = _read_all(
        objects,
        REGISTRY_MANIFEST,
        DUPLICATES_BUCKETS,
        OLD_DUPLICATES_KEY,
        transform.DUPLICATES_SCHEMA,
    )
    return duplicates.sort_by("job_id").combine_chunks()


def _key_bucket(registry: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(duplicates, registry rows sorted) of a key bucket's registry rows (one a job)."""
    result = transform.dedupe_postings(transform.empty(transform.POSTINGS_SCHEMA), registry)
    return result.duplicates, result.canonical


def _write_key_bucket(
    objects: ObjectStore, manifest: Manifest, bucket: int, tables: tuple[pa.Table, pa.Table]
) -> pa.Table:
    """Store a key bucket's (duplicates, registry rows); returns the duplicates."""
    duplicates, registry = tables
    manifest.changing(objects)
    write_bucket(objects, manifest.bucket_key(DUPLICATES_BUCKETS, bucket), duplicates)
    write_bucket(objects, manifest.bucket_key(REGISTRY_BY_KEY, bucket), registry)
    manifest.count("duplicates")[bucket] = duplicates.num_rows
    return duplicates


def _changed_key_bucket(
    objects: ObjectStore, manifest: Manifest, bucket: int, changes: pa.Table, added: pa.Table
) -> tuple[pa.Table, pa.Table]:
    """(duplicates, registry rows) of a key bucket after ``changes``: the old and new registry
    rows of the jobs that moved to or within it (the new ones are in ``added``). A key's
    duplicates depend on its rows alone, so only the keys the changes name are recomputed; the
    others' are kept.

    Idempotent even after a crash between the passes (or between the two objects): a job's
    rows go, its new row comes, and the keys it names are recomputed from the rows."""
    schema = transform.CANONICAL_SCHEMA
    rows = _snapshot(objects, manifest.bucket_key(REGISTRY_BY_KEY, bucket), schema)
    gone = pc.is_in(rows["job_id"], changes["job_id"])
    new = changes.filter(pc.is_in(changes["event_id"], added["event_id"]))
    rows = pa.concat_tables([rows.filter(pc.invert(gone)), new])
    keys = pc.unique(changes["dedupe_key"])
    key = manifest.bucket_key(DUPLICATES_BUCKETS, bucket)
    kept = _snapshot(objects, key, transform.DUPLICATES_SCHEMA)
    kept = kept.filter(pc.invert(pc.is_in(kept["dedupe_key"], keys)))
    named, _ = _key_bucket(rows.filter(pc.is_in(rows["dedupe_key"], keys)))
    duplicates = pa.concat_tables([kept, named]).sort_by("job_id").combine_chunks()
    return duplicates, rows.sort_by(_BY_FIRST_POSTING).combine_chunks()


def _manifest(
    objects: ObjectStore, key: str, old_keys: Sequence[str], schema: pa.Schema, convert: Callable
) -> Manifest:
    """A bucketed table's manifest. A table still in the single-object layout (``old_keys``,
    the first its own) is converted first: that one run holds the whole table."""
    manifest = Manifest.read(objects, key)
    if manifest is not None:
        return manifest
    manifest = Manifest(key)
    if objects.exists(old_keys[0]):
        table = _snapshot(objects, old_keys[0], schema)
        if table.num_rows > buckets.SPLIT_ROWS:
            manifest = Manifest(key, buckets.BUCKETS)
        convert(objects, manifest, table)
        manifest.write(objects)
        for old in old_keys:
            objects.delete(old)
    return manifest


def _grown(
    objects: ObjectStore,
    manifest: Manifest,
    incoming: int,
    total: str,
    prefixes: Sequence[str],
    whole: Callable[[Manifest], pa.Table],
    convert: Callable[[ObjectStore, Manifest, pa.Table], None],
) -> Manifest:
    """``manifest``, or the manifest of its table split into :data:`buckets.BUCKETS` when
    ``incoming`` rows could take a one-bucket table past :data:`buckets.SPLIT_ROWS` (so one
    bucket never holds more). ``total`` names the count of the table's rows; ``whole`` reads
    it (the table, at most SPLIT_ROWS rows) and ``convert`` writes it in a layout.

    The split writes the new layout beside the old, then the manifest that names it, and only
    then deletes the old: a crash before the manifest leaves the old layout whole, and the
    split is redone (over whatever it had written, which is deleted first).
    """
    if manifest.buckets != 1 or manifest.total(total) + incoming <= buckets.SPLIT_ROWS:
        return manifest
    grown = Manifest(manifest.key, buckets.BUCKETS)
    for prefix in prefixes:
        left = set(grown.keys(prefix))
        for key in objects.list(prefix):
            if key in left:
                objects.delete(key)
    convert(objects, grown, whole(manifest))
    grown.write(objects)
    for prefix in prefixes:
        for key in manifest.keys(prefix):
            objects.delete(key)
    return grown


def _convert_registry(objects: ObjectStore, manifest: Manifest, registry: pa.Table) -> None:
    for bucket, rows in split(registry, manifest.of(registry["job_id"])).items():
        write_bucket(objects, manifest.bucket_key(REGISTRY_BY_JOB, bucket), rows)
        manifest.count("registered")[bucket] = rows.num_rows
    for bucket, rows in split(registry, manifest.of(registry["dedupe_key"])).items():
        _write_key_bucket(objects, manifest, bucket, _key_bucket(rows))


def _registry_manifest(objects: ObjectStore, incoming: int = 0) -> Manifest:
    """The registry's manifest, split first if ``incoming`` postings could outgrow one bucket."""
    old = [OLD_REGISTRY_KEY, OLD_DUPLICATES_KEY]
    schema = transform.CANONICAL_SCHEMA
    manifest = _manifest(objects, REGISTRY_MANIFEST, old, schema, _convert_registry)
    prefixes = [REGISTRY_BY_JOB, REGISTRY_BY_KEY, DUPLICATES_BUCKETS]

    def whole(layout: Manifest) -> pa.Table:
        return _read_buckets(objects, layout, REGISTRY_BY_JOB, schema)

    return _grown(objects, manifest, incoming, "registered", prefixes, whole, _convert_registry)


REGISTRY_ROWS_KEPT = 250_000  # registry rows (~120 bytes each) a dedupe keeps between passes


@dataclass
class DedupeReport:
    postings: int
    kept: int
    duplicates_total: int


def dedupe(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> DedupeReport:
    """Cross-board dedupe of the partitions' clean postings, an hour at a time (:func:`by_hour`)."""
    reports = by_hour(_dedupe, stores, partitions, batch_ids)
    postings, kept = sum(r.postings for r in reports), sum(r.kept for r in reports)
    return DedupeReport(postings, kept, reports[-1].duplicates_total)


def _dedupe(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> DedupeReport:
    """Cross-board dedupe of the partitions' clean postings against the global registry.

    Three passes over the buckets the postings touch, one bucket at a time: the registry
    buckets of their jobs say which first postings are new and which they replace; the key
    buckets of those (and of the postings' jobs) get the new rows and their duplicates
    recomputed; then the job buckets take the new rows. Runs hold the ``figstream_state``
    pool, so two runs never interleave their read-modify-write.
    """
    objects = stores.objects
    postings = read_fragments(
        objects, "clean_postings", partitions, batch_ids, transform.POSTINGS_SCHEMA
    )
    manifest = _registry_manifest(objects, postings.num_rows)
    if postings.num_rows == 0:
        return DedupeReport(0, 0, manifest.total("duplicates"))
    count, order = postings.num_rows, pa.array(np.arange(postings.num_rows))
    # One copy of the postings, by bucket; "_row" gives the kept ones their order back.
    by_job = split(postings.append_column("_row", order), manifest.of(postings["job_id"]))
    del postings
    added, replaced, registered = [], [], []
    kept_known, held = {}, 0  # job buckets kept for the third pass while they fit
    new_by_bucket = {}
    for bucket, rows in by_job.items():
        key = manifest.bucket_key(REGISTRY_BY_JOB, bucket)
        known = _snapshot(objects, key, transform.CANONICAL_SCHEMA)
        if held + known.num_rows <= REGISTRY_ROWS_KEPT:
            kept_known[bucket], held = known, held + known.num_rows
        # The first posting of each of the postings' jobs: only their registry rows matter.
        mine = known.filter(pc.is_in(known["job_id"], rows["job_id"]))
        registry = transform.dedupe_postings(rows, mine).canonical
        new = registry.filter(pc.invert(pc.is_in(registry["event_id"], mine["event_id"])))
        new_by_bucket[bucket] = new
        added.append(new)
        replaced.append(mine.filter(pc.is_in(mine["job_id"], new["job_id"])))
        registered.append(registry)
    schema = transform.CANONICAL_SCHEMA
    added, replaced = _concat(added, schema), _concat(replaced, schema)
    registered = _concat(registered, schema)
    moved = pa.concat_tables([added, replaced])
    changes = split(moved, manifest.of(moved["dedupe_key"]))
    duplicate_ids = []
    for bucket in sorted(set(changes) | set(manifest.of(registered["dedupe_key"]).tolist())):
        if bucket in changes:
            tables = _changed_key_bucket(objects, manifest, bucket, changes[bucket], added)
            duplicates = _write_key_bucket(objects, manifest, bucket, tables)
        else:
            key = manifest.bucket_key(DUPLICATES_BUCKETS, bucket)
            duplicates = _snapshot(objects, key, transform.DUPLICATES_SCHEMA)
            manifest.count("duplicates")[bucket] = duplicates.num_rows
        duplicate_ids.append(
            duplicates["job_id"].filter(pc.is_in(duplicates["job_id"], registered["job_id"]))
        )
    for bucket, new in new_by_bucket.items():
        if new.num_rows:  # the bucket's rows of those jobs give way to their new first postings
            key = manifest.bucket_key(REGISTRY_BY_JOB, bucket)
            known = kept_known.pop(bucket, None)
            if known is None:
                known = _snapshot(objects, key, schema)
            manifest.changing(objects)
            known = known.filter(pc.invert(pc.is_in(known["job_id"], new["job_id"])))
            registry = pa.concat_tables([known, new]).sort_by(_BY_FIRST_POSTING).combine_chunks()
            write_bucket(objects, key, registry)
            manifest.count("registered")[bucket] = registry.num_rows
    manifest.save(objects)
    dropped = pa.chunked_array(duplicate_ids, pa.string())
    kept = [rows.filter(pc.invert(pc.is_in(rows["job_id"], dropped))) for rows in by_job.values()]
    del by_job
    kept = pa.concat_tables(kept).sort_by("_row").drop_columns(["_row"])
    kept_rows = _write_each(objects, "deduped_postings", kept)
    return DedupeReport(count, kept_rows, manifest.total("duplicates"))


@dataclass
class StateReport:
    events: int
    changed: int
    jobs: int
    active: int


def _fingerprint(state: pa.Table) -> pa.Array:
    parts = [
        pc.fill_null(state[name], "")
        for name in ("job_id", "posting_event_id", "expiry_event_id", "merger_event_id")
    ]
    return pc.binary_join_element_wise(*parts, "|")


def _touched(state: pa.Table, events: pa.Table) -> pa.Array:
    """The state rows ``events`` can change: their jobs, every merger row, and the jobs of a
    board a merger in ``events`` absorbs (see :func:`transform.apply_job_state`)."""
    mask = pc.or_(
        pc.is_in(state["job_id"], pc.unique(events["job_id"].drop_null())),
        pc.equal(state["kind"], "merger"),
    )
    merged = events.filter(pc.equal(events["event_type"], transform.MERGED))
    if merged.num_rows:
        mask = pc.or_(mask, pc.is_in(state["board"], merged["absorbed_board"]))
    return pc.fill_null(mask, False)


def _write_job_bucket(objects: ObjectStore, manifest: Manifest, bucket: int, jobs: pa.Table):
    """Store a bucket's job rows and, first, the search-index rows of its active jobs."""
    active = transform.search_index(jobs)
    key = manifest.bucket_key(ACTIVE_BUCKETS, bucket)
    manifest.changing(objects)
    write_bucket(objects, key, active, row_group_size=INDEX_ROW_GROUP)
    write_bucket(objects, manifest.bucket_key(JOB_STATE_BUCKETS, bucket), jobs)
    _count_jobs(manifest, bucket, jobs)


def _count_jobs(manifest: Manifest, bucket: int, jobs: pa.Table) -> None:
    manifest.count("jobs")[bucket] = jobs.num_rows
    manifest.count("active")[bucket] = pc.sum(pc.equal(jobs["status"], "active")).as_py() or 0


def _convert_job_state(objects: ObjectStore, manifest: Manifest, state: pa.Table) -> None:
    is_job = pc.equal(state["kind"], "job")
    write_bucket(objects, MERGERS_KEY, state.filter(pc.invert(is_job)))
    jobs = state.filter(is_job)
    for bucket, rows in split(jobs, manifest.of(jobs["job_id"])).items():
        _write_job_bucket(objects, manifest, bucket, rows)


def _job_state_manifest(objects: ObjectStore, incoming: int = 0) -> Manifest:
    """The job state's manifest, split first if ``incoming`` events could outgrow one bucket."""
    old, schema = [OLD_JOB_STATE_KEY], transform.STATE_SCHEMA
    manifest = _manifest(objects, JOB_STATE_MANIFEST, old, schema, _convert_job_state)

    def whole(layout: Manifest) -> pa.Table:  # with the merger rows, which the split rewrites
        jobs = _read_buckets(objects, layout, JOB_STATE_BUCKETS, schema)
        return pa.concat_tables([jobs, _snapshot(objects, MERGERS_KEY, schema)])

    prefixes = [JOB_STATE_BUCKETS, ACTIVE_BUCKETS]
    return _grown(objects, manifest, incoming, "jobs", prefixes, whole, _convert_job_state)


# Touched job rows one apply_job_state call recomputes at most (a bucket is never split): a
# sensor run's events usually make one call; a busy hour or a merger (which touches every
# bucket) several. At 100k the 5M-event day's busiest hours peaked at +678 MiB in this call.
TOUCHED_ROWS_PER_APPLY = 20_000
# Rows of whole job buckets a group keeps between reading them and writing them back (else
# each is read twice): a few buckets of a big state, every bucket a sensor run touches of a
# small one.
WHOLE_ROWS_KEPT = 100_000
UPSERT_ROWS = 25_000  # rows per state-store upsert: its rows become Python tuples


def update_job_state(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> StateReport:
    """Apply the partitions' new events to the job state, an hour at a time (:func:`by_hour`)."""
    reports = by_hour(_update_job_state, stores, partitions, batch_ids)
    events, changed = sum(r.events for r in reports), sum(r.changed for r in reports)
    return StateReport(events, changed, reports[-1].jobs, reports[-1].active)


def _update_job_state(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> StateReport:
    """Apply the partitions' new events (postings and mergers) to the current job state.

    From each bucket the events touch (every bucket when they hold a merger) only the rows
    they can change are kept, and a group of buckets' rows is recomputed at once with the
    merger rows; the serving rows that changed are upserted into the state store (last writer
    wins), then each bucket whose jobs changed is read again and written back. The merger
    rows come out the same from every group and are written once, after the buckets.
    """
    batch_ids = None if batch_ids is None else list(batch_ids)
    objects = stores.objects
    events = pa.concat_tables(
        [
            read_fragments(objects, table, partitions, batch_ids, transform.EVENTS_SCHEMA)
            for table in INGEST_TABLES.values()
        ]
    )
    manifest = _job_state_manifest(objects, events.num_rows)
    if events.num_rows == 0:
        return StateReport(0, 0, manifest.total("jobs"), manifest.total("active"))
    is_merger = pc.equal(events["event_type"], transform.MERGED)
    merged, others, count = (
        events.filter(is_merger),
        events.filter(pc.invert(is_merger)),
        len(events),
    )
    del events  # a backfill's range can hold many events: keep one copy of them, by bucket
    by_bucket = split(others, manifest.of(others["job_id"]))
    del others
    mergers = _snapshot(objects, MERGERS_KEY, transform.STATE_SCHEMA)
    after = {"mergers": mergers, "changed": 0}

    def apply(group: dict[int, pa.Table]) -> None:
        was = pa.concat_tables([*group.values(), mergers])
        batch = pa.concat_tables([*(by_bucket[b] for b in group if b in by_bucket), merged])
        now = transform.apply_job_state(was, batch)
        is_job = pc.equal(now["kind"], "job")
        after["mergers"], now = now.filter(pc.invert(is_job)), now.filter(is_job)
        changed = now.filter(pc.invert(pc.is_in(_fingerprint(now), _fingerprint(was))))
        for start in range(0, changed.num_rows, UPSERT_ROWS):
            stores.state.upsert_jobs(job_state_rows(changed.slice(start, UPSERT_ROWS)))
        after["changed"] += changed.num_rows
        for bucket, rows in split(now, manifest.of(now["job_id"])).items():
            if rows.equals(group[bucket]):
                continue
            jobs = whole.get(bucket)
            if jobs is None:  # not kept: read again
                key = manifest.bucket_key(JOB_STATE_BUCKETS, bucket)
                jobs = _snapshot(objects, key, transform.STATE_SCHEMA)
            jobs = jobs.filter(pc.invert(pc.is_in(jobs["job_id"], group[bucket]["job_id"])))
            jobs = pa.concat_tables([jobs, rows]).sort_by("job_id").combine_chunks()
            _write_job_bucket(objects, manifest, bucket, jobs)

    # The group's whole buckets are kept for the write-back while they fit WHOLE_ROWS_KEPT.
    group, held, whole = {}, 0, {}
    for bucket in range(manifest.buckets) if merged.num_rows else sorted(by_bucket):
        key = manifest.bucket_key(JOB_STATE_BUCKETS, bucket)
        jobs = _snapshot(objects, key, transform.STATE_SCHEMA)
        batch = pa.concat_tables([by_bucket.get(bucket, merged.slice(0, 0)), merged])
        group[bucket] = jobs.filter(_touched(jobs, batch))
        _count_jobs(manifest, bucket, jobs)
        if sum(t.num_rows for t in whole.values()) + jobs.num_rows <= WHOLE_ROWS_KEPT:
            whole[bucket] = jobs
        del jobs
        held += group[bucket].num_rows
        if held >= TOUCHED_ROWS_PER_APPLY:
            apply(group)
            group, held, whole = {}, 0, {}
    if group:
        apply(group)
    if not after["mergers"].equals(mergers):
        manifest.changing(objects)
        write_bucket(objects, MERGERS_KEY, after["mergers"])
    manifest.save(objects)
    return StateReport(count, after["changed"], manifest.total("jobs"), manifest.total("active"))


@dataclass
class IndexReport:
    rows: int
    preview: list[dict]  # job_id, board, title and location of the first rows


INDEX_SCHEMA = pa.schema([transform.STATE_SCHEMA.field(n) for n in transform.SEARCH_INDEX_COLUMNS])


def _shadowed(objects: ObjectStore, registry: Manifest, state: Manifest) -> pa.ChunkedArray:
    """The duplicates whose original is active: the job_ids the index leaves out."""
    keys = registry.keys(DUPLICATES_BUCKETS)
    columns = ["job_id", "duplicate_of_job_id"]
    tables = [read_parquet(objects, k, columns=columns) for k in keys if objects.exists(k)]
    if not tables:
        return pa.chunked_array([], pa.string())
    duplicates = pa.concat_tables(tables)
    shadowed = []
    originals = duplicates["duplicate_of_job_id"]
    for bucket, rows in split(duplicates, state.of(originals)).items():
        key = state.bucket_key(ACTIVE_BUCKETS, bucket)
        if objects.exists(key):
            active = read_parquet(objects, key, columns=["job_id"])["job_id"]
            shadowed.append(rows["job_id"].filter(pc.is_in(rows["duplicate_of_job_id"], active)))
    return pa.chunked_array(shadowed, pa.string())


def _active_batches(objects: ObjectStore, key: str) -> Iterator[pa.RecordBatch]:
    """A bucket's active rows a row group at a time, read as they are needed. The merge steps
    through all the buckets at once, so what each holds counts 64 times: ``iter_batches`` read
    ahead about a whole bucket (~5.7 MiB of Arrow a bucket at 1.5M active rows, 365 MiB for
    the 64), ``read_row_group`` reads one (~1.7 MiB)."""
    if objects.exists(key):
        with objects.open(key) as source:
            parquet = pq.ParquetFile(source)
            for group in range(parquet.num_row_groups):
                yield from parquet.read_row_group(group, use_threads=False).to_batches()


# Active rows up to which the index is sorted in memory (~200 bytes a row, held about three
# times over: read, filtered, sorted): one Arrow sort of every bucket's rows instead of a k-way
# merge stepping through 64 streams a row group at a time in Python (0.8 s of a 1.6 s export
# at 280k rows). A bigger index (a busy day's state) is merged, holding a row group a bucket.
INDEX_SORT_ROWS = 400_000


def _few_active(objects: ObjectStore, keys: list[str]) -> pa.Table | None:
    """Every bucket's active rows as one table, or None once they pass INDEX_SORT_ROWS."""
    tables, held = [], 0
    for key in keys:
        if objects.exists(key):
            tables.append(read_parquet(objects, key))
            held += tables[-1].num_rows
            if held > INDEX_SORT_ROWS:
                return None
    return _concat(tables, INDEX_SCHEMA).cast(INDEX_SCHEMA)


def export_search_index(stores: Stores) -> IndexReport:
    """Write the search index, :func:`transform.search_index` of the whole state and
    duplicates, as one Parquet object by job_id: the buckets' active jobs sorted at once when
    they are few (:data:`INDEX_SORT_ROWS`), else merged a row group per bucket at a time, less
    the shadowed duplicates. Nothing is written when neither the state nor the registry
    changed since the index was last built."""
    objects = stores.objects
    state, registry = _job_state_manifest(objects), _registry_manifest(objects)
    source = {"job_state": state.token, "registry": registry.token}
    if objects.exists(SEARCH_INDEX_SOURCE) and objects.exists(SEARCH_INDEX_KEY):
        built = orjson.loads(objects.get(SEARCH_INDEX_SOURCE))
        if built["source"] == source:
            return IndexReport(built["rows"], built["preview"])
    shadowed = _shadowed(objects, registry, state)
    keys = state.keys(ACTIVE_BUCKETS)

    def unshadowed(chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
        for chunk in chunks:
            yield chunk.filter(pc.invert(pc.is_in(chunk["job_id"], shadowed))).cast(INDEX_SCHEMA)

    chunks = unshadowed(merge_sorted((_active_batches(objects, k) for k in keys), "job_id"))
    # The manifest's count first (no reads when it says the index is big), then the rows read.
    few = _few_active(objects, keys) if state.total("active") <= INDEX_SORT_ROWS else None
    if few is not None:  # filtered before the sort, so that the sort moves fewer rows
        (few,) = unshadowed([few])
        chunks = iter([few.take(pc.sort_indices(few, [("job_id", "ascending")]))])
        del few
    rows, preview = 0, []
    # Written to the object as it is made: not held whole (52 MB on a 5M-event day).
    with objects.writer(SEARCH_INDEX_KEY) as sink, pq.ParquetWriter(sink, INDEX_SCHEMA) as writer:
        for chunk in chunks:
            if len(preview) < 5:
                head = chunk.slice(0, 5 - len(preview))
                preview += head.select(["job_id", "board", "title", "location"]).to_pylist()
            rows += chunk.num_rows
            writer.write_table(chunk)
    report = {"source": source, "rows": rows, "preview": preview}
    objects.put(SEARCH_INDEX_SOURCE, orjson.dumps(report))
    _release_arrow_memory()
    return IndexReport(rows, preview)


def day_partitions(day: str) -> list[str]:
    return [f"{day}-{hour:02d}:00" for hour in range(24)]


def _end_of_day_key(day: str, what: str) -> str:
    return f"tables/board_daily_stats/_end_of_day/{day}/{what}.parquet"


def board_daily_stats(stores: Stores, days: Sequence[str], epoch_day: str) -> dict[str, pa.Table]:
    """Stats of each of ``days``, with active jobs as of the end of that day.

    The as-of state is carried from day to day: each day's end-of-day state (and dedupe
    registry) is kept, so computing days ``a..b`` replays only those days on top of the state
    at the end of ``a - 1`` and rewrites the kept states it passes. A day before the first
    kept state is rebuilt from the epoch. A late event touches an older day; the sensor then
    asks for that day onwards, which refreshes every later day's state too.
    """
    wanted = set(days)
    epoch = date.fromisoformat(epoch_day)
    first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    before = (first - timedelta(days=1)).isoformat()
    state_key, registry_key = (_end_of_day_key(before, w) for w in ("state", "registry"))
    if first > epoch and stores.objects.exists(state_key):
        state = _snapshot(stores.objects, state_key, transform.STATE_SCHEMA)
        registry = _snapshot(stores.objects, registry_key, transform.CANONICAL_SCHEMA)
        current_day = first
    else:
        state, registry, current_day = None, None, epoch
    out = {}
    while current_day <= last:
        current = current_day.isoformat()
        events = pa.concat_tables(
            [
                read_fragments(
                    stores.objects, table, day_partitions(current), None, transform.EVENTS_SCHEMA
                )
                for table in INGEST_TABLES.values()
            ]
        )
        state = transform.apply_job_state(state, events)
        deduped = transform.dedupe_postings(transform.clean_postings(events), registry)
        registry = deduped.canonical
        write_parquet(stores.objects, _end_of_day_key(current, "state"), state)
        write_parquet(stores.objects, _end_of_day_key(current, "registry"), registry)
        if current in wanted:
            stats = transform.board_daily_stats(events, state, current_day, deduped.duplicates)
            write_parquet(stores.objects, f"tables/board_daily_stats/{current}.parquet", stats)
            out[current] = stats
        current_day += timedelta(days=1)
    return out


def end_of_day_state(stores: Stores, day: str, epoch_day: str) -> tuple[pa.Table, pa.Table]:
    """(job state, dedupe registry) as of the end of ``day``, from the kept end-of-day state
    of ``board_daily_stats``. A day with no kept state yet is computed by it (which also
    writes that day's stats, as the daily rollup would); a day before the epoch is empty."""
    if date.fromisoformat(day) < date.fromisoformat(epoch_day):
        return transform.empty(transform.STATE_SCHEMA), transform.empty(transform.CANONICAL_SCHEMA)
    if not stores.objects.exists(_end_of_day_key(day, "state")):
        board_daily_stats(stores, [day], epoch_day)
    state = _snapshot(stores.objects, _end_of_day_key(day, "state"), transform.STATE_SCHEMA)
    registry = _snapshot(
        stores.objects, _end_of_day_key(day, "registry"), transform.CANONICAL_SCHEMA
    )
    return state, registry


def registry_duplicates(registry: pa.Table) -> pa.Table:
    """The duplicates (:data:`transform.DUPLICATES_SCHEMA`) a dedupe registry defines."""
    return transform.dedupe_postings(
        transform.empty(transform.POSTINGS_SCHEMA), registry
    ).duplicates


def end_of_day_index(stores: Stores, day: str, epoch_day: str) -> pa.Table:
    """The search index (:data:`transform.SEARCH_INDEX_COLUMNS`) as of the end of ``day``,
    built from the kept end-of-day state (see :func:`end_of_day_state`)."""
    state, registry = end_of_day_state(stores, day, epoch_day)
    return transform.search_index(state, registry_duplicates(registry))
