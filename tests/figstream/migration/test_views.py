"""Legacy outputs against the new side rendered in their format, on generated days.

One small world per module: three generated days (clean, so legacy does not die, with the
board merger on the second), the real Luigi tasks run on the feed dump, and the streaming
steps run on the landing zone (what a backfill runs). Every parity verdict below comes from
``figstream.migration.parity.compare`` with the specs in the repository's ledger.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import luigi
import luigi.configuration
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from figstream.ingest.dataset import generate
from figstream.migration import flaws, legacy_files, views
from figstream.migration.ledger import load_ledger
from figstream.migration.parity import View, compare
from figstream.migration.parity_report import Differences, ParityReport
from figstream.streaming import (
    cleaning,
    daily,
    dedupe,
    index_export,
    ingest,
    jobs,
    landing_index,
    tables,
)
from figstream.streaming import stores as streaming_stores
from legacy import pipeline

ROOT = Path(__file__).resolve().parents[3]
LEDGER = load_ledger(ROOT / "platform" / "migration_ledger.yaml")
EPOCH = "2026-11-01"
DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
MERGER_DAY = DAYS[1]


@contextlib.contextmanager
def legacy_config(data_root: Path) -> Iterator[None]:
    """Point Luigi's ``[legacy]`` section at ``data_root``; restore it afterwards."""
    config = luigi.configuration.get_config()
    saved = {
        option: config.get("legacy", option) if config.has_option("legacy", option) else None
        for option in ("data_root", "epoch")
    }
    config.set("legacy", "data_root", str(data_root))
    config.set("legacy", "epoch", EPOCH)
    try:
        yield
    finally:
        for option, value in saved.items():
            if value is None:
                config.remove_option("legacy", option)
            else:
                config.set("legacy", option, value)


def run_legacy(data_root: Path, tasks: list[luigi.Task]) -> None:
    with legacy_config(data_root):
        result = luigi.build(tasks, local_scheduler=True, detailed_summary=True, log_level="ERROR")
    assert result.scheduling_succeeded, result.summary_text


def make_stores(home: Path) -> streaming_stores.Stores:
    return streaming_stores.Stores.local(home, f"{EPOCH}-00:00")


def run_streaming(stores: streaming_stores.Stores, days: list[str]) -> None:
    """The streaming assets' steps as a backfill runs them: every landed batch, every hour."""
    touched = set()
    for stream in streaming_stores.INGEST_TABLES:
        landing_index.catch_up_index(stores, stream)
        for partition in [p for day in days for p in streaming_stores.day_partitions(day)]:
            keys = stores.state.batches_for(stream, partition)
            if keys:
                ingest.ingest(stores, stream, partition, keys)
                touched.add(partition)
    partitions = sorted(touched)
    cleaning.clean(stores, partitions, None)
    dedupe.dedupe(stores, partitions, None)
    jobs.update_job_state(stores, partitions, None)
    index_export.export_changes(stores, partitions, None)
    daily.board_daily_stats(stores, days, EPOCH)


@dataclass(frozen=True)
class World:
    home: Path
    stores: streaming_stores.Stores

    def legacy(self, task: str, day: str) -> pa.Table:
        table = legacy_files.read_legacy(task, day, self.home)
        assert table is not None, f"legacy {task} wrote nothing for {day}"
        return table

    def new(self, task: str, day: str) -> View:
        return views.render_new(task, day, self.stores, EPOCH)

    def compare(self, task: str, day: str, new: View | None = None) -> ParityReport:
        new = new if new is not None else self.new(task, day)
        spec = LEDGER.tasks[task].parity
        return compare(self.legacy(task, day), new, spec, flaws.KNOWN_FLAWS)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    home = tmp_path_factory.mktemp("views")
    generate(
        home, dt.date.fromisoformat(EPOCH), len(DAYS), 2000, seed=7, clean_days=len(DAYS),
        progress=False,
    )  # fmt: skip
    stores = make_stores(home)
    run_streaming(stores, DAYS)
    run_legacy(
        home,
        [
            task(date=dt.date.fromisoformat(day))
            for day in DAYS
            for task in (pipeline.BoardStats, pipeline.SeoRedirects)
        ],
    )
    return World(home, stores)


def test_formats_and_paths_are_legacy_own() -> None:
    assert list(views.EVENT_COLUMNS) == pipeline.EVENT_COLUMNS
    assert list(views.SNAPSHOT_COLUMNS) == pipeline.SNAPSHOT_COLUMNS
    assert list(views.DUPLICATE_COLUMNS) == pipeline.DUPLICATE_COLUMNS
    assert list(views.STATS_COLUMNS) == pipeline.STATS_COLUMNS
    assert all(views.supports(t.__name__) for t in pipeline.TASKS)
    assert not views.supports("NoSuchTask")
    root = Path("/data")
    with legacy_config(root):
        for task, names in views.LEGACY_OUTPUTS.items():
            targets = luigi.task.flatten(
                getattr(pipeline, task)(date=dt.date(2026, 11, 2)).output()
            )
            paths = {Path(t.path) for t in targets}
            assert paths == {legacy_files.legacy_dir(root, "2026-11-02") / name for name in names}
            spec = LEDGER.tasks[task].parity
            assert spec is not None, f"{task} has no parity spec in the ledger"
            assert set(spec.known_flaws) <= set(flaws.KNOWN_FLAWS)


def test_every_task_every_day_is_in_parity(world: World) -> None:
    verdicts = {}
    for day in DAYS:
        for task in views.LEGACY_OUTPUTS:
            report = world.compare(task, day)
            assert report.passed, f"{task} {day}:\n{report.to_markdown()}"
            verdicts[task, day] = report
    for day in DAYS:
        # these two are exact up to the declared normalisers: no flaw needed
        assert verdicts["ExtractFeeds", day].verdict == "clean"
        assert verdicts["CleanPostings", day].verdict == "clean"
    # the day-local dedupe shows from the second day on, and its rules carry it
    explained = verdicts["DedupePostings", MERGER_DAY]
    assert explained.verdict == "explained"
    assert explained.explained["day_local_dedupe"] == explained.only_legacy > 0
    for task in ("ActiveJobs", "BoardStats"):
        assert verdicts[task, MERGER_DAY].verdict == "explained"


def test_extracted_csv_is_rendered_byte_for_byte(world: World, tmp_path: Path) -> None:
    for day in DAYS:
        (path,) = legacy_files.write_legacy_outputs(
            "ExtractFeeds", day, world.new("ExtractFeeds", day), tmp_path
        )
        legacy = legacy_files.legacy_dir(world.home, day) / "extracted.csv"
        assert path.read_bytes() == legacy.read_bytes()


def test_bridge_feeds_legacy_dedupe_which_stays_in_parity(world: World, tmp_path: Path) -> None:
    """CleanPostings retired: its cleaned.csv comes from the new side, and Luigi runs
    DedupePostings on it without running CleanPostings (or ExtractFeeds, or the feeds)."""
    bridged = tmp_path / "bridged"
    day = MERGER_DAY
    written = legacy_files.write_legacy_outputs(
        "CleanPostings", day, world.new("CleanPostings", day), bridged
    )
    assert written == [legacy_files.legacy_dir(bridged, day) / "cleaned.csv"]
    before = written[0].read_bytes()

    run_legacy(bridged, [pipeline.DedupePostings(date=dt.date.fromisoformat(day))])

    out = legacy_files.legacy_dir(bridged, day)
    assert sorted(p.name for p in out.iterdir()) == ["cleaned.csv", "deduped.csv", "duplicates.csv"]
    assert written[0].read_bytes() == before
    report = compare(
        world.legacy("DedupePostings", day),
        View(legacy_files.read_legacy("DedupePostings", day, bridged)),
        LEDGER.tasks["DedupePostings"].parity,
        flaws.KNOWN_FLAWS,
    )
    assert report.verdict == "clean", report.to_markdown()
    all_legacy = legacy_files.legacy_dir(world.home, day) / "duplicates.csv"
    assert (out / "duplicates.csv").read_bytes() == all_legacy.read_bytes()


def test_bridged_outputs_feed_every_legacy_consumer(world: World, tmp_path: Path) -> None:
    """Every task up to ActiveJobs retired for every day: Luigi's BoardStats and SeoRedirects
    still run on what the bridge wrote (the snapshot's times, salaries and flags parse), and
    Luigi re-runs none of the retired tasks."""
    bridged = tmp_path / "bridged"
    retired = [task for task in views.LEGACY_OUTPUTS if task != "BoardStats"]
    for day in DAYS:
        for task in retired:
            legacy_files.write_legacy_outputs(task, day, world.new(task, day), bridged)
    written = {p: p.stat().st_mtime_ns for p in (bridged / "legacy").rglob("*.csv")}

    consumers = [
        task(date=dt.date.fromisoformat(day))
        for task in (pipeline.BoardStats, pipeline.SeoRedirects)
        for day in DAYS
    ]
    run_legacy(bridged, consumers)

    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing retired re-ran
    # legacy's stats over the bridged snapshot hold the new stats' active jobs and salaries
    # (their counts come from the bridged deduped.csv, which has the new, cross-day dedupe)
    spec = LEDGER.tasks["BoardStats"].parity.model_copy(
        update={"ignore": ["postings", "updates", "expiries"], "known_flaws": []}
    )
    for day in DAYS:
        bridged_stats = legacy_files.read_legacy("BoardStats", day, bridged)
        assert compare(bridged_stats, world.new("BoardStats", day), spec).verdict == "clean"
    reasons = legacy_files.read_csv(legacy_files.legacy_dir(bridged, MERGER_DAY) / "redirects.csv")[
        "reason"
    ]
    assert "board_merged" in reasons.to_pylist()


def test_a_broken_new_implementation_is_a_mismatch(world: World) -> None:
    day = DAYS[0]
    good = world.new("CleanPostings", day)
    assert world.compare("CleanPostings", day, good).verdict == "clean"

    dropped = replace(good, table=good.table.slice(1))
    report = world.compare("CleanPostings", day, dropped)
    assert report.verdict == "mismatch"
    assert report.unexplained == {"only_legacy": 1, "only_new": 0, "differing": 0}

    salaries = good.table["salary_min"].to_pylist()
    row = next(i for i, s in enumerate(salaries) if s)
    salaries[row] = str(int(salaries[row]) + 1000)
    index = good.table.schema.get_field_index("salary_min")
    altered = replace(good, table=good.table.set_column(index, "salary_min", pa.array(salaries)))
    report = world.compare("CleanPostings", day, altered)
    assert report.verdict == "mismatch"
    assert report.column_differences == {"salary_min": 1}

    # a wrong count in the stats is not taken for the day-local dedupe's doing
    stats = world.new("BoardStats", MERGER_DAY)
    counts = [str(int(n) + 1) for n in stats.table["active_jobs"].to_pylist()]
    index = stats.table.schema.get_field_index("active_jobs")
    broken = replace(stats, table=stats.table.set_column(index, "active_jobs", pa.array(counts)))
    assert world.compare("BoardStats", MERGER_DAY, stats).passed
    assert world.compare("BoardStats", MERGER_DAY, broken).verdict == "mismatch"

    # and a job missing from the index is not either
    index_view = world.new("ActiveJobs", MERGER_DAY)
    legacy_ids = world.legacy("ActiveJobs", MERGER_DAY)["job_id"]
    shared = pc.is_in(index_view.table["job_id"], legacy_ids)
    victim = index_view.table.filter(shared)["job_id"][0]
    missing = replace(
        index_view, table=index_view.table.filter(pc.not_equal(index_view.table["job_id"], victim))
    )
    report = world.compare("ActiveJobs", MERGER_DAY, missing)
    assert report.verdict == "mismatch"
    assert report.unexplained["only_legacy"] == 1


def test_day_local_dedupe_explains_only_its_rows(world: World) -> None:
    day = MERGER_DAY
    legacy = world.legacy("DedupePostings", day)
    new = world.new("DedupePostings", day)
    baseline = world.compare("DedupePostings", day, new)
    assert baseline.verdict == "explained"

    # a job that is no duplicate on either side, missing from the new rendering
    duplicates = new.context["duplicates"]["job_id"]
    plain = pc.invert(pc.is_in(legacy["job_id"], duplicates))
    victim = legacy.filter(pc.and_(plain, pc.equal(legacy["event_type"], "job.posted")))[
        "event_id"
    ][0]
    broken = replace(new, table=new.table.filter(pc.not_equal(new.table["event_id"], victim)))
    report = world.compare("DedupePostings", day, broken)
    assert report.verdict == "mismatch"
    assert report.unexplained == {"only_legacy": 1, "only_new": 0, "differing": 0}
    assert report.explained == baseline.explained

    # the rule itself: true exactly for the rows of jobs only the new side calls duplicates
    only_legacy = legacy.filter(pc.invert(pc.is_in(legacy["event_id"], new.table["event_id"])))
    empty = pa.table({"event_id": pa.array([], pa.string())})
    differences = Differences(only_legacy, empty, empty)
    mask = flaws.KNOWN_FLAWS["day_local_dedupe"](differences, new.context).only_legacy
    local = new.context["day_local_duplicates"]["job_id"]
    expected = pc.and_(
        pc.is_in(only_legacy["job_id"], duplicates),
        pc.invert(pc.is_in(only_legacy["job_id"], local)),
    )
    assert mask.to_pylist() == expected.to_pylist()
    assert all(mask.to_pylist())


def test_no_validation_explains_only_dead_lettered_events() -> None:
    rows = pa.table({"event_id": ["e-absurd", "e-other"], "job_id": ["j1", "j2"]})
    none = pa.table({"event_id": pa.array([], pa.string())})
    context = {"dead_letters": pa.table({"event_id": ["e-absurd"], "code": ["invalid_value"]})}
    explained = flaws.KNOWN_FLAWS["no_validation"](Differences(rows, none, none), context)
    assert explained.only_legacy.to_pylist() == [True, False]
    assert len(explained.only_new) == 0 and len(explained.differing) == 0
    # without its context a rule explains nothing
    assert flaws.KNOWN_FLAWS["no_validation"](
        Differences(rows, none, none), {}
    ).only_legacy.to_pylist() == [False, False]


text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
STATS = ["date", "board", "avg_salary_min"]


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(text, text, text), max_size=6))
@example(rows=[("\r", "", "")])  # a bare "\r" line: DictReader skips the empty row it makes
def test_read_legacy_reads_what_legacy_reads(tmp_path_factory, rows) -> None:
    root = tmp_path_factory.mktemp("csv")
    path = legacy_files.legacy_dir(root, "2026-11-02") / "board_stats.csv"
    target = luigi.LocalTarget(str(path), format=pipeline.CSV_FORMAT)
    pipeline.write_csv(target, STATS, [dict(zip(STATS, row, strict=True)) for row in rows])

    table = legacy_files.read_legacy("BoardStats", "2026-11-02", root)
    as_legacy_reads = [tuple(r[c] or "" for c in STATS) for r in pipeline.read_csv(target)]
    assert table.column_names == STATS
    assert [tuple(r.values()) for r in table.to_pylist()] == as_legacy_reads
    if not any("\r" in value for row in rows for value in row):
        assert as_legacy_reads == rows
        # the bridge writes the very bytes legacy's write_csv does
        assert legacy_files.csv_bytes(table) == path.read_bytes()

    # what the bridge writes, legacy reads back intact, even where legacy's own writer fails
    path.write_bytes(
        legacy_files.csv_bytes(pa.table(list(zip(*rows, strict=True)) or [[]] * 3, names=STATS))
    )
    assert [tuple(r.values()) for r in pipeline.read_csv(target)] == rows


def test_read_legacy_of_a_day_legacy_did_not_write(tmp_path: Path) -> None:
    assert legacy_files.read_legacy("BoardStats", "2026-11-02", tmp_path) is None


def test_write_legacy_outputs_checks_and_writes_atomically(tmp_path: Path) -> None:
    duplicates = pa.table({"job_id": ["b-2"], "duplicate_of_job_id": ["a-1"]})
    events = pa.table({c: [""] for c in views.EVENT_COLUMNS})
    with pytest.raises(ValueError, match=r"duplicates\.csv"):
        legacy_files.write_legacy_outputs("DedupePostings", "2026-11-02", View(events), tmp_path)
    with pytest.raises(ValueError, match="columns"):
        legacy_files.write_legacy_outputs(
            "DedupePostings",
            "2026-11-02",
            View(duplicates, {"duplicates.csv": duplicates}),
            tmp_path,
        )
    assert not (tmp_path / "legacy").exists()

    view = View(events, {"duplicates.csv": duplicates})
    paths = legacy_files.write_legacy_outputs("DedupePostings", "2026-11-02", view, tmp_path)
    assert [p.name for p in paths] == ["deduped.csv", "duplicates.csv"]
    paths = legacy_files.write_legacy_outputs(
        "DedupePostings", "2026-11-02", view, tmp_path
    )  # again
    directory = legacy_files.legacy_dir(tmp_path, "2026-11-02")
    assert sorted(os.listdir(directory)) == ["deduped.csv", "duplicates.csv"]  # no temp files
    assert (directory / "duplicates.csv").read_text() == "job_id,duplicate_of_job_id\nb-2,a-1\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o666 & ~umask
    with open(paths[0], newline="") as f:
        assert next(csv.reader(f)) == list(views.EVENT_COLUMNS)


def test_end_of_day_index_is_the_index_as_of_that_day(world: World) -> None:
    stores = world.stores
    last = daily.end_of_day_index(stores, DAYS[-1], EPOCH)
    assert last.column_names == tables.SEARCH_INDEX_COLUMNS
    # nothing happened after the last day, so it is the index the store serves
    served = index_export.current_index(stores.objects)
    # the served index carries v2's columns too; the end-of-day one keeps legacy's shape
    assert last.equals(served.select(last.column_names).cast(last.schema))
    assert daily.end_of_day_index(stores, "2026-10-31", EPOCH).num_rows == 0
    first = daily.end_of_day_index(stores, DAYS[0], EPOCH)
    assert first.num_rows < last.num_rows
    # no daily copy of the state is kept: the day rows in the store are the only source
    assert not stores.objects.list("tables/board_daily_stats/_end_of_day/")
