"""after_legacy_sensor: parity follows every run of legacy assets, nightly or backfilled.

Tried: the nightly job for one day; a single-run backfill over a range of days (the range tags);
a backfill's run per day of the implicit asset job; a failed legacy run (parity must still
report the day); runs that touch no legacy asset (streaming, the migration job itself); and
more days than a tick takes (the cursor resumes them)."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import orjson
import pytest

from figstream.ingest.publish import Publisher
from figstream.storage.objects import LocalObjectStore
from sensors import migration as sensors_migration
from sensors.migration import migration_jobs, migration_sensors
from tests.sensors.test_maintenance import streaming  # the stores on a home

DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01")
RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


@dg.asset(key=["legacy", "clean_postings"], partitions_def=DAILY)
def legacy_clean(context: dg.AssetExecutionContext) -> None:
    if context.run.tags.get("fail"):
        raise RuntimeError("planted Luigi failure")


@dg.asset(key=["parity", "clean_postings"], partitions_def=DAILY, deps=[legacy_clean])
def parity_clean() -> None:
    pass


@dg.asset(partitions_def=DAILY)
def streaming_thing() -> None:
    pass


@dg.asset
def migration_status() -> None:
    pass


NIGHTLY = dg.define_asset_job("legacy_nightly_job", [legacy_clean])
JOBS = migration_jobs(NIGHTLY)
DEFS = dg.Definitions(
    assets=[legacy_clean, parity_clean, streaming_thing, migration_status],
    jobs=list(JOBS.values()),
    sensors=migration_sensors(JOBS),
)


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        yield instance


def materialize(instance, assets, partition=None, **tags) -> None:
    """A run of the assets as the UI's Materialize and backfills launch it: the implicit
    asset job, with the assets as its selection."""
    DEFS.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        asset_selection=[a.key for a in assets],
        partition_key=partition,
        tags=tags,
        raise_on_error=False,
    )


def tick(instance, cursor=None):
    sensor = DEFS.get_sensor_def("after_legacy_sensor")
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=DEFS,
        resources={"streaming": streaming(Path(instance.root_directory))},
    ) as context:
        result = sensor(context)
        return result, context.cursor if result.cursor is None else result.cursor


def parity_days(result) -> list[str]:
    return sorted(r.partition_key for r in result.run_requests if r.job_name.startswith("migr"))


def test_parity_follows_nightly_and_backfilled_legacy_runs(instance, monkeypatch) -> None:
    monkeypatch.setattr(sensors_migration, "MAX_PARITY_IN_FLIGHT", 10)
    DEFS.resolve_job_def(NIGHTLY.name).execute_in_process(
        instance=instance, partition_key="2026-11-01"
    )
    materialize(instance, [legacy_clean], "2026-11-02")  # a backfill's run of one day
    materialize(  # a single-run backfill over three days
        instance,
        [legacy_clean],
        None,
        **dict(zip(RANGE, ("2026-11-03", "2026-11-05"), strict=True)),
    )
    materialize(instance, [legacy_clean], "2026-11-06", fail="yes")  # Luigi died on a record
    materialize(instance, [streaming_thing], "2026-11-07")  # not legacy: no parity
    result, cursor = tick(instance)
    assert parity_days(result) == [f"2026-11-0{d}" for d in range(1, 7)]
    again, _ = tick(instance, cursor)  # nothing new: nothing asked twice
    assert not again.run_requests


def test_parity_runs_in_flight_are_bounded_and_the_rest_wait(instance, monkeypatch) -> None:
    monkeypatch.setattr(sensors_migration, "MAX_PARITY_IN_FLIGHT", 4)
    for first, last in (("2026-11-01", "2026-11-03"), ("2026-11-04", "2026-11-06")):
        materialize(instance, [legacy_clean], None, **dict(zip(RANGE, (first, last), strict=True)))
    result, cursor = tick(instance)
    assert parity_days(result) == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    assert len(orjson.loads(cursor)["pending"]) == 2
    # Three parity runs not finished yet: one more may start.
    job = DEFS.resolve_job_def("migration_nightly_job")
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        instance.create_run_for_job(job, tags={"dagster/partition": day})
    result, cursor = tick(instance, cursor)
    assert parity_days(result) == ["2026-11-05"]
    assert orjson.loads(cursor)["pending"] == [
        [orjson.loads(cursor)["pending"][0][0], "2026-11-06"]
    ]


def test_a_day_two_legacy_runs_covered_waits_for_one_parity_run(instance, monkeypatch) -> None:
    # Two legacy runs over the same days (a backfill launched twice, or the nightly job and a
    # backfill): each day gets one parity run, not two.
    monkeypatch.setattr(sensors_migration, "MAX_PARITY_IN_FLIGHT", 10)
    days = dict(zip(RANGE, ("2026-11-01", "2026-11-02"), strict=True))
    materialize(instance, [legacy_clean], None, **days)
    materialize(instance, [legacy_clean], None, **days)
    result, cursor = tick(instance)
    assert parity_days(result) == ["2026-11-01", "2026-11-02"]
    assert not orjson.loads(cursor)["pending"]


def test_a_day_the_stream_has_not_caught_up_on_waits_for_it(instance, monkeypatch) -> None:
    # A backfill launched while the stream still catches up on history (a fresh `make dev`):
    # parity of a day with landed batches not ingested yet would count them as missing.
    monkeypatch.setattr(sensors_migration, "MAX_PARITY_IN_FLIGHT", 10)
    home = Path(instance.root_directory)
    (key,) = Publisher(LocalObjectStore(home), producer="t").publish([b"{}"])
    streaming(home).stores().state.index_batches("postings", [("2026-11-02-05:00", key, 1)])
    days = dict(zip(RANGE, ("2026-11-01", "2026-11-03"), strict=True))
    materialize(instance, [legacy_clean], None, **days)
    result, cursor = tick(instance)
    assert parity_days(result) == ["2026-11-01"]  # 11-02 waits, and 11-03 behind it
    assert [day for _, day in orjson.loads(cursor)["pending"]] == ["2026-11-02", "2026-11-03"]
    again, _ = tick(instance, cursor)
    assert not again.run_requests
    assert "1 landed batches of 2026-11-02" in again.skip_reason.skip_message
