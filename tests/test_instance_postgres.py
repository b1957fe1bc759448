"""The aws profile's Dagster instance (platform/aws/dagster.yaml) on the machine's Postgres.

Each test run creates a throw-away database ``figstream_test_<random>`` on 127.0.0.1:5432
(user ``postgres``, trust auth, as ``.ci/run`` provides) and drops it afterwards. No Postgres
reachable is a failure naming what to start, not a skip: the machine always has one.

Checked: the storages are Postgres; a run, its events and a materialisation written by one
instance are read back by another (a second connection, as the webserver and the daemon are);
runs go through a queue with a limit per stream; a sensor tick round-trips and is purged by the
retention settings, which are bounded; the routed launcher sends a legacy night to ECS (moto
server's ECS over real HTTP) and a streaming run to a warm local worker.

Bad inputs tried: an unknown ``figstream/launcher`` tag (refused, naming the tag), routing tags
that disagree (the explicit one wins), the instance loading without any ECS setting.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from conftest import ROOT

from resources.aws_run_launcher import LAUNCHER_TAG, RoutedRunLauncher, route_for
from resources.dagster_internals import LaunchRunContext, ReconstructableRepository
from resources.run_launcher import WORKER_TAG

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
AWS_YAML = ROOT / "platform" / "aws" / "dagster.yaml"


def _admin():
    import psycopg2

    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as exc:
        pytest.fail(
            f"no Postgres at {PG['host']}:{PG['port']} (user {PG['user']}): {exc}. "
            "Start the machine's server (`pg_ctlcluster 15 main start`; .ci/run does it when "
            "`pg_isready -h 127.0.0.1` says it is down)."
        )
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    name = f"figstream_test_{uuid.uuid4().hex[:10]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def pg_env(pg_database: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": pg_database,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("FIGSTREAM_ECS_CLUSTER", "FIGSTREAM_ECS_RUN_TASK_DEFINITION"):
        monkeypatch.delenv(key, raising=False)
    return env


@pytest.fixture
def home(tmp_path: Path, pg_env) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(AWS_YAML, home / "dagster.yaml")
    return home


def test_the_instance_stores_runs_events_and_ticks_in_postgres(home: Path) -> None:
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        # Pools (the state steps' slots) live in the event log: Postgres supports them.
        assert instance.event_log_storage.supports_global_concurrency_limits
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_a_run_and_its_events_round_trip_through_a_second_connection(home: Path) -> None:
    @dg.asset
    def postings_probe() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows": 42, "note": "héllo\u2603"})

    with dg.DagsterInstance.from_config(str(home)) as writer:
        result = dg.materialize([postings_probe], instance=writer, tags={"figstream/probe": "1"})
        assert result.success
        run_id = result.run_id
    with dg.DagsterInstance.from_config(str(home)) as reader:
        run = reader.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["figstream/probe"] == "1"
        types = {r.dagster_event.event_type for r in reader.all_logs(run_id) if r.dagster_event}
        assert {dg.DagsterEventType.RUN_START, dg.DagsterEventType.RUN_SUCCESS} <= types
        event = reader.get_latest_materialization_event(dg.AssetKey("postings_probe"))
        assert event is not None and event.run_id == run_id
        metadata = event.asset_materialization.metadata
        assert metadata["rows"].value == 42 and metadata["note"].value == "héllo\u2603"


def test_runs_go_through_a_queue_with_a_limit_per_stream(home: Path) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # The queue daemon launches runs; the webserver only enqueues them.
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        per_stream = next(limit for limit in limits if limit["key"] == "figstream/stream")
        assert per_stream["value"] == {"applyLimitPerUniqueValue": True}
        assert 1 <= per_stream["limit"] <= 3


def test_sensor_ticks_round_trip_and_retention_is_bounded(home: Path) -> None:
    # Tick records have no public constructor: the daemon writes them with these types.
    from resources.dagster_internals import InstigatorType, TickData, TickStatus

    with dg.DagsterInstance.from_config(str(home)) as instance:
        retention = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        assert set(retention) == {
            TickStatus.SKIPPED,
            TickStatus.STARTED,
            TickStatus.SUCCESS,
            TickStatus.FAILURE,
        }, retention  # no outcome kept forever
        assert all(0 < days <= 30 for days in retention.values()), retention
        assert retention[TickStatus.SKIPPED] <= retention[TickStatus.SUCCESS]
        schedule = instance.get_tick_retention_settings(InstigatorType.SCHEDULE)
        assert schedule and all(0 < days <= 366 for days in schedule.values()), schedule

        now = time.time()
        origin, selector = f"origin-{uuid.uuid4().hex}", f"selector-{uuid.uuid4().hex}"

        def tick(status: TickStatus, age_days: float, cursor: str):
            return instance.create_tick(
                TickData(
                    instigator_origin_id=origin,
                    instigator_name="postings_stream_sensor",
                    instigator_type=InstigatorType.SENSOR,
                    status=status,
                    timestamp=now - age_days * 86400,
                    selector_id=selector,
                    cursor=cursor,
                    skip_reason="nothing landed" if status == TickStatus.SKIPPED else None,
                    run_ids=[] if status == TickStatus.SKIPPED else [uuid.uuid4().hex],
                )
            )

        tick(TickStatus.SKIPPED, 2, "old-skip")
        tick(TickStatus.SKIPPED, 0, "new-skip")
        tick(TickStatus.SUCCESS, 2, "old-success")
    with dg.DagsterInstance.from_config(str(home)) as daemon:
        ticks = daemon.get_ticks(origin, selector)
        assert {t.tick_data.cursor for t in ticks} == {"old-skip", "new-skip", "old-success"}
        # What the daemon's retention pass does: per outcome, purge what is older than its days.
        for status, days in daemon.get_tick_retention_settings(InstigatorType.SENSOR).items():
            daemon.purge_ticks(origin, selector, before=now - days * 86400, tick_statuses=[status])
        kept = {t.tick_data.cursor for t in daemon.get_ticks(origin, selector)}
        assert kept == {"new-skip", "old-success"}  # a 2-day-old skip goes, a success stays


# --- the routed launcher ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "job", "expected"),
    [
        ({"figstream/stream": "postings"}, "postings_stream_job", "local"),
        ({}, "legacy_nightly_job", "ecs"),
        ({"dagster/backfill": "abc"}, "postings_stream_job", "ecs"),
        ({"dagster/backfill": "abc", LAUNCHER_TAG: "local"}, "postings_stream_job", "local"),
        ({LAUNCHER_TAG: "local"}, "legacy_nightly_job", "local"),
        ({LAUNCHER_TAG: "ecs"}, "compaction_job", "ecs"),
    ],
)
def test_runs_route_by_tag_job_and_backfill(tags, job, expected) -> None:
    assert route_for(tags, job, ["legacy_nightly_job"], backfills=True) == expected


def test_an_unknown_launcher_tag_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="figstream/launcher='k8s'"):
        route_for({LAUNCHER_TAG: "k8s"}, "postings_stream_job", [], backfills=True)


LOCATION = """
import json, os
import dagster as dg

@dg.op(config_schema={"out": str})
def report(context):
    with open(context.op_config["out"], "w") as handle:
        json.dump({"pid": os.getpid()}, handle)

@dg.job
def postings_stream_job():
    report()

@dg.job
def legacy_nightly_job():
    report()

defs = dg.Definitions(jobs=[postings_stream_job, legacy_nightly_job])
"""


def _recon(code: Path) -> ReconstructableRepository:
    return ReconstructableRepository.for_file(
        str(code / "location.py"), "defs", working_directory=str(code)
    )


def _run(instance, code: Path, job_name: str, out: Path, tags=None):
    job = _recon(code).get_reconstructable_job(job_name)
    return instance.create_run_for_job(
        job.get_definition(),
        run_config={"ops": {"report": {"config": {"out": str(out)}}}},
        job_code_origin=job.get_python_origin(),
        tags=tags or {},
    )


def _wait(instance, run_id: str, timeout: float = 90.0) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.is_finished:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


@pytest.mark.slow  # a warm worker process, real runs, ECS on moto server
def test_a_legacy_night_launches_on_ecs_and_a_stream_run_in_a_warm_worker(
    home: Path, tmp_path: Path, aws_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "location.py").write_text(LOCATION)
    # dagster-aws builds its own boto3 clients: boto3 reads the emulator from AWS_ENDPOINT_URL.
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_config.endpoint_url)
    ecs = aws_config.client("ecs")
    cluster = ecs.create_cluster(clusterName=f"{aws_config.prefix}-cluster")["cluster"]
    task = ecs.register_task_definition(
        family=f"{aws_config.prefix}-run",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="1024",
        memory="4096",
        # moto sizes a task by its containers (ECS itself by the task).
        containerDefinitions=[
            {"name": "run", "image": "figstream:test", "cpu": 1024, "memory": 4096}
        ],
    )["taskDefinition"]
    monkeypatch.setenv("FIGSTREAM_ECS_CLUSTER", cluster["clusterName"])
    monkeypatch.setenv("FIGSTREAM_ECS_RUN_TASK_DEFINITION", task["taskDefinitionArn"])
    ec2 = aws_config.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=aws_config.prefix, Description="runs", VpcId=vpc)
    monkeypatch.setenv("FIGSTREAM_ECS_SUBNETS", subnet)
    monkeypatch.setenv("FIGSTREAM_ECS_SECURITY_GROUPS", group["GroupId"])

    with dg.DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, RoutedRunLauncher)

        night = _run(instance, code, "legacy_nightly_job", tmp_path / "night.json")
        launcher.launch_run(LaunchRunContext(dagster_run=night, workspace=None))
        tags = instance.get_run_by_id(night.run_id).tags
        assert tags[LAUNCHER_TAG] == "ecs"
        assert tags["ecs/task_arn"].startswith("arn:aws:ecs:")
        started = ecs.describe_tasks(cluster=cluster["clusterName"], tasks=[tags["ecs/task_arn"]])
        (ecs_task,) = started["tasks"]
        assert ecs_task["taskDefinitionArn"] == task["taskDefinitionArn"]
        (override,) = ecs_task["overrides"]["containerOverrides"]
        assert override["name"] == "run" and "execute_run" in " ".join(override["command"])
        assert not (tmp_path / "night.json").exists()  # it runs in the task, not here
        vpc_config = ecs_task["attachments"][0]["details"]
        assert {"name": "subnetId", "value": subnet} in vpc_config

        # Warmed first, as the daemon's first streaming run warms it in production.
        zygote = launcher.warm_workers.warm(_recon(code).get_python_origin())
        assert zygote.ready(timeout=60), "the pre-loaded worker did not warm up"
        stream = _run(instance, code, "postings_stream_job", tmp_path / "stream.json")
        launcher.launch_run(LaunchRunContext(dagster_run=stream, workspace=None))
        finished = _wait(instance, stream.run_id)
        assert finished.status == dg.DagsterRunStatus.SUCCESS
        assert "ecs/task_arn" not in finished.tags
        assert finished.tags[WORKER_TAG] == "warm"
        assert (tmp_path / "stream.json").exists()
