"""``trace_event`` over the real streaming path: events published, drained by the real sensors
and run by the real jobs (in process, an ephemeral instance), on the local profile and on the
aws profile (S3, DynamoDB, EventBridge and SQS on moto server).

Cases: an event delivered twice (both deliveries shown, the first counted), a bad record with
an id (dead-lettered with its reason), an id never seen, and the run and materialisation
metadata that lead from the UI to the batches.
"""

from __future__ import annotations

import dagster as dg
import pytest
from streaming_harness import Harness
from trace_cases import HOUR, posting

from figstream.streaming.trace_lookup import trace_event
from tests.aws_server import aws_environ, emulator_config


@pytest.fixture(scope="module", params=["local", "aws"])
def traced(request, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"trace-{request.param}")
    with pytest.MonkeyPatch.context() as monkeypatch:
        if request.param == "aws":
            endpoint = request.getfixturevalue("moto_endpoint")
            for key, value in aws_environ(emulator_config(endpoint)).items():
                monkeypatch.setenv(key, value)
        harness = Harness(home, monkeypatch, profile=request.param, max_runs_per_tick=1000)
        # Two landed batches (on aws the sensor drains the bus's queue into each of them).
        harness.publish([posting("ev-1", "job-1"), posting("ev-2", "job-2")])
        harness.drain()
        [first] = harness.objects.list("landing/")
        harness.publish([posting("ev-1", "job-1"), posting("bad-1", "job-3", remote="x")])
        harness.drain()
        [again] = [k for k in harness.objects.list("landing/") if k != first]
        harness.keys = (first, again)
        yield harness


def _batch_id(key: str) -> str:
    return key.rsplit("/", 1)[1].removesuffix(".jsonl")


def test_a_duplicate_delivery_shows_both_deliveries_and_which_one_counted(traced):
    first, again = traced.keys
    found = trace_event(traced.stores, "ev-1", "http://ui.example:3000/")
    assert (found["event_type"], found["stream"], found["job_id"]) == (
        "job.posted",
        "postings",
        "job-1",
    )
    counted, duplicate = found["deliveries"]
    assert (counted["batch_id"], counted["line"]) == (_batch_id(first), 1)
    assert counted["outcome"] == "materialised" and counted["counted"]
    assert counted["partition"] == HOUR and counted["stream"] == "postings"
    assert duplicate["batch_id"] == _batch_id(again) and duplicate["line"] == 1
    assert duplicate["outcome"] == "duplicate" and not duplicate["counted"]
    assert duplicate["duplicate_of_batch"] == _batch_id(first)
    assert found["counted"] == [f"{_batch_id(first)}:1"]
    assert (counted["batch_key"], duplicate["batch_key"]) == (first, again)
    # Each delivery names the run that ingested it; both runs exist, with their stream's tags.
    assert counted["run"]["run_id"] != duplicate["run"]["run_id"]
    for d in (counted, duplicate):
        run = traced.instance.get_run_by_id(d["run"]["run_id"])
        assert run is not None and run.tags["figstream/stream"] == "postings"
        assert d["run"]["url"] == f"http://ui.example:3000/runs/{run.run_id}"
    assert {a["asset"]: a["reached"] for a in counted["assets"]} == {
        "raw_events": True,
        "clean_postings": True,
        "deduped_postings": True,
        "job_state": True,
    }
    assert duplicate["assets"] == [] and duplicate["search_index"] == []
    [change] = counted["search_index"]
    assert (change["job_id"], change["op"], change["title"]) == (
        "job-1",
        "upsert",
        "Trace Engineer",
    )
    job = found["job"]
    assert (job["job_id"], job["status"]) == ("job-1", "active")
    assert "latest posting" in job["this_event_holds"]


def test_a_dead_lettered_event_shows_its_entry_and_reason(traced):
    _, again = traced.keys
    found = trace_event(traced.stores, "bad-1")
    [delivery] = found["deliveries"]
    assert delivery["outcome"] == "dead_lettered" and delivery["counted"]
    assert (delivery["batch_id"], delivery["line"]) == (_batch_id(again), 2)
    letter = delivery["dead_letter"]
    assert letter["id"] == f"{_batch_id(again)}:2"
    assert letter["code"] == delivery["reason"] == "wrong_type"
    assert "remote" in letter["detail"]
    assert found["job"] is None and delivery["run"]["url"].startswith("http")


def test_an_event_never_ingested_is_not_found(traced):
    assert trace_event(traced.stores, "never-seen") is None


def test_the_ui_leads_to_the_batches_through_run_tags_and_materialisation_metadata(traced):
    first, again = traced.keys
    runs = traced.instance.get_run_records(
        dg.RunsFilter(job_name="postings_job", tags={"figstream/stream": "postings"})
    )
    tagged = {r.dagster_run.tags["figstream/first_batch"] for r in runs}
    assert {_batch_id(first), _batch_id(again)} <= tagged
    event = traced.instance.get_latest_materialization_event(dg.AssetKey("raw_events"))
    metadata = event.asset_materialization.metadata
    assert metadata["first_batch"].value == metadata["last_batch"].value == _batch_id(again)
    assert _batch_id(again) in metadata["batch_ids"].value
