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

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from figstream import transform
from figstream.deadletter import DeadLetterStore
from figstream.events import parse_time
from figstream.landing import LANDING_PREFIX, parse_batch_key
from figstream.objectstore import ObjectStore, read_parquet, write_parquet
from figstream.routing import Router
from figstream.state import StateStore, job_state_rows
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


# --- assignment: which lines of a batch belong to which (stream, partition) -------------------


def _event_hour(record: object) -> str | None:
    """The hour of a record's usable event time, else None."""
    if not isinstance(record, dict):
        return None
    value = record.get("time")
    if not isinstance(value, str):
        return None
    try:
        moment = parse_time(value)
    except (TypeError, ValueError):
        return None
    return hour_key(moment) if EARLIEST <= moment < LATEST else None


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
    delivery) is kept only in the batch that first claimed its event id.
    """
    table = INGEST_TABLES[stream]
    report = IngestReport()
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

        valid_rows, rejected_rows = valid.num_rows, rejected.num_rows
        valid = valid.sort_by("line_no")
        kept = _claimed(stores, batch_id, valid, valid["event_id"])
        write_parquet(stores.objects, fragment_key(table, partition, batch_id), kept)
        # A bad record delivered twice is one bad event: claimed by its exact bytes.
        rejected = _claimed(stores, batch_id, rejected, _payload_ids(rejected))
        if rejected.num_rows:
            stores.dead_letters.add(rejected, stream=stream, partition_key=partition)
        report.batches += 1
        report.batch_ids.append(batch_id)
        report.records += parsed.records
        report.valid += valid_rows
        report.duplicates += valid_rows - kept.num_rows + rejected_rows - rejected.num_rows
        report.dead_lettered += rejected.num_rows
        report.event_times.append(kept["event_time"].combine_chunks())
    return report


def _payload_ids(rejected: pa.Table) -> pa.Array:
    digests = ["rejected:" + hashlib.sha256(p).hexdigest() for p in rejected["payload"].to_pylist()]
    return pa.array(digests, pa.string())


def _claimed(stores: Stores, batch_id: str, rows: pa.Table, ids) -> pa.Table:
    """The rows whose id this batch owns: the first batch to claim an id keeps it for good,
    and a batch claiming again (a retry, a backfill) gets its own claims back."""
    if rows.num_rows == 0:
        return rows
    ids = ids.to_pylist() if hasattr(ids, "to_pylist") else list(ids)
    owners = stores.state.claim_events(batch_id, ids)
    first = {}
    for index, event_id in enumerate(ids):  # one row per id within the batch, too
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
    """One fragment per (event-time hour, batch) of ``rows``; returns the rows written."""
    if rows.num_rows == 0:
        return 0
    hours = pc.strftime(rows["event_time"], format="%Y-%m-%d-%H:00", locale="C")
    keyed = rows.append_column("_partition", hours)
    groups = keyed.group_by(["_partition", "batch_id"]).aggregate([]).to_pylist()
    for group in groups:
        mask = pc.and_(
            pc.equal(keyed["_partition"], group["_partition"]),
            pc.equal(keyed["batch_id"], group["batch_id"]),
        )
        part = rows.filter(mask)
        write_parquet(objects, fragment_key(table, group["_partition"], group["batch_id"]), part)
    return rows.num_rows


def clean(stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None) -> int:
    """clean_postings fragments from the partitions' raw_events fragments."""
    events = read_fragments(
        stores.objects, "raw_events", partitions, batch_ids, transform.EVENTS_SCHEMA
    )
    return _write_each(stores.objects, "clean_postings", transform.clean_postings(events))


REGISTRY_KEY = "tables/postings_registry/registry.parquet"
DUPLICATES_KEY = "tables/duplicates/current.parquet"
JOB_STATE_KEY = "tables/job_state/state.parquet"


def _snapshot(objects: ObjectStore, key: str, schema: pa.Schema) -> pa.Table:
    if not objects.exists(key):
        return transform.empty(schema)
    return read_parquet(objects, key).select(schema.names).cast(schema)


@dataclass
class DedupeReport:
    postings: int
    kept: int
    duplicates_total: int


def dedupe(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> DedupeReport:
    """Cross-board dedupe of the partitions' clean postings against the global registry.

    The registry and the duplicate list are snapshots rewritten once per run, under the
    ``figstream_state`` pool, so two runs never interleave their read-modify-write.
    """
    postings = read_fragments(
        stores.objects, "clean_postings", partitions, batch_ids, transform.POSTINGS_SCHEMA
    )
    registry = _snapshot(stores.objects, REGISTRY_KEY, transform.CANONICAL_SCHEMA)
    result = transform.dedupe_postings(postings, registry)
    write_parquet(stores.objects, REGISTRY_KEY, result.canonical)
    write_parquet(stores.objects, DUPLICATES_KEY, result.duplicates)
    kept = _write_each(stores.objects, "deduped_postings", result.kept)
    return DedupeReport(postings.num_rows, kept, result.duplicates.num_rows)


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


def update_job_state(
    stores: Stores, partitions: Sequence[str], batch_ids: Iterable[str] | None
) -> StateReport:
    """Apply the partitions' new events (postings and mergers) to the current job state.

    The full state (with its merge components) is a snapshot in the object store; only the
    rows the events can change are recomputed (so a run costs what its events cost, plus
    reading and writing the snapshot), and the serving rows that changed are upserted into
    the state store, last writer wins.
    """
    batch_ids = None if batch_ids is None else list(batch_ids)
    events = pa.concat_tables(
        [
            read_fragments(stores.objects, table, partitions, batch_ids, transform.EVENTS_SCHEMA)
            for table in INGEST_TABLES.values()
        ]
    )
    before = _snapshot(stores.objects, JOB_STATE_KEY, transform.STATE_SCHEMA)
    touched = _touched(before, events)
    was = before.filter(touched)
    now = transform.apply_job_state(was, events)
    after = (
        pa.concat_tables([before.filter(pc.invert(touched)), now])
        .sort_by([("kind", "ascending"), ("job_id", "ascending")])
        .combine_chunks()
    )
    del before
    write_parquet(stores.objects, JOB_STATE_KEY, after)
    changed = now.filter(pc.invert(pc.is_in(_fingerprint(now), _fingerprint(was))))
    jobs = changed.filter(pc.equal(changed["kind"], "job"))
    if jobs.num_rows:
        stores.state.upsert_jobs(job_state_rows(jobs))
    is_job = pc.equal(after["kind"], "job")
    active = pc.sum(pc.and_(is_job, pc.equal(after["status"], "active"))).as_py() or 0
    return StateReport(events.num_rows, jobs.num_rows, pc.sum(is_job).as_py() or 0, active)


def export_search_index(stores: Stores) -> pa.Table:
    state = _snapshot(stores.objects, JOB_STATE_KEY, transform.STATE_SCHEMA)
    duplicates = _snapshot(stores.objects, DUPLICATES_KEY, transform.DUPLICATES_SCHEMA)
    index = transform.search_index(state, duplicates)
    write_parquet(stores.objects, SEARCH_INDEX_KEY, index)
    return index


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
