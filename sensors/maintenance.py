"""Storage maintenance without a human: an hourly schedule runs the compaction of the core.

``storage_compaction_schedule`` asks for one ``storage_compaction_job`` run an hour (at minute
17, off the hour when streaming runs bunch up) unless one is still in flight: two compactions
of one hour at once could each delete fragments the other's compacted object lacks, so they
never overlap. The run calls ``figstream.streaming.compaction.compact`` with the windows of
``platform/streaming.yaml`` (fragments of hours past ``compact_fragments_after_seconds``,
landing days older than ``archive_landing_after_days``, day rows of days
``day_rows_keep_days`` ago and before), bounded per run; what a run leaves is
taken by the next. ``figstream compact`` runs the same code from the command line.

``sqlite_checkpoint_sensor`` copies the WAL of each SQLite file in the data home's ``state/``
directory back into its file every few seconds (``figstream.storage.sqlite.checkpoint``), so
streaming runs do not pay for checkpoints themselves: a checkpoint's random page writes grow
with the state, a run's work should not. It requests no runs; each tick's skip message says
what it copied.
"""

import datetime as dt
from pathlib import Path

import dagster as dg

from figstream.settings import StreamingSettings
from figstream.storage.sqlite import checkpoint
from figstream.streaming.compaction import compact
from resources.stores import StreamingResources
from sensors.streams import IN_FLIGHT

JOB = "storage_compaction_job"
# Bounds on one run: an hour's fragments of one table, a day of landed batches, are each a few
# seconds of reads and writes, so a run stays within minutes and a backlog drains in hours.
MAX_HOURS_PER_RUN = 500
MAX_DAYS_PER_RUN = 3
# Jobs whose day rows one run reads to fold before it stops at the end of a day (500k: 5-23 s
# on a 5M-job state, bench/README.md).
MAX_FOLD_JOBS_PER_RUN = 500_000


def compaction_job(settings: StreamingSettings) -> dg.JobDefinition:
    @dg.op(name="compact_storage")
    def _compact(context: dg.OpExecutionContext, streaming: StreamingResources) -> dg.Output[int]:
        now = dt.datetime.now(dt.UTC)
        report = compact(
            streaming.stores(),
            settings,
            now,
            MAX_HOURS_PER_RUN,
            MAX_DAYS_PER_RUN,
            MAX_FOLD_JOBS_PER_RUN,
        )
        context.log.info(report.summary())
        return dg.Output(
            report.fragments,
            metadata={
                "hours_compacted": len(report.hours),
                "fragments_folded": report.fragments,
                "days_archived": len(report.days),
                "batches_archived": report.batches_archived,
                "day_rows_folded_through": report.day_rows.through or "-",
                "day_rows_removed": report.day_rows.rows_removed,
                "more_to_do": report.more,
            },
        )

    @dg.job(
        name=JOB,
        description="Compact old fragments, archive old landed batches, fold old day rows.",
    )
    def _job():
        _compact()

    return _job


def compaction_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="storage_compaction_schedule",
        job=job,
        cron_schedule="17 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly: old fragments, landing batches and day rows, compacted.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        in_flight = context.instance.get_run_records(
            dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT), limit=1
        )
        if in_flight:
            return dg.SkipReason(
                f"compaction run {in_flight[0].dagster_run.run_id} is still in flight"
            )
        return dg.RunRequest(run_key=context.scheduled_execution_time.isoformat())

    return _schedule


# Often enough that a busy stream's WAL (a run writes up to ~40 MiB of pages at 2,000 events/s)
# is copied back before a writer reaches the 64 MiB backstop and checkpoints inside its run.
CHECKPOINT_EVERY_SECONDS = 5


def checkpoint_sensor(directory: Path) -> dg.SensorDefinition:
    """Checkpoints the SQLite files (``*.sqlite``) in ``directory`` off the runs' path."""

    @dg.sensor(
        name="sqlite_checkpoint_sensor",
        minimum_interval_seconds=CHECKPOINT_EVERY_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Copies the SQLite stores' write-ahead logs back into their files, so "
        "that streaming runs do not.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        done = [c for path in sorted(directory.glob("*.sqlite")) if (c := checkpoint(path))]
        if not done:
            return dg.SkipReason("no write-ahead log to copy back")
        return dg.SkipReason(
            "; ".join(
                f"{c.path.name}: {c.copied:,} of {c.wal_frames:,} WAL pages copied in "
                f"{c.seconds:.2f} s" + ("" if c.complete else " (the rest is still read)")
                for c in done
            )
        )

    return _sensor
