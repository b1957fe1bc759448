"""The cutover gate and ledger edits.

Bad inputs tried: an unknown task, advancing without evidence, with a streak too short, broken
by a mismatch, by an unchecked day, by a missing new output; rolling back from legacy and to a
later stage; a ledger that is invalid on disk; a ledger changed between read and write; an
unknown verdict; the CLI with a missing ledger file.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from figstream.cli import main
from figstream.migration.gate import (
    EvidenceStore,
    MigrationError,
    ParityResult,
    advance,
    rollback,
    set_stage,
    status,
    streak,
)
from figstream.migration.ledger import Stage, load_ledger
from figstream.settings import PROJECT_ROOT

REPO_LEDGER = PROJECT_ROOT / "platform" / "migration_ledger.yaml"


@pytest.fixture
def ledger_file(tmp_path):
    path = tmp_path / "ledger.yaml"
    shutil.copy(REPO_LEDGER, path)
    text = path.read_text()
    # Start from every task at legacy, whatever stage the shipped ledger is at.
    for stage in ("shadow", "migrated", "retired"):
        text = text.replace(f"stage: {stage}", "stage: legacy")
    path.write_text(text)
    return path


@pytest.fixture
def evidence(tmp_path):
    return EvidenceStore(tmp_path / "migration.sqlite")


def result(task: str, day: str, verdict: str = "clean") -> ParityResult:
    return ParityResult(task, day, verdict, "shadow", verdict, {}, "2026-11-28T00:00:00+00:00")


def days(first: str, n: int) -> list[str]:
    start = dt.date.fromisoformat(first)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(n)]


def test_streak_counts_consecutive_passing_days_back_from_the_newest():
    rs = [result("T", d) for d in days("2026-11-01", 4)]
    rs[0] = result("T", "2026-11-01", "mismatch")
    ordered = sorted(rs, key=lambda r: r.partition_key, reverse=True)
    s = streak(ordered, 3)
    assert (s.clean, s.through, s.broken_by) == (3, "2026-11-04", None)
    s = streak(ordered, 5)
    assert s.clean == 3 and s.broken_by.partition_key == "2026-11-01"


def test_streak_skips_legacy_failures_but_an_unchecked_day_breaks_it():
    rs = [
        result("T", "2026-11-05"),
        result("T", "2026-11-04", "legacy_failed"),
        result("T", "2026-11-03"),
        result("T", "2026-11-01"),  # 11-02 never checked
    ]
    s = streak(rs, 3)
    assert s.clean == 2 and s.skipped == ["2026-11-04"] and s.gap == "2026-11-02"
    assert streak(rs, 2).clean == 2


def test_explained_counts_and_new_missing_breaks():
    rs = [result("T", "2026-11-03", "explained"), result("T", "2026-11-02", "new_missing")]
    s = streak(rs, 2)
    assert s.clean == 1 and s.broken_by.verdict == "new_missing"


def test_unknown_verdict_is_refused(evidence):
    with pytest.raises(ValueError, match="unknown parity verdict"):
        evidence.record(result("T", "2026-11-01", "fine"))


def test_advance_to_shadow_needs_no_evidence_then_the_gate_holds(ledger_file, evidence):
    change = advance(ledger_file, "CleanPostings", evidence)
    assert (change.before, change.after) == (Stage.LEGACY, Stage.SHADOW)
    assert load_ledger(ledger_file).stage("CleanPostings") is Stage.SHADOW
    with pytest.raises(MigrationError, match=r"needs 3 consecutive clean parity days.*0/3"):
        advance(ledger_file, "CleanPostings", evidence)
    for day in days("2026-11-01", 2):
        evidence.record(result("CleanPostings", day))
    with pytest.raises(MigrationError, match="2/3"):
        advance(ledger_file, "CleanPostings", evidence)
    evidence.record(result("CleanPostings", "2026-11-03", "mismatch"))
    with pytest.raises(MigrationError, match="broken by mismatch on 2026-11-03"):
        advance(ledger_file, "CleanPostings", evidence)
    # A re-check of the day replaces its result.
    evidence.record(result("CleanPostings", "2026-11-03", "explained"))
    assert advance(ledger_file, "CleanPostings", evidence).after is Stage.MIGRATED
    assert advance(ledger_file, "CleanPostings", evidence).after is Stage.RETIRED
    with pytest.raises(MigrationError, match="already retired"):
        advance(ledger_file, "CleanPostings", evidence)
    log = evidence.changes("CleanPostings")
    assert [(c["from"], c["to"]) for c in log] == [
        ("legacy", "shadow"), ("shadow", "migrated"), ("migrated", "retired")
    ]  # fmt: skip
    assert log[1]["evidence"]["streak"] == 3


def test_rollback_goes_back_one_or_to_any_earlier_stage(ledger_file, evidence):
    with pytest.raises(MigrationError, match="at legacy already"):
        rollback(ledger_file, "ActiveJobs", evidence)
    set_stage(ledger_file, "ActiveJobs", Stage.LEGACY, Stage.RETIRED)
    assert rollback(ledger_file, "ActiveJobs", evidence).after is Stage.MIGRATED
    with pytest.raises(MigrationError, match="earlier stage"):
        rollback(ledger_file, "ActiveJobs", evidence, to=Stage.RETIRED)
    assert rollback(ledger_file, "ActiveJobs", evidence, to=Stage.LEGACY).after is Stage.LEGACY
    assert load_ledger(ledger_file).stage("ActiveJobs") is Stage.LEGACY


def test_edits_keep_comments_and_touch_only_the_stage(ledger_file, evidence):
    before = ledger_file.read_text()
    advance(ledger_file, "DedupePostings", evidence)
    after = ledger_file.read_text()
    assert "# The migration ledger" in after
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 1 and changed[0][1].strip() == "stage: shadow"
    assert not list(ledger_file.parent.glob(f".{ledger_file.name}.*.tmp"))


def test_a_ledger_changed_meanwhile_is_not_overwritten(ledger_file):
    set_stage(ledger_file, "BoardStats", Stage.LEGACY, Stage.SHADOW)
    with pytest.raises(MigrationError, match="changed meanwhile"):
        set_stage(ledger_file, "BoardStats", Stage.LEGACY, Stage.SHADOW)


def test_unknown_task_and_invalid_ledger_are_refused(ledger_file, evidence):
    with pytest.raises(MigrationError, match="no task 'Nope'"):
        advance(ledger_file, "Nope", evidence)
    ledger_file.write_text(ledger_file.read_text().replace("stage: legacy", "stage: lgacy", 1))
    with pytest.raises(ValueError, match=r"ExtractFeeds\.stage"):
        advance(ledger_file, "CleanPostings", evidence)


def test_status_reports_streak_last_diff_and_next_step(ledger_file, evidence):
    advance(ledger_file, "CleanPostings", evidence)
    evidence.record(result("CleanPostings", "2026-11-01"))
    rows = {r.task: r for r in status(load_ledger(ledger_file), evidence)}
    row = rows["CleanPostings"]
    assert row.stage is Stage.SHADOW and row.streak.clean == 1 and row.last.verdict == "clean"
    assert "needs 3" in row.next_step
    assert rows["ExtractFeeds"].next_step == "can advance to shadow"


def test_cli_status_advance_rollback(ledger_file, tmp_path, capsys):
    common = ["--ledger", str(ledger_file), "--home", str(tmp_path)]
    assert main.main(["migration", "advance", "CleanPostings", *common]) == 0
    assert "legacy -> shadow" in capsys.readouterr().out
    assert main.main(["migration", "advance", "CleanPostings", *common]) == 1
    assert "needs 3 consecutive clean parity days" in capsys.readouterr().err
    assert main.main(["migration", "status", *common]) == 0
    out = capsys.readouterr().out
    assert "CleanPostings" in out and "shadow" in out and "0/3" in out
    assert main.main(["migration", "rollback", "CleanPostings", *common]) == 0
    assert "shadow -> legacy" in capsys.readouterr().out
    missing = ["--ledger", str(tmp_path / "nope.yaml"), "--home", str(tmp_path)]
    assert main.main(["migration", "status", *missing]) == 1
    assert "cannot read the migration ledger" in capsys.readouterr().err


def test_a_webserver_that_cannot_be_reached_is_reported_not_fatal(ledger_file, tmp_path, capsys):
    from conftest import free_port

    common = ["--ledger", str(ledger_file), "--home", str(tmp_path)]
    url = f"http://127.0.0.1:{free_port()}"
    assert main.main(["migration", "advance", "BoardStats", *common, "--webserver", url]) == 0
    out = capsys.readouterr().out
    assert "legacy -> shadow" in out and f"Could not reach {url}" in out
    assert load_ledger(ledger_file).stage("BoardStats") is Stage.SHADOW
