"""One day's parity check of one legacy task: read both sides, reach a verdict, record it.

The verdict of a day:

* legacy has an output: :func:`figstream.migration.parity.compare` decides (``clean``,
  ``explained`` by declared legacy flaws, or ``mismatch``); the check passes on the first two;
* legacy has none, and the new side dead-lettered records that day: ``legacy_failed``, the
  known legacy flaw (one bad record fails its night). The check passes with a warning, and the
  cutover gate neither counts the day nor lets it break a streak;
* legacy has none and nothing was dead-lettered: ``legacy_missing``, the legacy night has not
  run yet. The check fails.

Records that landed after the feed dump's cut-off are handed to the flaw rules as context, so
a difference they cause is explained rather than a mismatch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from figstream.migration import flaws, legacy_files, views
from figstream.migration.gate import (
    LEGACY_FAILED,
    PASSED,
    EvidenceStore,
    ParityResult,
    describe_streak,
    streak,
)
from figstream.migration.ledger import TaskEntry
from figstream.migration.mirror import after_cutoff
from figstream.migration.parity import compare
from figstream.migration.parity_report import ParityReport
from figstream.streaming.stores import Stores, day_partitions

LEGACY_MISSING = "legacy_missing"


@dataclass(frozen=True)
class DayCheck:
    """A day's verdict with what the asset check shows: a one-line ``summary``, the report as
    a dict and as markdown, and the row counts (``legacy_rows`` is None without an output)."""

    task: str
    day: str
    verdict: str
    summary: str
    report: dict[str, Any]
    markdown: str
    new_rows: int
    legacy_rows: int | None

    @property
    def passed(self) -> bool:
        return self.verdict in (*PASSED, LEGACY_FAILED)

    @property
    def known_legacy_flaw(self) -> bool:
        """Legacy failed on its input: a warning, not an error, since new did what it should."""
        return self.verdict == LEGACY_FAILED


def summarise(report: ParityReport) -> str:
    """One line for a compared day: the match count, or the differences by category and the
    known flaws that explain some of them."""
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


def without_legacy(dead_lettered: int, new_rows: int) -> tuple[str, str]:
    """The verdict and summary of a day legacy has no output for, given how many records the
    new side dead-lettered that day and how many rows it materialised."""
    if dead_lettered:
        return LEGACY_FAILED, (
            f"known legacy flaw: legacy produced no output (one bad record fails its night); "
            f"the new side dead-lettered {dead_lettered:,} records that day and materialised "
            f"{new_rows:,} rows"
        )
    return LEGACY_MISSING, "legacy has no output for the day: run the legacy nightly job first"


def check_day(
    task: str, day: str, entry: TaskEntry, stores: Stores, data_root: Path, epoch_day: str
) -> DayCheck:
    """Compare legacy ``task``'s output of ``day`` with the new side's, per ``entry.parity``."""
    new = views.render_new(task, day, stores, epoch_day)
    late = after_cutoff(stores, day)
    if late is not None:
        new = dataclasses.replace(new, context={**new.context, "after_cutoff": late})
    new_rows = new.table.num_rows
    legacy = legacy_files.read_legacy(task, day, data_root)
    if legacy is None:
        dead = sum(stores.dead_letters.count(partition_key=p) for p in day_partitions(day))
        verdict, summary = without_legacy(dead, new_rows)
        report = {"verdict": verdict, "new_rows": new_rows}
        return DayCheck(task, day, verdict, summary, report, summary, new_rows, None)
    compared = compare(legacy, new, entry.parity, flaws.KNOWN_FLAWS)
    return DayCheck(
        task,
        day,
        compared.verdict,
        summarise(compared),
        compared.to_dict(),
        compared.to_markdown(),
        new_rows,
        legacy.num_rows,
    )


def record(
    evidence: EvidenceStore, check: DayCheck, entry: TaskEntry, run_id: str | None = None
) -> str:
    """Store the day's result as evidence for the cutover gate; returns the task's streak as
    it stands with it."""
    evidence.record(
        ParityResult(
            task=check.task,
            partition_key=check.day,
            verdict=check.verdict,
            stage=entry.stage.value,
            summary=check.summary,
            report=check.report,
            checked_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            run_id=run_id,
        )
    )
    required = entry.parity_partitions_required
    return describe_streak(streak(evidence.results(check.task), required), required)
