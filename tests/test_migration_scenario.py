"""The strangler fig end to end: tasks go legacy -> shadow -> migrated -> retired (and back)
through the real CLI, with Definitions rebuilt from the ledger after every change (what a code
location reload does), real Luigi, the real streaming and migration jobs, and one instance.

At every night the outputs users consume (``published/*``) must exist and agree with what the
all-legacy pipeline produces for the same day (under the ledger's declared parity rules), so
no stage change leaves a window of missing or wrong data. A deliberately broken new
implementation is caught by parity and cannot advance.

Bad inputs tried: a night whose feed holds bad records (legacy dies: reported as the known
flaw, consumers get the new side, flagged), advancing without enough evidence, a new
implementation that drops a row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pytest

from figstream.cli import main
from figstream.ingest.dataset import generate
from figstream.migration import flaws, legacy_files, views
from figstream.migration.gate import EvidenceStore, evidence_path
from figstream.migration.ledger import load_ledger
from figstream.migration.parity import View, compare
from figstream.settings import PROJECT_ROOT
from legacy.pipeline import TASKS
from resources.luigi_runner import LuigiRunner

pytestmark = pytest.mark.slow

EPOCH = dt.date(2026, 11, 1)
DAYS = 10
BAD_DAY = "2026-11-10"  # the only day with bad records: legacy dies on it
PUBLISHED = {
    "search_index": "ActiveJobs",
    "board_stats": "BoardStats",
    "seo_redirects": "SeoRedirects",
}


def day(n: int) -> str:
    return (EPOCH + dt.timedelta(days=n - 1)).isoformat()


def hours(d: str) -> list[str]:
    return [f"{d}-{h:02d}:00" for h in range(24)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """The same events as the feed dump and the landing zone, plus the all-legacy baseline."""
    root = tmp_path_factory.mktemp("scenario-data")
    generate(
        root, start=EPOCH, days=DAYS, events_per_day=500, seed=5, bad_rate=0.01,
        clean_days=DAYS - 1,
    )  # fmt: skip
    baseline = tmp_path_factory.mktemp("baseline")
    shutil.copytree(root / "feeds", baseline / "feeds")
    runner = LuigiRunner(data_root=str(baseline), epoch=EPOCH.isoformat())
    for n in range(1, DAYS):
        for task in TASKS:
            assert runner.build(task, dt.date.fromisoformat(day(n))).succeeded
    return root, baseline


class Platform:
    """One deployment: a data home, a ledger file, an instance; Definitions per ledger."""

    def __init__(self, home: Path, ledger_file: Path, baseline: Path, monkeypatch) -> None:
        self.home, self.ledger_file, self.baseline = home, ledger_file, baseline
        monkeypatch.setenv("FIGSTREAM_HOME", str(home))
        monkeypatch.setenv("FIGSTREAM_LEDGER", str(ledger_file))
        self.instance = dg.DagsterInstance.ephemeral()
        self.streamed: set[str] = set()
        self.reload()

    def reload(self) -> None:
        import definitions

        self.ledger = load_ledger(self.ledger_file)
        self.defs = definitions.build_definitions(self.ledger)
        self.keys = {
            k.to_user_string() for k in self.defs.resolve_asset_graph().get_all_asset_keys()
        }

    def cli(self, *args: str) -> int:
        return main.main(["migration", *args, "--ledger", str(self.ledger_file),
                         "--home", str(self.home)])  # fmt: skip

    def job(self, name: str, **kwargs) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(name)
        return job.execute_in_process(instance=self.instance, raise_on_error=False, **kwargs)

    def has_job(self, name: str) -> bool:
        return any(job.name == name for job in self.defs.jobs or [])

    def stream(self, days: list[str]) -> None:
        """What the stream sensors and daily rollups do for these days (as range backfills)."""
        for name in ("postings_job", "boards_job"):
            if self.has_job(name):
                result = self.job(name, tags={
                    "dagster/asset_partition_range_start": hours(days[0])[0],
                    "dagster/asset_partition_range_end": hours(days[-1])[-1],
                })  # fmt: skip
                assert result.success
        if self.has_job("board_daily_stats_job"):
            result = self.job("board_daily_stats_job", tags={
                "dagster/asset_partition_range_start": days[0],
                "dagster/asset_partition_range_end": days[-1],
            })  # fmt: skip
            assert result.success

    def night(self, d: str) -> tuple[dg.ExecuteInProcessResult, dg.ExecuteInProcessResult]:
        """The nightly legacy run, then (as after_legacy_sensor asks) parity and publishing."""
        legacy = self.job("legacy_nightly_job", partition_key=d)
        assert legacy.success == (d != BAD_DAY), d
        result = self.job("migration_nightly_job", partition_key=d)
        assert result.success, d
        self.assert_published(d)
        return legacy, result

    def assert_published(self, d: str) -> None:
        for name, task in PUBLISHED.items():
            published = legacy_files.read_csv(self.home / "published" / d / f"{name}.csv")
            if d == BAD_DAY:
                assert published.num_rows > 0  # legacy died: the new side stands in
                continue
            expected = legacy_files.read_legacy(task, d, self.baseline)
            report = compare(expected, View(published), self.ledger.tasks[task].parity,
                             flaws.KNOWN_FLAWS)  # fmt: skip
            assert report.passed, f"{name} {d}: {report.to_markdown()}"

    def parity(self, task: str, d: str) -> str:
        return next(r for r in EvidenceStore(evidence_path(self.home)).results(task)
                    if r.partition_key == d).verdict  # fmt: skip


@pytest.fixture
def platform(data, tmp_path, monkeypatch) -> Platform:
    root, baseline = data
    home = tmp_path / "home"
    shutil.copytree(root, home, ignore=shutil.ignore_patterns("legacy"))
    ledger_file = tmp_path / "ledger.yaml"
    text = (PROJECT_ROOT / "platform" / "migration_ledger.yaml").read_text()
    for stage in ("shadow", "migrated", "retired"):
        text = text.replace(f"stage: {stage}", "stage: legacy")
    ledger_file.write_text(text)
    return Platform(home, ledger_file, baseline, monkeypatch)


def test_two_tasks_through_every_stage_and_a_rollback(platform: Platform, capsys):
    p = platform
    # Everything at legacy: Luigi only, no new asset, consumers read legacy.
    assert "raw_events" not in p.keys and "parity/parity_clean_postings" not in p.keys
    for n in (1, 2):
        p.night(day(n))

    # CleanPostings: shadow. The new assets it needs run; legacy stays authoritative.
    assert p.cli("advance", "CleanPostings") == 0
    p.reload()
    assert {"raw_events", "clean_postings", "parity/parity_clean_postings"} <= p.keys
    assert "deduped_postings" not in p.keys
    p.stream([day(n) for n in range(1, 6)])
    for n in (3, 4):
        p.night(day(n))
        assert p.parity("CleanPostings", day(n)) in ("clean", "explained")
    assert p.cli("advance", "CleanPostings") == 1  # 2 of 3 days
    assert "2/3" in capsys.readouterr().err
    p.night(day(5))
    assert p.cli("advance", "CleanPostings") == 0  # -> migrated
    assert p.cli("advance", "CleanPostings") == 0  # -> retired
    p.reload()
    bridge = p.defs.resolve_assets_def(dg.AssetKey(["legacy", "legacy_clean_postings"]))
    assert bridge.tags_by_key[bridge.key]["figstream/layer"] == "bridge"

    # Retired: Luigi's CleanPostings no longer runs, the bridge feeds DedupePostings.
    p.stream([day(6)])
    legacy, _ = p.night(day(6))
    (bridged,) = legacy.asset_materializations_for_node("legacy__legacy_clean_postings")
    assert bridged.metadata["bridged_from"].value.startswith("clean_postings")
    assert (p.home / "legacy" / day(6) / "cleaned.csv").exists()
    dedupe = legacy.asset_materializations_for_node("legacy__legacy_dedupe_postings")[0]
    assert dedupe.metadata["luigi_status"].value == "SUCCESS"

    # DedupePostings: shadow from the epoch, three clean days, migrated, then rolled back.
    assert p.cli("advance", "DedupePostings") == 0
    p.reload()
    p.stream([day(n) for n in range(1, 10)])
    for n in (7, 8, 9):
        p.night(day(n))
        assert p.parity("DedupePostings", day(n)) in ("clean", "explained")
    assert p.cli("advance", "DedupePostings") == 0
    assert load_ledger(p.ledger_file).stage("DedupePostings").value == "migrated"
    assert p.cli("rollback", "DedupePostings") == 0
    p.reload()
    assert load_ledger(p.ledger_file).stage("DedupePostings").value == "shadow"

    # The bad night: Luigi's ExtractFeeds dies on a bad record, but DedupePostings reads the
    # bridged (validated) cleaned.csv, so the retired task shields it: it runs and is in parity.
    p.stream([BAD_DAY])
    legacy, _ = p.night(BAD_DAY)
    assert legacy.asset_materializations_for_node("legacy__legacy_dedupe_postings")
    assert p.parity("DedupePostings", BAD_DAY) in ("clean", "explained")

    # Roll CleanPostings back from retired: its Luigi op returns at once.
    assert p.cli("rollback", "CleanPostings") == 0
    p.reload()
    restored = p.defs.resolve_assets_def(dg.AssetKey(["legacy", "legacy_clean_postings"]))
    assert "luigi" in restored.specs_by_key[restored.key].kinds

    # The UI's view of the ledger: the status asset says what the CLI says.
    (status,) = p.job("migration_status_job").asset_materializations_for_node("migration_status")
    assert status.metadata["CleanPostings_stage"].value == "migrated"
    assert status.metadata["DedupePostings_stage"].value == "shadow"
    assert status.metadata["DedupePostings_streak"].value == 3
    assert "| DedupePostings | shadow | 3/3 |" in status.metadata["ledger"].value


def test_a_broken_new_implementation_is_caught_and_blocked(platform: Platform, monkeypatch):
    p = platform
    real = views.TASKS["CleanPostings"]

    def broken(d, stores, epoch_day):
        view = real.render(d, stores, epoch_day)
        return View(view.table.slice(1), view.extra_outputs, view.context)  # drops a row

    monkeypatch.setitem(views.TASKS, "CleanPostings", dataclasses.replace(real, render=broken))
    assert p.cli("advance", "CleanPostings") == 0
    p.reload()
    p.stream([day(n) for n in range(1, 4)])
    for n in (1, 2, 3):
        _, result = p.night(day(n))
        assert p.parity("CleanPostings", day(n)) == "mismatch"
        check = result.get_asset_check_evaluations()[0]
        assert not check.passed and "only in legacy" in str(check.metadata["diff"].value).lower()
        assert check.description.startswith(f"{day(n)}: mismatch: 1 only in legacy")
        assert check.metadata["only_legacy"].value == 1 and check.metadata["matched"].value > 0
    assert p.cli("advance", "CleanPostings") == 1
    assert load_ledger(p.ledger_file).stage("CleanPostings").value == "shadow"


def test_a_night_legacy_dies_on_is_reported_and_consumers_get_the_new_side(platform: Platform):
    p = platform
    assert p.cli("advance", "CleanPostings") == 0
    assert p.cli("advance", "ActiveJobs") == 0
    p.reload()
    p.stream([day(n) for n in range(1, DAYS + 1)])
    p.night(day(1))
    _, result = p.night(BAD_DAY)  # legacy dies in ExtractFeeds: nothing downstream runs
    for task in ("CleanPostings", "ActiveJobs"):
        assert p.parity(task, BAD_DAY) == "legacy_failed"
    check = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.asset_key.path[-1] == "parity_clean_postings"
    )
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "known legacy flaw" in str(check.metadata["summary"].value)
    (published,) = result.asset_materializations_for_node("published__published_search_index")
    assert published.metadata["source"].value == "new"
    assert published.metadata["fallback"].value is True
