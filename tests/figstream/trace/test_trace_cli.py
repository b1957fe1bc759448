"""``figstream trace EVENT_ID``: the text and ``--json`` forms over a home the real streaming
steps wrote (the core's steps, as a run executes them), and user errors.

Bad inputs tried: an id never ingested, a home with no state store, a state file that is not
a SQLite database, an id with control characters (escaped, never sent to the terminal raw).
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
from figstream.storage.state import state_path
from figstream.storage.trace import BATCH_SCHEMA, DELIVERY_SCHEMA
from figstream.streaming import cleaning, dedupe, index_export, ingest, jobs, landing_index
from figstream.streaming.stores import Stores
from figstream.streaming.trace import index_for


def stream_run(stores: Stores, keys: list[str], run_id: str | None) -> None:
    """One postings run's steps over ``keys``, as the postings job executes them."""
    landing_index.index_landing(stores, "postings", keys)
    ingest.ingest_range(stores, "postings", [HOUR], keys, run_id=run_id)
    ids = [k.rsplit("/", 1)[1].removesuffix(".jsonl") for k in keys]
    cleaning.clean(stores, [HOUR], ids)
    dedupe.dedupe(stores, [HOUR], ids)
    jobs.update_job_state(stores, [HOUR], ids)
    index_export.export_changes(stores, [HOUR], ids)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    stores = Stores.local(tmp_path, "2026-10-01-00:00")
    publisher = Publisher(stores.objects, producer="test")
    first = publisher.publish(
        [
            posting("ev-1", "job-1"),
            posting("bad-1", "j", remote="x"),
            posting("bad\x1b[31m", "j", remote="x"),
        ]
    )
    stream_run(stores, first, "run-aaa")
    again = publisher.publish([posting("ev-1", "job-1"), posting("ev-9", "job-9")])
    stream_run(stores, again, None)
    return tmp_path


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="figstream")
    add_trace(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def test_the_text_form_shows_each_delivery_its_run_link_assets_and_the_jobs_state(home, capsys):
    assert run("trace", "ev-1", "--home", str(home), "--webserver", "http://ui:3000") == 0
    out = capsys.readouterr().out
    assert "event ev-1 (job.posted, stream postings, job job-1)" in out
    assert "2 deliveries; counted: " in out
    assert f"partition {HOUR}: materialised (counted)" in out
    assert "run run-aaa  http://ui:3000/runs/run-aaa" in out
    assert "assets reached: raw_events yes, clean_postings yes, deduped_postings yes, " in out
    assert "search index: upsert of job-1 (Trace Engineer)" in out
    assert "duplicate of the delivery in batch " in out and "(not counted)" in out
    assert "run: none recorded" in out  # the second delivery was ingested outside Dagster
    assert "job job-1 now: active on alpha" in out and "this event holds: latest posting" in out


def test_json_is_one_object_for_tools(home, capsys, monkeypatch):
    monkeypatch.setenv("FIGSTREAM_WEBSERVER_URL", "https://dagster.example")
    assert run("trace", "ev-1", "--home", str(home), "--json") == 0
    found = orjson.loads(capsys.readouterr().out)
    assert [d["outcome"] for d in found["deliveries"]] == ["materialised", "duplicate"]
    assert found["runs"] == [{"run_id": "run-aaa", "url": "https://dagster.example/runs/run-aaa"}]
    assert found["job"]["status"] == "active"


def test_a_dead_letter_shows_its_reason(home, capsys):
    assert run("trace", "bad-1", "--home", str(home)) == 0
    out = capsys.readouterr().out
    assert "dead_lettered (counted)" in out and "reason: wrong_type" in out
    assert "dead letter " in out and ": wrong_type: " in out


def test_an_id_with_control_characters_is_refused_and_escaped_when_named(home, capsys):
    """Such an id is no event id (the envelope refuses it: bad_id, and its dead letter keeps
    no id), so it traces to nothing; the error names it escaped, never as raw bytes."""
    assert run("trace", "bad\x1b[31m", "--home", str(home)) == 1
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err
    assert "bad\\x1b[31m" in captured.err and captured.err.count("\n") == 1


def test_an_unknown_event_is_one_error_line(home, capsys):
    assert run("trace", "nope", "--home", str(home)) == 1
    err = capsys.readouterr().err
    assert err.startswith("figstream trace: error: event 'nope': the trace index holds no")
    assert err.count("\n") == 1


def test_a_home_with_no_state_store_is_an_error_and_creates_nothing(tmp_path, capsys):
    assert run("trace", "ev-1", "--home", str(tmp_path)) == 1
    assert "no state store under" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_state_file_is_an_error_not_a_traceback(tmp_path, capsys):
    path = state_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    assert run("trace", "ev-1", "--home", str(tmp_path)) == 1
    assert "cannot be read" in capsys.readouterr().err


def test_a_cross_board_duplicate_shows_why_it_is_not_in_the_index(home, capsys):
    assert run("trace", "ev-9", "--home", str(home), "--json") == 0
    found = orjson.loads(capsys.readouterr().out)
    [delivery] = found["deliveries"]
    reached = {a["asset"]: a["reached"] for a in delivery["assets"]}
    assert reached == {"raw_events": True, "clean_postings": True, "deduped_postings": False,
                       "job_state": True}  # fmt: skip
    assert [c["op"] for c in delivery["search_index"]] == ["delete"]
    assert found["job"]["duplicate_of"] == "job-1"
    assert run("trace", "ev-9", "--home", str(home)) == 0
    assert "a cross-board duplicate of job-1" in capsys.readouterr().out


def test_on_the_aws_profile_it_reads_the_dynamodb_index(aws_config, tmp_path, capsys):
    from figstream.cli.aws import setup
    from figstream.ingest.routing import Router
    from figstream.settings import routing_path
    from figstream.streaming.trace_lookup import Sources

    setup(aws_config, Router.from_file(routing_path()))
    deliveries = pa.Table.from_pylist(
        [
            {
                "event_id": "ev-7",
                "batch_id": "b1",
                "line_no": 3,
                "partition_key": HOUR,
                "outcome": "materialised",
                "counted_batch": None,
                "reason": None,
            },
            {
                "event_id": "ev-7",
                "batch_id": "b2",
                "line_no": 1,
                "partition_key": HOUR,
                "outcome": "duplicate",
                "counted_batch": "b1",
                "reason": None,
            },
        ],
        schema=DELIVERY_SCHEMA,
    )
    batches = pa.Table.from_pylist(
        [
            {
                "batch_id": b,
                "partition_key": HOUR,
                "batch_key": f"landing/2026-11-02/{b}.jsonl",
                "stream": "postings",
                "run_id": "run-x",
                "recorded_at": datetime.now(UTC),
            }
            for b in ("b1", "b2")
        ],
        schema=BATCH_SCHEMA,
    )
    index_for(Sources.for_profile(tmp_path).state).record(deliveries, batches)
    # --home is not read on aws: the tables and bucket are the profile's, wherever HOME is.
    assert run("trace", "ev-7", "--home", str(tmp_path / "nowhere")) == 0
    out = capsys.readouterr().out
    assert "delivery 1 of 2: landing/2026-11-02/b1.jsonl line 3" in out
    assert "materialised (counted)" in out and "assets reached: raw_events no" in out
    assert "duplicate of the delivery in batch b1 (not counted)" in out
