"""``figstream trace`` shows every run an event reached and the search-index change of its job
each run wrote: a sensor run, then a backfill of the hour (before and after the hour's
compaction), with the core's steps as a run executes them, on the local profile and on the aws
profile (S3 and DynamoDB on moto server); and the run history behind it on both trace indexes.

Cases: an update whose later backfill writes the job's change under another batch (both
changes shown, each with its run); a backfill after compaction (the older run's change read
from the compacted object, the newer from its fragment); a backfill that rewrote the first
run's change (shown for the second run, the first run says it is no longer held); a duplicate
delivery in another run (its run shows no change); a dead letter (no change, in any run).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from trace_cases import HOUR, posting

from figstream.cli.trace import add_trace
from figstream.ingest.publish import Publisher
from figstream.storage.dynamo_state import ensure_tables
from figstream.storage.dynamo_trace import DynamoTraceIndex
from figstream.storage.trace import BATCH_SCHEMA, DELIVERY_SCHEMA, SqliteTraceIndex
from figstream.streaming import cleaning, dedupe, index_export, ingest, jobs, landing_index
from figstream.streaming.fragments import compact_hour
from figstream.streaming.stores import Stores
from figstream.streaming.trace_lookup import trace_event


def steps(stores: Stores, keys: list[str] | None, run_id: str) -> None:
    """One postings run over ``keys`` (None: a backfill of the hour, every batch it holds)."""
    if keys is not None:
        landing_index.index_landing(stores, "postings", keys)
    ingest.ingest_range(stores, "postings", [HOUR], keys, run_id=run_id)
    ids = None if keys is None else [k.rsplit("/", 1)[1].removesuffix(".jsonl") for k in keys]
    cleaning.clean(stores, [HOUR], ids)
    dedupe.dedupe(stores, [HOUR], ids)
    jobs.update_job_state(stores, [HOUR], ids)
    index_export.export_changes(stores, [HOUR], ids)


def batch_of(key: str) -> str:
    return key.rsplit("/", 1)[1].removesuffix(".jsonl")


def update(event_id: str, job_id: str, title: str) -> dict:
    return {**posting(event_id, job_id, title=title), "type": "job.updated",
            "time": "2026-11-02T10:40:00Z"}  # fmt: skip


@pytest.fixture(params=["local", "aws"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    """The local profile's stores in ``tmp_path``, or the aws profile's on moto server (S3,
    DynamoDB; the environment names them, so the CLI reads them whatever ``--home``)."""
    if request.param == "local":
        return Stores.local(tmp_path, "2026-10-01-00:00")
    from figstream.cli.aws import setup
    from figstream.ingest.routing import Router
    from figstream.settings import routing_path

    config = request.getfixturevalue("aws_config")
    setup(config, Router.from_file(routing_path()))
    return Stores.aws(config, "2026-10-01-00:00")


def publish(stores: Stores, *events: dict) -> list[str]:
    return Publisher(stores.objects, producer="test").publish(list(events))


def changes_by_run(delivery: dict) -> dict[str, list[tuple[str, str, str]]]:
    return {
        run["run_id"]: [(c["op"], c["title"], c["batch_id"]) for c in run["search_index"]]
        for run in delivery["runs"]
    }


def test_an_update_backfilled_later_shows_both_runs_changes(stores):
    """The sensor run of the update writes the job's change under the update's batch; the
    backfill of the hour writes it under the posting's (the hour's earliest event of the job),
    leaving the update's batch alone: the update reached both runs, and shows both changes."""
    [posted] = publish(stores, posting("ev-p", "job-1"))
    steps(stores, [posted], "run-1")
    [updated] = publish(stores, update("ev-u", "job-1", "Senior Trace Engineer"))
    steps(stores, [updated], "run-2")
    steps(stores, None, "run-3")

    found = trace_event(stores, "ev-u", "http://ui:3000")
    [delivery] = found["deliveries"]
    assert [r["run_id"] for r in delivery["runs"]] == ["run-2", "run-3"]
    assert changes_by_run(delivery) == {
        "run-2": [("upsert", "Senior Trace Engineer", batch_of(updated))],
        "run-3": [("upsert", "Senior Trace Engineer", batch_of(posted))],
    }
    assert [(c["run_id"], c["run_url"]) for c in found["index_changes"]] == [
        ("run-2", "http://ui:3000/runs/run-2"),
        ("run-3", "http://ui:3000/runs/run-3"),
    ]
    assert [r["run_id"] for r in found["runs"]] == ["run-2", "run-3"]
    assert found["job"]["title"] == "Senior Trace Engineer"
    # The posting reached runs 1 and 3 (run 2 did not ingest its batch): run 3 rewrote the
    # change under the posting's batch, so run 1's is no longer held, and run 1 says so.
    [delivery] = trace_event(stores, "ev-p")["deliveries"]
    assert changes_by_run(delivery) == {
        "run-1": [],
        "run-3": [("upsert", "Senior Trace Engineer", batch_of(posted))],
    }
    assert "held any more" in delivery["runs"][0]["search_index_note"]


def test_a_backfill_after_compaction_shows_the_older_change_from_the_compacted_object(stores):
    [key] = publish(stores, posting("ev-1", "job-1"))
    steps(stores, [key], "run-1")
    report = compact_hour(stores.objects, index_export.CHANGES, HOUR)
    assert report.fragments == 1  # run 1's change now lives in the compacted object only
    steps(stores, None, "run-2")

    [delivery] = trace_event(stores, "ev-1")["deliveries"]
    assert changes_by_run(delivery) == {
        "run-1": [("upsert", "Trace Engineer", batch_of(key))],
        "run-2": [("upsert", "Trace Engineer", batch_of(key))],
    }
    first, second = (run["search_index"][0]["changed_at"] for run in delivery["runs"])
    assert first < second


def test_a_change_rewritten_by_a_later_run_is_shown_for_that_run_and_the_first_says_so(stores):
    """Without compaction between them, the backfill rewrites the batch's change fragment:
    the first run's change is gone from the store, and its run says so instead of pretending
    it had none."""
    [key] = publish(stores, posting("ev-1", "job-1"))
    steps(stores, [key], "run-1")
    steps(stores, None, "run-2")

    [delivery] = trace_event(stores, "ev-1")["deliveries"]
    first, second = delivery["runs"]
    assert first["search_index"] == [] and "held any more" in first["search_index_note"]
    assert [(c["op"], c["run_id"]) for c in second["search_index"]] == [("upsert", "run-2")]
    assert "search_index_note" not in second


def test_a_duplicate_delivery_in_another_run_shows_no_change_of_its_own(stores):
    [first] = publish(stores, posting("ev-1", "job-1"))
    steps(stores, [first], "run-1")
    [again] = publish(stores, posting("ev-1", "job-1"))
    steps(stores, [again], "run-2")

    found = trace_event(stores, "ev-1")
    counted, duplicate = found["deliveries"]
    assert changes_by_run(counted) == {"run-1": [("upsert", "Trace Engineer", batch_of(first))]}
    assert changes_by_run(duplicate) == {"run-2": []}
    assert [c["run_id"] for c in found["index_changes"]] == ["run-1"]


def test_a_dead_lettered_event_shows_no_index_change_in_any_run(stores):
    [key] = publish(stores, posting("bad-1", "job-1", remote="x"), posting("ev-2", "job-2"))
    steps(stores, [key], "run-1")
    steps(stores, None, "run-2")

    found = trace_event(stores, "bad-1")
    [delivery] = found["deliveries"]
    assert delivery["outcome"] == "dead_lettered"
    assert [r["run_id"] for r in delivery["runs"]] == ["run-1", "run-2"]
    assert all(r["search_index"] == [] for r in delivery["runs"])
    assert delivery["search_index"] == [] and found["index_changes"] == []


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="figstream")
    add_trace(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def test_the_cli_prints_each_runs_change_and_json_carries_them(stores, tmp_path, capsys):
    [posted] = publish(stores, posting("ev-p", "job-1"))
    steps(stores, [posted], "run-1")
    [updated] = publish(stores, update("ev-u", "job-1", "Senior Trace Engineer"))
    steps(stores, [updated], "run-2")
    steps(stores, None, "run-3")

    assert cli("trace", "ev-u", "--home", str(tmp_path), "--webserver", "http://ui:3000") == 0
    out = capsys.readouterr().out
    assert "2 runs ingested this batch, oldest first:" in out
    run2 = out.index("run run-2  http://ui:3000/runs/run-2")
    run3 = out.index("run run-3  http://ui:3000/runs/run-3")
    change = "search index: upsert of job-1 (Senior Trace Engineer) read at "
    assert run2 < out.index(change, run2) < run3 < out.index(change, run3)
    assert f"under batch {batch_of(posted)}" in out[run3:]

    assert cli("trace", "ev-u", "--home", str(tmp_path), "--json") == 0
    found = orjson.loads(capsys.readouterr().out)
    assert [(c["run_id"], c["op"], c["partition"]) for c in found["index_changes"]] == [
        ("run-2", "upsert", HOUR),
        ("run-3", "upsert", HOUR),
    ]


# --- the run history on both indexes --------------------------------------------------------


def record(index, batches: list[str], run_id: str | None, when: datetime) -> None:
    deliveries = pa.Table.from_pylist(
        [{"event_id": f"e-{b}", "batch_id": b, "line_no": 1, "partition_key": HOUR,
          "outcome": "materialised", "counted_batch": None, "reason": None} for b in batches],
        schema=DELIVERY_SCHEMA,
    )  # fmt: skip
    shared = pa.Table.from_pylist(
        [{"batch_id": b, "partition_key": HOUR, "batch_key": f"landing/x/{b}.jsonl",
          "stream": "postings", "run_id": run_id, "recorded_at": when} for b in batches],
        schema=BATCH_SCHEMA,
    )  # fmt: skip
    index.record(deliveries, shared)


@pytest.fixture(params=["sqlite", "dynamo"])
def index(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        return SqliteTraceIndex(tmp_path / "trace.sqlite")
    from tests.aws_server import emulator_config

    config = emulator_config(request.getfixturevalue("aws_config").endpoint_url)
    ensure_tables(config)
    return DynamoTraceIndex(config)


def test_every_run_of_a_batch_is_kept_oldest_first_and_each_runs_batches_found(index):
    t = [datetime(2026, 11, 2, 11, m, tzinfo=UTC) for m in range(3)]
    record(index, ["b1", "b2"], "run-a", t[0])
    record(index, ["b1", "b3"], "run-b", t[1])
    record(index, ["b1"], None, t[2])  # outside Dagster
    record(index, ["b1"], "run-a", t[0])  # a retried step: the same run again, not a new one

    runs = index.runs([("b1", HOUR), ("b3", HOUR), ("b9", HOUR), ("b1", "other")]).to_pylist()
    assert [(r["batch_id"], r["run_id"], r["recorded_at"]) for r in runs] == [
        ("b1", "run-a", t[0]),
        ("b1", "run-b", t[1]),
        ("b1", None, t[2]),
        ("b3", "run-b", t[1]),
    ]
    assert index.run_batches("run-a", HOUR) == ["b1", "b2"]
    assert index.run_batches("run-b", HOUR) == ["b1", "b3"]
    assert index.run_batches(None, HOUR) == ["b1"]
    assert index.run_batches("run-a", "2026-11-02-11:00") == []
    assert index.runs([]).num_rows == 0


def test_the_run_history_expires_with_the_deliveries(index):
    record(index, ["b1"], "run-a", datetime(2026, 11, 2, 11, tzinfo=UTC))
    later = 2**62
    assert index.runs([("b1", HOUR)], now=later).num_rows == 0
    assert index.run_batches("run-a", HOUR, now=later) == []
    assert index.purge(now=later) == 1  # deliveries counted; the history goes with them
    assert index.runs([("b1", HOUR)]).num_rows == 0
    assert index.run_batches("run-a", HOUR) == []


@pytest.mark.parametrize("bad", ["b1", [("b1",)], [("b1", 3)], None])
def test_runs_refuses_what_is_not_batch_partition_pairs(index, bad):
    with pytest.raises((TypeError, ValueError), match="runs"):
        index.runs(bad)
