"""``figstream trace``'s lookup: every place one event went, from keyed reads only.

The trace index (:mod:`figstream.storage.trace`) gives the event's deliveries by id: landing
batch and line, stream, partition, outcome and the Dagster run that ingested it. Everything
else is read by key from there, never by scanning: each asset's fragment of that (partition,
batch) (did the event reach ``raw_events``, ``clean_postings``, ``deduped_postings``, did its
job reach ``job_state``'s touched list), the dead letter ``<batch>:<line>``, the job's row in
the state store, and the search-index changes of the job under that batch. A streaming run
materialises its stream's assets in the run that ingested the batch (one in-process job), so
the run id and its UI link (``<webserver>/runs/<run id>``) are the ingest run's.

The search index keeps one change per job and run, under the batch of the earliest event that
touched the job in that hour; an event that was not that earliest one finds no change under its
own batch, and says so (``search_index`` is empty, ``search_index_note`` tells why).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from figstream.settings import profile
from figstream.storage.aws import AwsConfig
from figstream.storage.deadletter import DeadLetterStore, SqliteDeadLetterStore, deadletter_path
from figstream.storage.objects import LocalObjectStore, ObjectStore, read_parquet
from figstream.storage.state import SqliteStateStore, StateStore, state_path
from figstream.streaming import index_export, jobs, tables
from figstream.streaming.fragments import read_fragments
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
     ("job_id", "op", "board", "title", "location", "changed_at", "event_time")]
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


def _changes(stores: AnyStores, partition: str, batch_id: str, job_id: str) -> list[dict]:
    rows = _rows(stores, index_export.CHANGES, partition, batch_id, _CHANGE)
    mine = rows.filter(pc.equal(rows["job_id"], job_id)) if rows.num_rows else rows
    return [_plain_row(r) for r in mine.to_pylist()]


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
    stores: AnyStores, row: dict[str, Any], webserver: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One delivery as the CLI shows it, and the event its ingest fragment holds (if any)."""
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
        if event is not None and event["job_id"] is not None:
            out["search_index"] = _changes(stores, row["partition_key"], row["batch_id"],
                                           event["job_id"])  # fmt: skip
            if not out["search_index"]:
                out["search_index_note"] = (
                    "no change of the job under this batch: the hour's change sits under the "
                    "batch of the earliest event that touched the job in that run, or the "
                    "search_index step has not run yet"
                )
    elif outcome == "dead_lettered":
        out["dead_letter"] = _dead_letter(stores, row)
    return out, event


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
    rows = index_for(stores.state).deliveries(event_id).to_pylist()
    if not rows:
        return None
    base = webserver_url(webserver)
    pairs = [_delivery(stores, row, base) for row in rows]
    deliveries = [d for d, _ in pairs]
    event = next((e for _, e in pairs if e is not None), None)
    letter = next((d["dead_letter"] for d in deliveries if d["dead_letter"]), None)
    job_id = None if event is None else event["job_id"]
    runs = {d["run"]["run_id"]: d["run"] for d in deliveries if d["run"]}
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
        "job": _job(stores, job_id, event_id) if job_id else None,
    }  # fmt: skip
