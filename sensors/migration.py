"""After each nightly legacy run: compare, publish, refresh the ledger status.

The parity and publish run is asked for when the legacy run for a day *ends*, whether it
succeeded or failed: a legacy night that died on a bad record is exactly what the parity
check must report (as a known legacy flaw), and consumers still get the day (from the new
side, flagged) instead of a hole.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import orjson

LEGACY_JOB = "legacy_nightly_job"
ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


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

    def ended_since(context, job_name: str, after: float):
        return context.instance.get_run_records(
            dg.RunsFilter(
                job_name=job_name,
                statuses=ENDED,
                updated_after=dt.datetime.fromtimestamp(after, dt.UTC),
            ),
            order_by="update_timestamp",
            ascending=True,
            limit=20,
        )

    @dg.sensor(
        name="after_legacy_sensor",
        jobs=[migration_job, status_job],
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "When a nightly legacy run ends, runs parity and publishing for its day; when that "
            "ends, refreshes the migration status."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext):
        cursor = orjson.loads(context.cursor) if context.cursor else {}
        requests = []
        legacy_after = cursor.get(LEGACY_JOB, 0.0)
        for record in ended_since(context, LEGACY_JOB, legacy_after):
            legacy_after = max(legacy_after, record.update_timestamp.timestamp())
            partition = record.dagster_run.tags.get("dagster/partition")
            if partition is not None:
                requests.append(
                    dg.RunRequest(
                        run_key=f"after:{record.dagster_run.run_id}",
                        job_name=migration_job.name,
                        partition_key=partition,
                        tags={"figstream/after_legacy_run": record.dagster_run.run_id},
                    )
                )
        migration_after = cursor.get(migration_job.name, 0.0)
        ended = ended_since(context, migration_job.name, migration_after)
        if ended:
            migration_after = max(r.update_timestamp.timestamp() for r in ended)
            requests.append(
                dg.RunRequest(run_key=f"status:{migration_after}", job_name=status_job.name)
            )
        cursor = {LEGACY_JOB: legacy_after, migration_job.name: migration_after}
        if not requests:
            return dg.SensorResult(
                skip_reason="no nightly legacy or parity run has ended since the last tick",
                cursor=orjson.dumps(cursor).decode(),
            )
        return dg.SensorResult(run_requests=requests, cursor=orjson.dumps(cursor).decode())

    return [_sensor]
