"""The books and the dead letters in the UI: what the ingest asset's materialisations, checks
and observations say, driven by the real sensors and jobs (in process, an ephemeral instance).

Cases: a sensor run of one hour (its figures and dead letters by reason on the
materialisation, the ``books`` check passing, ``dead_letters`` warning with the ``figstream
dlq`` command), an imbalance planted in an hour (a fragment deleted, then another batch of the
hour lands: the run's ``books`` check fails naming the hour, the batch and how much; on both
profiles), a
replayed dead letter (no longer waiting), and a range run (each hour's figures on its own
partition's observation, none on the materialisation).
"""

from __future__ import annotations

import dagster as dg
import orjson
import pytest
from streaming_harness import Harness

from figstream.storage.deadletter import replay
from figstream.streaming.stores import fragment_key
from tests.figstream.trace.trace_cases import HOUR, posting

OTHER_HOUR = "2026-11-02-11:00"


@pytest.fixture
def harness(tmp_path, monkeypatch) -> Harness:
    return Harness(tmp_path, monkeypatch, max_runs_per_tick=1000)


def sensor_runs(harness: Harness) -> list[dg.ExecuteInProcessResult]:
    """Tick the postings sensor and run each request, as the daemon would; the postings
    runs' results (a tick may also ask for the daily rollups)."""
    result = harness.tick("postings")
    runs = [harness.run(r) for r in (result.run_requests or [])]
    return [r for r in runs if r.dagster_run.job_name == "postings_job"]


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialisations(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    return [
        e.event_specific_data.materialization for e in result.get_asset_materialization_events()
    ]


def materialisation(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [m for m in materialisations(result) if m.asset_key == dg.AssetKey("raw_events")]
    return event.metadata


def test_a_run_shows_its_hour_its_books_and_its_dead_letters_by_reason(harness):
    harness.publish([posting("ev-1", "job-1"), posting("ev-1", "job-1"),
                     posting("bad-1", "job-2", remote="x"), posting("ev-2", "job-3")])  # fmt: skip
    [run] = sensor_runs(harness)
    metadata = materialisation(run)
    figures = {k: metadata[k].value for k in ("records", "materialised", "duplicates_dropped",
                                              "dead_lettered", "books_landed",
                                              "books_unaccounted")}  # fmt: skip
    assert figures == {"records": 4, "materialised": 2, "duplicates_dropped": 1,
                       "dead_lettered": 1, "books_landed": 4, "books_unaccounted": 0}  # fmt: skip
    table = metadata["dead_letters_by_reason"].value
    assert (
        f"| {HOUR} | `wrong_type` | 1 | `figstream dlq list --stream postings --partition "
        f"{HOUR} --code wrong_type` |" in table
    )
    found = checks(run)
    assert found["books"].passed
    assert found["books"].metadata["landed"].value == 4
    assert found["books"].metadata["unaccounted"].value == 0
    assert not found["dead_letters"].passed
    assert found["dead_letters"].severity == dg.AssetCheckSeverity.WARN
    assert found["dead_letters"].metadata["waiting"].value == 1
    assert "figstream dlq list --stream postings" in found["dead_letters"].description
    # The UI's execution history tells the runs apart by the hours their descriptions name.
    assert found["books"].description == f"postings hour {HOUR}: balanced"
    assert found["dead_letters"].description.startswith(
        f"postings hour {HOUR}: 1 of 1 dead letters wait to be replayed (by reason: wrong_type 1)"
    )

    # The dead letter replayed with a fix: nothing waits, and the hour still balances.
    [letter] = harness.dead_letters().list()
    fixed = orjson.dumps(posting("bad-1", "job-2"))
    replay(harness.dead_letters(), harness.publisher(), ids=[letter.id], fixes={letter.id: fixed})
    [again] = sensor_runs(harness)
    found = checks(again)
    assert found["books"].passed and found["books"].metadata["landed"].value == 5
    assert found["dead_letters"].passed
    assert found["dead_letters"].metadata["replayed"].value == 1


@pytest.fixture(params=["local", "aws"])
def either(request, tmp_path, monkeypatch) -> Harness:
    """A harness on each profile (aws: S3, DynamoDB, EventBridge and SQS on moto server)."""
    if request.param == "aws":
        request.getfixturevalue("aws_config")
    return Harness(tmp_path, monkeypatch, profile=request.param, max_runs_per_tick=1000)


def test_an_imbalance_in_the_hour_fails_the_next_runs_books_check_naming_it(either):
    harness = either
    harness.publish([posting("ev-1", "job-1"), posting("ev-2", "job-2")])
    sensor_runs(harness)
    [first_key] = harness.objects.list("landing/")  # on aws the sensor drained it from SQS
    first = first_key.rsplit("/", 1)[1].removesuffix(".jsonl")
    harness.objects.delete(fragment_key("raw_events", HOUR, first))  # a lost fragment
    harness.publish([posting("ev-3", "job-3")])
    [run] = sensor_runs(harness)  # takes only the new batch; its check covers the whole hour
    books = checks(run)["books"]
    assert not books.passed and books.severity == dg.AssetCheckSeverity.ERROR
    assert books.metadata["hours_unbalanced"].value == 1
    assert books.metadata["unaccounted"].value == 2
    assert f"postings {HOUR}: landed 3 = materialised 1" in books.description
    assert f"batch {first}: no raw_events fragment, the ingest materialised 2 (-2)" in (
        books.description
    )
    assert "| UNBALANCED |" in books.metadata["books"].value


def test_a_range_run_puts_each_hours_figures_on_its_partitions_observation(harness):
    harness.publish([posting("ev-1", "job-1"), posting("bad-1", "job-2", remote="x")])
    harness.publish([{**posting("ev-2", "job-3"), "time": "2026-11-02T11:05:00Z"}])
    job = harness.defs.resolve_job_def("postings_job")
    result = job.execute_in_process(
        instance=harness.instance,
        tags={
            "dagster/asset_partition_range_start": HOUR,
            "dagster/asset_partition_range_end": OTHER_HOUR,
        },
    )
    assert result.success
    observed = {
        e.event_specific_data.asset_observation.partition: e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
        and e.asset_key == dg.AssetKey("raw_events")
    }
    assert set(observed) == {HOUR, OTHER_HOUR}
    assert observed[HOUR].metadata["records"].value == 2
    assert observed[HOUR].metadata["dead_lettered"].value == 1
    assert observed[OTHER_HOUR].metadata["records"].value == 1
    assert observed[OTHER_HOUR].metadata["books_landed"].value == 1
    # Dagster gives each hour of the range a materialisation with the range's metadata: it
    # names the range and carries no per-hour numbers.
    events = [m for m in materialisations(result) if m.asset_key == dg.AssetKey("raw_events")]
    assert sorted(m.partition for m in events) == [HOUR, OTHER_HOUR]
    for event in events:
        assert event.metadata["hours"].value == 2
        assert not {"records", "materialised", "dead_lettered", "lag_seconds_p50"} & set(
            event.metadata
        )
    found = checks(result)
    assert found["books"].passed and found["books"].metadata["hours"].value == 2
