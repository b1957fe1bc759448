"""One day's parity verdict: compared, legacy failed on its input, or legacy not run yet."""

from __future__ import annotations

import pyarrow as pa
import pytest
from migration_world import ingest_world

from figstream.migration import legacy_files, views
from figstream.migration.gate import LEGACY_FAILED, EvidenceStore
from figstream.migration.ledger import ParitySpec, Stage, TaskEntry
from figstream.migration.parity import View
from figstream.migration.parity_check import (
    LEGACY_MISSING,
    DayCheck,
    check_day,
    record,
    summarise,
    without_legacy,
)
from figstream.migration.parity_report import ParityReport

EPOCH = "2026-11-01"


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    return ingest_world(tmp_path_factory.mktemp("ingested"))


TASK = "ExtractFeeds"
ENTRY = TaskEntry(
    stage=Stage.SHADOW,
    replaced_by="raw_events",
    parity_partitions_required=2,
    parity=ParitySpec(
        key=["event_id"],
        normalise={"event_time": ["timestamp"]},
        known_flaws=["no_validation", "arrived_after_cutoff"],
    ),
)


def report(verdict: str, **counts) -> ParityReport:
    fields = {"matched": 0, "only_legacy": 0, "only_new": 0, "differing": 0, **counts}
    return ParityReport(
        verdict=verdict, legacy_rows=0, new_rows=0, explained=fields.pop("explained", {}),
        unexplained={}, column_differences={}, samples={}, duplicate_keys={}, **fields,
    )  # fmt: skip


def day_check(day: str, verdict: str) -> DayCheck:
    return DayCheck(TASK, day, verdict, verdict, {"verdict": verdict}, verdict, 0, None)


@pytest.mark.parametrize(
    ("verdict", "passed", "warns"),
    [
        ("clean", True, False),
        ("explained", True, False),
        (LEGACY_FAILED, True, True),
        ("mismatch", False, False),
        ("new_missing", False, False),
        (LEGACY_MISSING, False, False),
    ],
)
def test_which_verdicts_pass_the_check_and_which_only_warn(verdict, passed, warns):
    check = day_check("2026-11-01", verdict)
    assert check.passed is passed
    assert check.known_legacy_flaw is warns


def test_without_legacy_dead_letters_mean_legacy_died_on_its_input():
    verdict, summary = without_legacy(1234, 5678)
    assert verdict == LEGACY_FAILED
    assert "dead-lettered 1,234 records" in summary and "5,678 rows" in summary
    verdict, summary = without_legacy(0, 5678)
    assert verdict == LEGACY_MISSING
    assert "run the legacy nightly job first" in summary


def test_summaries_count_rows_and_name_the_flaws_that_explain_them():
    assert summarise(report("clean", matched=1500)) == "clean: 1,500 rows match"
    explained = report("explained", matched=9, only_legacy=2, explained={"no_validation": 2})
    assert summarise(explained) == (
        "explained: 2 only in legacy; 0 only in new; 0 differ; "
        "explained by known legacy flaws: no_validation 2"
    )
    mismatch = report("mismatch", only_new=1, differing=3)
    assert summarise(mismatch) == "mismatch: 0 only in legacy; 1 only in new; 3 differ"


@pytest.mark.parametrize(
    ("which", "verdict", "passed"),
    [("bad_day", LEGACY_FAILED, True), ("clean_day", LEGACY_MISSING, False)],
)
def test_a_day_legacy_wrote_nothing_for(ingested, tmp_path, which, verdict, passed):
    day = getattr(ingested, which)
    check = check_day(TASK, day, ENTRY, ingested.stores, tmp_path, EPOCH)
    new_rows = views.render_new(TASK, day, ingested.stores, EPOCH).table.num_rows
    assert (check.verdict, check.passed) == (verdict, passed)
    assert check.legacy_rows is None and check.new_rows == new_rows > 0
    assert check.report == {"verdict": verdict, "new_rows": new_rows}
    if verdict == LEGACY_FAILED:
        assert f"dead-lettered {ingested.dead_letters(day):,} records" in check.summary


def test_legacy_output_equal_to_new_is_clean_and_one_changed_title_is_a_mismatch(
    ingested, tmp_path
):
    day = ingested.clean_day
    new = views.render_new(TASK, day, ingested.stores, EPOCH)
    legacy_files.write_legacy_outputs(TASK, day, new, tmp_path)
    check = check_day(TASK, day, ENTRY, ingested.stores, tmp_path, EPOCH)
    assert (check.verdict, check.passed) == ("clean", True)
    assert check.legacy_rows == check.new_rows == new.table.num_rows
    assert check.summary == f"clean: {new.table.num_rows:,} rows match"

    titles = new.table["title"].to_pylist()
    titles[0] = f"{titles[0]} (changed)"
    changed = new.table.set_column(
        new.table.column_names.index("title"), "title", pa.array(titles, pa.string())
    )
    legacy_files.write_legacy_outputs(TASK, day, View(changed), tmp_path)
    check = check_day(TASK, day, ENTRY, ingested.stores, tmp_path, EPOCH)
    assert (check.verdict, check.passed, check.known_legacy_flaw) == ("mismatch", False, False)
    assert "1 differ" in check.summary
    assert check.report["column_differences"] == {"title": 1}


def test_recorded_days_make_the_streak_a_legacy_failure_is_skipped(tmp_path):
    evidence = EvidenceStore(tmp_path / "migration.sqlite")
    text = record(evidence, day_check("2026-11-01", "clean"), ENTRY, run_id="run-1")
    assert text == "1/2 consecutive clean days through 2026-11-01"
    (stored,) = evidence.results(TASK)
    assert (stored.verdict, stored.stage, stored.run_id) == ("clean", "shadow", "run-1")
    text = record(evidence, day_check("2026-11-02", LEGACY_FAILED), ENTRY)
    assert text == (
        "1/2 consecutive clean days through 2026-11-02; "
        "legacy failed on its input on 2026-11-02 (skipped)"
    )
    text = record(evidence, day_check("2026-11-03", "mismatch"), ENTRY)
    assert text.startswith("0/2") and "broken by mismatch on 2026-11-03" in text
