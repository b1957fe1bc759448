"""The strangler-fig control plane: parity evidence, the cutover gate and safe ledger edits.

A legacy task moves ``legacy -> shadow -> migrated -> retired`` one stage at a time and can
roll back to any earlier stage in one step. Leaving ``shadow`` (and retiring) needs parity
evidence: the task's last ``parity_partitions_required`` daily partitions, consecutive days,
each compared clean (or with every difference explained by a declared legacy flaw).

A day on which legacy produced nothing because it died on its input (the flaw figstream
exists to remove) has no comparison: it neither counts towards the streak nor breaks it,
and ``status`` says so. A day that was never checked, or whose check found an unexplained
difference or a missing new output, breaks the streak.

Every stage change edits the ledger under a lock: the edited text must parse as a valid
ledger with exactly that change before it replaces the file (temp file, fsync, rename,
fsync of the directory), comments and layout are kept (ruamel round trip), and the change
is logged with its evidence in the evidence store.

Bad inputs tried (``tests/figstream/test_migration.py``): unknown task, skipping a stage,
advancing without evidence, with a broken streak, with a mismatch in it, rolling back to a
later stage or from ``legacy``, a ledger that is invalid on disk before the edit, a ledger
edited by someone else between read and write (the lock), an unknown verdict.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from ruamel.yaml import YAML

from figstream.migration.ledger import Ledger, LedgerError, Stage, parse_ledger
from figstream.settings import data_home
from figstream.storage.files import write_atomic
from figstream.storage.sqlite import SqliteDatabase

ORDER = [Stage.LEGACY, Stage.SHADOW, Stage.MIGRATED, Stage.RETIRED]
# Verdicts a parity check records for one (task, day).
PASSED = ("clean", "explained")
LEGACY_FAILED = "legacy_failed"  # legacy died on its input: no comparison possible
VERDICTS = (*PASSED, "mismatch", "new_missing", "legacy_missing", LEGACY_FAILED)


class MigrationError(ValueError):
    """A stage change that is refused; the message says why and what would unblock it."""


def evidence_path(home: Path | None = None) -> Path:
    """``$FIGSTREAM_HOME/state/migration.sqlite``."""
    return (home or data_home()) / "state" / "migration.sqlite"


_DDL = """
CREATE TABLE IF NOT EXISTS parity (
    task TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    verdict TEXT NOT NULL,
    stage TEXT NOT NULL,
    summary TEXT NOT NULL,
    report TEXT NOT NULL,
    checked_at TEXT NOT NULL,
    run_id TEXT,
    PRIMARY KEY (task, partition_key)
);
CREATE TABLE IF NOT EXISTS stage_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    from_stage TEXT NOT NULL,
    to_stage TEXT NOT NULL,
    at TEXT NOT NULL,
    evidence TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class ParityResult:
    task: str
    partition_key: str
    verdict: str
    stage: str
    summary: str
    report: dict[str, Any]
    checked_at: str
    run_id: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict in PASSED


@dataclass(frozen=True)
class Streak:
    """The evidence for a task: ``clean`` consecutive passing days, ending at ``through``."""

    clean: int
    through: str | None
    skipped: list[str]  # days legacy failed on its input, inside the streak
    broken_by: ParityResult | None  # the newest result that is not passing, if any ends it
    gap: str | None  # the newest day inside the window that was never checked, if that ends it


class EvidenceStore:
    """Parity results per (task, day) (the latest check wins) and the stage-change log."""

    def __init__(self, path: str | Path) -> None:
        self.db = SqliteDatabase(path, _DDL)

    def record(self, result: ParityResult) -> None:
        if result.verdict not in VERDICTS:
            raise ValueError(f"unknown parity verdict {result.verdict!r} (known: {VERDICTS})")
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO parity VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.task,
                    result.partition_key,
                    result.verdict,
                    result.stage,
                    result.summary,
                    orjson.dumps(result.report).decode(),
                    result.checked_at,
                    result.run_id,
                ),
            )

    def results(self, task: str) -> list[ParityResult]:
        """Every day's latest result for ``task``, newest day first."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT task, partition_key, verdict, stage, summary, report, checked_at, run_id "
                "FROM parity WHERE task = ? ORDER BY partition_key DESC",
                (task,),
            ).fetchall()
        return [
            ParityResult(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), r[6], r[7]) for r in rows
        ]

    def log_change(self, task: str, before: Stage, after: Stage, evidence: dict) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO stage_changes (task, from_stage, to_stage, at, evidence) "
                "VALUES (?, ?, ?, ?, ?)",
                (task, before.value, after.value, _now(), orjson.dumps(evidence).decode()),
            )

    def changes(self, task: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT seq, task, from_stage, to_stage, at, evidence FROM stage_changes"
        args: tuple = ()
        if task is not None:
            query, args = query + " WHERE task = ?", (task,)
        with self.db.read() as conn:
            rows = conn.execute(query + " ORDER BY seq", args).fetchall()
        return [
            {"seq": r[0], "task": r[1], "from": r[2], "to": r[3], "at": r[4],
             "evidence": orjson.loads(r[5])}
            for r in rows
        ]  # fmt: skip


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def streak(results: list[ParityResult], required: int) -> Streak:
    """Consecutive passing days ending at the newest checked day, looking back far enough to
    find ``required`` of them (days legacy failed on its input are skipped, not counted)."""
    if not results:
        return Streak(0, None, [], None, None)
    by_day = {r.partition_key: r for r in results}
    newest = dt.date.fromisoformat(results[0].partition_key)
    clean, skipped = 0, []
    day = newest
    while clean < required:
        result = by_day.get(day.isoformat())
        if result is None:
            gap = day.isoformat() if day > dt.date.fromisoformat(min(by_day)) else None
            return Streak(clean, newest.isoformat(), skipped, None, gap)
        if result.verdict == LEGACY_FAILED:
            skipped.append(result.partition_key)
        elif result.passed:
            clean += 1
        else:
            return Streak(clean, newest.isoformat(), skipped, result, None)
        day -= dt.timedelta(days=1)
    return Streak(clean, newest.isoformat(), skipped, None, None)


def describe_streak(s: Streak, required: int) -> str:
    text = f"{s.clean}/{required} consecutive clean days"
    if s.through:
        text += f" through {s.through}"
    if s.broken_by is not None:
        text += f"; broken by {s.broken_by.verdict} on {s.broken_by.partition_key}"
    elif s.gap is not None:
        text += f"; broken by an unchecked day {s.gap}"
    if s.skipped:
        text += f"; legacy failed on its input on {', '.join(sorted(s.skipped))} (skipped)"
    return text


# --- the ledger file --------------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One ledger editor at a time (the lock file sits beside the ledger)."""
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _edit_stage(text: str, task: str, stage: Stage) -> str:
    yaml = YAML()  # round trip: comments, order and layout stay as the humans wrote them
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a line the humans wrote
    doc = yaml.load(text)
    doc["tasks"][task]["stage"] = stage.value
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def set_stage(ledger_file: Path, task: str, expected: Stage, stage: Stage) -> Ledger:
    """Write ``stage`` for ``task`` if the file still says ``expected``; returns the new ledger."""
    ledger_file = Path(ledger_file)
    with _locked(ledger_file):
        text = ledger_file.read_text(encoding="utf-8")
        current = parse_ledger(text, ledger_file)
        if task not in current.tasks:
            raise MigrationError(f"{ledger_file}: no task {task!r} in the ledger")
        if current.stage(task) is not expected:
            raise MigrationError(
                f"{task} is at {current.stage(task).value} now, not {expected.value}: "
                "the ledger changed meanwhile; nothing written"
            )
        edited = _edit_stage(text, task, stage)
        try:
            updated = parse_ledger(edited, ledger_file)
        except LedgerError as exc:  # pragma: no cover - a bug in the edit, never written
            raise MigrationError(f"the edited ledger would not load, not written: {exc}") from exc
        changed = {name for name in current.tasks if current.tasks[name] != updated.tasks.get(name)}
        if changed != {task} or updated.stage(task) is not stage:
            raise MigrationError(
                f"the edit changed {sorted(changed)}, not only {task}: not written"
            )
        mode = ledger_file.stat().st_mode & 0o777
        write_atomic(ledger_file, [edited.encode("utf-8")], mode=mode)
        return updated


# --- the commands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    task: str
    before: Stage
    after: Stage
    ledger: Ledger
    evidence: dict[str, Any]


def _entry(ledger: Ledger, task: str):
    if task not in ledger.tasks:
        raise MigrationError(f"no task {task!r} in the ledger (known: {', '.join(ledger.tasks)})")
    return ledger.tasks[task]


def check_advance(ledger: Ledger, task: str, evidence: EvidenceStore) -> tuple[Stage, dict]:
    """The next stage for ``task`` and the evidence that allows it, or MigrationError."""
    entry = _entry(ledger, task)
    position = ORDER.index(entry.stage)
    if position == len(ORDER) - 1:
        raise MigrationError(f"{task} is already retired")
    target = ORDER[position + 1]
    if target is Stage.SHADOW:
        if entry.replaced_by is None or entry.parity is None:
            raise MigrationError(
                f"{task} cannot shadow: its ledger entry has no replaced_by and no parity rules"
            )
        return target, {"rule": "shadow needs no evidence"}
    required = entry.parity_partitions_required
    s = streak(evidence.results(task), required)
    if s.clean < required:
        raise MigrationError(
            f"{task} stays at {entry.stage.value}: {target.value} needs {required} consecutive "
            f"clean parity days; so far {describe_streak(s, required)}"
        )
    return target, {"streak": s.clean, "through": s.through, "skipped": s.skipped}


def advance(ledger_file: Path, task: str, evidence: EvidenceStore) -> Change:
    ledger = parse_ledger(Path(ledger_file).read_text(encoding="utf-8"), ledger_file)
    target, proof = check_advance(ledger, task, evidence)
    before = ledger.stage(task)
    updated = set_stage(ledger_file, task, before, target)
    evidence.log_change(task, before, target, proof)
    return Change(task, before, target, updated, proof)


def rollback(
    ledger_file: Path, task: str, evidence: EvidenceStore, to: Stage | None = None
) -> Change:
    """Back one stage, or to any earlier one; no evidence needed, it takes effect at once."""
    ledger = parse_ledger(Path(ledger_file).read_text(encoding="utf-8"), ledger_file)
    before = _entry(ledger, task).stage
    position = ORDER.index(before)
    if position == 0:
        raise MigrationError(f"{task} is at legacy already: nothing to roll back")
    target = ORDER[position - 1] if to is None else to
    if ORDER.index(target) >= position:
        raise MigrationError(
            f"{task} is at {before.value}: a rollback goes to an earlier stage "
            f"({', '.join(s.value for s in ORDER[:position])}), not {target.value}"
        )
    updated = set_stage(ledger_file, task, before, target)
    proof = {"rule": "rollback needs no evidence"}
    evidence.log_change(task, before, target, proof)
    return Change(task, before, target, updated, proof)


@dataclass(frozen=True)
class TaskStatus:
    task: str
    stage: Stage
    replaced_by: str | None
    required: int
    streak: Streak
    last: ParityResult | None
    next_step: str


def status(ledger: Ledger, evidence: EvidenceStore) -> list[TaskStatus]:
    out = []
    for task, entry in ledger.tasks.items():
        results = evidence.results(task)
        s = streak(results, entry.parity_partitions_required)
        try:
            target, _ = check_advance(ledger, task, evidence)
            next_step = f"can advance to {target.value}"
        except MigrationError as exc:
            next_step = str(exc)
        out.append(
            TaskStatus(
                task,
                entry.stage,
                entry.replaced_by,
                entry.parity_partitions_required,
                s,
                results[0] if results else None,
                next_step,
            )
        )
    return out
