"""The figstream code location: the profile picks resources, the ledger picks what runs."""

import dagster as dg

from assets.cost import platform_cost
from assets.legacy import GROUP as LEGACY_GROUP
from assets.legacy import build_legacy_assets, legacy_job
from assets.migration import build_migration_assets, feed_dump_mirror, new_assets_running
from assets.redirects import build_redirect_assets
from assets.streaming import build_streaming_assets, snapshot_schedule, stream_jobs
from figstream import settings
from figstream.events.upcasters import check_registry
from figstream.migration.ledger import Ledger, load_ledger
from figstream.storage.state import state_path
from legacy.pipeline import TASKS
from resources.profiles import resources_for
from sensors.maintenance import checkpoint_sensor, compaction_job, compaction_schedule
from sensors.migration import migration_jobs, migration_sensors
from sensors.run_history import run_history_sensor
from sensors.streams import stream_sensor


def _keys(assets: list) -> set[dg.AssetKey]:
    return {a.key if isinstance(a, dg.AssetSpec) else k for a in assets for k in _all_keys(a)}


def _all_keys(asset) -> list[dg.AssetKey]:
    return [asset.key] if isinstance(asset, dg.AssetSpec) else list(asset.keys)


def build_definitions(ledger: Ledger, profile: str = "local") -> dg.Definitions:
    """Everything the ledger's stages call for (the rules: ``figstream.migration.layout``)."""
    check_registry()  # a schema version without an upcaster to the next stops the load
    streaming_settings = settings.streaming_settings()
    new_assets = new_assets_running(
        ledger,
        [
            *build_streaming_assets(ledger, streaming_settings, profile),
            *build_redirect_assets(ledger, streaming_settings),
        ],
    )
    running = {key.to_user_string() for key in _keys(new_assets)}
    jobs = stream_jobs(running)
    legacy_assets = build_legacy_assets(ledger, TASKS, feed_dump_mirror(ledger))
    migration_assets = build_migration_assets(
        ledger, TASKS, _keys(legacy_assets) | _keys(new_assets)
    )
    nightly = legacy_job(
        key
        for asset in [*legacy_assets, *migration_assets]
        if isinstance(asset, dg.AssetsDefinition)
        for key, group in asset.group_names_by_key.items()
        if group == LEGACY_GROUP
    )
    extra_jobs = migration_jobs(nightly)
    schedule = dg.build_schedule_from_partitioned_job(
        nightly,
        hour_of_day=2,
        name="legacy_nightly_schedule",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="The 'before' schedule: the Luigi tasks still at legacy, shadow or migrated.",
    )
    snapshots = [snapshot_schedule(jobs["snapshot"])] if "snapshot" in jobs else []
    compaction = compaction_job(streaming_settings)
    stream_sensors = [
        stream_sensor(stream, jobs[stream], jobs.get("stats"), streaming_settings, running)
        for stream in ("postings", "boards")
        if stream in jobs
    ]
    # Old streaming runs deleted (0 seconds turns it off); the jobs are the sensors' own.
    purge = [run_history_sensor(streaming_settings, sorted(job.name for job in jobs.values()))]
    purge = purge if streaming_settings.run_purge_every_seconds else []
    # The SQLite stores' checkpoints, off the runs' path (on the aws profile, DynamoDB needs
    # none and the sensor finds no WAL, but both profiles keep the same sensors).
    checkpoints = [checkpoint_sensor(state_path(settings.data_home()).parent)]
    return dg.Definitions(
        assets=[*legacy_assets, *new_assets, *migration_assets, platform_cost],
        jobs=[*jobs.values(), *extra_jobs.values(), compaction],
        schedules=[schedule, *snapshots, compaction_schedule(compaction)],
        sensors=[*stream_sensors, *migration_sensors(extra_jobs), *purge, *checkpoints],
        resources=resources_for(profile, ledger),
        # Steps run one after another in the run's own process: a step's own work is well
        # under a second (a Luigi task, a parity check), and a process per step cost 10-16 s
        # of start-up each on the 2-core machine. Streaming jobs say so themselves.
        executor=dg.in_process_executor,
    )


defs = build_definitions(
    load_ledger(settings.ledger_path(), known_tasks=[task.__name__ for task in TASKS]),
    settings.profile(),
)
