"""The hourly compaction schedule and its job: a run compacts, and runs never overlap."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from figstream.settings import StreamingSettings
from figstream.storage.objects import LocalObjectStore, write_parquet
from resources.stores import (
    LocalObjectStoreResource,
    RoutingResource,
    SqliteDeadLetterResource,
    SqliteStateStoreResource,
    StreamingResources,
)
from sensors.maintenance import compaction_job, compaction_schedule


def streaming(home) -> StreamingResources:
    from figstream.settings import routing_path

    return StreamingResources(
        objects=LocalObjectStoreResource(root=str(home)),
        state=SqliteStateStoreResource(path=str(home / "state.sqlite")),
        dead_letters=SqliteDeadLetterResource(path=str(home / "dead.sqlite")),
        routing=RoutingResource(path=str(routing_path())),
        first_partition="2026-11-01-00:00",
    )


def test_the_job_compacts_old_hours(tmp_path):
    import pyarrow as pa

    key = "tables/raw_events/2026-11-01-03:00/b1.parquet"
    rows = pa.table({"event_id": ["a"], "batch_id": ["b1"]})
    write_parquet(LocalObjectStore(tmp_path), key, rows)
    job = compaction_job(StreamingSettings())
    result = job.execute_in_process(resources={"streaming": streaming(tmp_path)})
    assert result.success
    objects = LocalObjectStore(tmp_path)
    assert objects.list("tables/") == ["tables/raw_events/2026-11-01-03:00/compacted.parquet"]
    assert result.output_for_node("compact_storage") == 1


def test_the_schedule_skips_while_a_compaction_is_in_flight():
    job = compaction_job(StreamingSettings())
    schedule = compaction_schedule(job)
    with dg.instance_for_test() as instance:
        at = dt.datetime(2026, 12, 2, 10, 17, tzinfo=dt.UTC)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
        request = schedule.evaluate_tick(context).run_requests
        assert len(request) == 1 and request[0].run_key == at.isoformat()
        instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
        skipped = schedule.evaluate_tick(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
        )
        assert not skipped.run_requests and "still in flight" in skipped.skip_message
