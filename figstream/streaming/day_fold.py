"""Day-row retention: a job's old day rows joined into one, so they stop growing with time.

The state store keeps a *day row* per (job, UTC day of event time) it had events on
(:func:`figstream.streaming.jobs.apply_to_days`), and the state as of the end of day D is the
join of a job's rows of D and before (:mod:`figstream.streaming.daily`). Kept for ever, they
grow with every day a job is touched. The join is associative, commutative and idempotent, so
the rows of days up to a day F can be replaced by their join, kept at the latest of them,
without changing the state as of the end of F or of any later day. What is lost is the state
as of the end of a day before F: the store records F as its *horizon*
(:class:`~figstream.storage.state.DayFold`) and refuses those reads
(:class:`~figstream.storage.state.DayRowsFolded`), so nothing wrong is ever computed from
them. A day's ``board_daily_stats`` needs the day before, so the first day it can be computed
for is F + 1; a day computed before keeps its file.

:func:`fold_day_rows` folds up to ``through`` (the compaction run passes the day
``day_rows_keep_days`` before today): it sets the horizon first, then visits each day from the
one after the last folded (or the epoch) to ``through``, and for each job with a row of that
day joins its rows from the epoch to ``through`` into its latest one, written conditionally on
the versions read, the others deleted in the same write (:meth:`StateStore.fold_job_days`); a
refused job (a late event changed one of its rows in between) is read and folded again. Rows
of days before the epoch are left alone: the daily views never read them. Afterwards every
job holds at most one row up to the horizon, plus one per day it was touched since, so the
rows are as many as the jobs plus the recent days' changes.

A late event of a folded day (older than the horizon) still lands: it writes a row of its own
day, which every later end-of-day state joins in as before, and the next fold that visits the
job folds it. Work is bounded by ``max_jobs`` per call, in whole days; the next call resumes
at the first day not finished.

Bad inputs tried (``tests/figstream/streaming/test_day_fold.py``): a ``through`` before the
epoch, a fold again over what is done and up to an earlier day, a fold cut short by its bound,
a job row changed between the read and the write, a late event older than the horizon, reads
and stats of days before the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.state import DAY_VERSIONED_SCHEMA, JOB_SCHEMA, DayFold, StateStore
from figstream.streaming import table_ops, tables
from figstream.streaming.jobs import MAX_ATTEMPTS, ConflictError, job_rows

JOBS_PER_READ = 5_000  # jobs whose rows are read and folded at once
_NO_EVENTS = tables.empty(tables.EVENTS_SCHEMA)


@dataclass
class FoldReport:
    through: str | None = None  # the horizon after this call (None: nothing folded yet)
    days: int = 0  # days visited to their end
    jobs: int = 0  # jobs whose rows were joined into one
    rows_removed: int = 0
    retried: int = 0  # jobs refused (changed under the fold) and folded again
    more: bool = False  # the bound stopped it: another call has work to do

    def summary(self) -> str:
        if self.through is None:
            return "day rows: nothing to fold"
        return (
            f"day rows folded through {self.through}: {self.rows_removed} rows of "
            f"{self.jobs} jobs joined over {self.days} days" + ("; more to do" if self.more else "")
        )


def _days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def fold_day_rows(
    state: StateStore, through: str, epoch_day: str, max_jobs: int | None = None
) -> FoldReport:
    """Fold the day rows of the days from ``epoch_day`` to ``through`` (see the module),
    stopping before the next day once ``max_jobs`` jobs' rows were read (a later call goes on
    from there)."""
    for day in (through, epoch_day):
        date.fromisoformat(day)  # a malformed day is a ValueError before anything is written
    held = state.day_fold()
    report = FoldReport(through=held.horizon)
    # A horizon never moves back (day_rows_keep_days raised after a fold): fold up to it.
    through = max(through, held.horizon or through)
    if through < epoch_day or (held.done is not None and held.done >= through):
        return report
    # The horizon first: from here on a read of an earlier day is refused, whatever the fold
    # has got to (a read already under way when it moves is not stopped).
    state.set_day_fold(DayFold(horizon=through))
    report.through = through
    first = epoch_day if held.done is None else max(epoch_day, _next(held.done))
    read = 0
    for day in _days(first, through):
        # Bounded between days only: a day begun is finished, so a call always gets past its
        # first day however many jobs that day holds.
        if max_jobs is not None and read >= max_jobs:
            report.more = True
            return report
        for ids in state.day_job_ids(day, JOBS_PER_READ):
            read += len(ids)
            _fold_jobs(state, ids, through, epoch_day, report)
        state.set_day_fold(DayFold(done=day))
        report.days += 1
    return report


def _next(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def _fold_jobs(
    state: StateStore, ids: list[str], through: str, epoch_day: str, report: FoldReport
) -> None:
    pending = ids
    for _ in range(MAX_ATTEMPTS):
        rows = state.job_days(pending, through)
        rows = rows.filter(pc.greater_equal(rows["day"], epoch_day))
        counts = rows.group_by("job_id").aggregate([("day", "count")])
        many = counts.filter(pc.greater(counts["day_count"], 1))["job_id"]
        if len(many) == 0:
            return
        rows = rows.filter(pc.is_in(rows["job_id"], many))
        keys = list(zip(rows["job_id"].to_pylist(), rows["day"].to_pylist(), strict=True))
        held = state.get_job_days(keys)  # with their versions, by (job_id, day)
        # Each job's latest row takes the join; its others go.
        job_ids, days, versions = (held[c].to_pylist() for c in ("job_id", "day", "version"))
        latest = {job: n for n, job in enumerate(job_ids)}  # by (job_id, day): the last wins
        gone = [
            (job, day, version)
            for n, (job, day, version) in enumerate(zip(job_ids, days, versions, strict=True))
            if latest[job] != n
        ]
        if not gone:
            return
        folding = sorted({job for job, _, _ in gone})
        joined = table_ops.apply_job_state(job_rows(held.select(JOB_SCHEMA.names)), _NO_EVENTS)
        joined = joined.filter(pc.is_in(joined["job_id"], pa.array(folding, pa.string())))
        joined = joined.sort_by("job_id")
        into = held.take(pa.array([latest[job] for job in folding], pa.int64()))
        out = joined.drop_columns(["kind"]).add_column(1, "day", into["day"])
        out = out.append_column("version", into["version"]).cast(DAY_VERSIONED_SCHEMA)
        refused = set(state.fold_job_days(out, gone))
        report.jobs += len(folding) - len(refused)
        report.rows_removed += sum(1 for job, _, _ in gone if job not in refused)
        report.retried += len(refused)
        pending = sorted(refused)
        if not pending:
            return
    raise ConflictError(f"{len(pending)} jobs' day rows kept changing under the fold")
