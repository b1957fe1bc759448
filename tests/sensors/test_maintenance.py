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


def _wal_pages(path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


def test_writers_leave_the_checkpoint_to_the_sensor(tmp_path):
    """A run's writes stay in the WAL (no checkpoint inside the run below the 64 MiB
    backstop); the sensor's tick copies them into the file, and readers see the same rows
    before and after."""
    from figstream.storage.sqlite import WAL_AUTOCHECKPOINT_PAGES, SqliteDatabase
    from sensors.maintenance import checkpoint_sensor

    path = tmp_path / "state" / "figstream.sqlite"
    db = SqliteDatabase(path, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
    for commit in range(12):  # 12 short write transactions of ~1 MiB, as a run's steps make
        with db.write() as conn:
            rows = ((commit * 1000 + i, bytes([i % 251]) * 1024) for i in range(1000))
            conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
    held = _wal_pages(path)
    # SQLite's default would have checkpointed (and restarted the WAL) past 1,000 pages.
    assert 2_000 < held < WAL_AUTOCHECKPOINT_PAGES, held
    with db.read() as conn:
        before = conn.execute("SELECT count(*), sum(length(v)) FROM t").fetchone()
    assert before == (12_000, 12_000 * 1024)
    result = checkpoint_sensor(path.parent).evaluate_tick(dg.build_sensor_context())
    assert not result.run_requests
    message = result.skip_message
    assert message.startswith("figstream.sqlite: ") and "WAL pages copied" in message, message
    with db.read() as conn:
        assert conn.execute("SELECT count(*), sum(length(v)) FROM t").fetchone() == before
    # Copied back: the next writer restarts the WAL from its beginning instead of growing it.
    with db.write() as conn:
        conn.execute("INSERT INTO t VALUES (-1, x'00')")
    assert _wal_pages(path) <= held


def test_the_checkpoint_sensor_skips_without_a_wal(tmp_path):
    from sensors.maintenance import checkpoint_sensor

    (tmp_path / "notes.txt").write_text("not a database")
    result = checkpoint_sensor(tmp_path).evaluate_tick(dg.build_sensor_context())
    assert not result.run_requests and result.skip_message == "no write-ahead log to copy back"
