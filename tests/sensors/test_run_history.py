"""The run-history purge on a real SQLite instance, and what Dagster's delete_run does.

Runs are created now; the purge is asked to look from a week (or 40 days) ahead, its ``now``
being a parameter, so no clock is faked."""

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
import pytest

from figstream.settings import StreamingSettings
from figstream.storage.retention import Keep
from sensors.run_history import purge_run_history, run_history_sensor

HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00")
H = [f"2026-11-01-0{h}:00" for h in range(6)]
STREAM = {"figstream/stream": "postings"}


@dg.asset(partitions_def=HOURLY)
def raw_events(context: dg.AssetExecutionContext) -> None:
    if context.run.tags.get("fail"):
        raise RuntimeError("planted failure")


@dg.asset(partitions_def=HOURLY, deps=[raw_events])
def job_state() -> None:
    pass


@dg.asset
def legacy_clean() -> None:
    pass


DEFS = dg.Definitions(
    assets=[raw_events, job_state, legacy_clean],
    jobs=[
        dg.define_asset_job("postings_job", [raw_events, job_state], tags=STREAM),
        dg.define_asset_job("legacy_job", [legacy_clean]),
    ],
)
POSTINGS = DEFS.resolve_job_def("postings_job")
JOBS = {"postings_job": HOURLY}
SETTINGS = StreamingSettings()


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        yield instance


def _run(instance, partition: str | None = None, **tags: str) -> str:
    job = POSTINGS if partition or "dagster/asset_partition_range_start" in tags else None
    job = job or DEFS.resolve_job_def("legacy_job")
    return job.execute_in_process(
        instance=instance, partition_key=partition, tags=tags, raise_on_error=False
    ).run_id


def _status(instance) -> dict:
    """Per (asset, hour): the UI's cached status and the latest materialisation's storage id."""
    status = {}
    for asset in (raw_events, job_state):
        cached = instance.get_status_by_partition(asset.key, H, HOURLY)
        for hour in H:
            latest = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[hour]), limit=1
            ).records
            status[asset.key.path[0], hour] = (
                cached[hour] and cached[hour].value,
                latest[0].storage_id if latest else None,
            )
    return status


def _remaining(instance) -> set[str]:
    return {r.dagster_run.run_id for r in instance.get_run_records()}


def test_delete_run_leaves_the_status_cache_stale_and_the_latest_event_dangling(instance):
    """The finding the policy rests on (Dagster 1.13.27): deleting the only materialisation of
    a partition drops it from the event log but not from the UI's cached status, and the
    asset's latest event still names the deleted run. A superseded run's deletion changes
    neither."""
    old_h0, only_h1, new_h0 = _run(instance, H[0]), _run(instance, H[1]), _run(instance, H[0])
    assert instance.get_status_by_partition(raw_events.key, H[:2], HOURLY) == {
        H[0]: dg.AssetPartitionStatus.MATERIALIZED,
        H[1]: dg.AssetPartitionStatus.MATERIALIZED,
    }
    instance.delete_run(old_h0)
    assert set(instance.get_materialized_partitions(raw_events.key)) == {H[0], H[1]}

    instance.delete_run(only_h1)
    assert set(instance.get_materialized_partitions(raw_events.key)) == {H[0]}
    cached = instance.get_status_by_partition(raw_events.key, [H[1]], HOURLY)
    assert cached[H[1]] == dg.AssetPartitionStatus.MATERIALIZED  # stale
    history = instance.fetch_materializations(raw_events.key, limit=10).records
    assert [r.run_id for r in history] == [new_h0]

    instance.delete_run(new_h0)
    assert instance.get_materialized_partitions(raw_events.key) == set()
    latest = instance.get_latest_materialization_event(raw_events.key)
    assert latest is not None and latest.run_id == new_h0  # a deleted run's event
    assert instance.has_asset_key(raw_events.key)


def test_the_purge_deletes_old_superseded_runs_and_keeps_every_partitions_status(instance):
    old_h0 = _run(instance, H[0])
    only_h1 = _run(instance, H[1])
    catch_up = _run(
        instance,
        **STREAM,
        **{"dagster/asset_partition_range_start": H[2], "dagster/asset_partition_range_end": H[3]},
    )
    failed_h4 = _run(instance, H[4], fail="1")
    backfill_h0 = _run(instance, H[0], **{"dagster/backfill": "abc"})
    legacy = _run(instance)
    unfinished = instance.create_run_for_job(
        POSTINGS, tags={**STREAM, "dagster/partition": H[5]}
    ).run_id
    mid = dt.datetime.now(dt.UTC)
    new_h0, new_h2 = _run(instance, H[0]), _run(instance, H[2])
    everything = _remaining(instance)
    before = _status(instance)
    assert before["raw_events", H[4]] == ("FAILED", None)

    # Seen from a week after `mid`: the runs before it are old, the two after it young.
    week = mid + dt.timedelta(days=SETTINGS.run_history_days)
    plan, cursor = purge_run_history(instance, week, SETTINGS, JOBS)
    assert plan.delete == [old_h0] and cursor == {}
    assert plan.kept == {
        Keep.HOLDS_LATEST: 2,  # only_h1, catch_up (H3)
        Keep.FAILED_RECENTLY: 1,
        Keep.BACKFILL: 1,
        Keep.UNFINISHED: 1,
    }
    assert _remaining(instance) == everything - {old_h0}
    assert _status(instance) == before

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=SETTINGS.failed_run_history_days)
    plan, _ = purge_run_history(instance, later, SETTINGS, JOBS)
    assert plan.delete == [failed_h4]
    assert _remaining(instance) == {
        only_h1,
        catch_up,
        backfill_h0,
        legacy,
        unfinished,
        new_h0,
        new_h2,
    }
    # Every partition keeps its status and latest event. H4 only ever failed: the cached status
    # still says FAILED once its run is gone (Dagster keeps it until the cache is rebuilt).
    assert _status(instance) == before


def test_a_small_page_sweeps_in_several_ticks_and_starts_again(instance):
    runs = [_run(instance, H[0]) for _ in range(5)]
    week = dt.datetime.now(dt.UTC) + dt.timedelta(days=SETTINGS.run_history_days, minutes=1)
    settings = dataclasses.replace(SETTINGS, run_purge_max_runs=2)
    deleted, cursor, ticks = [], None, 0
    while True:
        plan, cursor = purge_run_history(instance, week, settings, JOBS, cursor)
        deleted += plan.delete
        ticks += 1
        if not cursor:
            break
    assert ticks == 3 and deleted == runs[:-1]  # the last one holds H0's latest
    assert _remaining(instance) == {runs[-1]}


def test_the_sensor_deletes_nothing_young_and_says_so(instance):
    young = [_run(instance, H[0]), _run(instance, H[0])]
    sensor = run_history_sensor(SETTINGS, ["postings_job"])
    result = sensor(dg.build_sensor_context(instance=instance, definitions=DEFS))
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert result.skip_reason.skip_message == "0 runs to delete; kept: none"
    assert json.loads(result.cursor) == {}
    assert _remaining(instance) == set(young)
