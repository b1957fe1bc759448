"""What each ledger stage puts into Definitions, and the sensor that follows the nightly run."""

from __future__ import annotations

import dagster as dg
import pytest

from figstream.migration.ledger import parse_ledger
from legacy.pipeline import TASKS

NAMES = [t.__name__ for t in TASKS]


def ledger(**stages: str):
    return parse_ledger(
        "version: 1\nlegacy_epoch: 2026-11-01\ntasks:\n"
        + "".join(
            f"  {n}: {{stage: {stages.get(n, 'legacy')}, replaced_by: x, parity: {{key: [k]}}}}\n"
            for n in NAMES
        ),
        "ledger.yaml",
    )


def build(**stages: str) -> dg.Definitions:
    import definitions

    defs = definitions.build_definitions(ledger(**stages))
    dg.Definitions.validate_loadable(defs)
    return defs


def keys(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def layer(defs: dg.Definitions, key: str) -> str | None:
    node = defs.resolve_asset_graph().get(dg.AssetKey.from_user_string(key))
    return node.tags.get("figstream/layer")


def test_all_legacy_has_luigi_only_and_consumers_still_published():
    defs = build()
    assert not {"raw_events", "clean_postings", "search_index"} & keys(defs)
    assert not any(k.startswith("parity/") for k in keys(defs))
    assert {
        "published/published_search_index",
        "published/published_board_stats",
        "published/published_seo_redirects",
    } <= keys(defs)
    assert {s.name for s in defs.sensors} == {
        "after_legacy_sensor", "run_history_sensor", "sqlite_checkpoint_sensor"
    }  # fmt: skip
    schedule = defs.resolve_schedule_def("legacy_nightly_schedule")
    assert schedule.job_name == "legacy_nightly_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


@pytest.mark.parametrize("stage", ["shadow", "migrated"])
def test_shadow_and_migrated_run_both_and_check_parity(stage):
    defs = build(DedupePostings=stage)
    present = keys(defs)
    # the new asset, what it reads, and the parity asset with its check
    assert {"deduped_postings", "clean_postings", "raw_events", "board_mergers"} <= present
    assert "search_index" not in present and "seo_redirects" not in present
    assert layer(defs, "legacy/legacy_dedupe_postings") == "legacy"  # Luigi still runs
    parity = defs.resolve_assets_def(dg.AssetKey(["parity", "parity_dedupe_postings"]))
    assert [c.name for c in parity.check_specs] == ["parity_with_legacy"]
    nightly = defs.resolve_job_def("migration_nightly_job")
    assert "parity__parity_dedupe_postings" in nightly.graph.node_names()
    assert {s.name for s in defs.sensors} == {
        "postings_sensor", "boards_sensor", "after_legacy_sensor", "run_history_sensor",
        "sqlite_checkpoint_sensor",
    }  # fmt: skip


def test_retired_becomes_a_bridge_while_luigi_downstream_needs_it_else_a_spec():
    defs = build(CleanPostings="retired")
    assert layer(defs, "legacy/legacy_clean_postings") == "bridge"
    assert (
        "legacy__legacy_clean_postings"
        in defs.resolve_job_def("legacy_nightly_job").graph.node_names()
    )
    assert "parity/parity_clean_postings" not in keys(defs)

    # SeoRedirects: nothing in Luigi reads it, so retiring it leaves a spec (history stays).
    defs = build(SeoRedirects="retired")
    assert layer(defs, "legacy/legacy_seo_redirects") == "retired"
    nightly = defs.resolve_job_def("legacy_nightly_job").graph.node_names()
    assert "legacy__legacy_seo_redirects" not in nightly and "legacy__legacy_board_stats" in nightly
    assert "seo_redirects" in keys(defs)


def test_after_legacy_sensor_asks_parity_for_the_day_a_legacy_run_ended(tmp_path, monkeypatch):
    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path))
    defs = build(CleanPostings="shadow")
    sensor = defs.resolve_sensor_def("after_legacy_sensor")
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
            assert sensor(context).skip_reason is not None
            cursor = context.cursor
        nightly = defs.resolve_job_def("legacy_nightly_job")
        # A night that fails (the feed holds a bad record) must still be compared.
        result = nightly.execute_in_process(
            instance=instance, partition_key="2026-11-03", raise_on_error=False
        )
        assert not result.success
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=defs.resources
        ) as context:
            out = sensor(context)
        (request,) = out.run_requests
        assert request.job_name == "migration_nightly_job"
        assert request.partition_key == "2026-11-03"
        with dg.build_sensor_context(
            instance=instance, cursor=out.cursor, resources=defs.resources
        ) as context:
            assert sensor(context).run_requests == []  # asked once


@pytest.mark.parametrize("stage", ["legacy", "shadow", "migrated", "retired"])
def test_every_asset_has_a_label_of_its_own(stage):
    """The UI labels a lineage node with the last part of its key only: a legacy task, the
    new asset replacing it, their parity check and the published output must not share it."""
    defs = build(**dict.fromkeys(NAMES, stage))
    labels: dict[str, list[str]] = {}
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        labels.setdefault(key.path[-1], []).append(key.to_user_string())
    assert not {label: ks for label, ks in labels.items() if len(ks) > 1}
