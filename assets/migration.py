"""The strangler fig in Dagster: what the ledger's stages put into Definitions.

Per legacy task, by stage:

* ``legacy``: the wrapped Luigi op (``legacy/<task>``); legacy is authoritative.
* ``shadow``: the Luigi op and the new assets both run; ``parity/<task>`` compares them per
  day and carries the ``parity_with_legacy`` asset check; legacy stays authoritative.
* ``migrated``: the same, but consumers read the new output; Luigi still runs for rollback.
* ``retired``: the Luigi op leaves Definitions. If a Luigi task that still runs needs its
  output, ``legacy/<task>`` becomes a *bridge* that writes that output from the new side, so
  the remaining Luigi tasks keep working; otherwise it stays as a spec, so its past
  materialisations stay visible.

Consumers read ``published/<name>``: the authoritative side per the ledger *at run time*, so
a rollback takes effect at the next run, before any reload. When the authoritative side has
no output for a day the other side's is published and flagged, never a hole.
"""

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

import dagster as dg
import luigi
import pyarrow as pa

from assets.legacy import FEED_DUMP_KEY, daily_partitions, legacy_key, snake
from assets.legacy import GROUP as LEGACY_GROUP
from figstream.migration import flaws, legacy_files, views
from figstream.migration.gate import LEGACY_FAILED, ParityResult, describe_streak, status, streak
from figstream.migration.ledger import Ledger, Stage
from figstream.migration.mirror import UNATTRIBUTED, after_cutoff, mirror_day
from figstream.migration.parity import compare
from figstream.storage.objects import LocalObjectStore
from figstream.streaming.stores import day_partitions
from resources.migration import MigrationResource
from resources.stores import StreamingResources

GROUP = "migration"
PARITY_CHECK = "parity_with_legacy"

# The new assets that implement each legacy task (the ledger's replaced_by is the first),
# plus those its legacy-format view reads (legacy's files hold merger rows, say).
NEW_ASSETS: dict[str, tuple[str, ...]] = {
    "ExtractFeeds": ("raw_events", "board_mergers"),
    "CleanPostings": ("clean_postings", "board_mergers"),
    "DedupePostings": ("deduped_postings", "board_mergers"),
    "ActiveJobs": ("search_index", "job_state", "board_daily_stats"),
    "BoardStats": ("board_daily_stats",),
    "SeoRedirects": ("seo_redirects",),
}
# The legacy output each published table is read from while legacy is authoritative.
LEGACY_FILES = {
    "ActiveJobs": "active_jobs.csv",
    "BoardStats": "board_stats.csv",
    "SeoRedirects": "redirects.csv",
}
# What users consume, and the legacy task whose stage decides who is authoritative for it.
PUBLISHED: dict[str, str] = {
    "search_index": "ActiveJobs",
    "board_stats": "BoardStats",
    "seo_redirects": "SeoRedirects",
}


def _key(asset) -> dg.AssetKey:
    return asset.key if isinstance(asset, dg.AssetSpec) else next(iter(asset.keys))


def new_assets_running(ledger: Ledger, new_assets: Sequence) -> list:
    """The new assets of tasks past ``legacy``, plus everything upstream of them (a shadowed
    task needs its inputs made, even while their own tasks are still at ``legacy``)."""
    by_key = {_key(a): a for a in new_assets}
    wanted = [
        dg.AssetKey(name)
        for task, entry in ledger.tasks.items()
        if entry.stage.runs_new
        for name in NEW_ASSETS.get(task, ())
    ]
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


def _required_by_running_legacy(
    task: type[luigi.Task], ledger: Ledger, tasks: Sequence[type[luigi.Task]], epoch: dt.date
) -> list[str]:
    sample = epoch + dt.timedelta(days=1)
    return [
        other.__name__
        for other in tasks
        if other is not task
        and ledger.stage(other.__name__).runs_legacy
        and any(type(r) is task for r in luigi.task.flatten(other(date=sample).requires()))
    ]


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
        day = context.partition_key
        view = views.render_new(task, day, streaming.stores(), epoch)
        paths = legacy_files.write_legacy_outputs(task, day, view, migration.root)
        return dg.MaterializeResult(
            metadata={
                "bridged_from": ", ".join(NEW_ASSETS[task]),
                "rows": view.table.num_rows,
                **{f"{p.stem}_path": dg.MetadataValue.path(str(p)) for p in paths},
            }
        )

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
    out: list[dg.AssetsDefinition | dg.AssetSpec] = []
    for task_cls in tasks:
        if ledger.stage(task_cls.__name__) is not Stage.RETIRED:
            continue
        needed_by = _required_by_running_legacy(task_cls, ledger, tasks, ledger.legacy_epoch)
        if not needed_by:
            out.append(retired_spec(task_cls, ledger))
            continue
        deps = [dg.AssetKey(name) for name in NEW_ASSETS[task_cls.__name__]]
        out.append(bridge_asset(task_cls, ledger, needed_by, deps))
    return out


def feed_dump_mirror(ledger: Ledger) -> dg.AssetsDefinition:
    @dg.asset(
        key=FEED_DUMP_KEY,
        group_name=LEGACY_GROUP,
        partitions_def=daily_partitions(ledger),
        kinds={"json"},
        tags={"figstream/layer": "mirror"},
        description=(
            "The day's feed dump that legacy reads, mirrored from the landing zone so legacy "
            "and new read the same events (a dump the boards delivered is kept as it is)."
        ),
    )
    def feed_dump(
        context: dg.AssetExecutionContext, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        report = mirror_day(streaming.stores(), context.partition_key)
        context.log.info(f"{context.partition_key}: {report.reason}")
        return dg.MaterializeResult(
            metadata={
                "mirrored": report.written,
                "reason": report.reason,
                "records": report.records,
                "redeliveries_dropped": report.redeliveries,
                "batches": report.batches,
                "unattributed": report.by_board.get(UNATTRIBUTED, 0),
                "cutoff_batch": str(report.cutoff),
            }
        )

    return feed_dump


def _summary(report) -> str:
    if report.verdict == "clean":
        return f"clean: {report.matched:,} rows match"
    parts = [
        f"{report.only_legacy:,} only in legacy",
        f"{report.only_new:,} only in new",
        f"{report.differing:,} differ",
    ]
    if report.explained:
        parts.append(
            "explained by known legacy flaws: "
            + ", ".join(f"{name} {n:,}" for name, n in report.explained.items())
        )
    return f"{report.verdict}: " + "; ".join(parts)


def parity_asset(task_cls: type[luigi.Task], ledger: Ledger) -> dg.AssetsDefinition:
    task = task_cls.__name__
    epoch = ledger.legacy_epoch.isoformat()
    check = dg.AssetCheckSpec(
        PARITY_CHECK,
        asset=dg.AssetKey(["parity", snake(task)]),
        description=(
            f"Legacy {task} vs the new {', '.join(NEW_ASSETS[task])} for the day, keyed and "
            "with the tolerances and normalisers the ledger declares. Differences a known "
            "legacy flaw explains are reported as such."
        ),
    )

    @dg.asset(
        key=dg.AssetKey(["parity", snake(task)]),
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
        day = context.partition_key
        ledger_now = migration.ledger()
        entry = ledger_now.tasks[task]
        stores = streaming.stores()
        new = views.render_new(task, day, stores, epoch)
        late = after_cutoff(stores, day)
        if late is not None:
            new = dataclasses.replace(new, context={**new.context, "after_cutoff": late})
        legacy = legacy_files.read_legacy(task, day, migration.root)
        if legacy is None:
            dead = sum(stores.dead_letters.count(partition_key=p) for p in day_partitions(day))
            if dead:
                verdict = LEGACY_FAILED
                summary = (
                    f"known legacy flaw: legacy produced no output (one bad record fails its "
                    f"night); the new side dead-lettered {dead:,} records that day and "
                    f"materialised {new.table.num_rows:,} rows"
                )
            else:
                verdict = "legacy_missing"
                summary = "legacy has no output for the day: run the legacy nightly job first"
            report_dict: dict = {"verdict": verdict, "new_rows": new.table.num_rows}
            markdown = summary
            passed = verdict == LEGACY_FAILED
        else:
            report = compare(legacy, new, entry.parity, flaws.KNOWN_FLAWS)
            verdict, summary = report.verdict, _summary(report)
            report_dict, markdown, passed = report.to_dict(), report.to_markdown(), report.passed
        result = ParityResult(
            task=task,
            partition_key=day,
            verdict=verdict,
            stage=entry.stage.value,
            summary=summary,
            report=report_dict,
            checked_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            run_id=context.run.run_id,
        )
        evidence = migration.evidence()
        evidence.record(result)
        required = entry.parity_partitions_required
        streak_text = describe_streak(streak(evidence.results(task), required), required)
        yield dg.MaterializeResult(
            metadata={
                "verdict": verdict,
                "stage": entry.stage.value,
                "new_rows": new.table.num_rows,
                "legacy_rows": -1 if legacy is None else legacy.num_rows,
                "streak": dg.MetadataValue.text(streak_text),
            }
        )
        yield dg.AssetCheckResult(
            check_name=PARITY_CHECK,
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN
            if verdict == LEGACY_FAILED
            else dg.AssetCheckSeverity.ERROR,
            metadata={
                "partition": day,
                "verdict": verdict,
                "summary": dg.MetadataValue.text(summary),
                "diff": dg.MetadataValue.md(markdown),
                "streak": dg.MetadataValue.text(streak_text),
            },
        )

    return _parity


def published_path(root: Path, name: str, day: str) -> Path:
    return root / "published" / day / f"{name}.csv"


def published_asset(name: str, ledger: Ledger, present: set[dg.AssetKey]) -> dg.AssetsDefinition:
    task = PUBLISHED[name]
    epoch = ledger.legacy_epoch.isoformat()
    task_key = dg.AssetKey([LEGACY_GROUP, snake(task)])
    deps = [k for k in (task_key, *(dg.AssetKey(n) for n in NEW_ASSETS[task])) if k in present]

    @dg.asset(
        key=dg.AssetKey(["published", name]),
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
        new_first = stage in (Stage.MIGRATED, Stage.RETIRED)

        def legacy_side() -> pa.Table | None:
            path = legacy_files.legacy_dir(migration.root, day) / LEGACY_FILES[task]
            return legacy_files.read_csv(path) if path.exists() else None

        def new_side() -> pa.Table | None:
            if not views.supports(task) or not _new_has_day(streaming, day):
                return None
            return views.render_new(task, day, streaming.stores(), epoch).table

        order = [("new", new_side), ("legacy", legacy_side)]
        if not new_first:
            order.reverse()
        found = next(((side, table) for side, read in order if (table := read()) is not None), None)
        if found is None:
            raise dg.Failure(
                f"neither legacy {task} nor the new side has an output for {day}: "
                "nothing to publish (the previous publication stays)"
            )
        side, table = found
        position = [name for name, _ in order].index(side)
        path = published_path(migration.root, name, day)
        LocalObjectStore(migration.root).put(
            str(path.relative_to(migration.root)), legacy_files.csv_bytes(table)
        )
        if position:
            context.log.warning(
                f"{order[0][0]} side (authoritative at {stage.value}) has no output for {day}; "
                f"published the {side} side instead"
            )
        return dg.MaterializeResult(
            metadata={
                "source": side,
                "stage": stage.value,
                "fallback": bool(position),
                "rows": table.num_rows,
                "path": dg.MetadataValue.path(str(path)),
            }
        )

    return _published


def _new_has_day(streaming: StreamingResources, day: str) -> bool:
    """The new side has seen the day when some hour of it holds ingested events."""
    objects = streaming.stores().objects
    return any(
        objects.list(f"tables/{table}/{hour}/")
        for table in ("raw_events",)
        for hour in day_partitions(day)
    )


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
    out: list = [*retired_legacy_assets(ledger, tasks)]
    for task_cls in tasks:
        task = task_cls.__name__
        if ledger.stage(task) in (Stage.SHADOW, Stage.MIGRATED) and views.supports(task):
            out.append(parity_asset(task_cls, ledger))
    keys = present | {_key(a) for a in out}
    out += [published_asset(name, ledger, keys) for name in PUBLISHED]
    out.append(migration_status_asset(ledger))
    return out
