"""After each legacy run: compare, publish, refresh the ledger status.

The parity and publish run of a day is asked for when a run that materialised (or tried to)
legacy partitions of that day *ends*, whether it succeeded or failed: the nightly job, and as
much a backfill from the UI (one run over a range of days, or a run per day). A legacy night
that died on a bad record is exactly what the parity check must report (as a known legacy
flaw), and consumers still get the day (from the new side, flagged) instead of a hole.

A day waits while the stream has landed batches of its hours not ingested yet (a backfill
launched while a fresh ``make dev`` still catches up on history): compared then, every such
event would count as missing on the new side, and the false mismatch would reset the task's
parity streak.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import orjson

from figstream.streaming import books
from figstream.streaming.stores import INGEST_TABLES, Stores, day_partitions
from resources.stores import StreamingResources

LEGACY_JOB = "legacy_nightly_job"
LEGACY_PREFIX = "legacy"  # assets/legacy.py GROUP: every legacy asset key starts with it
ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
# Parity runs in flight at most: a backfill of a month must not start 30 runs at once on a
# 2-core machine. The days waiting are kept in the cursor, oldest first.
MAX_PARITY_IN_FLIGHT = 4
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def backfill_running(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether the backfill that launched ``run`` (if any) may still launch runs."""
    backfill_id = run.tags.get("dagster/backfill")
    if backfill_id is None:
        return False
    backfill = instance.get_backfill(backfill_id)
    return backfill is not None and backfill.status.value in ("REQUESTED", "CANCELING", "FAILING")


def legacy_days(run: dg.DagsterRun) -> list[str]:
    """The daily partitions of legacy assets a run covered: its partition, or every day of its
    partition range (a single-run backfill); none when it selected no legacy asset."""
    selection = run.asset_selection
    if run.job_name != LEGACY_JOB and not any(
        key.path[0] == LEGACY_PREFIX for key in (selection or ())
    ):
        return []
    tags = run.tags
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    if RANGE_START in tags and RANGE_END in tags:
        first = dt.date.fromisoformat(tags[RANGE_START])
        last = dt.date.fromisoformat(tags[RANGE_END])
        return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    return []


def stream_behind(stores: Stores, day: str) -> int:
    """Batches landed for ``day``'s hours that the stream has not ingested yet (a catch-up
    still going): parity of the day now would count them as missing on the new side."""
    return sum(
        books.pending_batches(stores, stream, hour)
        for stream in INGEST_TABLES
        for hour in day_partitions(day)
    )


def migration_jobs(nightly) -> dict[str, object]:
    return {
        "legacy": nightly,
        "migration": dg.define_asset_job(
            "migration_nightly_job",
            selection=dg.AssetSelection.key_prefixes(["parity"])
            | dg.AssetSelection.key_prefixes(["published"]),
            description="Per day: parity of each shadowed task, then the published outputs.",
        ),
        "status": dg.define_asset_job(
            "migration_status_job", selection=dg.AssetSelection.assets("migration_status")
        ),
    }


def migration_sensors(jobs: dict[str, object]) -> list[dg.SensorDefinition]:
    migration_job, status_job = jobs["migration"], jobs["status"]

    def ended_since(context, job_name: str | None, after: float, limit: int = 20):
        return context.instance.get_run_records(
            dg.RunsFilter(
                job_name=job_name,
                statuses=ENDED,
                updated_after=dt.datetime.fromtimestamp(after, dt.UTC),
            ),
            order_by="update_timestamp",
            ascending=True,
            limit=limit,
        )

    @dg.sensor(
        name="after_legacy_sensor",
        jobs=[migration_job, status_job],
        minimum_interval_seconds=10,  # a few run-record reads a tick; parity follows soon
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "When a run of legacy assets ends (the nightly job or a backfill), runs parity and "
            "publishing for each of its days; when that ends, refreshes the migration status."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, streaming: StreamingResources):
        cursor = orjson.loads(context.cursor) if context.cursor else {}
        requests = []
        legacy_after = cursor.get(LEGACY_JOB, 0.0)
        pending: list[list[str]] = cursor.get("pending", [])  # [run id, day], oldest first
        # Every ended run (streaming runs too, so a page is wide), in update order. A run of a
        # backfill still going waits (with every run after it) until the backfill is done, so
        # parity compares days whose every legacy task has run.
        for record in ended_since(context, None, legacy_after, limit=200):
            run = record.dagster_run
            days = legacy_days(run)
            if days and backfill_running(context.instance, run):
                break
            legacy_after = max(legacy_after, record.update_timestamp.timestamp())
            # A backfill's runs (its range run, then legacy_active_jobs's own) cover the same
            # days: a day already waiting needs one parity run, not one per legacy run.
            waiting = {day for _, day in pending}
            pending += [[run.run_id, day] for day in days if day not in waiting]
        in_flight = len(
            context.instance.get_run_ids(
                dg.RunsFilter(job_name=migration_job.name, statuses=IN_PROGRESS)
            )
        )
        take = max(MAX_PARITY_IN_FLIGHT - in_flight, 0)
        # Oldest first, as the stream catches up: the first day it is behind on waits, and
        # every later day with it (a backfill launched on a fresh `make dev`, say).
        behind, ready = 0, 0
        stores = streaming.stores() if pending and take else None
        while stores is not None and ready < min(take, len(pending)):
            behind = stream_behind(stores, pending[ready][1])
            if behind:
                break
            ready += 1
        for run_id, day in pending[:ready]:
            requests.append(
                dg.RunRequest(
                    run_key=f"after:{run_id}:{day}",
                    job_name=migration_job.name,
                    partition_key=day,
                    tags={"figstream/after_legacy_run": run_id},
                )
            )
        pending = pending[ready:]
        migration_after = cursor.get(migration_job.name, 0.0)
        ended = ended_since(context, migration_job.name, migration_after)
        if ended:
            migration_after = max(r.update_timestamp.timestamp() for r in ended)
            requests.append(
                dg.RunRequest(run_key=f"status:{migration_after}", job_name=status_job.name)
            )
        cursor = {LEGACY_JOB: legacy_after, migration_job.name: migration_after, "pending": pending}
        if not requests:
            return dg.SensorResult(
                skip_reason=(
                    f"{len(pending)} days wait: the stream has {behind} landed batches of "
                    f"{pending[0][1]} to ingest first"
                    if behind
                    else f"{len(pending)} days wait for parity runs in flight to end"
                    if pending
                    else "no legacy or parity run has ended since the last tick"
                ),
                cursor=orjson.dumps(cursor).decode(),
            )
        return dg.SensorResult(run_requests=requests, cursor=orjson.dumps(cursor).decode())

    return [_sensor]
