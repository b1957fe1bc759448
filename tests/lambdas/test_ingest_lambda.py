"""The ingest asset validating through the validate-batch Lambda (PipesLambdaClient on the
subprocess invoke client) gives what the in-process path gives: the same materialisation
metadata, fragments, claims and dead letters, on a local directory and on S3 (moto server).

Bad inputs: the generator's bad records (malformed JSON, missing and mistyped fields, unknown
type and version, absurd values, bad encodings) and duplicate deliveries; a function that
crashes after writing part of its outputs.
"""

import sqlite3
from pathlib import Path

import dagster as dg
import pytest
from streaming_harness import EPOCH, LEDGER

from assets.streaming import build_streaming_assets
from figstream.ingest.dataset import generate
from figstream.ingest.landing import LANDING_PREFIX
from figstream.settings import routing_path, streaming_settings
from figstream.storage.aws import AwsConfig
from figstream.storage.deadletter import deadletter_path
from figstream.storage.objects import LocalObjectStore, ObjectStore, read_parquet
from figstream.storage.state import SqliteStateStore, state_path
from lambdas.validate_batch import OUTPUT_PREFIX
from resources.lambda_invoke import LambdaValidationResource
from resources.stores import (
    LocalObjectStoreResource,
    ObjectStoreResource,
    RoutingResource,
    SqliteDeadLetterResource,
    SqliteStateStoreResource,
    StreamingResources,
)

FIRST = f"{EPOCH.isoformat()}-00:00"
COUNTS = ("batches", "records", "materialised", "duplicates_dropped", "dead_lettered")


class StreamingWithValidation(StreamingResources):
    """StreamingResources plus the ``validation`` field the profiles bind (see the report)."""

    validation: LambdaValidationResource | None = None


class S3Objects(ObjectStoreResource):
    def store(self) -> ObjectStore:
        from figstream.storage.s3_objects import S3ObjectStore

        return S3ObjectStore(AwsConfig.from_env())


def streaming(home: Path, invoker: str | None, objects: ObjectStoreResource | None = None, **kw):
    """The stores of ``home``; validation by ``invoker``, or, with None, by the default (no
    LambdaValidationResource bound: in process)."""
    validation = None if invoker is None else LambdaValidationResource(invoker=invoker, **kw)
    return StreamingWithValidation(
        objects=objects or LocalObjectStoreResource(root=str(home)),
        state=SqliteStateStoreResource(path=str(state_path(home))),
        dead_letters=SqliteDeadLetterResource(path=str(deadletter_path(home))),
        routing=RoutingResource(path=str(routing_path())),
        first_partition=FIRST,
        validation=validation,
    )


ASSETS = {a.key.path[-1]: a for a in build_streaming_assets(LEDGER, streaming_settings())[:2]}


def materialise(resources: StreamingResources, asset: str, partition: str, **kw):
    return dg.materialize(
        [ASSETS[asset]], resources={"streaming": resources}, partition_key=partition, **kw
    )


def counts(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    metadata = result.asset_materializations_for_node(asset)[0].metadata
    return {key: metadata[key].value for key in COUNTS}


def hour_counts(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Per hour of a range run, the figures of its observation."""
    observed = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    per_hour = [k for k in COUNTS if k != "batches"]  # the run's batches are on the range
    return {o.partition: {k: o.metadata[k].value for k in per_hour} for o in observed}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """The step failure's message with its causes."""
    error, parts = result.get_step_failure_events()[0].step_failure_data.error, []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def books(home: Path, objects: ObjectStore, table: str, partition: str) -> tuple:
    fragments = {
        key.rsplit("/", 1)[-1]: read_parquet(objects, key)
        for key in objects.list(f"tables/{table}/{partition}/")
    }
    with sqlite3.connect(deadletter_path(home)) as db:
        letters = db.execute(
            "SELECT batch_id, line_no, event_id, event_time, code, detail, payload, stream, "
            "partition_key "
            "FROM dead_letters ORDER BY batch_id, line_no"
        ).fetchall()
    with sqlite3.connect(state_path(home)) as db:
        claims = db.execute("SELECT event_id, batch_id FROM event_claims ORDER BY 1").fetchall()
    return fragments, letters, claims


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("day")
    generate(home, start=EPOCH, days=1, events_per_day=400, seed=7, bad_rate=0.05,
             batch_seconds=900)  # fmt: skip
    return home


@pytest.fixture
def homes(day: Path, tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """Two copies of the landing zone: one validated in process, one through the Lambda, whose
    data home it is (the function's store comes from its environment, which the subprocess
    client passes on from this one)."""
    pair = []
    for name in ("local", "lambda"):
        home = tmp_path / name
        store = LocalObjectStore(home)
        source = LocalObjectStore(day)
        for key in source.list(LANDING_PREFIX):
            store.put(key, source.get(key))
        pair.append(home)
    monkeypatch.setenv("FIGSTREAM_PROFILE", "local")
    monkeypatch.setenv("FIGSTREAM_HOME", str(pair[1]))
    return pair[0], pair[1]


def hours_with_events(home: Path, stream: str) -> list[str]:
    from figstream.streaming import landing_index
    from figstream.streaming.stores import Stores

    stores = Stores.local(home, FIRST)
    landing_index.catch_up_index(stores, stream)
    state = stores.state
    hours = {p for k in state.indexed_batches(stream) for p in state.partitions_for(stream, k)}
    return sorted(h for h in hours if h)


@pytest.mark.parametrize(("asset", "stream"), [("raw_events", "postings"),
                                               ("board_mergers", "boards")])  # fmt: skip
def test_the_lambda_path_gives_what_the_in_process_path_gives(homes, asset, stream) -> None:
    local, remote = homes
    hours = hours_with_events(local, stream)
    assert hours
    # The busiest hours and the first (late events and rejected records land by arrival).
    for partition in sorted({hours[0], *hours[len(hours) // 2 : len(hours) // 2 + 1]}):
        expected = materialise(streaming(local, None), asset, partition)
        instance = dg.DagsterInstance.ephemeral()
        got = materialise(streaming(remote, "subprocess"), asset, partition, instance=instance)
        logs = [e.user_message for e in instance.all_logs(got.run_id)]
        assert any("validating in Lambda figstream-validate-batch" in m for m in logs)
        assert counts(got, asset) == counts(expected, asset)
        assert counts(got, asset)["records"] > 0
        table = asset
        mine = books(remote, LocalObjectStore(remote), table, partition)
        theirs = books(local, LocalObjectStore(local), table, partition)
        assert mine == theirs
    assert LocalObjectStore(remote).list(OUTPUT_PREFIX) == []
    letters = books(remote, LocalObjectStore(remote), asset, hours[0])[1]
    assert asset == "board_mergers" or letters  # the generator's bad records were exercised


FLAKY = """
import os
from pathlib import Path

from lambdas import validate_batch


def handler(event, context):
    marker = Path(os.environ["FLAKY_MARKER"])
    if marker.exists():
        return validate_batch.handler(event, context)
    marker.write_text("crashed once")
    with validate_batch.open_pipes(event):
        # Half the work: the first batch's outputs are written, then the function dies.
        validate_batch.validate({**event, "batch_keys": event["batch_keys"][:1]})
        raise RuntimeError("injected: the function crashed after writing one batch")
"""


def test_a_crashing_function_fails_the_step_and_a_retry_converges(
    homes, tmp_path, monkeypatch
) -> None:
    local, remote = homes
    (tmp_path / "flaky_validate.py").write_text(FLAKY)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("FLAKY_MARKER", str(tmp_path / "crashed"))
    partition = hours_with_events(local, "postings")[0]
    resources = streaming(remote, "subprocess", handler="flaky_validate:handler")

    failed = materialise(resources, "raw_events", partition, raise_on_error=False)
    assert not failed.success
    assert "injected: the function crashed after writing one batch" in failure_text(failed)
    # Nothing claimed, no fragment, no dead letter: only the function's own outputs.
    fragments, letters, claims = books(remote, LocalObjectStore(remote), "raw_events", partition)
    assert (fragments, letters, claims) == ({}, [], [])
    assert LocalObjectStore(remote).list(OUTPUT_PREFIX)

    retried = materialise(resources, "raw_events", partition)
    expected = materialise(streaming(local, "in_process"), "raw_events", partition)
    assert counts(retried, "raw_events") == counts(expected, "raw_events")
    assert books(remote, LocalObjectStore(remote), "raw_events", partition) == books(
        local, LocalObjectStore(local), "raw_events", partition
    )
    assert LocalObjectStore(remote).list(OUTPUT_PREFIX) == []


def test_on_s3_the_lambda_path_gives_what_the_in_process_path_gives(
    homes, aws_config, tmp_path, monkeypatch
) -> None:
    from figstream.storage.s3_objects import S3ObjectStore

    monkeypatch.setenv("FIGSTREAM_PROFILE", "aws")  # the function's store: the bucket
    local, _ = homes
    aws_config.client("s3").create_bucket(Bucket=aws_config.bucket_name)
    bucket = S3ObjectStore(aws_config)
    source = LocalObjectStore(local)
    for key in source.list(LANDING_PREFIX):
        bucket.put(key, source.get(key))
    remote = tmp_path / "s3-state"
    partition = hours_with_events(local, "postings")[0]

    expected = materialise(streaming(local, "in_process"), "raw_events", partition)
    got = materialise(streaming(remote, "subprocess", objects=S3Objects()), "raw_events", partition)
    assert counts(got, "raw_events") == counts(expected, "raw_events")
    assert books(remote, bucket, "raw_events", partition) == books(
        local, source, "raw_events", partition
    )
    assert bucket.list(OUTPUT_PREFIX) == []


def test_the_aws_invoker_calls_lambda_over_http(homes, aws_config) -> None:
    # moto runs no Lambda code, but it answers Invoke: a function that is not deployed fails
    # the step with Lambda's own error, before anything is claimed.
    local, _ = homes
    partition = hours_with_events(local, "postings")[0]
    resources = streaming(local, "aws", function_name=aws_config.function_name("validate-batch"))
    failed = materialise(resources, "raw_events", partition, raise_on_error=False)
    assert not failed.success
    assert "ResourceNotFoundException" in failure_text(failed)
    assert books(local, LocalObjectStore(local), "raw_events", partition)[:2] == ({}, [])


def test_a_sensor_run_naming_its_batches_validates_only_those(homes) -> None:
    local, remote = homes
    partition = hours_with_events(local, "postings")[-1]
    hours_with_events(remote, "postings")  # the sensor indexes before it requests the run
    named = SqliteStateStore(state_path(local)).batches_for("postings", partition)[-1:]
    config = {"ops": {"raw_events": {"config": {"batch_keys": named}}}}
    expected = materialise(streaming(local, None), "raw_events", partition, run_config=config)
    got = materialise(streaming(remote, "subprocess"), "raw_events", partition, run_config=config)
    assert counts(got, "raw_events") == counts(expected, "raw_events")
    assert counts(got, "raw_events")["batches"] == 1
    assert books(remote, LocalObjectStore(remote), "raw_events", partition) == books(
        local, LocalObjectStore(local), "raw_events", partition
    )


def test_a_range_run_invokes_the_function_per_hour(homes) -> None:
    local, remote = homes
    first, second = hours_with_events(local, "postings")[:2]
    tags = {"dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": second}  # fmt: skip
    results = [
        dg.materialize([ASSETS["raw_events"]], resources={"streaming": resources}, tags=tags)
        for resources in (streaming(local, None), streaming(remote, "subprocess"))
    ]
    # A range run's figures are per hour, on each hour's observation.
    assert hour_counts(results[1]) == hour_counts(results[0])
    assert set(hour_counts(results[0])) == {first, second}
    for partition in (first, second):
        assert books(remote, LocalObjectStore(remote), "raw_events", partition) == books(
            local, LocalObjectStore(local), "raw_events", partition
        )
