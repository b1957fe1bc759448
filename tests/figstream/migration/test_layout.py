"""What the ledger's stages put into Definitions, by name."""

from __future__ import annotations

import datetime as dt

import pytest

from figstream.migration.layout import NEW_ASSETS, new_assets_wanted, parity_tasks, retired
from figstream.migration.ledger import parse_ledger
from figstream.migration.views import TASKS as RENDERED
from legacy.graph import required_by
from legacy.pipeline import TASKS

NAMES = list(NEW_ASSETS)
# Who reads whose output in the legacy pipeline, handed to the core as data.
REQUIRED_BY = required_by(TASKS, dt.date(2026, 11, 1))


def ledger(**stages: str):
    return parse_ledger(
        "version: 1\nlegacy_epoch: 2026-11-01\ntasks:\n"
        + "".join(f"  {n}: {{stage: {stages.get(n, 'legacy')}}}\n" for n in [*NAMES, "Unknown"]),
        "ledger.yaml",
    )


def test_every_task_the_views_render_has_new_assets():
    assert set(NEW_ASSETS) == set(RENDERED)


def test_nothing_new_runs_while_every_task_is_at_legacy():
    assert new_assets_wanted(ledger()) == []


@pytest.mark.parametrize("stage", ["shadow", "migrated", "retired"])
def test_a_task_past_legacy_runs_its_new_assets(stage):
    assert new_assets_wanted(ledger(DedupePostings=stage)) == ["deduped_postings", "board_mergers"]


def test_an_asset_two_tasks_share_is_wanted_once():
    wanted = new_assets_wanted(ledger(ActiveJobs="shadow", BoardStats="migrated"))
    assert wanted == ["search_index", "job_state", "search_index_snapshot", "board_daily_stats"]


@pytest.mark.parametrize(
    ("stage", "checked"),
    [("legacy", False), ("shadow", True), ("migrated", True), ("retired", False)],
)
def test_parity_is_checked_at_shadow_and_migrated(stage, checked):
    assert parity_tasks(ledger(BoardStats=stage), NAMES) == (["BoardStats"] if checked else [])


def test_a_task_no_view_renders_gets_no_parity_check_and_order_follows_the_tasks():
    stages = ledger(SeoRedirects="shadow", ExtractFeeds="migrated", Unknown="shadow")
    assert parity_tasks(stages, [*NAMES, "Unknown"]) == ["ExtractFeeds", "SeoRedirects"]


def test_a_retired_task_is_bridged_for_the_luigi_tasks_still_reading_it():
    assert retired(ledger(CleanPostings="retired"), REQUIRED_BY) == {
        "CleanPostings": ["DedupePostings"]
    }
    stages = ledger(ActiveJobs="retired", SeoRedirects="retired")
    assert retired(stages, REQUIRED_BY) == {"ActiveJobs": ["BoardStats"], "SeoRedirects": []}


def test_a_retired_task_whose_readers_are_retired_too_needs_no_bridge():
    stages = ledger(ExtractFeeds="retired", CleanPostings="retired", DedupePostings="retired")
    assert retired(stages, REQUIRED_BY) == {
        "ExtractFeeds": [],
        "CleanPostings": [],
        "DedupePostings": ["ActiveJobs", "BoardStats", "SeoRedirects"],
    }
    assert retired(ledger(), REQUIRED_BY) == {}
