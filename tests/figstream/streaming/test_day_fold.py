"""Day-row retention (``figstream.streaming.day_fold``): folded day rows give the same state
as of the end of every day from the horizon on, and the stats after it, as a full replay.

Bad inputs tried: a ``through`` before the epoch; a fold again over what is done, and up to
an earlier day; a fold cut short by its bound (resumed, it ends as one whole fold); a row
changed between the fold's read and its write (refused, read and folded again); a late event
older than the horizon (lands, joins the later days' state, and the next fold takes it in);
reads and stats of the days the fold made unreadable (refused, with the reason).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_daily import (  # noqa: F401 (dynamo_state: a fixture)
    DAYS,
    EPOCH,
    dynamo_state,
    every_event,
    generated,
    loaded,
    replayed_stats,
    run,
)
from test_streaming_state import land

from figstream.settings import StreamingSettings
from figstream.storage.state import DayRowsFolded
from figstream.streaming import compaction, daily, day_fold, table_ops, tables


def all_rows(stores) -> pa.Table:
    return pa.concat_tables(list(stores.state.iter_job_days(DAYS[-1])))


def old_rows_per_job(stores, through: str) -> int:
    """The most day rows any job holds from the epoch to ``through``."""
    rows = all_rows(stores)
    rows = rows.filter(pc.and_(pc.greater_equal(rows["day"], EPOCH),
                               pc.less_equal(rows["day"], through)))  # fmt: skip
    counts = rows.group_by("job_id").aggregate([("day", "count")])
    return max(counts["day_count"].to_pylist(), default=0)


def replayed_state(everything: pa.Table, day: str) -> pa.Table:
    upto = everything.filter(pc.less(everything["event_time"], pa.scalar(daily._day_end(day))))
    return table_ops.apply_job_state(None, upto)


def test_a_fold_keeps_every_end_of_day_state_and_the_stats_from_its_horizon_on(tmp_path: Path):
    stores, everything = loaded(tmp_path, 41)
    daily.board_daily_stats(stores, DAYS[:3], EPOCH)  # kept, as the daily asset keeps them
    before = all_rows(stores).num_rows
    assert old_rows_per_job(stores, DAYS[2]) > 1  # some job has rows of several days

    report = day_fold.fold_day_rows(stores.state, DAYS[2], EPOCH)

    assert report.through == DAYS[2] and not report.more and report.retried == 0
    assert report.rows_removed == before - all_rows(stores).num_rows > 0
    assert report.jobs > 0 and old_rows_per_job(stores, DAYS[2]) == 1
    for day in DAYS[2:]:
        assert daily.end_of_day_state(stores, day, EPOCH)[0].equals(
            replayed_state(everything, day)
        ), day
    got = daily.board_daily_stats(stores, DAYS[3:], EPOCH)
    for day in DAYS[3:]:
        assert got[day].equals(replayed_stats(everything, day)), day
    # what the fold made unreadable is refused, with its reason, not computed wrong
    with pytest.raises(DayRowsFolded, match=f"end of {DAYS[1]}"):
        daily.end_of_day_state(stores, DAYS[1], EPOCH)
    with pytest.raises(DayRowsFolded):  # the horizon's own day needs the day before
        daily.board_daily_stats(stores, [DAYS[2]], EPOCH)
    # again: nothing to do
    again = day_fold.fold_day_rows(stores.state, DAYS[2], EPOCH)
    assert (again.through, again.rows_removed, again.days) == (DAYS[2], 0, 0)
    # an earlier day (day_rows_keep_days raised since): the horizon stays, nothing to do
    earlier = day_fold.fold_day_rows(stores.state, DAYS[1], EPOCH)
    assert (earlier.through, earlier.rows_removed) == (DAYS[2], 0)
    # before the epoch: nothing
    assert day_fold.fold_day_rows(stores.state, "2026-01-01", EPOCH).rows_removed == 0


def test_a_fold_cut_short_resumes_and_ends_as_one_whole_fold(tmp_path: Path, monkeypatch):
    whole, _ = loaded(tmp_path / "whole", 42, jobs=80)
    day_fold.fold_day_rows(whole.state, DAYS[3], EPOCH)
    cut, _ = loaded(tmp_path / "cut", 42, jobs=80)
    # Bounds below a day's jobs, read a few at a time: each call still finishes a day.
    monkeypatch.setattr(day_fold, "JOBS_PER_READ", 7)
    calls = 0
    while calls < 50:
        calls += 1
        report = day_fold.fold_day_rows(cut.state, DAYS[3], EPOCH, max_jobs=10)
        assert cut.state.day_fold().horizon == DAYS[3]  # refused from the first call on
        if not report.more:
            break
    assert not report.more and calls > 3
    assert all_rows(cut).equals(all_rows(whole))


def test_a_late_event_older_than_the_horizon_lands_and_the_next_fold_takes_it(tmp_path):
    stores, _ = loaded(tmp_path, 43)
    day_fold.fold_day_rows(stores.state, DAYS[2], EPOCH)
    events, _ = generated(43)
    # a job folded into a row of DAYS[1] or DAYS[2] that also has a row of DAYS[3], the day
    # the next fold visits
    rows = all_rows(stores)
    of = {day: set(rows.filter(pc.equal(rows["day"], day))["job_id"].to_pylist()) for day in DAYS}
    job = sorted((of[DAYS[1]] | of[DAYS[2]]) & of[DAYS[3]])[0]
    start = datetime.fromisoformat(EPOCH).replace(tzinfo=UTC)
    events.posting(tables.UPDATED, 30, "alpha", job, 2)  # an update of DAYS[0], arriving now
    late = events.rows[-1:]
    run(stores, land(stores, events.table(late, "late")), "late")
    assert late[0]["event_time"] < start + timedelta(days=1)
    everything = every_event(events, events.rows)
    for day in DAYS[2:]:
        assert daily.end_of_day_state(stores, day, EPOCH)[0].equals(
            replayed_state(everything, day)
        ), day
    assert old_rows_per_job(stores, DAYS[2]) == 2  # the late row, beside the folded one
    # The next fold visits DAYS[3], where the job has a row: its late row is taken in.
    day_fold.fold_day_rows(stores.state, DAYS[3], EPOCH)
    assert old_rows_per_job(stores, DAYS[3]) == 1
    assert daily.end_of_day_state(stores, DAYS[4], EPOCH)[0].equals(
        replayed_state(everything, DAYS[4])
    )


def test_a_row_changed_under_the_fold_is_read_and_folded_again(tmp_path, monkeypatch):
    stores, everything = loaded(tmp_path, 44, jobs=80)
    state = stores.state
    real = state.fold_job_days
    changed = []

    def fold_after_a_writer(rows, gone):
        if not changed:  # another writer bumps one row the fold read, just before it writes
            job, day, _ = gone[0]
            held = state.get_job_days([(job, day)])
            assert state.put_job_days(held) == []
            changed.append(job)
        return real(rows, gone)

    monkeypatch.setattr(state, "fold_job_days", fold_after_a_writer)
    report = day_fold.fold_day_rows(state, DAYS[3], EPOCH)
    assert changed and report.retried >= 1
    assert old_rows_per_job(stores, DAYS[3]) == 1
    for day in DAYS[3:]:
        assert daily.end_of_day_state(stores, day, EPOCH)[0].equals(
            replayed_state(everything, day)
        ), day


def test_compaction_folds_the_days_older_than_the_setting(tmp_path: Path):
    stores, everything = loaded(tmp_path, 45, jobs=80)
    stores.first_partition = f"{EPOCH}-00:00"
    now = datetime.fromisoformat(DAYS[4]).replace(hour=6, tzinfo=UTC)
    settings = StreamingSettings(day_rows_keep_days=2)
    report = compaction.compact(stores, settings, now)
    assert report.day_rows.through == DAYS[2] and report.day_rows.rows_removed > 0
    assert f"day rows folded through {DAYS[2]}" in report.summary()
    assert stores.state.day_fold().horizon == DAYS[2]
    assert daily.end_of_day_state(stores, DAYS[4], EPOCH)[0].equals(
        replayed_state(everything, DAYS[4])
    )


@pytest.mark.slow  # moto server
def test_on_dynamodb_a_fold_keeps_the_state_from_its_horizon_on(
    tmp_path: Path,
    dynamo_state,  # noqa: F811 (the fixture imported above)
):
    stores, everything = loaded(tmp_path, 46, dynamo_state, jobs=40)
    report = day_fold.fold_day_rows(stores.state, DAYS[2], EPOCH)
    assert report.rows_removed > 0 and old_rows_per_job(stores, DAYS[2]) == 1
    for day in DAYS[2:]:
        assert daily.end_of_day_state(stores, day, EPOCH)[0].equals(
            replayed_state(everything, day)
        ), day
    with pytest.raises(DayRowsFolded):
        daily.end_of_day_state(stores, DAYS[1], EPOCH)
