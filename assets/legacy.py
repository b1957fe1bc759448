"""Each legacy Luigi task as a daily-partitioned Dagster asset, materialised by running Luigi.

Dependencies are read from each task's own ``requires()`` (``legacy.graph``) rather than
restated here, so the Dagster lineage cannot drift from what Luigi actually runs. A requirement
on another date becomes a time-window partition mapping, except a task's requirement on its own
day before (ActiveJobs builds on yesterday's snapshot), which Luigi resolves inside the run
(see ``_deps``).
"""

import csv
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import dagster as dg
import luigi

from figstream.migration.ledger import Ledger
from legacy import graph
from resources.luigi_runner import LuigiRun, LuigiRunner

GROUP = "legacy"
FEED_DUMP_KEY = dg.AssetKey([GROUP, "feed_dump"])


def task_key(task: str) -> dg.AssetKey:
    """``ActiveJobs`` -> ``legacy/legacy_active_jobs``. The UI labels a node with the last part
    of its key only, so that part names the side: ``clean_postings`` is also a streaming asset,
    ``parity/parity_clean_postings`` their comparison."""
    return dg.AssetKey([GROUP, f"{GROUP}_{graph.asset_name(task)}"])


def legacy_key(task_cls: type[luigi.Task]) -> dg.AssetKey:
    return task_key(task_cls.__name__)


def daily_partitions(ledger: Ledger) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=ledger.legacy_epoch.isoformat())


def _builds_on_itself(task: str, epoch: dt.date) -> bool:
    """Whether a task requires its own earlier days (ActiveJobs: yesterday's snapshot)."""
    task_cls = luigi.task_register.Register.get_task_cls(task)
    return any(r.task == task and r.latest < 0 for r in graph.requirements(task_cls, epoch))


def _deps(task_cls: type[luigi.Task], epoch: dt.date) -> list[dg.AssetDep]:
    """The Dagster dependencies of a legacy task, from its ``requires()``.

    A task's requirement on its own earlier days (ActiveJobs builds on yesterday's snapshot) is
    left out of the Dagster graph: Dagster runs a self-dependent asset apart from its upstreams,
    so a backfill of the group became two runs, and the backfill daemon launches the second
    only on its next fixed 30-second loop after the first ends (issue 16's 3x target was missed
    by that wait alone). A run goes through its days in order and Luigi resolves the day before
    inside the build, so nothing is computed out of order; what is lost is the UI marking later
    days stale when an earlier day is re-materialised alone (re-run the range from that day on;
    the asset's ``figstream/builds_on`` metadata and the README say so).
    """
    return [
        _dep(requirement, epoch)
        for requirement in graph.requirements(task_cls, epoch)
        if requirement.task != task_cls.__name__
    ]


def _dep(requirement: graph.Requirement, epoch: dt.date) -> dg.AssetDep:
    key = FEED_DUMP_KEY if requirement.external else task_key(requirement.task)
    # Today's and earlier days of a task that builds on its own day before (SeoRedirects
    # reads ActiveJobs of today and yesterday): today's partition already stands for the
    # earlier ones. An offset dependency would cost a backfill a second run, which the
    # backfill daemon launches only on its next 30-second tick after the first ends.
    if requirement.same_day or (
        requirement.latest == 0
        and not requirement.external
        and _builds_on_itself(requirement.task, epoch)
    ):
        return dg.AssetDep(key)
    return dg.AssetDep(
        key,
        partition_mapping=dg.TimeWindowPartitionMapping(
            start_offset=requirement.earliest, end_offset=requirement.latest
        ),
    )


def _definition_metadata(task_cls: type[luigi.Task], epoch: dt.date) -> dict[str, str]:
    if not _builds_on_itself(task_cls.__name__, epoch):
        return {}
    return {
        "figstream/builds_on": (
            "its own day before, resolved by Luigi inside the run (not a Dagster dependency: "
            "after re-materialising an earlier day alone, re-run the days after it)"
        )
    }


def _csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


def _metadata(run: LuigiRun) -> dict[str, object]:
    metadata: dict[str, object] = {
        "luigi_task": run.task_id,
        "luigi_status": run.status.name,
        "luigi_summary": dg.MetadataValue.text(run.summary),
    }
    for path in run.outputs:
        metadata[f"{path.stem}_path"] = dg.MetadataValue.path(str(path))
        if path.suffix == ".csv" and path.exists():
            metadata[f"{path.stem}_rows"] = dg.MetadataValue.int(_csv_rows(path))
    return metadata


# A backfill of many days is one run, each step going through the days in order (a day's
# snapshot builds on the day before's): a run per day paid a run's and a step's start-up for
# Luigi work of 0.1-0.4 s a task.
BACKFILL_POLICY = dg.BackfillPolicy.single_run()


def materialize_days(
    context: dg.AssetExecutionContext, work: Callable[[str], Mapping[str, object]]
) -> dg.MaterializeResult:
    """``work`` for each day of the run's partitions, in order. One day: its metadata is the
    materialisation's. A range (a single-run backfill): Dagster gives every partition of a
    range the same materialisation metadata, so each day's own goes on an observation of that
    partition, and the materialisation says which days ran."""
    days = sorted(context.partition_keys)
    by_day = {}
    for day in days:
        by_day[day] = dict(work(day))
        if len(days) > 1:
            context.log_event(
                dg.AssetObservation(
                    asset_key=context.asset_key, partition=day, metadata=by_day[day]
                )
            )
    if len(days) == 1:
        return dg.MaterializeResult(metadata=by_day[days[0]])
    return dg.MaterializeResult(
        metadata={
            "days": len(days),
            "first_day": days[0],
            "last_day": days[-1],
            "per_day": "each day's figures are on its partition's observation",
        }
    )


def legacy_asset(
    task_cls: type[luigi.Task], partitions_def: dg.DailyPartitionsDefinition, epoch: dt.date
) -> dg.AssetsDefinition:
    @dg.asset(
        key=legacy_key(task_cls),
        group_name=GROUP,
        partitions_def=partitions_def,
        deps=_deps(task_cls, epoch),
        metadata=_definition_metadata(task_cls, epoch),
        kinds={"luigi", "csv"},
        description=(task_cls.__doc__ or task_cls.__name__).strip(),
        tags={"figstream/layer": "legacy"},
        backfill_policy=BACKFILL_POLICY,
    )
    def _asset(
        context: dg.AssetExecutionContext, luigi_runner: LuigiRunner
    ) -> dg.MaterializeResult:
        days = sorted(context.partition_keys)
        runs = luigi_runner.build_days(task_cls, [dt.date.fromisoformat(d) for d in days])
        for day in days:
            run = runs[dt.date.fromisoformat(day)]
            if not run.succeeded:
                raise dg.Failure(
                    description=(
                        f"Luigi {run.status.name} for {run.task_id}: {run.status.value[1]}"
                    ),
                    metadata={
                        "luigi_summary": dg.MetadataValue.text(run.summary),
                        "luigi_log_tail": dg.MetadataValue.text("\n".join(run.log_tail[-60:])),
                    },
                )
        context.log.info(runs[dt.date.fromisoformat(days[-1])].summary)

        def build(day: str) -> dict[str, object]:
            return _metadata(runs[dt.date.fromisoformat(day)])

        return materialize_days(context, build)

    return _asset


def feed_dump_spec(partitions_def: dg.DailyPartitionsDefinition) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=FEED_DUMP_KEY,
        group_name=GROUP,
        partitions_def=partitions_def,
        kinds={"json"},
        description="The boards' daily feed dump that the legacy pipeline reads (made upstream).",
    )


def legacy_job(keys: Iterable[dg.AssetKey] | None = None):
    """The nightly batch as one run per day: the feed dump mirror, every legacy task that still
    runs (and the bridges standing in for retired ones), in Luigi order. ``keys``: the
    materialisable legacy assets; by default the whole group but the feed dump."""
    selection = (
        dg.AssetSelection.groups(GROUP) - dg.AssetSelection.keys(FEED_DUMP_KEY)
        if keys is None
        else dg.AssetSelection.assets(*keys)
    )
    return dg.define_asset_job(
        "legacy_nightly_job",
        selection=selection,
        description="The legacy Luigi pipeline for one day, as the nightly batch ran it.",
    )


def build_legacy_assets(
    ledger: Ledger,
    tasks: Sequence[type[luigi.Task]],
    feed_dump: dg.AssetsDefinition | None = None,
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """The feed dump (``feed_dump``, e.g. the landing-zone mirror, or an external spec) plus one
    asset per legacy task whose ledger stage still runs Luigi."""
    partitions_def = daily_partitions(ledger)
    running: Iterable[type[luigi.Task]] = (t for t in tasks if ledger.stage(t.__name__).runs_legacy)
    return [
        feed_dump or feed_dump_spec(partitions_def),
        *(legacy_asset(t, partitions_def, ledger.legacy_epoch) for t in running),
    ]
