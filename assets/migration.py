"""The strangler fig in Dagster: the assets the ledger's stages call for.

The rules live in the core, this module declares what they decide:

* ``figstream.migration.layout``: per stage, which new assets run, which tasks get a parity
  check and which retired tasks need a bridge (``legacy.graph`` says who reads whose output);
* ``figstream.migration.parity_check``: the verdict of ``parity/parity_<task>`` for a day and its
  ``parity_with_legacy`` check (a legacy night that died on a bad record warns, not fails);
* ``figstream.migration.publishing``: which side ``published/published_<name>`` reads, per the
  ledger *at run time* (a rollback takes effect at the next run), and the flagged fallback to
  the other side when the authoritative one has nothing for the day.

A retired task with no Luigi reader stays as a spec, so its past materialisations stay
visible; one with readers becomes a bridge that writes its output from the new side.
"""

from collections.abc import Iterable, Sequence

import dagster as dg
import luigi

from assets.legacy import (
    BACKFILL_POLICY,
    FEED_DUMP_KEY,
    daily_partitions,
    legacy_key,
    materialize_days,
    task_key,
)
from assets.legacy import GROUP as LEGACY_GROUP
from figstream.migration import layout, legacy_files, parity_check, publishing, views
from figstream.migration.gate import status
from figstream.migration.layout import NEW_ASSETS
from figstream.migration.ledger import Ledger
from figstream.migration.mirror import UNATTRIBUTED, mirror_day
from legacy import graph
from resources.migration import MigrationResource
from resources.stores import StreamingResources

GROUP = "migration"
PARITY_CHECK = "parity_with_legacy"
PARITY_COUNTS = ("matched", "differing", "only_legacy", "only_new")  # rows, by outcome


def _key(asset) -> dg.AssetKey:
    return asset.key if isinstance(asset, dg.AssetSpec) else next(iter(asset.keys))


def new_assets_running(ledger: Ledger, new_assets: Sequence) -> list:
    """The new assets of tasks past ``legacy``, plus everything upstream of them (a shadowed
    task needs its inputs made, even while their own tasks are still at ``legacy``)."""
    by_key = {_key(a): a for a in new_assets}
    wanted = [dg.AssetKey(name) for name in layout.new_assets_wanted(ledger)]
    keep: set[dg.AssetKey] = set()
    while wanted:
        key = wanted.pop()
        if key in keep or key not in by_key:
            continue
        keep.add(key)
        asset = by_key[key]
        deps = asset.deps if isinstance(asset, dg.AssetSpec) else asset.asset_deps[key]
        wanted += [d.asset_key if hasattr(d, "asset_key") else d for d in deps]
    return [a for k, a in by_key.items() if k in keep]


def bridge_asset(
    task_cls: type[luigi.Task], ledger: Ledger, needed_by: list[str], deps: Iterable
) -> dg.AssetsDefinition:
    task = task_cls.__name__
    epoch = ledger.legacy_epoch.isoformat()

    @dg.asset(
        key=legacy_key(task_cls),
        group_name=LEGACY_GROUP,
        partitions_def=daily_partitions(ledger),
        deps=list(deps),
        kinds={"python", "csv"},
        tags={"figstream/layer": "bridge"},
        backfill_policy=BACKFILL_POLICY,
        description=(
            f"{task} is retired: its Luigi op no longer runs. This bridge writes the output "
            f"{', '.join(needed_by)} still read(s), from the new implementation "
            f"({', '.join(NEW_ASSETS[task])})."
        ),
    )
    def _bridge(
        context: dg.AssetExecutionContext,
        streaming: StreamingResources,
        migration: MigrationResource,
    ) -> dg.MaterializeResult:
        stores = streaming.stores()

        def bridge(day: str) -> dict[str, object]:
            view = views.render_new(task, day, stores, epoch)
            paths = legacy_files.write_legacy_outputs(task, day, view, migration.root)
            return {
                "bridged_from": ", ".join(NEW_ASSETS[task]),
                "rows": view.table.num_rows,
                **{f"{p.stem}_path": dg.MetadataValue.path(str(p)) for p in paths},
            }

        return materialize_days(context, bridge)

    return _bridge


def retired_spec(task_cls: type[luigi.Task], ledger: Ledger) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=legacy_key(task_cls),
        group_name=LEGACY_GROUP,
        partitions_def=daily_partitions(ledger),
        kinds={"luigi", "csv"},
        tags={"figstream/layer": "retired"},
        description=(
            f"Retired: {task_cls.__name__} no longer runs; its past materialisations stay. "
            f"Replaced by {', '.join(NEW_ASSETS[task_cls.__name__])}."
        ),
    )


def retired_legacy_assets(
    ledger: Ledger, tasks: Sequence[type[luigi.Task]]
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    by_name = {task_cls.__name__: task_cls for task_cls in tasks}
    retired = layout.retired(ledger, graph.required_by(tasks, ledger.legacy_epoch))
    return [
        bridge_asset(by_name[task], ledger, needed_by, [dg.AssetKey(n) for n in NEW_ASSETS[task]])
        if needed_by
        else retired_spec(by_name[task], ledger)
        for task, needed_by in retired.items()
    ]


def feed_dump_mirror(ledger: Ledger) -> dg.AssetsDefinition:
    @dg.asset(
        key=FEED_DUMP_KEY,
        group_name=LEGACY_GROUP,
        partitions_def=daily_partitions(ledger),
        kinds={"json"},
        tags={"figstream/layer": "mirror"},
        backfill_policy=BACKFILL_POLICY,
        description=(
            "The day's feed dump that legacy reads, mirrored from the landing zone so legacy "
            "and new read the same events (a dump the boards delivered is kept as it is)."
        ),
    )
    def feed_dump(
        context: dg.AssetExecutionContext, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        stores = streaming.stores()

        def mirror(day: str) -> dict[str, object]:
            report = mirror_day(stores, day)
            context.log.info(f"{day}: {report.reason}")
            return {
                "mirrored": report.written,
                "reason": report.reason,
                "records": report.records,
                "redeliveries_dropped": report.redeliveries,
                "batches": report.batches,
                "unattributed": report.by_board.get(UNATTRIBUTED, 0),
                "cutoff_batch": str(report.cutoff),
            }

        return materialize_days(context, mirror)

    return feed_dump


def parity_asset(task_cls: type[luigi.Task], ledger: Ledger) -> dg.AssetsDefinition:
    task = task_cls.__name__
    epoch = ledger.legacy_epoch.isoformat()
    key = dg.AssetKey(["parity", f"parity_{graph.asset_name(task)}"])  # a unique label
    check = dg.AssetCheckSpec(
        PARITY_CHECK,
        asset=key,
        description=(
            f"Legacy {task} vs the new {', '.join(NEW_ASSETS[task])} for the day, keyed and "
            "with the tolerances and normalisers the ledger declares. Differences a known "
            "legacy flaw explains are reported as such."
        ),
    )

    @dg.asset(
        key=key,
        group_name=GROUP,
        partitions_def=daily_partitions(ledger),
        deps=[legacy_key(task_cls), *(dg.AssetKey(n) for n in NEW_ASSETS[task])],
        check_specs=[check],
        kinds={"python"},
        tags={"figstream/layer": "parity"},
        description=f"Parity evidence for {task}: the cutover gate counts these days.",
    )
    def _parity(
        context: dg.AssetExecutionContext,
        streaming: StreamingResources,
        migration: MigrationResource,
    ):
        entry = migration.ledger().tasks[task]
        check = parity_check.check_day(
            task, context.partition_key, entry, streaming.stores(), migration.root, epoch
        )
        streak_text = parity_check.record(migration.evidence(), check, entry, context.run.run_id)
        yield dg.MaterializeResult(
            metadata={
                "verdict": check.verdict,
                "stage": entry.stage.value,
                "new_rows": check.new_rows,
                "legacy_rows": -1 if check.legacy_rows is None else check.legacy_rows,
                "streak": dg.MetadataValue.text(streak_text),
            }
        )
        yield dg.AssetCheckResult(
            check_name=PARITY_CHECK,
            passed=check.passed,
            severity=dg.AssetCheckSeverity.WARN
            if check.known_legacy_flaw
            else dg.AssetCheckSeverity.ERROR,
            # The check is per asset, not per day: the execution history tells days apart by
            # this line, and the row counts plot parity over the days.
            description=f"{check.day}: {check.summary}",
            metadata={
                **{k: check.report[k] for k in PARITY_COUNTS if k in check.report},
                "partition": check.day,
                "verdict": check.verdict,
                "summary": dg.MetadataValue.text(check.summary),
                "diff": dg.MetadataValue.md(check.markdown),
                "streak": dg.MetadataValue.text(streak_text),
            },
        )

    return _parity


def published_asset(name: str, ledger: Ledger, present: set[dg.AssetKey]) -> dg.AssetsDefinition:
    task = publishing.PUBLISHED[name]
    epoch = ledger.legacy_epoch.isoformat()
    deps = [
        k for k in (task_key(task), *(dg.AssetKey(n) for n in NEW_ASSETS[task])) if k in present
    ]

    @dg.asset(
        key=dg.AssetKey(["published", f"published_{name}"]),  # a unique label in the UI
        group_name="published",
        partitions_def=daily_partitions(ledger),
        deps=deps,
        kinds={"csv"},
        description=(
            f"What users consume: the day's {name.replace('_', ' ')} from the authoritative "
            f"side for {task} in the ledger (legacy at legacy/shadow, new at migrated/retired),"
            " read at run time."
        ),
    )
    def _published(
        context: dg.AssetExecutionContext,
        streaming: StreamingResources,
        migration: MigrationResource,
    ) -> dg.MaterializeResult:
        day = context.partition_key
        stage = migration.ledger().stage(task)
        try:
            out = publishing.publish(name, day, stage, streaming.stores(), migration.root, epoch)
        except publishing.NothingToPublish as exc:
            raise dg.Failure(str(exc)) from exc
        if out.fallback:
            context.log.warning(out.describe_fallback())
        return dg.MaterializeResult(
            metadata={
                "source": out.side,
                "stage": stage.value,
                "fallback": out.fallback,
                "rows": out.table.num_rows,
                "path": dg.MetadataValue.path(str(out.path)),
            }
        )

    return _published


def migration_status_asset(ledger: Ledger) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(["migration_status"]),
        group_name=GROUP,
        kinds={"yaml"},
        description="The migration ledger as it is now: stage, parity streak, last diff.",
    )
    def _status(migration: MigrationResource) -> dg.MaterializeResult:
        rows = status(migration.ledger(), migration.evidence())
        lines = ["| task | stage | parity streak | last check | next |", "|---|---|---|---|---|"]
        metadata: dict[str, object] = {}
        for row in rows:
            last = "-" if row.last is None else f"{row.last.partition_key} {row.last.verdict}"
            lines.append(
                f"| {row.task} | {row.stage.value} | {row.streak.clean}/{row.required} | "
                f"{last} | {row.next_step.replace('|', '/')} |"
            )
            metadata[f"{row.task}_stage"] = row.stage.value
            metadata[f"{row.task}_streak"] = row.streak.clean
        return dg.MaterializeResult(
            metadata={
                "ledger": dg.MetadataValue.md("\n".join(lines)),
                "ledger_path": dg.MetadataValue.path(migration.ledger_path),
                **metadata,
            }
        )

    return _status


def build_migration_assets(
    ledger: Ledger, tasks: Sequence[type[luigi.Task]], present: set[dg.AssetKey]
) -> list:
    """Parity assets for shadow/migrated tasks, bridges and specs for retired ones, the
    published outputs and the status asset. ``present``: the keys Definitions hold so far."""
    by_name = {task_cls.__name__: task_cls for task_cls in tasks}
    out: list = [*retired_legacy_assets(ledger, tasks)]
    out += [parity_asset(by_name[t], ledger) for t in layout.parity_tasks(ledger, by_name)]
    keys = present | {_key(a) for a in out}
    out += [published_asset(name, ledger, keys) for name in publishing.PUBLISHED]
    out.append(migration_status_asset(ledger))
    return out
