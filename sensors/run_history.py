"""A bound on Dagster's run history: old streaming runs deleted, every partition's status kept.

The rule is the core's (``figstream.storage.retention``, which also says what deleting a run
does to partition status and lineage); this module only reads runs and deletes them, through
public instance APIs (``get_run_records`` with ``RunsFilter(created_before=...)``,
``fetch_materializations``, ``delete_run``).

``run_history_sensor`` ticks every ``run_purge_every_seconds``. Per streaming job it reads at
most ``run_purge_max_runs`` runs created before ``now - run_history_days``, oldest first from
the job's cursor, asks the rule which may go, and deletes those. The run holding the latest
materialisation of a candidate's (asset, partition) is looked up per pair, over every asset
key of the instance (a key the run never materialised cannot name it, so looking too widely
costs queries, never a wrong deletion). A page shorter than the limit ends a sweep and the next
tick starts again from the oldest run, so a run kept for now (it still held a latest
materialisation, or failed recently) is looked at again.

The sensor requests no runs: each tick is a skip whose message says what it deleted and why it
kept the rest (kept 1 day, like every skipped tick).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

import dagster as dg

from figstream.settings import StreamingSettings
from figstream.storage.retention import (
    PurgePlan,
    RunFacts,
    RunRetention,
    plan_purge,
    reason_to_keep,
)

PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _partitions(
    tags: Mapping[str, str], partitions_def: dg.PartitionsDefinition | None
) -> tuple[str, ...]:
    if PARTITION_TAG in tags:
        return (tags[PARTITION_TAG],)
    start, end = (tags.get(tag) for tag in RANGE_TAGS)
    if start is None or end is None or partitions_def is None:
        return ()
    return tuple(partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))


def _facts(record: dg.RunRecord, partitions_def: dg.PartitionsDefinition | None) -> RunFacts:
    run = record.dagster_run
    return RunFacts(
        run_id=run.run_id,
        job_name=run.job_name,
        status=run.status.value,
        created=record.create_timestamp,
        tags=dict(run.tags),
        partitions=_partitions(run.tags, partitions_def),
    )


def latest_holders(instance: dg.DagsterInstance, partitions: set[str]) -> set[str]:
    """Ids of the runs holding the latest materialisation of (any asset key, one of
    ``partitions``)."""
    holders = set()
    for key in instance.get_asset_keys():
        for partition in partitions:
            latest = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
            ).records
            if latest:
                holders.add(latest[0].run_id)
    return holders


def purge_run_history(
    instance: dg.DagsterInstance,
    now: dt.datetime,
    settings: StreamingSettings,
    jobs: Mapping[str, dg.PartitionsDefinition | None],
    cursor: Mapping[str, str] | None = None,
) -> tuple[PurgePlan, dict[str, str]]:
    """One pass: per job in ``jobs`` (name -> its partitions), a page of its runs older than
    ``run_history_days`` after ``cursor`` (job -> ISO creation time of the last run seen),
    judged and the deletable ones deleted. ``now`` is a parameter, so a test can look from a
    week ahead instead of faking clocks. Returns what it did and the next cursor."""
    policy = RunRetention(
        keep_days=settings.run_history_days,
        failed_keep_days=settings.failed_run_history_days,
        streaming_jobs=frozenset(jobs),
    )
    cursor = dict(cursor or {})
    plan = PurgePlan()
    for job_name, partitions_def in sorted(jobs.items()):
        after = cursor.get(job_name)
        records = instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=job_name,
                created_before=now - dt.timedelta(days=policy.keep_days),
                created_after=dt.datetime.fromisoformat(after) if after else None,
            ),
            limit=settings.run_purge_max_runs,
            order_by="create_timestamp",
            ascending=True,
        )
        runs = [_facts(record, partitions_def) for record in records]
        candidates = [run for run in runs if reason_to_keep(run, now, policy) is None]
        holders = latest_holders(instance, {p for run in candidates for p in run.partitions})
        job_plan = plan_purge(runs, now, policy, holders)
        for run_id in job_plan.delete:
            instance.delete_run(run_id)
        plan.delete += job_plan.delete
        plan.kept += job_plan.kept
        if len(records) < settings.run_purge_max_runs:
            cursor.pop(job_name, None)  # the sweep reached the cutoff: start again next tick
        else:
            cursor[job_name] = records[-1].create_timestamp.isoformat()
    return plan, cursor


def run_history_sensor(settings: StreamingSettings, job_names: list[str]) -> dg.SensorDefinition:
    @dg.sensor(
        name="run_history_sensor",
        minimum_interval_seconds=settings.run_purge_every_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Deletes streaming runs older than {settings.run_history_days} days, except each "
            "partition's latest materialisation (platform/streaming.yaml)."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        repository = context.repository_def
        jobs = {
            name: repository.get_job(name).partitions_def if repository else None
            for name in job_names
        }
        plan, cursor = purge_run_history(
            context.instance,
            dt.datetime.now(dt.UTC),
            settings,
            jobs,
            json.loads(context.cursor) if context.cursor else None,
        )
        return dg.SensorResult(skip_reason=plan.summary(), cursor=json.dumps(cursor))

    return _sensor
