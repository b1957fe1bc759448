"""The streaming assets: hourly event-time partitions, materialised as micro-batches land.

Each asset reads through the stores, calls a step of ``figstream.streaming.stores`` and reports what
it did. A sensor run names the new batches in its run config (``batch_keys``); a backfill or a
run launched from the UI leaves it empty and recomputes the partition from every batch the
landing index holds for it. Both write the same per-batch fragments, so they agree.
"""

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pyarrow.compute as pc

from assets import books as books_checks
from figstream.ingest.landing import parse_batch_key
from figstream.migration.ledger import Ledger
from figstream.settings import StreamingSettings
from figstream.streaming import books, cleaning, dedupe, index_export, ingest, landing_index
from figstream.streaming import daily as streaming_daily
from figstream.streaming import jobs as streaming_jobs
from figstream.streaming.stores import Stores
from resources.stores import StreamingResources

GROUP = "streaming"
STATE_POOL = "figstream_state"
R = TypeVar("R")


class BatchSelection(dg.Config):
    """The landed batches a run processes; empty means every batch indexed for the partition."""

    batch_keys: list[str] = []


def hourly_partitions(ledger: Ledger) -> dg.HourlyPartitionsDefinition:
    # end_offset=1: the hour in progress is a partition too, so it streams as it fills.
    return dg.HourlyPartitionsDefinition(
        start_date=f"{ledger.legacy_epoch.isoformat()}-00:00", end_offset=1
    )


def daily_partitions(ledger: Ledger) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=ledger.legacy_epoch.isoformat(), end_offset=1)


def _batch_ids(config: BatchSelection) -> list[str] | None:
    if not config.batch_keys:
        return None
    return [parse_batch_key(key)[1] for key in config.batch_keys]


def ingest_asset(
    name: str,
    stream: str,
    partitions_def: dg.PartitionsDefinition,
    settings: StreamingSettings,
    kinds: frozenset[str] | set[str] = frozenset({"parquet"}),
) -> dg.AssetsDefinition:
    check = dg.AssetCheckSpec("dead_letter_rate", asset=name, description=(
        f"Share of the partition's records that were dead-lettered; warns above "
        f"{settings.dead_letter_warn_rate:.1%} (platform/streaming.yaml)."
    ))  # fmt: skip
    checks = [check, *books_checks.check_specs(name)]

    def batch_metadata(batch_ids: list[str]) -> dict[str, dg.MetadataValue]:
        """The batches a materialisation took, for the UI: the first and last id (landing
        order) and at most 20 (a catch-up run takes thousands); ``figstream trace EVENT_ID``
        follows any event of them."""
        ids = sorted(set(batch_ids))
        if not ids:
            return {}
        shown = ids[:20]
        more = f"\n\n... and {len(ids) - len(shown)} more" if len(ids) > len(shown) else ""
        return {
            "first_batch": dg.MetadataValue.text(ids[0]),
            "last_batch": dg.MetadataValue.text(ids[-1]),
            "batch_ids": dg.MetadataValue.md("\n".join(f"- `{b}`" for b in shown) + more),
        }

    @dg.asset(
        name=name,
        group_name=GROUP,
        partitions_def=partitions_def,
        kinds=set(kinds),
        check_specs=checks,
        backfill_policy=dg.BackfillPolicy.single_run(),
        freshness_policy=_freshness(settings),
        tags={"figstream/stream": stream},
        description=(
            f"Events of the '{stream}' stream for one event-time hour: validated, upcast to the "
            "latest schema version and deduplicated by event id. Rejected records go to the "
            "dead-letter store with their reason."
        ),
    )
    def _ingest(
        context: dg.AssetExecutionContext, config: BatchSelection, streaming: StreamingResources
    ):
        stores = streaming.stores()
        if not config.batch_keys:
            # A backfill reads the landing index: make sure it has seen every landed batch.
            indexed = landing_index.catch_up_index(stores, stream)
            context.log.info(f"indexed {indexed} landed batches the sensor had not seen")
        report = ingest.ingest_range(
            stores,
            stream,
            context.partition_keys,
            config.batch_keys,
            _validator(context, streaming, stores, stream),
            run_id=context.run.run_id,  # the trace index names the run of each delivery
        )
        totals = report.totals
        # The batches this run wrote have their fragments counted; the rest of each hour is
        # held against the landing index, the listing and the books (books.hour_books).
        counted = set(totals.batch_ids)
        hours = [
            books.hour_books(stores, stream, p, counted=counted) for p in context.partition_keys
        ]

        def figures(hour: books.HourBooks) -> dict[str, object]:
            own = report.hours[hour.partition]
            return {"batches": own.batches, **books_checks.hour_metadata(own, hour)}

        if len(hours) == 1:
            metadata = figures(hours[0])
        else:
            # A range run (catch-up, backfill): each hour's figures on its own partition.
            for hour in hours:
                context.log_event(dg.AssetObservation(
                    asset_key=context.asset_key, partition=hour.partition,
                    metadata=figures(hour),
                ))  # fmt: skip
            metadata = {
                **range_metadata(context.partition_keys, {"batches": totals.batches}),
                "dead_letters_by_reason": books_checks.by_reason_table(
                    [h for h in hours if h.by_reason][: books_checks.SHOWN_HOURS]
                ),
            }
        yield dg.MaterializeResult(metadata={**batch_metadata(totals.batch_ids), **metadata})
        yield books_checks.books_result(stream, hours)
        yield books_checks.dead_letters_result(stores.dead_letters, stream, hours)
        yield dg.AssetCheckResult(
            check_name="dead_letter_rate",
            passed=report.worst_dead_letter_rate <= settings.dead_letter_warn_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "dead_letter_rate": round(report.worst_dead_letter_rate, 5),
                "partition": str(report.worst_partition),
            },
        )

    return _ingest


def _validator(
    context: dg.AssetExecutionContext, streaming: StreamingResources, stores: Stores, stream: str
) -> ingest.Validator | None:
    """Validation in the ``validate-batch`` Lambda (through Pipes) when the profile binds a
    LambdaValidationResource to ``streaming.validation`` that says so; else in process."""
    validation = getattr(streaming, "validation", None)
    if validation is None:
        return None
    routing = Path(streaming.routing.path).read_text(encoding="utf-8")
    validator = validation.validator(context, stores, stream, routing)
    if validator is not None:
        context.log.info(f"validating in Lambda {validation.function_name} ({validation.invoker})")
    return validator


def range_metadata(partitions: list[str], totals: dict[str, int]) -> dict[str, object]:
    """What a range run's materialisation says: Dagster gives every hour of the range one
    with the same metadata, so it names the range and its totals (``range_*``, never a name
    an hour's own figure plots under); each hour's figures are on its observation."""
    return {
        "hours": len(partitions),
        "first_partition": partitions[0],
        "last_partition": partitions[-1],
        "per_hour": "each hour's figures are on its partition's observation",
        **{f"range_{name}": value for name, value in totals.items()},
    }


def hour_by_hour(
    context: dg.AssetExecutionContext,
    step: Callable[[list[str]], R],
    figures: Callable[[R], dict[str, object]],
) -> dg.MaterializeResult:
    """Run a step (given the hours to do) one hour at a time, as its own ``by_hour`` would,
    and report each hour's own figures: on the materialisation of a one-hour run, on an
    AssetObservation of each hour of a range run (a catch-up, a backfill), whose
    materialisation then carries the range's counts as ``range_*`` (:func:`range_metadata`)."""
    partitions = list(context.partition_keys)
    by_hour = {partition: figures(step([partition])) for partition in partitions}
    if len(partitions) == 1:
        return dg.MaterializeResult(metadata=by_hour[partitions[0]])
    totals: dict[str, int] = {}
    for partition, metadata in by_hour.items():
        context.log_event(
            dg.AssetObservation(asset_key=context.asset_key, partition=partition, metadata=metadata)
        )
        for name, value in metadata.items():
            # Counts add up over the range; a lag or a preview does not.
            if type(value) is int:
                totals[name] = totals.get(name, 0) + value
    return dg.MaterializeResult(metadata=range_metadata(partitions, totals))


def _preview(rows: list[dict]) -> dg.MetadataValue:
    table = "\n".join(
        f"| {r['job_id']} | {r['board']} | {r['title']} | {r['location']} |" for r in rows
    )
    return dg.MetadataValue.md("| job_id | board | title | location |\n|---|---|---|---|\n" + table)


def _freshness(settings: StreamingSettings) -> dg.FreshnessPolicy:
    return dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(seconds=settings.freshness_fail_seconds),
        warn_window=dt.timedelta(seconds=settings.freshness_warn_seconds),
    )


# What each profile stores the tables and the state in: the kinds the UI shows must say what
# runs (the local profile has no DynamoDB; the aws profile has no SQLite).
TABLE_KINDS = {"local": {"parquet"}, "aws": {"parquet", "s3"}}
STATE_KINDS = {"local": {"sqlite"}, "aws": {"dynamodb"}}


def build_streaming_assets(
    ledger: Ledger, settings: StreamingSettings, profile: str = "local"
) -> list:
    tables, state = TABLE_KINDS[profile], STATE_KINDS[profile]
    hourly = hourly_partitions(ledger)
    daily = daily_partitions(ledger)
    freshness = _freshness(settings)
    common = {"group_name": GROUP, "freshness_policy": freshness}

    raw_events = ingest_asset("raw_events", "postings", hourly, settings, tables)
    board_mergers = ingest_asset("board_mergers", "boards", hourly, settings, tables)

    @dg.asset(
        deps=[raw_events],
        partitions_def=hourly,
        kinds=tables,
        backfill_policy=dg.BackfillPolicy.single_run(),
        **common,
    )
    def clean_postings(
        context: dg.AssetExecutionContext, config: BatchSelection, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        """job.posted / job.updated events with normalised text and a cross-board dedupe key."""
        stores, ids = streaming.stores(), _batch_ids(config)
        return hour_by_hour(
            context, lambda hours: cleaning.clean(stores, hours, ids), lambda n: {"rows": n}
        )

    @dg.asset(
        deps=[clean_postings],
        partitions_def=hourly,
        kinds=tables,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=STATE_POOL,
        **common,
    )
    def deduped_postings(
        context: dg.AssetExecutionContext, config: BatchSelection, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        """Postings with cross-board duplicates removed (the earliest posting of a job wins)."""
        stores, ids = streaming.stores(), _batch_ids(config)
        return hour_by_hour(
            context,
            lambda hours: dedupe.dedupe(stores, hours, ids),
            lambda report: {
                "postings": report.postings,
                "kept": report.kept,
                "first_postings_registered": report.registered,
                "keys_recomputed": report.keys_recomputed,
                "duplicates_changed": report.duplicates_changed,
            },
        )

    @dg.asset(
        deps=[raw_events, board_mergers],
        partitions_def=hourly,
        kinds=state,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=STATE_POOL,
        **common,
    )
    def job_state(
        context: dg.AssetExecutionContext, config: BatchSelection, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        """Current state per job id in the state store, from exactly this hour's new events:
        each of a job's components last writer wins by (event time, event id), written back
        as one conditional write per changed job. Re-running an hour changes nothing."""
        stores, ids = streaming.stores(), _batch_ids(config)
        return hour_by_hour(
            context,
            lambda hours: streaming_jobs.update_job_state(stores, hours, ids),
            lambda report: report.metadata(),
        )

    @dg.asset(
        deps=[job_state, deduped_postings],
        partitions_def=hourly,
        kinds=tables,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=STATE_POOL,
        **common,
    )
    def search_index(
        context: dg.AssetExecutionContext, config: BatchSelection, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        """The hour's changes to the search index (upserts and deletes of the jobs the hour's
        events touched), which is what a search engine ingests; see search_index_snapshot
        for the whole index."""
        stores, ids = streaming.stores(), _batch_ids(config)
        return hour_by_hour(
            context,
            lambda hours: index_export.export_changes(stores, hours, ids),
            lambda report: {
                "upserts": report.upserts,
                "deletes": report.deletes,
                "path": dg.MetadataValue.path(f"tables/{index_export.CHANGES}/"),
                "preview": _preview(report.preview),
            },
        )

    @dg.asset(
        deps=[search_index],
        partitions_def=daily,
        kinds=tables,
        group_name=GROUP,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def search_index_snapshot(
        context: dg.AssetExecutionContext, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        """Every job the site shows, exported from the state store in job-id order (bounded
        memory) as of the export (a schedule runs it just after each day ends). The latest
        snapshot plus the later hourly changes is the whole index (index_export.current_index).
        A range of days exports one snapshot, named for its last day. Also reaps expired
        event-id claims, and keeps the last snapshot_keep_days snapshots
        (platform/streaming.yaml)."""
        report = index_export.export_snapshot(
            streaming.stores(), context.partition_keys[-1], keep=settings.snapshot_keep_days
        )
        return dg.MaterializeResult(
            metadata={
                "active_jobs": report.rows,
                "as_of": report.as_of.isoformat(),
                "path": dg.MetadataValue.path(report.key),
                "preview": _preview(report.preview),
                "claims_purged": report.claims_purged,
                "snapshots_deleted": report.snapshots_deleted,
            }
        )

    epoch_day = ledger.legacy_epoch.isoformat()

    @dg.asset(
        deps=[raw_events, board_mergers, deduped_postings, job_state],
        partitions_def=daily,
        kinds=tables,
        group_name=GROUP,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def board_daily_stats(
        context: dg.AssetExecutionContext, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        """Per board and day: postings, updates, expiries, active jobs at the day's end."""
        by_day = streaming_daily.board_daily_stats(
            streaming.stores(), context.partition_keys, epoch_day
        )
        last = by_day[max(by_day)]
        return dg.MaterializeResult(
            metadata={
                "days": len(by_day),
                "boards": last.num_rows,
                "postings": sum(pc.sum(t["postings"]).as_py() or 0 for t in by_day.values()),
                "active_jobs_at_end": pc.sum(last["active_jobs"]).as_py() or 0,
            }
        )

    return [
        raw_events,
        board_mergers,
        clean_postings,
        deduped_postings,
        job_state,
        search_index,
        search_index_snapshot,
        board_daily_stats,
    ]


STREAM_JOBS = {
    "postings": ["raw_events", "clean_postings", "deduped_postings", "job_state", "search_index"],
    "boards": ["board_mergers", "job_state", "search_index"],
}


def config_ops(stream: str, present: set[str] | None = None) -> list[str]:
    """The assets of a stream's job (each takes a BatchSelection)."""
    return [name for name in STREAM_JOBS[stream] if present is None or name in present]


def stream_jobs(present: set[str] | None = None) -> dict[str, object]:
    """One job per stream whose ingest asset runs (all of them when ``present`` is None), over
    the stream's assets that run. In-process: a streaming run is a few small steps, and
    separate step processes would cost more than the steps themselves."""
    jobs = {
        stream: dg.define_asset_job(
            f"{stream}_job",
            selection=dg.AssetSelection.assets(
                *(n for n in names if present is None or n in present)
            ),
            executor_def=dg.in_process_executor,
            tags={"figstream/stream": stream},
        )
        for stream, names in STREAM_JOBS.items()
        if present is None or names[0] in present
    }
    if present is None or "board_daily_stats" in present:
        # The daily rollups; the SEO redirects of a day build on its end-of-day state.
        daily = [
            "board_daily_stats",
            *(["seo_redirects"] if present and "seo_redirects" in present else []),
        ]
        jobs["stats"] = dg.define_asset_job(
            "board_daily_stats_job",
            selection=dg.AssetSelection.assets(*daily),
            executor_def=dg.in_process_executor,
        )
    if present is None or "search_index_snapshot" in present:
        jobs["snapshot"] = dg.define_asset_job(
            "search_index_snapshot_job",
            selection=dg.AssetSelection.assets("search_index_snapshot"),
            executor_def=dg.in_process_executor,
        )
    return jobs


def snapshot_schedule(job) -> dg.ScheduleDefinition:
    """The day's snapshot just after the day ends (UTC), for the day that ended."""
    return dg.build_schedule_from_partitioned_job(job, hour_of_day=0, minute_of_hour=15)
