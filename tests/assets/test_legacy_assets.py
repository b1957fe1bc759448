"""The wrapped Luigi tasks, materialised through Dagster for real partitions of generated data."""

import csv
import datetime as dt
import json

import dagster as dg
import pytest

from assets.legacy import build_legacy_assets
from figstream.ingest.dataset import generate
from figstream.migration.ledger import parse_ledger
from legacy.pipeline import TASKS
from resources.luigi_runner import LuigiRunner

EPOCH = dt.date(2026, 11, 1)
LEDGER = parse_ledger(
    "version: 1\nlegacy_epoch: 2026-11-01\ntasks:\n"
    + "".join(f"  {t.__name__}: {{stage: legacy}}\n" for t in TASKS),
    "test-ledger.yaml",
)


@pytest.fixture
def legacy_assets():
    return [a for a in build_legacy_assets(LEDGER, TASKS) if isinstance(a, dg.AssetsDefinition)]


def runner(root):
    return LuigiRunner(data_root=str(root), epoch=EPOCH.isoformat())


def read_csv(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_materialise_every_legacy_asset_for_two_days(tmp_path, legacy_assets):
    generate(tmp_path, start=EPOCH, days=2, events_per_day=400, seed=7, bad_rate=0.0)
    for day in ("2026-11-01", "2026-11-02"):
        result = dg.materialize(
            legacy_assets, partition_key=day, resources={"luigi_runner": runner(tmp_path)}
        )
        assert result.success
    materialised = result.asset_materializations_for_node("legacy__legacy_board_stats")
    metadata = materialised[0].metadata
    stats = read_csv(tmp_path / "legacy" / "2026-11-02" / "board_stats.csv")
    assert metadata["board_stats_rows"].value == len(stats) >= 4
    assert metadata["luigi_status"].value == "SUCCESS"
    active = read_csv(tmp_path / "legacy" / "2026-11-02" / "active_jobs.csv")
    assert sum(int(r["active_jobs"]) for r in stats) == len(active) > 0


def test_a_bad_record_fails_the_step_with_luigis_summary(tmp_path, legacy_assets):
    """The legacy flaw, preserved: one bad record fails the whole night."""
    summary = generate(tmp_path, start=EPOCH, days=1, events_per_day=300, seed=3, bad_rate=0.05)
    manifest = json.loads((tmp_path / "generate-manifest.json").read_text())
    assert manifest["bad_by_kind"]["malformed_json"] > 0, summary
    extract = next(
        a for a in legacy_assets if a.key == dg.AssetKey(["legacy", "legacy_extract_feeds"])
    )
    result = dg.materialize(
        [extract],
        partition_key="2026-11-01",
        resources={"luigi_runner": runner(tmp_path)},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.user_failure_data
    assert "FAILED" in error.description
    assert "ExtractFeeds" in error.metadata["luigi_summary"].value
    assert "Traceback" in error.metadata["luigi_log_tail"].value
    assert not (tmp_path / "legacy" / "2026-11-01" / "extracted.csv").exists()


def test_missing_feed_dump_is_reported_not_run(tmp_path, legacy_assets):
    extract = next(
        a for a in legacy_assets if a.key == dg.AssetKey(["legacy", "legacy_extract_feeds"])
    )
    result = dg.materialize(
        [extract],
        partition_key="2026-11-05",
        resources={"luigi_runner": runner(tmp_path)},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "MISSING_EXT" in failure.step_failure_data.user_failure_data.description


def test_a_backfill_of_days_is_one_run_with_each_days_figures(tmp_path, legacy_assets):
    """What the backfill daemon launches for a range (single-run policy): one run, each step
    going through the days in order (ActiveJobs builds on the day before), each day's own
    figures on an observation of its partition; the same files as a run per day."""
    generate(tmp_path, start=EPOCH, days=3, events_per_day=300, seed=5, bad_rate=0.0)
    assert all(a.backfill_policy == dg.BackfillPolicy.single_run() for a in legacy_assets)
    result = dg.materialize(
        legacy_assets,
        resources={"luigi_runner": runner(tmp_path)},
        tags={
            "dagster/asset_partition_range_start": "2026-11-01",
            "dagster/asset_partition_range_end": "2026-11-03",
        },
    )
    assert result.success
    observed = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    stats = {
        o.partition: o.metadata for o in observed if o.asset_key.path[-1] == "legacy_board_stats"
    }
    assert sorted(stats) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    one_by_one = tmp_path / "one-by-one"
    generate(one_by_one, start=EPOCH, days=3, events_per_day=300, seed=5, bad_rate=0.0)
    for day in sorted(stats):
        rows = read_csv(tmp_path / "legacy" / day / "board_stats.csv")
        assert stats[day]["board_stats_rows"].value == len(rows)
        single = dg.materialize(
            legacy_assets, partition_key=day, resources={"luigi_runner": runner(one_by_one)}
        )
        assert single.success
        for name in ("active_jobs.csv", "board_stats.csv", "redirects.csv"):
            assert read_csv(one_by_one / "legacy" / day / name) == read_csv(
                tmp_path / "legacy" / day / name
            )
