"""``figstream trace``'s lookup: every place one event went, from keyed reads only.

The trace index (:mod:`figstream.storage.trace`) gives the event's deliveries by id: landing
batch and line, stream, partition, outcome, and every Dagster run that ingested the batch (its
run history: a sensor run, then a backfill or replay of the hour). Everything else is read by
key from there, never by scanning: each asset's fragment of that (partition, batch) (did the
event reach ``raw_events``, ``clean_postings``, ``deduped_postings``, did its job reach
``job_state``'s touched list), the dead letter ``<batch>:<line>``, the job's row in the state
store, and the search-index changes of the job. A streaming run materialises its stream's
assets in the run that ingested the batch (one in-process job), so the run ids and their UI
links (``<webserver>/runs/<run id>``) are the ingest runs'.

Each run that ingested a materialised delivery wrote its own change of the job in the hourly
``search_index`` changes: one row per job and run, under the batch of the earliest event that
touched the job in that run, which need not be the event's own batch. So the lookup reads the
job's rows from the change objects of the batches those runs ingested in the event's hour (the
run history names them: keyed reads of one hour, never the other hours), the loose fragments
and the hour's compacted object both (a batch re-run after compaction has its older change in
the compacted object until the next compaction), and gives each change to the run that wrote
it: the batch's latest run recorded at or before the change was read (``changed_at``). A run
whose change is no longer held (a later run of the same batch rewrote its fragment: each batch
keeps its latest run's change) or not written yet says so (``search_index_note``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from figstream.settings import profile
from figstream.storage.aws import AwsConfig
from figstream.storage.deadletter import DeadLetterStore, SqliteDeadLetterStore, deadletter_path
from figstream.storage.objects import LocalObjectStore, ObjectStore, read_parquet
from figstream.storage.state import SqliteStateStore, StateStore, state_path
from figstream.storage.trace import TraceIndex
from figstream.streaming import index_export, jobs, tables
from figstream.streaming.fragments import batch_id_of, compacted_key, evolved, read_fragments
from figstream.streaming.stores import INGEST_TABLES, Stores, fragment_key
from figstream.streaming.trace import index_for

WEBSERVER_ENV = "FIGSTREAM_WEBSERVER_URL"
DEFAULT_WEBSERVER = "http://127.0.0.1:3000"
# The assets after ingest a stream's run materialises, and the table each reads its rows from.
_POSTING_ASSETS = ("clean_postings", "deduped_postings")
_EVENT_ID = pa.schema([pa.field("event_id", pa.string())])
_JOB_ID = pa.schema([pa.field("job_id", pa.string())])
_CHANGE = pa.schema(
    [index_export.CHANGE_SCHEMA.field(n) for n in
     ("job_id", "op", "board", "title", "location", "updated_at", "changed_at", "event_time",
      "batch_id")]
)  # fmt: skip
# What the ingest fragment tells of the event itself (the trace index keeps only where it went).
_EVENT = pa.schema(
    [tables.EVENTS_SCHEMA.field(n) for n in
     ("event_id", "event_type", "event_time", "job_id", "absorbed_board", "surviving_board")]
)  # fmt: skip
_JOB_COMPONENTS = {
    "posting_event_id": "latest posting",
    "expiry_event_id": "latest expiry",
    "merger_event_id": "board merger",
    "last_event_id": "status",
}


@dataclass(frozen=True)
class Sources:
    """The three stores a lookup reads (a :class:`Stores` serves too): opened without the
    routing file and settings a run needs, which would cost a lookup more than its reads."""

    objects: ObjectStore
    state: StateStore
    dead_letters: DeadLetterStore

    @classmethod
    def for_profile(cls, home: Path) -> Sources:
        """The running profile's stores (``FIGSTREAM_PROFILE``): ``home``'s files locally."""
        if profile() == "aws":
            from figstream.storage.dynamo_deadletter import DynamoDeadLetterStore
            from figstream.storage.dynamo_state import DynamoStateStore
            from figstream.storage.s3_objects import S3ObjectStore

            config = AwsConfig.from_env()
            return cls(S3ObjectStore(config), DynamoStateStore(config),
                       DynamoDeadLetterStore(config))  # fmt: skip
        return cls(
            LocalObjectStore(home),
            SqliteStateStore(state_path(home)),
            SqliteDeadLetterStore(deadletter_path(home)),
        )


AnyStores = Stores | Sources  # what a lookup reads through: a run's stores, or just these three


def webserver_url(given: str | None = None) -> str:
    """The Dagster webserver base for run links: ``given``, else ``$FIGSTREAM_WEBSERVER_URL``,
    else the local ``make dev`` address."""
    return (given or os.environ.get(WEBSERVER_ENV) or DEFAULT_WEBSERVER).rstrip("/")


def run_url(webserver: str, run_id: str) -> str:
    return f"{webserver}/runs/{run_id}"


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in row.items()}


def _rows(stores: AnyStores, table: str, partition: str, batch_id: str, schema: pa.Schema):
    """The batch's rows of ``table`` in ``partition``, ``schema``'s columns only: its loose
    fragment (one keyed read) or, once compacted, the hour's compacted file."""
    key = fragment_key(table, partition, batch_id)
    try:
        return read_parquet(stores.objects, key, schema.names).cast(schema)
    except (FileNotFoundError, KeyError, pa.ArrowInvalid):
        return read_fragments(stores.objects, table, [partition], [batch_id], schema)


def _holds(stores: AnyStores, table: str, partition: str, batch_id: str, event_id: str) -> bool:
    rows = _rows(stores, table, partition, batch_id, _EVENT_ID)
    return bool(pc.any(pc.equal(rows["event_id"], event_id)).as_py()) if rows.num_rows else False


def _touched(stores: AnyStores, partition: str, batch_id: str, job_id: str | None) -> bool:
    rows = _rows(stores, jobs.TOUCHED, partition, batch_id, _JOB_ID)
    if rows.num_rows == 0 or job_id is None:
        return rows.num_rows > 0
    return bool(pc.any(pc.equal(rows["job_id"], job_id)).as_py())


def _change_rows(source: Any, job_id: str, batch_ids: set[str]) -> list[pa.Table]:
    """``job_id``'s change rows under ``batch_ids`` in one change object (:data:`_CHANGE`; a
    column added since it was written reads as nulls): its job ids first, a row group at a
    time, and the other columns only of a row group that holds the job."""
    file = pq.ParquetFile(source)
    names = [n for n in _CHANGE.names if n in file.schema_arrow.names]
    wanted = pa.array(sorted(batch_ids), pa.string())
    found = []
    for group in range(file.num_row_groups):
        ids = file.read_row_group(group, columns=["job_id"])["job_id"]
        if not pc.any(pc.equal(ids, job_id)).as_py():
            continue
        rows = file.read_row_group(group, columns=names)
        mine = pc.and_(pc.equal(rows["job_id"], job_id), pc.is_in(rows["batch_id"], wanted))
        found.append(evolved(rows.filter(mine), _CHANGE))
    return found


def _held_changes(
    stores: AnyStores, partition: str, batch_ids: set[str], job_id: str
) -> list[dict[str, Any]]:
    """Every change of ``job_id`` the hour's change objects hold under ``batch_ids``: their
    loose fragments' and the compacted object's rows (both, when a batch was re-run after
    compaction), once each, by ``changed_at``."""
    parts = []
    compacted = compacted_key(index_export.CHANGES, partition)
    for key in stores.objects.list(f"tables/{index_export.CHANGES}/{partition}/"):
        if key == compacted:
            with stores.objects.open(key) as source:
                parts += _change_rows(source, job_id, batch_ids)
        elif batch_id_of(key) in batch_ids:
            try:
                data = stores.objects.get(key)  # one keyed read of a small object
            except FileNotFoundError:  # compacted away since it was listed
                continue
            parts += _change_rows(pa.BufferReader(data), job_id, batch_ids)
    seen: dict[tuple, dict[str, Any]] = {}
    for row in (r for part in parts for r in part.to_pylist()):
        seen.setdefault((row["batch_id"], row["changed_at"]), row)
    return sorted(seen.values(), key=lambda r: (r["changed_at"], r["batch_id"]))


def _event(stores: AnyStores, row: dict[str, Any]) -> dict[str, Any] | None:
    """The event as its delivery's ingest fragment holds it; None when it is not there."""
    table = INGEST_TABLES.get(row["stream"])
    if table is None:
        return None
    rows = _rows(stores, table, row["partition_key"], row["batch_id"], _EVENT)
    mine = rows.filter(pc.equal(rows["event_id"], row["event_id"])) if rows.num_rows else rows
    return mine.slice(0, 1).to_pylist()[0] if mine.num_rows else None


def _assets(stores: AnyStores, row: dict[str, Any], event: dict[str, Any] | None) -> list[dict]:
    """Each asset of the run and whether this delivery's event (or its job) reached it."""
    partition, batch, event_id = row["partition_key"], row["batch_id"], row["event_id"]
    ingest_table = INGEST_TABLES.get(row["stream"])
    if ingest_table is None:
        return []
    reached = [(ingest_table, event is not None)]
    if event is not None and event["event_type"] in tables.POSTING_TYPES:
        reached += [(a, _holds(stores, a, partition, batch, event_id)) for a in _POSTING_ASSETS]
    job_id = None if event is None else event["job_id"]
    reached.append(("job_state", _touched(stores, partition, batch, job_id)))
    return [{"asset": name, "reached": hit} for name, hit in reached]


def _dead_letter(stores: AnyStores, row: dict[str, Any]) -> dict[str, Any] | None:
    letter = stores.dead_letters.get(f"{row['batch_id']}:{row['line_no']}")
    if letter is None:
        return None
    return {
        "id": letter.id,
        "code": letter.code,
        "detail": letter.detail,
        "event_time": _plain(letter.event_time),
        "dead_lettered_at": _plain(letter.dead_lettered_at),
        "replayed_at": _plain(letter.replayed_at),
        "replay_key": letter.replay_key,
    }


def _delivery(
    stores: AnyStores, row: dict[str, Any], webserver: str, runs: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One delivery as the CLI shows it (its runs' index changes are added by
    :func:`_index_changes`), and the event its ingest fragment holds (if any)."""
    outcome = row["outcome"]
    out: dict[str, Any] = {
        "batch_key": row["batch_key"],
        "batch_id": row["batch_id"],
        "line": row["line_no"],
        "stream": row["stream"],
        "partition": row["partition_key"],
        "outcome": outcome,
        "counted": outcome != "duplicate",
        "duplicate_of_batch": row["counted_batch"],
        "reason": row["reason"],
        "recorded_at": _plain(row["recorded_at"]),
        "run": None,
        "runs": [
            {
                "run_id": run["run_id"],
                "url": run_url(webserver, run["run_id"]) if run["run_id"] else None,
                "recorded_at": _plain(run["recorded_at"]),
                "search_index": [],
            }
            for run in runs
        ],
        "assets": [],
        "dead_letter": None,
        "search_index": [],
    }
    if row["run_id"]:
        out["run"] = {"run_id": row["run_id"], "url": run_url(webserver, row["run_id"])}
    event = None
    if outcome == "materialised":
        event = _event(stores, row)
        out["assets"] = _assets(stores, row, event)
    elif outcome == "dead_lettered":
        out["dead_letter"] = _dead_letter(stores, row)
    return out, event


def _run_history(index: TraceIndex, rows: list[dict[str, Any]]) -> dict[tuple, list[dict]]:
    """Every run that ingested each delivery's (batch, partition), oldest first (run_id and
    recorded_at); a batch recorded before the run history has its batch row's last run."""
    pairs = [(row["batch_id"], row["partition_key"]) for row in rows]
    history: dict[tuple, list[dict]] = {}
    for run in index.runs(pairs).to_pylist():
        history.setdefault((run["batch_id"], run["partition_key"]), []).append(run)
    for row, pair in zip(rows, pairs, strict=True):
        if pair not in history:
            history[pair] = [{"run_id": row["run_id"], "recorded_at": row["recorded_at"]}]
    return history


def _writer(runs: list[dict[str, Any]], changed_at: datetime) -> str | None:
    """Which of a batch's runs (oldest first) wrote a change read at ``changed_at``: the
    latest one that ingested the batch before then ("" outside Dagster; None: none did)."""
    before = [run for run in runs if run["recorded_at"] <= changed_at]
    return (before[-1]["run_id"] or "") if before else None


_REWRITTEN = (
    "no change of the job from this run is held any more: a later run of its batches "
    "rewrote it (each batch keeps its latest run's change)"
)
_NOT_YET = "no change of the job from this run: the search_index step has not run for it yet"


def _index_changes(
    stores: AnyStores,
    index: TraceIndex,
    deliveries: list[dict[str, Any]],
    events: list[dict[str, Any] | None],
    history: dict[tuple, list[dict]],
    webserver: str,
) -> list[dict[str, Any]]:
    """Each run that ingested a materialised delivery gets the change of the event's job it
    wrote in that hour (``runs[i].search_index``; the delivery's ``search_index`` has them
    all); returns every such change, by ``changed_at``, each naming its run."""
    found: list[dict[str, Any]] = []
    hours: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for d, event in zip(deliveries, events, strict=True):
        if d["outcome"] == "materialised" and event is not None and event["job_id"] is not None:
            hours.setdefault((d["partition"], event["job_id"]), []).append((d, event))
    for (partition, job_id), reached in hours.items():
        mine = [run["run_id"] for d, _ in reached for run in d["runs"]]
        batches = {d["batch_id"] for d, _ in reached}
        for run_id in dict.fromkeys(mine):
            batches.update(index.run_batches(run_id, partition))
        held = _held_changes(stores, partition, batches, job_id)
        writers = {b: history[(b, partition)] for b in {c["batch_id"] for c in held}
                   if (b, partition) in history}  # fmt: skip
        unknown = sorted({c["batch_id"] for c in held} - writers.keys())
        for run in index.runs([(b, partition) for b in unknown]).to_pylist():
            writers.setdefault(run["batch_id"], []).append(run)
        by_run: dict[str, list[dict]] = {}
        for change in held:
            writer = _writer(writers.get(change["batch_id"], []), change["changed_at"])
            if writer is not None:
                by_run.setdefault(writer, []).append(change)
        given: set[str] = set()  # a run that reached two deliveries shows its change once
        for d, _ in reached:
            ingested = history[(d["batch_id"], partition)]  # d["runs"], oldest first
            for run, held_run in zip(d["runs"], ingested, strict=True):
                key = run["run_id"] or ""
                if key in given:
                    continue
                given.add(key)
                for change in by_run.get(key, []):
                    shown = {
                        **_plain_row(change),
                        "partition": partition,
                        "run_id": run["run_id"],
                        "run_url": run["url"],
                    }
                    run["search_index"].append(shown)
                    d["search_index"].append(shown)
                    found.append(shown)
                if not run["search_index"]:
                    run["search_index_note"] = _NOT_YET if held_run is ingested[-1] else _REWRITTEN
            if not d["search_index"]:
                d["search_index_note"] = (
                    "no change of the job from any run that ingested this batch is held: a "
                    "later run rewrote it, or the search_index step has not run yet"
                )
    return sorted(found, key=lambda c: (c["changed_at"], c["batch_id"]))


def _job(stores: AnyStores, job_id: str, event_id: str) -> dict[str, Any] | None:
    rows = stores.state.get_jobs([job_id]).to_pylist()
    if not rows:
        return None
    job = rows[0]
    keep = ["job_id", "board", "status", "title", "posted_at", "updated_at", "expired_at",
            "merged_into", "last_event_id", "last_event_time"]  # fmt: skip
    out = _plain_row({k: job.get(k) for k in keep})
    registry = stores.state.first_postings([job_id]).to_pylist()
    # A cross-board duplicate is hidden from the index (its deduped_postings row dropped).
    out["duplicate_of"] = registry[0]["duplicate_of"] if registry else None
    out["this_event_holds"] = [
        what for column, what in _JOB_COMPONENTS.items() if job.get(column) == event_id
    ]
    return out


def trace_event(stores: AnyStores, event_id: str, webserver: str | None = None) -> dict | None:
    """Where ``event_id`` went (a JSON-ready dict), or None when the trace index holds no
    delivery of it (never ingested, or older than the index's retention)."""
    index = index_for(stores.state)
    rows = index.deliveries(event_id).to_pylist()
    if not rows:
        return None
    base = webserver_url(webserver)
    history = _run_history(index, rows)
    pairs = [
        _delivery(stores, row, base, history[(row["batch_id"], row["partition_key"])])
        for row in rows
    ]
    deliveries = [d for d, _ in pairs]
    events = [e for _, e in pairs]
    changes = _index_changes(stores, index, deliveries, events, history, base)
    event = next((e for e in events if e is not None), None)
    letter = next((d["dead_letter"] for d in deliveries if d["dead_letter"]), None)
    job_id = None if event is None else event["job_id"]
    runs = {r["run_id"]: {"run_id": r["run_id"], "url": r["url"]}
            for d in deliveries for r in d["runs"] if r["run_id"]}  # fmt: skip
    return {
        "event_id": event_id,
        "event_type": None if event is None else event["event_type"],
        "event_time": _plain(event["event_time"]) if event else (letter or {}).get("event_time"),
        "stream": rows[0]["stream"],
        "job_id": job_id,
        "board_merger": None if event is None or not event["absorbed_board"] else {
            "absorbed_board": event["absorbed_board"],
            "surviving_board": event["surviving_board"],
        },
        "deliveries": deliveries,
        "counted": [f"{d['batch_id']}:{d['line']}" for d in deliveries if d["counted"]],
        "runs": list(runs.values()),
        "index_changes": changes,
        "job": _job(stores, job_id, event_id) if job_id else None,
    }  # fmt: skip
