"""Each legacy Luigi task as a daily-partitioned Dagster asset, materialised by running Luigi.

Dependencies are read from each task's own ``requires()`` rather than restated here, so the
Dagster lineage cannot drift from what Luigi actually runs. A requirement on another date (the
snapshot that builds on yesterday's) becomes a time-window partition mapping.
"""

import csv
import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import dagster as dg
import luigi

from figstream.migration.ledger import Ledger
from resources.luigi_runner import LuigiRun, LuigiRunner

GROUP = "legacy"
FEED_DUMP_KEY = dg.AssetKey([GROUP, "feed_dump"])


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def legacy_key(task_cls: type[luigi.Task]) -> dg.AssetKey:
    return dg.AssetKey([GROUP, snake(task_cls.__name__)])


def daily_partitions(ledger: Ledger) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=ledger.legacy_epoch.isoformat())


def _dependency_offsets(
    task_cls: type[luigi.Task], sample: dt.date
) -> dict[dg.AssetKey, tuple[int, int]]:
    """Upstream key -> (earliest, latest) day offset that ``requires()`` asks for."""
    offsets: dict[dg.AssetKey, list[int]] = defaultdict(list)
    for required in luigi.task.flatten(task_cls(date=sample).requires()):
        if isinstance(required, luigi.ExternalTask):
            key = FEED_DUMP_KEY
        else:
            key = legacy_key(type(required))
        offsets[key].append((required.date - sample).days)
    return {key: (min(days), max(days)) for key, days in offsets.items()}


def _dep(key: dg.AssetKey, window: tuple[int, int]) -> dg.AssetDep:
    if window == (0, 0):
        return dg.AssetDep(key)
    start, end = window
    return dg.AssetDep(
        key, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=start, end_offset=end)
    )


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


def legacy_asset(
    task_cls: type[luigi.Task], partitions_def: dg.DailyPartitionsDefinition, epoch: dt.date
) -> dg.AssetsDefinition:
    # Introspect on a date after the epoch so date-recursive requirements show up.
    windows = _dependency_offsets(task_cls, epoch + dt.timedelta(days=1))

    @dg.asset(
        key=legacy_key(task_cls),
        group_name=GROUP,
        partitions_def=partitions_def,
        deps=[_dep(key, window) for key, window in windows.items()],
        kinds={"luigi", "csv"},
        description=(task_cls.__doc__ or task_cls.__name__).strip(),
        tags={"figstream/layer": "legacy"},
    )
    def _asset(
        context: dg.AssetExecutionContext, luigi_runner: LuigiRunner
    ) -> dg.MaterializeResult:
        date = dt.date.fromisoformat(context.partition_key)
        run = luigi_runner.build(task_cls, date)
        if not run.succeeded:
            raise dg.Failure(
                description=f"Luigi {run.status.name} for {run.task_id}: {run.status.value[1]}",
                metadata={
                    "luigi_summary": dg.MetadataValue.text(run.summary),
                    "luigi_log_tail": dg.MetadataValue.text("\n".join(run.log_tail[-60:])),
                },
            )
        context.log.info(run.summary)
        return dg.MaterializeResult(metadata=_metadata(run))

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
